//! Why a worker slot's process was replaced, counted per reason.
//!
//! Every restart has exactly one reason, decided when the old process goes away (or fails to
//! start) and counted when the new one is started, so the counts per reason always add up to
//! the slot's restarts.

use std::collections::BTreeMap;

/// Why a worker was restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// Its process exited or was killed by something other than the supervisor (a crash, an
    /// operator's `kill -9`, the OOM killer).
    Exited,
    /// The supervisor killed it because it stopped answering: the watchdog (no answer to a
    /// counters request within the watchdog's `SILENCE_LIMIT`, 3 s) or a write to it that
    /// timed out.
    Unresponsive,
    /// Its process could not be started.
    StartFailed,
    /// The kernel killed it for a system call outside its seccomp allow list (`SIGSYS`).
    ForbiddenSyscall,
}

impl RestartReason {
    /// Every reason, in the order they are reported.
    pub const ALL: [RestartReason; 4] = [
        RestartReason::Exited,
        RestartReason::Unresponsive,
        RestartReason::StartFailed,
        RestartReason::ForbiddenSyscall,
    ];

    /// The reason's name in `ctl workers`, the metrics' `reason` label and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::Exited => "exited",
            RestartReason::Unresponsive => "unresponsive",
            RestartReason::StartFailed => "start_failed",
            RestartReason::ForbiddenSyscall => "forbidden_syscall",
        }
    }

    fn index(self) -> usize {
        match self {
            RestartReason::Exited => 0,
            RestartReason::Unresponsive => 1,
            RestartReason::StartFailed => 2,
            RestartReason::ForbiddenSyscall => 3,
        }
    }
}

/// Restarts of one slot, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartCounts([u32; RestartReason::ALL.len()]);

impl RestartCounts {
    /// Counts one restart for `reason`.
    pub fn count(&mut self, reason: RestartReason) {
        self.0[reason.index()] += 1;
    }

    /// Restarts counted for `reason`.
    pub fn get(&self, reason: RestartReason) -> u32 {
        self.0[reason.index()]
    }

    /// The reasons with at least one restart, by name, as `ctl workers --json` shows them.
    pub fn by_name(&self) -> BTreeMap<String, u32> {
        RestartReason::ALL
            .into_iter()
            .filter(|&reason| self.get(reason) > 0)
            .map(|reason| (reason.as_str().to_owned(), self.get(reason)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_reason_and_named() {
        let mut counts = RestartCounts::default();
        counts.count(RestartReason::Unresponsive);
        counts.count(RestartReason::Exited);
        counts.count(RestartReason::Unresponsive);
        assert_eq!(counts.get(RestartReason::Unresponsive), 2);
        assert_eq!(counts.get(RestartReason::ForbiddenSyscall), 0);
        assert_eq!(
            counts.by_name(),
            BTreeMap::from([("exited".to_owned(), 1), ("unresponsive".to_owned(), 2)])
        );
        let names: std::collections::BTreeSet<&str> =
            RestartReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), RestartReason::ALL.len(), "names are distinct");
        for (index, reason) in RestartReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), index);
        }
    }
}
