//! What a run of the relay counted, reported when it ends.

use crate::counters::{self, WorkerCounters};

/// The counters of the run, per worker slot, when it ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// (CPU, counters, restarts) per worker.
    pub workers: Vec<(u32, WorkerCounters, u32)>,
    /// Rules that were counted but are no longer running (removed at run time): their counters
    /// stay in the summary, marked.
    pub removed: std::collections::BTreeSet<String>,
}

impl RunSummary {
    /// The human summary table.
    pub fn render(&self) -> String {
        counters::summary_marking(&self.workers, &self.removed)
    }
}
