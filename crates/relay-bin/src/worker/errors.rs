//! Errors of a worker's open rings and sockets, counted by errno without allocating on the data
//! path.
//!
//! An error of an open output is rare (a link going down, a route going away), but while it
//! lasts it may repeat once per batch; so counting is an increment in a small inline list, and
//! turning errno values into names happens only when the supervisor asks for the counters.

use crate::counters::{ErrorCounts, add_error};
use nix::errno::Errno;
use smallvec::SmallVec;

/// Counts by raw errno value; a handful of distinct errnos fit inline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ErrnoCounts(SmallVec<[(i32, u64); 4]>);

impl ErrnoCounts {
    /// Counts `count` errors `errno`.
    pub(super) fn add(&mut self, errno: Errno, count: u64) {
        if count == 0 {
            return;
        }
        let raw = errno as i32;
        match self.0.iter_mut().find(|(known, _)| *known == raw) {
            Some((_, total)) => *total += count,
            None => self.0.push((raw, count)),
        }
    }

    /// Adds every count of `other` to these (the counts of an output that was closed).
    pub(super) fn absorb(&mut self, other: &ErrnoCounts) {
        for &(raw, count) in &other.0 {
            self.add(Errno::from_raw(raw), count);
        }
    }

    /// Adds every count to `into` under `interface`, by errno name.
    pub(super) fn report(&self, interface: &str, into: &mut ErrorCounts) {
        for &(raw, count) in &self.0 {
            add_error(into, interface, &errno_name(raw), count);
        }
    }
}

/// `ENETDOWN` for ENETDOWN: the C name, which is what an operator greps for; `errno_N` for a
/// value this build does not know.
pub(super) fn errno_name(raw: i32) -> String {
    match Errno::from_raw(raw) {
        Errno::UnknownErrno => format!("errno_{raw}"),
        errno => format!("{errno:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_errno_and_reported_by_name() {
        let mut counts = ErrnoCounts::default();
        counts.add(Errno::ENETDOWN, 1);
        counts.add(Errno::ENXIO, 2);
        counts.add(Errno::ENETDOWN, 3);
        counts.add(Errno::EPERM, 0);
        let mut report = ErrorCounts::new();
        counts.report("eth0", &mut report);
        counts.report("eth0", &mut report);
        assert_eq!(report["eth0"]["ENETDOWN"], 8);
        assert_eq!(report["eth0"]["ENXIO"], 4);
        assert_eq!(report["eth0"].len(), 2, "{report:?}");
        assert_eq!(errno_name(100_000), "errno_100000");
    }
}
