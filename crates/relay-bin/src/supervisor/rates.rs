//! Counter samples, two at a time, from which rates are computed.

use crate::counters::WorkerCounters;
use std::time::Instant;

/// The two latest samples of every worker slot's counters.
#[derive(Debug, Default)]
pub(crate) struct RateWindow {
    pub(crate) previous: Option<(Instant, Vec<WorkerCounters>)>,
    pub(crate) latest: Option<(Instant, Vec<WorkerCounters>)>,
}

impl RateWindow {
    /// Records a sample.
    pub(crate) fn sample(&mut self, now: Instant, counters: Vec<WorkerCounters>) {
        self.previous = self.latest.take();
        self.latest = Some((now, counters));
    }
}
