//! Errors of a worker's outputs: why one could not be opened, and the errors of an open ring or
//! socket, counted by errno without allocating on the data path.
//!
//! An error of an open output is rare (a link going down, a route going away), but while it
//! lasts it may repeat once per batch; so counting is an increment in a small inline list, and
//! turning errno values into names happens only when the supervisor asks for the counters.

use crate::counters::{ErrorCounts, add_error};
use nix::errno::Errno;
use smallvec::SmallVec;
use std::net::Ipv4Addr;

/// Why an output's transmit ring or socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output's interface is not among the facts the supervisor handed over.
    #[error("output interface #{ifindex} is not among the interfaces handed over")]
    UnknownInterface {
        /// The interface index the compiled output names.
        ifindex: u32,
    },
    /// The transmit ring could not be set up.
    #[error("transmit ring on {interface}: {source}")]
    TxRing {
        /// The output interface.
        interface: String,
        /// The step that failed, with its syscall and errno.
        source: fanout_core::RingError,
    },
    /// The socket of a socket output could not be made or configured.
    #[error("socket output on {interface} from {from}: {call}: {source}")]
    Socket {
        /// The output interface.
        interface: String,
        /// The address it sends from.
        from: Ipv4Addr,
        /// The call that failed: `bind`, `setsockopt(SO_BINDTODEVICE)`, ...
        call: &'static str,
        /// What it returned.
        source: std::io::Error,
    },
}

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
