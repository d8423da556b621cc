//! The counters a worker keeps, and their sum over workers.
//!
//! A worker is the only writer of its counters: plain integers in its own memory, incremented
//! on the hot path without atomics or locks. The supervisor asks for a copy over the control
//! socket (at most every second, and once more when the worker stops), so publishing them costs
//! the data path nothing per packet.

use relay_rules::wire::DropReason;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

mod stream;
pub use stream::{PidErrors, StreamCount};

/// One worker's counters since it started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerCounters {
    /// CPU the worker is pinned to.
    pub cpu: u32,
    /// Frames taken off the receive rings.
    pub received: u64,
    /// Frames written to an output (one per output).
    pub forwarded: u64,
    /// Well-formed UDP frames that matched no rule.
    pub no_rule: u64,
    /// Frames that are not IPv4 UDP (ARP, IPv6, ...) that reached the ring anyway.
    #[serde(default)]
    pub not_udp: u64,
    /// Malformed frames, by reason (the reason's metric label).
    pub malformed: BTreeMap<String, u64>,
    /// Output frames dropped because the transmit ring had no free slot.
    pub tx_full: u64,
    /// Output frames that would exceed the output's MTU or slot (of a transmit ring or a
    /// socket output's batch).
    pub too_big: u64,
    /// Output frames dropped because their output's transmit ring or socket is not open
    /// (opening it failed when its rule was added; the worker's log says why).
    #[serde(default)]
    pub unopened: u64,
    /// Output datagrams dropped because their output decrements the TTL (`ttl = "decrement"`)
    /// and they arrived with a TTL of 1 or 0: the end of a loop between relays.
    #[serde(default)]
    pub ttl_expired: u64,
    /// Datagrams the kernel refused on a socket output (`sendmmsg`); also counted by errno in
    /// `output_errors`.
    pub socket_errors: u64,
    /// Frames the kernel dropped because the receive ring was full (PACKET_STATISTICS).
    pub kernel_drops: u64,
    /// Times the kernel froze the receive queue (PACKET_STATISTICS, V3).
    pub freezes: u64,
    /// Frames the transmit ring rejected as malformed.
    pub tx_wrong_format: u64,
    /// Segmented frames sent (`tx_gso`): frames carrying two datagrams or more.
    #[serde(default)]
    pub tx_segmented: u64,
    /// Datagrams that left in those frames (also counted in `forwarded`).
    #[serde(default)]
    pub tx_segmented_datagrams: u64,
    /// Errors the kernel reported on the worker's receive ring sockets (`SO_ERROR` after
    /// `POLLERR`), by input interface and errno name: `ENETDOWN` each time an input went down.
    #[serde(default)]
    pub interface_errors: ErrorCounts,
    /// Errors sending to an output, by output interface and errno name: transmit kicks that
    /// failed (`ENETDOWN` while the output is down; their frames stay queued and leave when it
    /// returns) and datagrams the kernel refused on a socket output (also counted, without the
    /// errno, in `socket_errors`).
    #[serde(default)]
    pub output_errors: ErrorCounts,
    /// Per rule: (packets, bytes), by rule name.
    pub rules: BTreeMap<String, RuleCount>,
    /// Generation of the table the worker serves (not summed: the latest).
    #[serde(default)]
    pub table_generation: u64,
    /// Checksum of that table, for drift detection.
    #[serde(default)]
    pub table_checksum: u64,
}

/// Error counts by interface name, then by errno name (`ENETDOWN`).
pub type ErrorCounts = BTreeMap<String, BTreeMap<String, u64>>;

/// Adds `count` errors `errno` on `interface` to `counts`.
pub fn add_error(counts: &mut ErrorCounts, interface: &str, errno: &str, count: u64) {
    if count == 0 {
        return;
    }
    let by_errno = match counts.get_mut(interface) {
        Some(by_errno) => by_errno,
        None => counts.entry(interface.to_owned()).or_default(),
    };
    match by_errno.get_mut(errno) {
        Some(total) => *total += count,
        None => {
            by_errno.insert(errno.to_owned(), count);
        }
    }
}

/// Every (interface, errno, count) of `counts`, in order.
pub fn errors(counts: &ErrorCounts) -> impl Iterator<Item = (&str, &str, u64)> {
    counts.iter().flat_map(|(interface, by_errno)| {
        by_errno
            .iter()
            .map(move |(errno, &count)| (interface.as_str(), errno.as_str(), count))
    })
}

/// Packets and bytes of one rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleCount {
    /// Packets matched and forwarded.
    pub packets: u64,
    /// Bytes of UDP payload matched and forwarded.
    pub bytes: u64,
    /// Inspection and storm guard counters of a rule that has stream options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamCount>,
}

impl RuleCount {
    /// Adds another count of the same rule into this one.
    pub fn add(&mut self, other: &RuleCount) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        if let Some(stream) = &other.stream {
            self.stream.get_or_insert_default().add(stream);
        }
    }
}

impl WorkerCounters {
    /// Frames refused for any reason.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.values().sum()
    }

    /// Sets the refused-frame counters from per-reason counts: frames that are not IPv4 UDP go
    /// to `not_udp`, the others to `malformed` under their reason's label.
    pub fn set_refused(&mut self, reasons: &[u64; DropReason::COUNT]) {
        self.malformed.clear();
        self.not_udp = 0;
        for reason in DropReason::ALL {
            let count = reasons[reason.index()];
            if reason.is_foreign() {
                self.not_udp += count;
            } else if count > 0 {
                self.malformed.insert(reason.as_str().to_owned(), count);
            }
        }
    }

    /// Adds `other` into `self` (for totals over workers and over restarts of one worker).
    pub fn absorb(&mut self, other: &WorkerCounters) {
        self.received += other.received;
        self.forwarded += other.forwarded;
        self.no_rule += other.no_rule;
        self.not_udp += other.not_udp;
        for (reason, count) in &other.malformed {
            *self.malformed.entry(reason.clone()).or_default() += count;
        }
        self.tx_full += other.tx_full;
        self.too_big += other.too_big;
        self.unopened += other.unopened;
        self.ttl_expired += other.ttl_expired;
        self.socket_errors += other.socket_errors;
        self.kernel_drops += other.kernel_drops;
        self.freezes += other.freezes;
        self.tx_wrong_format += other.tx_wrong_format;
        self.tx_segmented += other.tx_segmented;
        self.tx_segmented_datagrams += other.tx_segmented_datagrams;
        for (interface, errno, count) in errors(&other.interface_errors) {
            add_error(&mut self.interface_errors, interface, errno, count);
        }
        for (interface, errno, count) in errors(&other.output_errors) {
            add_error(&mut self.output_errors, interface, errno, count);
        }
        for (rule, count) in &other.rules {
            self.rules.entry(rule.clone()).or_default().add(count);
        }
    }
}

/// Takes a live worker's `latest` counters in place of its `current` ones. A worker forgets a
/// rule's counters when the rule is removed (and counts from zero if it is added again), so the
/// counts `latest` no longer has, or has lower, go to `kept` (the slot's counters of the past),
/// and the relay's totals per rule never go backwards.
pub fn update_keeping_rules(
    current: &mut WorkerCounters,
    latest: WorkerCounters,
    kept: &mut WorkerCounters,
) {
    for (name, count) in &current.rules {
        let forgotten = latest.rules.get(name).is_none_or(|now| {
            now.packets < count.packets
                || now.bytes < count.bytes
                || StreamCount::went_back(now.stream.as_ref(), count.stream.as_ref())
        });
        if forgotten {
            kept.rules.entry(name.clone()).or_default().add(count);
        }
    }
    *current = latest;
}

/// A human summary of per-worker counters: one line per worker, then one per rule.
pub fn summary(workers: &[(u32, WorkerCounters, u32)]) -> String {
    summary_marking(workers, &BTreeSet::new())
}

/// [`summary`], with the lines of the rules in `removed` (rules removed at run time, whose
/// counters the summary keeps) marked `(removed)`.
pub fn summary_marking(
    workers: &[(u32, WorkerCounters, u32)],
    removed: &BTreeSet<String>,
) -> String {
    let mut text = String::new();
    crate::text::append(&mut text, |text| {
        writeln!(
            text,
            "{:>4} {:>12} {:>12} {:>10} {:>10} {:>10} {:>9} {:>12} {:>8}",
            "cpu",
            "received",
            "forwarded",
            "no_rule",
            "not_udp",
            "malformed",
            "tx_full",
            "kernel_drops",
            "restarts"
        )?;
        let mut total = WorkerCounters::default();
        for (cpu, counters, restarts) in workers {
            writeln!(
                text,
                "{:>4} {:>12} {:>12} {:>10} {:>10} {:>10} {:>9} {:>12} {:>8}",
                cpu,
                counters.received,
                counters.forwarded,
                counters.no_rule,
                counters.not_udp,
                counters.malformed_total(),
                counters.tx_full,
                counters.kernel_drops,
                restarts
            )?;
            total.absorb(counters);
        }
        if !total.rules.is_empty() {
            writeln!(text, "{:<32} {:>12} {:>14}", "rule", "packets", "bytes")?;
            for (rule, count) in &total.rules {
                let mark = if removed.contains(rule) {
                    " (removed)"
                } else {
                    ""
                };
                writeln!(
                    text,
                    "{:<32} {:>12} {:>14}{mark}",
                    rule, count.packets, count.bytes
                )?;
            }
        }
        if !total.malformed.is_empty() {
            writeln!(text, "{:<32} {:>12}", "malformed", "frames")?;
            for (reason, count) in &total.malformed {
                writeln!(text, "{:<32} {:>12}", reason, count)?;
            }
        }
        Ok(())
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_adds_every_counter() {
        let mut one = WorkerCounters {
            received: 5,
            forwarded: 4,
            too_big: 1,
            unopened: 2,
            socket_errors: 3,
            ..Default::default()
        };
        one.malformed.insert("fragment".into(), 1);
        one.rules.insert(
            "a".into(),
            RuleCount {
                packets: 4,
                bytes: 40,
                stream: None,
            },
        );
        add_error(&mut one.interface_errors, "eth0", "ENETDOWN", 2);
        add_error(&mut one.output_errors, "eth1", "ENETDOWN", 3);
        add_error(&mut one.output_errors, "eth1", "ENXIO", 0);
        let mut total = WorkerCounters::default();
        total.absorb(&one);
        total.absorb(&one);
        assert_eq!(total.interface_errors["eth0"]["ENETDOWN"], 4);
        assert_eq!(
            errors(&total.output_errors).collect::<Vec<_>>(),
            [("eth1", "ENETDOWN", 6)],
            "a zero count adds no entry"
        );
        assert_eq!(total.received, 10);
        assert_eq!(total.forwarded, 8);
        assert_eq!(
            (total.too_big, total.unopened, total.socket_errors),
            (2, 4, 6)
        );
        assert_eq!(total.malformed["fragment"], 2);
        assert_eq!(
            total.rules["a"],
            RuleCount {
                packets: 8,
                bytes: 80,
                stream: None,
            }
        );
        let text = summary(&[(0, one.clone(), 1), (1, one, 0)]);
        assert!(
            text.lines()
                .any(|line| line.starts_with("a ") && line.contains(" 8 ")),
            "{text}"
        );
    }

    fn with_rules(rules: &[(&str, u64)]) -> WorkerCounters {
        WorkerCounters {
            rules: rules
                .iter()
                .map(|&(name, packets)| {
                    (
                        name.to_owned(),
                        RuleCount {
                            packets,
                            bytes: 10 * packets,
                            stream: None,
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn counts_of_rules_a_worker_forgot_are_kept() {
        let mut kept = WorkerCounters::default();
        let mut current = with_rules(&[("stays", 5), ("gone", 7), ("again", 9)]);
        // `gone` was removed; `again` was removed and added back, and counts from zero.
        update_keeping_rules(
            &mut current,
            with_rules(&[("stays", 6), ("again", 2)]),
            &mut kept,
        );
        assert_eq!(current, with_rules(&[("stays", 6), ("again", 2)]));
        assert_eq!(kept, with_rules(&[("gone", 7), ("again", 9)]));
        let mut total = kept.clone();
        total.absorb(&current);
        assert_eq!(
            total.rules,
            with_rules(&[("stays", 6), ("gone", 7), ("again", 11)]).rules
        );
        // Counters that only grew leave nothing behind.
        update_keeping_rules(
            &mut current,
            with_rules(&[("stays", 8), ("again", 3)]),
            &mut kept,
        );
        assert_eq!(kept, with_rules(&[("gone", 7), ("again", 9)]));
    }

    #[test]
    fn rules_removed_at_run_time_are_marked_in_the_summary() {
        let counters = with_rules(&[("live", 3), ("gone", 7)]);
        let removed: BTreeSet<String> = ["gone".to_owned()].into();
        let text = summary_marking(&[(0, counters, 0)], &removed);
        let line = |name: &str| {
            text.lines()
                .find(|line| line.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(line("gone"), ["gone", "7", "70", "(removed)"]);
        assert_eq!(line("live"), ["live", "3", "30"]);
    }
}
