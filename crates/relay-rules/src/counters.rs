//! Per-rule counters, written by one worker and read by whoever collects statistics.
//!
//! Each worker owns the counters of the rules it serves and is the only writer: a worker is
//! a process (or a thread with its own table), so `record` is three plain stores, with no atomic
//! read-modify-write and no lock on the hot path. Totals across workers are sums made by the
//! collector from snapshots the workers send (by value: the struct is `Copy`).
//!
//! ```
//! use relay_rules::counters::RuleCounters;
//!
//! let mut counters = RuleCounters::default();
//! counters.record(1316, 1_000);
//! counters.record(64, 2_000);
//! assert_eq!((counters.packets, counters.bytes, counters.last_seen_ns), (2, 1380, 2_000));
//! ```

/// Packets, bytes and last activity of one rule in one worker.
///
/// Aligned to a 64-byte cache line so that counters of neighbouring rules in an array never
/// share a line: when a collector reads one while the worker updates another, or when two
/// workers' arrays end up adjacent, no line bounces between cores (false sharing).
#[repr(C, align(64))]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RuleCounters {
    /// Datagrams matched and forwarded by the rule.
    pub packets: u64,
    /// Bytes of those datagrams (what the caller passes to [`RuleCounters::record`]: the relay
    /// counts UDP payload bytes).
    pub bytes: u64,
    /// Time of the last datagram, in nanoseconds of the caller's clock (0: never).
    pub last_seen_ns: u64,
}

impl RuleCounters {
    /// Counts one datagram of `bytes` bytes seen at `now_ns`.
    ///
    /// Wrapping adds: at 100 Gbit/s a u64 byte counter wraps after decades, and a wrap must not
    /// abort a worker in a debug build.
    #[inline]
    pub fn record(&mut self, bytes: usize, now_ns: u64) {
        self.packets = self.packets.wrapping_add(1);
        self.bytes = self.bytes.wrapping_add(bytes as u64);
        self.last_seen_ns = now_ns;
    }

    /// Adds another worker's counters of the same rule into these (for totals); the last-seen
    /// time is the later of the two.
    pub fn merge(&mut self, other: &RuleCounters) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.last_seen_ns = self.last_seen_ns.max(other.last_seen_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cache_line_each() {
        assert_eq!(align_of::<RuleCounters>(), 64);
        assert_eq!(size_of::<RuleCounters>(), 64);
        let pair = [RuleCounters::default(); 2];
        let a = std::ptr::from_ref(&pair[0]) as usize;
        let b = std::ptr::from_ref(&pair[1]) as usize;
        assert_eq!(b - a, 64);
    }

    #[test]
    fn record_counts_and_stamps() {
        let mut counters = RuleCounters::default();
        assert_eq!(
            counters,
            RuleCounters {
                packets: 0,
                bytes: 0,
                last_seen_ns: 0
            }
        );
        counters.record(100, 5);
        counters.record(0, 9);
        assert_eq!(
            counters,
            RuleCounters {
                packets: 2,
                bytes: 100,
                last_seen_ns: 9
            }
        );
    }

    #[test]
    fn record_wraps_instead_of_panicking() {
        let mut counters = RuleCounters {
            packets: u64::MAX,
            bytes: u64::MAX - 1,
            last_seen_ns: 1,
        };
        counters.record(3, 2);
        assert_eq!(
            counters,
            RuleCounters {
                packets: 0,
                bytes: 1,
                last_seen_ns: 2
            }
        );
    }

    #[test]
    fn merge_sums_and_keeps_latest() {
        let mut a = RuleCounters {
            packets: 1,
            bytes: 10,
            last_seen_ns: 50,
        };
        a.merge(&RuleCounters {
            packets: 2,
            bytes: 20,
            last_seen_ns: 40,
        });
        assert_eq!(
            a,
            RuleCounters {
                packets: 3,
                bytes: 30,
                last_seen_ns: 50
            }
        );
    }
}
