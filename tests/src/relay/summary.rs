//! Reading the counters table `fanout-relay run` prints to stderr (at exit, and with
//! `--stats-every`).
//!
//! The table is one line per worker under a header naming the columns, then, when any rule
//! matched a packet, one line per such rule under `rule packets bytes`:
//!
//! ```text
//!  cpu     received    forwarded    no_rule  malformed   tx_full kernel_drops restarts
//!    0          500          500          0          0         0            0        0
//! rule                                  packets          bytes
//! cam                                       500          57000
//! old                                        20           2280 (removed)
//! ```
//!
//! A rule removed at run time keeps its line, marked `(removed)`.
//!
//! Columns are found by their header names, so a column added later does not break the reading.

use std::collections::{BTreeMap, BTreeSet};

/// One worker's line of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerRow {
    /// CPU the worker is pinned to.
    pub cpu: u32,
    /// Frames taken off its receive rings.
    pub received: u64,
    /// Output frames written (one per output).
    pub forwarded: u64,
    /// Well-formed UDP frames matching no rule.
    pub no_rule: u64,
    /// Frames refused by the parser, all reasons together.
    pub malformed: u64,
    /// Output frames dropped for want of a transmit slot.
    pub tx_full: u64,
    /// Frames the kernel dropped on a full receive ring.
    pub kernel_drops: u64,
    /// Times the worker was restarted.
    pub restarts: u64,
}

/// One counters table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Worker lines, in the order printed.
    pub workers: Vec<WorkerRow>,
    /// (packets, bytes) per rule that matched anything; a rule not listed matched nothing.
    pub rules: BTreeMap<String, (u64, u64)>,
    /// The rules of `rules` marked as removed at run time.
    pub removed: BTreeSet<String>,
    /// Malformed frames per reason, summed over workers (the `malformed frames` section that
    /// follows the rules when any frame was malformed).
    pub malformed_by_reason: BTreeMap<String, u64>,
}

const WORKER_COLUMNS: [&str; 8] = [
    "cpu",
    "received",
    "forwarded",
    "no_rule",
    "malformed",
    "tx_full",
    "kernel_drops",
    "restarts",
];

impl Summary {
    /// Every table in `log`, in the order printed.
    pub fn parse_all(log: &str) -> Vec<Summary> {
        let mut tables = Vec::new();
        let mut lines = log.lines().peekable();
        while let Some(line) = lines.next() {
            let header: Vec<&str> = line.split_whitespace().collect();
            let Some(columns) = worker_columns(&header) else {
                continue;
            };
            let mut table = Summary::default();
            while let Some(row) = lines.peek().and_then(|l| numbers(l, header.len())) {
                let at = |i: usize| row[columns[i]];
                table.workers.push(WorkerRow {
                    cpu: u32::try_from(at(0)).unwrap_or(u32::MAX),
                    received: at(1),
                    forwarded: at(2),
                    no_rule: at(3),
                    malformed: at(4),
                    tx_full: at(5),
                    kernel_drops: at(6),
                    restarts: at(7),
                });
                lines.next();
            }
            let rule_header = lines
                .peek()
                .map(|l| l.split_whitespace().collect::<Vec<_>>());
            if let Some(rule_header) = rule_header
                && rule_header.starts_with(&["rule", "packets", "bytes"])
            {
                lines.next();
                while let Some((name, counts, removed)) = lines.peek().and_then(|l| {
                    let (name, rest) = l.split_once(char::is_whitespace)?;
                    let (rest, removed) = match rest.trim_end().strip_suffix("(removed)") {
                        Some(rest) => (rest, true),
                        None => (rest, false),
                    };
                    Some((
                        name.to_owned(),
                        numbers(rest, rule_header.len() - 1)?,
                        removed,
                    ))
                }) {
                    if removed {
                        table.removed.insert(name.clone());
                    }
                    table.rules.insert(name, (counts[0], counts[1]));
                    lines.next();
                }
            }
            let reason_header = lines
                .peek()
                .map(|l| l.split_whitespace().collect::<Vec<_>>());
            if reason_header.is_some_and(|header| header == ["malformed", "frames"]) {
                lines.next();
                while let Some((reason, count)) = lines.peek().and_then(|l| {
                    let (reason, rest) = l.split_once(char::is_whitespace)?;
                    Some((reason.to_owned(), numbers(rest, 1)?))
                }) {
                    table.malformed_by_reason.insert(reason, count[0]);
                    lines.next();
                }
            }
            tables.push(table);
        }
        tables
    }

    /// The last table in `log`, or `None` if it has none.
    pub fn parse_last(log: &str) -> Option<Summary> {
        Self::parse_all(log).pop()
    }

    /// Asserts that the workers together received `received` frames and forwarded
    /// `forwarded`, with no transmit slot missing and no frame dropped on a full receive ring.
    pub fn assert_relayed(&self, received: u64, forwarded: u64) {
        let total = self.total();
        assert_eq!(
            (
                total.received,
                total.forwarded,
                total.tx_full,
                total.kernel_drops
            ),
            (received, forwarded, 0, 0),
            "(received, forwarded, tx_full, kernel_drops) of {self:#?}"
        );
    }

    /// All workers added together (`cpu` is `u32::MAX`).
    pub fn total(&self) -> WorkerRow {
        let mut total = WorkerRow {
            cpu: u32::MAX,
            ..WorkerRow::default()
        };
        for row in &self.workers {
            total.received += row.received;
            total.forwarded += row.forwarded;
            total.no_rule += row.no_rule;
            total.malformed += row.malformed;
            total.tx_full += row.tx_full;
            total.kernel_drops += row.kernel_drops;
            total.restarts += row.restarts;
        }
        total
    }

    /// The line of the worker on `cpu`; panics with the table when there is none.
    pub fn worker(&self, cpu: u32) -> &WorkerRow {
        self.workers
            .iter()
            .find(|row| row.cpu == cpu)
            .unwrap_or_else(|| panic!("no worker on cpu {cpu} in {self:#?}"))
    }

    /// Packets matched by rule `name` (0 when the table does not list it).
    pub fn rule_packets(&self, name: &str) -> u64 {
        self.rules.get(name).map_or(0, |&(packets, _)| packets)
    }

    /// Payload bytes matched by rule `name` (0 when the table does not list it).
    pub fn rule_bytes(&self, name: &str) -> u64 {
        self.rules.get(name).map_or(0, |&(_, bytes)| bytes)
    }

    /// What was counted since `earlier`, worker by worker and rule by rule (counters only grow).
    pub fn since(&self, earlier: &Summary) -> Summary {
        let zero = WorkerRow::default();
        let workers = self
            .workers
            .iter()
            .map(|now| {
                let then = earlier
                    .workers
                    .iter()
                    .find(|row| row.cpu == now.cpu)
                    .unwrap_or(&zero);
                WorkerRow {
                    cpu: now.cpu,
                    received: now.received.saturating_sub(then.received),
                    forwarded: now.forwarded.saturating_sub(then.forwarded),
                    no_rule: now.no_rule.saturating_sub(then.no_rule),
                    malformed: now.malformed.saturating_sub(then.malformed),
                    tx_full: now.tx_full.saturating_sub(then.tx_full),
                    kernel_drops: now.kernel_drops.saturating_sub(then.kernel_drops),
                    restarts: now.restarts.saturating_sub(then.restarts),
                }
            })
            .collect();
        let rules = self
            .rules
            .iter()
            .map(|(name, &(packets, bytes))| {
                let (p0, b0) = earlier.rules.get(name).copied().unwrap_or((0, 0));
                (
                    name.clone(),
                    (packets - p0.min(packets), bytes - b0.min(bytes)),
                )
            })
            .collect();
        let malformed_by_reason = self
            .malformed_by_reason
            .iter()
            .map(|(reason, &count)| {
                let before = earlier
                    .malformed_by_reason
                    .get(reason)
                    .copied()
                    .unwrap_or(0);
                (reason.clone(), count.saturating_sub(before))
            })
            .collect();
        Summary {
            workers,
            rules,
            removed: self.removed.clone(),
            malformed_by_reason,
        }
    }
}

/// For a header line, the position of each of [`WORKER_COLUMNS`], or `None` if it is not one.
fn worker_columns(header: &[&str]) -> Option<[usize; 8]> {
    if header.first() != Some(&"cpu") {
        return None;
    }
    let mut columns = [0; 8];
    for (slot, name) in columns.iter_mut().zip(WORKER_COLUMNS) {
        *slot = header.iter().position(|h| *h == name)?;
    }
    Some(columns)
}

/// The `count` unsigned numbers of `line`, or `None` if it is anything else.
fn numbers(line: &str, count: usize) -> Option<Vec<u64>> {
    let values: Vec<u64> = line
        .split_whitespace()
        .map(|word| word.parse().ok())
        .collect::<Option<_>>()?;
    (values.len() == count).then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[2025 INFO relay_bin::supervisor] relaying with 1 rule(s)
 cpu     received    forwarded    no_rule  malformed   tx_full kernel_drops restarts
   0            3            2          1          0         0            0        0
   1            0            0          0          0         0            0        0
[2025 INFO relay_bin::supervisor] SIGTERM: stopping workers
 cpu     received    forwarded    no_rule  malformed   tx_full kernel_drops restarts
   0           10            8          1          1         0            0        0
   1            7            6          0          0         1            2        1
rule                                  packets          bytes
cam                                         7            700
gone                                        3            300 (removed)
two                                         7           1400
";

    #[test]
    fn reads_every_table_and_the_last() {
        let tables = Summary::parse_all(LOG);
        assert_eq!(tables.len(), 2);
        assert!(tables[0].rules.is_empty());
        let last = Summary::parse_last(LOG).expect("two tables");
        assert_eq!(last.workers.len(), 2);
        assert_eq!(
            *last.worker(1),
            WorkerRow {
                cpu: 1,
                received: 7,
                forwarded: 6,
                no_rule: 0,
                malformed: 0,
                tx_full: 1,
                kernel_drops: 2,
                restarts: 1
            }
        );
        assert_eq!(last.rule_packets("two"), 7);
        assert_eq!(last.rule_bytes("two"), 1400);
        assert_eq!(last.rule_packets("none"), 0);
        assert_eq!(last.rule_bytes("gone"), 300);
        assert_eq!(last.removed, BTreeSet::from(["gone".to_owned()]));
        let total = last.total();
        assert_eq!(
            (total.received, total.forwarded, total.malformed),
            (17, 14, 1)
        );
        let delta = last.since(&tables[0]);
        assert_eq!(delta.worker(0).received, 7);
        assert_eq!(delta.worker(1).received, 7);
        assert_eq!(delta.rule_packets("cam"), 7);
    }

    #[test]
    fn columns_are_found_by_name() {
        let log = " cpu received forwarded no_rule malformed too_big tx_full kernel_drops restarts\n\
                     0 5 4 0 1 9 0 0 0\n";
        let table = Summary::parse_last(log).expect("one table");
        assert_eq!(table.worker(0).malformed, 1);
        assert_eq!(table.worker(0).tx_full, 0);
        assert_eq!(Summary::parse_last("no table here"), None);
    }
}
