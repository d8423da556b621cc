//! The stream options of a rule: inspection and the storm guard.

use super::error::{Field, Problem};
use crate::rule::Rule;

/// Reports what is wrong with `rule`'s `inspect`, `rtp_clock_hz`, `max_pps` and `max_bps`.
pub(super) fn check(rule: &Rule, report: &mut impl FnMut(Field, Problem)) {
    if let Some(clock) = rule.rtp_clock_hz {
        if clock == 0 {
            report(Field::RtpClockHz, Problem::ClockZero);
        } else if !rule.inspect.is_some_and(|kind| kind.rtp()) {
            report(Field::RtpClockHz, Problem::ClockWithoutRtp);
        }
    }
    if rule.max_pps == Some(0) {
        report(Field::MaxPps, Problem::LimitZero);
    }
    if rule.max_bps == Some(0) {
        report(Field::MaxBps, Problem::LimitZero);
    }
}
