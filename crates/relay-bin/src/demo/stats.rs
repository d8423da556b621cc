//! Reading the relay's counters tables (`run --stats-every`, and the summary at exit) back from
//! its standard error.
//!
//! The tables are [`crate::counters::summary`]'s: a header line naming the worker columns, one
//! line per worker, then `malformed frames` and one line per drop reason, then
//! `rule packets bytes` and one line per rule. Columns are found by their
//! header name, so a new column does not break the demo, and rule lines are recognised by the
//! demo's own rule names, so a log line that happens to end in two numbers is never taken for
//! one. Counters only grow, so each table simply overwrites what the previous one said.

use std::collections::BTreeMap;

/// One worker's line of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct WorkerRow {
    /// Frames taken off its receive rings.
    pub(super) received: u64,
    /// Frames written to outputs.
    pub(super) forwarded: u64,
    /// UDP frames that matched no rule.
    pub(super) no_rule: u64,
    /// Frames that are not IPv4 UDP (IGMP, ARP, ...): not the relay's business.
    pub(super) not_udp: u64,
    /// Frames refused as malformed.
    pub(super) malformed: u64,
    /// Output frames dropped for a full transmit ring.
    pub(super) tx_full: u64,
    /// Frames the kernel dropped for a full receive ring.
    pub(super) kernel_drops: u64,
    /// Times the worker was restarted.
    pub(super) restarts: u64,
}

impl WorkerRow {
    fn add(&mut self, other: &WorkerRow) {
        self.received += other.received;
        self.forwarded += other.forwarded;
        self.no_rule += other.no_rule;
        self.not_udp += other.not_udp;
        self.malformed += other.malformed;
        self.tx_full += other.tx_full;
        self.kernel_drops += other.kernel_drops;
        self.restarts += other.restarts;
    }
}

/// The latest counters the relay printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RelayCounters {
    /// Per CPU.
    pub(super) workers: BTreeMap<u64, WorkerRow>,
    /// Packets matched, per rule name.
    pub(super) rules: BTreeMap<String, u64>,
    /// Malformed frames over all workers, per reason.
    pub(super) malformed: BTreeMap<String, u64>,
    /// Tables seen so far.
    pub(super) tables: u64,
}

impl RelayCounters {
    /// The sum over workers.
    pub(super) fn total(&self) -> WorkerRow {
        let mut total = WorkerRow::default();
        for row in self.workers.values() {
            total.add(row);
        }
        total
    }
}

/// Recognises the lines of counters tables among the other lines of the relay's output.
#[derive(Debug)]
pub(super) struct StatsParser {
    rules: Vec<String>,
    columns: Vec<String>,
    /// What the tables said so far.
    pub(super) counters: RelayCounters,
}

impl StatsParser {
    /// A parser for a relay whose rules are named `rules`.
    pub(super) fn new(rules: impl IntoIterator<Item = String>) -> StatsParser {
        StatsParser {
            rules: rules.into_iter().collect(),
            columns: Vec::new(),
            counters: RelayCounters::default(),
        }
    }

    /// Takes one line of the relay's standard error; says whether it belonged to a table.
    pub(super) fn feed(&mut self, line: &str) -> bool {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        match tokens.as_slice() {
            ["cpu", rest @ ..] if rest.contains(&"received") => {
                self.columns = tokens.iter().map(|t| (*t).to_owned()).collect();
                self.counters.tables += 1;
                true
            }
            ["rule", "packets", "bytes"] | ["malformed", "frames"] => true,
            [reason, count]
                if relay_rules::DropReason::ALL
                    .iter()
                    .any(|known| known.as_str() == *reason) =>
            {
                match count.parse::<u64>() {
                    Ok(count) => {
                        self.counters.malformed.insert((*reason).to_owned(), count);
                        true
                    }
                    Err(_) => false,
                }
            }
            [name, packets, _bytes] if self.rules.iter().any(|rule| rule == name) => {
                match packets.parse::<u64>() {
                    Ok(packets) => {
                        self.counters.rules.insert((*name).to_owned(), packets);
                        true
                    }
                    Err(_) => false,
                }
            }
            _ => self.worker_row(&tokens),
        }
    }

    fn worker_row(&mut self, tokens: &[&str]) -> bool {
        if self.columns.is_empty() || tokens.len() != self.columns.len() {
            return false;
        }
        let Ok(values) = tokens
            .iter()
            .map(|t| t.parse::<u64>())
            .collect::<Result<Vec<u64>, _>>()
        else {
            return false;
        };
        let column = |name: &str| {
            self.columns
                .iter()
                .position(|c| c == name)
                .map_or(0, |index| values[index])
        };
        let row = WorkerRow {
            received: column("received"),
            forwarded: column("forwarded"),
            no_rule: column("no_rule"),
            not_udp: column("not_udp"),
            malformed: column("malformed"),
            tx_full: column("tx_full"),
            kernel_drops: column("kernel_drops"),
            restarts: column("restarts"),
        };
        self.counters.workers.insert(column("cpu"), row);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::{RuleCount, WorkerCounters, summary};

    fn worker(cpu: u32, received: u64, rules: &[(&str, u64)]) -> WorkerCounters {
        let mut counters = WorkerCounters {
            cpu,
            received,
            forwarded: received * 2,
            no_rule: 3,
            not_udp: 6,
            tx_full: 1,
            kernel_drops: 7,
            ..Default::default()
        };
        counters.malformed.insert("ipv4_fragment".into(), 5);
        for (name, packets) in rules {
            counters.rules.insert(
                (*name).to_owned(),
                RuleCount {
                    packets: *packets,
                    bytes: packets * 200,
                    stream: None,
                },
            );
        }
        counters
    }

    #[test]
    fn reads_back_what_the_relay_prints() {
        let first = summary(&[
            (0, worker(0, 10, &[("rewrite", 4)]), 0),
            (1, worker(1, 20, &[("fanout", 9)]), 2),
        ]);
        let second = summary(&[
            (0, worker(0, 110, &[("rewrite", 100)]), 0),
            (1, worker(1, 120, &[("fanout", 100), ("probe", 1)]), 2),
        ]);
        let mut parser = StatsParser::new(["rewrite", "fanout", "probe"].map(String::from));
        let log = "[2026-01-01T00:00:00Z INFO  relay_bin::supervisor] relaying with 3 rule(s)";
        assert!(!parser.feed(log));
        for line in first.lines() {
            assert!(parser.feed(line), "not recognised: {line:?}");
        }
        assert_eq!(parser.counters.rules["fanout"], 9);
        assert!(!parser.feed("[x WARN relay_bin] worker on cpu 1 exited 12 34"));
        for line in second.lines() {
            assert!(parser.feed(line), "not recognised: {line:?}");
        }
        let counters = &parser.counters;
        assert_eq!(counters.tables, 2);
        assert_eq!(counters.rules["rewrite"], 100);
        assert_eq!(counters.rules["fanout"], 100);
        assert_eq!(counters.rules["probe"], 1);
        assert_eq!(counters.workers.len(), 2);
        assert_eq!(
            counters.workers[&1],
            WorkerRow {
                received: 120,
                forwarded: 240,
                no_rule: 3,
                not_udp: 6,
                malformed: 5,
                tx_full: 1,
                kernel_drops: 7,
                restarts: 2,
            }
        );
        let total = counters.total();
        assert_eq!((total.received, total.forwarded), (230, 460));
        assert_eq!(total.restarts, 2);
        assert_eq!(total.not_udp, 12);
        assert_eq!(counters.malformed["ipv4_fragment"], 10);
    }

    #[test]
    fn other_lines_are_not_taken_for_rows() {
        let mut parser = StatsParser::new(["rewrite".to_owned()]);
        // No header yet: numbers alone are not a worker row.
        assert!(!parser.feed("   0   1   2"));
        assert!(!parser.feed("other 12 34"));
        assert!(!parser.feed("rewrite twelve 34"));
        assert!(!parser.feed(""));
        assert_eq!(parser.counters, RelayCounters::default());
    }
}
