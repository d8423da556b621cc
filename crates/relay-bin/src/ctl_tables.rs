//! The human tables of `ctl stats` and `ctl workers`.

use crate::control::proto::{ConsumeFilter, StatsReport, WaitingRule, WorkerReport};
use std::fmt::Write as _;

/// Per-rule and per-worker counters with rates, and how evenly the workers share the load.
pub fn stats(stats: &StatsReport) -> String {
    let mut out = String::new();
    crate::text::append(&mut out, |out| {
        writeln!(
            out,
            "{:<24} {:>12} {:>14} {:>10} {:>12}",
            "rule", "packets", "bytes", "pps", "bit/s"
        )?;
        for (name, rule) in &stats.rules {
            writeln!(
                out,
                "{:<24} {:>12} {:>14} {:>10.0} {:>12}",
                name,
                rule.packets,
                rule.bytes,
                rule.rates.packets_per_second,
                si(rule.rates.bits_per_second)
            )?;
            if let Some(line) = rule.stream.as_ref().and_then(|s| s.health_line()) {
                writeln!(out, "  {line}")?;
            }
        }
        writeln!(
            out,
            "\n{:>4} {:>12} {:>12} {:>9} {:>9} {:>8} {:>9} {:>10} {:>6}",
            "cpu",
            "received",
            "forwarded",
            "no_rule",
            "malformed",
            "tx_full",
            "drops",
            "rx pps",
            "share"
        )?;
        for worker in &stats.workers {
            let counters = &worker.counters;
            writeln!(
                out,
                "{:>4} {:>12} {:>12} {:>9} {:>9} {:>8} {:>9} {:>10.0} {:>5.1}%",
                worker.cpu,
                counters.received,
                counters.forwarded,
                counters.no_rule,
                counters.malformed_total(),
                counters.tx_full,
                counters.kernel_drops,
                worker.rates.packets_per_second,
                worker.share * 100.0
            )?;
        }
        errors(out, stats)?;
        let shares: Vec<f64> = stats.workers.iter().map(|worker| worker.share).collect();
        if let Some(imbalance) = imbalance(&shares) {
            writeln!(
                out,
                "imbalance (max share / mean share) over the last {:.1} s: {imbalance:.2}",
                stats.interval_seconds
            )?;
        }
        Ok(())
    });
    out
}

/// The errors the workers' rings and sockets reported, summed over the workers, when there are
/// any: `input` for a receive ring's socket (`ENETDOWN` each time the input went down),
/// `output` for a failed transmit kick or a refused datagram.
fn errors(out: &mut String, stats: &StatsReport) -> std::fmt::Result {
    let mut total = crate::counters::WorkerCounters::default();
    for worker in &stats.workers {
        total.absorb(&worker.counters);
    }
    let inputs = crate::counters::errors(&total.interface_errors).map(|row| ("input", row));
    let outputs = crate::counters::errors(&total.output_errors).map(|row| ("output", row));
    let mut rows = inputs.chain(outputs).peekable();
    if rows.peek().is_none() {
        return Ok(());
    }
    writeln!(
        out,
        "\n{:<6} {:<16} {:<14} {:>10}",
        "side", "interface", "error", "count"
    )?;
    for (side, (interface, errno, count)) in rows {
        writeln!(out, "{side:<6} {interface:<16} {errno:<14} {count:>10}")?;
    }
    Ok(())
}

/// `unresponsive=1,exited=2`: the restarts of a worker by reason; `-` when it never restarted.
fn restarted_for(worker: &WorkerReport) -> String {
    if worker.restart_reasons.is_empty() {
        return "-".to_owned();
    }
    let reasons: Vec<String> = worker
        .restart_reasons
        .iter()
        .map(|(reason, count)| format!("{reason}={count}"))
        .collect();
    reasons.join(",")
}

/// The rules that wait for interfaces, one line each with what they miss.
pub fn waiting(waiting: &[WaitingRule]) -> String {
    let mut out = String::new();
    crate::text::append(&mut out, |out| {
        for waiting in waiting {
            let input = &waiting.rule.input;
            writeln!(
                out,
                "{:<24} {}:{}:{} waiting for interface(s) {}",
                waiting.rule.name,
                input.interface,
                input.destination,
                input.port,
                waiting.missing.join(", ")
            )?;
        }
        Ok(())
    });
    out
}

/// The worker slots; with a class column when any worker belongs to a `[[class]]`.
pub fn workers(workers: &[WorkerReport]) -> String {
    let mut out = String::new();
    crate::text::append(&mut out, |out| {
        let classes = workers.iter().any(|worker| worker.class.is_some());
        let class_of = |worker: &WorkerReport| {
            if classes {
                format!(" {}", worker.class.as_deref().unwrap_or("default"))
            } else {
                String::new()
            }
        };
        writeln!(
            out,
            "{:>4} {:>8} {:<10} {:>8} {:>10} {:>6} {:>12} {:>12} {:>8} {:>9} {:<8} {:<24}{}",
            "cpu",
            "pid",
            "state",
            "restarts",
            "generation",
            "drift",
            "received",
            "forwarded",
            "down_ms",
            "unserved",
            "members",
            "restarted_for",
            if classes { " class" } else { "" }
        )?;
        for worker in workers {
            let members: Vec<String> = worker.members.iter().map(ToString::to_string).collect();
            writeln!(
                out,
                "{:>4} {:>8} {:<10} {:>8} {:>10} {:>6} {:>12} {:>12} {:>8} {:>9} {:<8} {:<24}{}",
                worker.cpu,
                worker
                    .pid
                    .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
                worker.state,
                worker.restarts,
                worker.generation,
                worker.drift_repairs,
                worker.received,
                worker.forwarded,
                worker.down_ms,
                worker.unserved_rules,
                members.join(","),
                restarted_for(worker),
                class_of(worker)
            )?;
        }
        Ok(())
    });
    out
}

/// `ctl workers`' lines on the ingress filters that consume relayed input (none without
/// `consume_input`).
pub fn consume_filters(filters: &[ConsumeFilter]) -> String {
    let mut out = String::new();
    crate::text::append(&mut out, |out| {
        for filter in filters {
            match (&filter.problem, filter.installed) {
                (Some(problem), _) => writeln!(
                    out,
                    "consume_input {} (index {}): not consumed: {problem}",
                    filter.interface, filter.ifindex
                )?,
                (None, installed) => writeln!(
                    out,
                    "consume_input {} (index {}): {} key(s) dropped at ingress{}",
                    filter.interface,
                    filter.ifindex,
                    filter.keys,
                    if installed { "" } else { " (not installed)" }
                )?,
            }
        }
        Ok(())
    });
    out
}

/// Max share over mean share (1.0 is perfectly even), when any packet arrived.
pub fn imbalance(shares: &[f64]) -> Option<f64> {
    let total: f64 = shares.iter().sum();
    if shares.is_empty() || total <= 0.0 {
        return None;
    }
    let mean = total / shares.len() as f64;
    let max = shares.iter().copied().fold(0.0, f64::max);
    Some(max / mean)
}

/// `1.5M`, `20k`: rates read at a glance.
fn si(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imbalance_is_max_over_mean() {
        assert_eq!(imbalance(&[0.5, 0.5]), Some(1.0));
        assert_eq!(imbalance(&[1.0, 0.0]), Some(2.0));
        assert_eq!(imbalance(&[0.0, 0.0]), None);
        assert_eq!(si(1_500_000.0), "1.50M");
        assert_eq!(si(999.0), "999");
    }

    #[test]
    fn a_rule_with_stream_options_has_its_health_line_under_it() {
        use crate::control::proto::{Rates, RuleStats};
        use crate::counters::{PidErrors, StreamCount};
        use relay_rules::inspect::{mpegts::TsCounters, rtp::RtpCounters};
        let mut report = StatsReport::default();
        let rates = Rates {
            packets_per_second: 1000.0,
            bits_per_second: 10_528_000.0,
        };
        report.rules.insert(
            "cam1".into(),
            RuleStats {
                packets: 119_990,
                bytes: 159_106_740,
                rates: rates.clone(),
                stream: Some(StreamCount {
                    rtp: Some(RtpCounters {
                        packets: 119_990,
                        lost: 10,
                        reordered: 2,
                        jitter: 8,
                        clock_hz: 90_000,
                        ..RtpCounters::default()
                    }),
                    ts: Some(TsCounters {
                        packets: 839_930,
                        cc_errors: 40,
                        pids: 4,
                        ..TsCounters::default()
                    }),
                    ts_pids: vec![PidErrors {
                        pid: 0,
                        cc_errors: 10,
                    }],
                    ..StreamCount::default()
                }),
            },
        );
        report.rules.insert(
            "plain".into(),
            RuleStats {
                packets: 5,
                bytes: 50,
                rates,
                stream: None,
            },
        );
        let table = stats(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("cam1 "), "{table}");
        assert_eq!(
            lines[2],
            "  rtp lost 10 reordered 2 dup 0 ssrc 0 jitter 88 us, ts cc 40 sync 0 tei 0 pids 4",
            "{table}"
        );
        assert!(
            lines[3].starts_with("plain "),
            "no line under a plain rule:\n{table}"
        );
    }

    #[test]
    fn errors_are_listed_summed_over_workers_only_when_there_are_any() {
        use crate::control::proto::WorkerStats;
        use crate::counters::{WorkerCounters, add_error};
        let mut counters = WorkerCounters::default();
        let mut report = StatsReport::default();
        report.workers.push(WorkerStats {
            counters: counters.clone(),
            ..WorkerStats::default()
        });
        assert!(!stats(&report).contains("error"), "{}", stats(&report));
        add_error(&mut counters.interface_errors, "eth0", "ENETDOWN", 2);
        add_error(&mut counters.output_errors, "eth1", "ENXIO", 1);
        report.workers = vec![
            WorkerStats {
                counters: counters.clone(),
                ..WorkerStats::default()
            },
            WorkerStats {
                counters,
                ..WorkerStats::default()
            },
        ];
        let text = stats(&report);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|line| !line.starts_with("side"))
            .skip(1)
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["input", "eth0", "ENETDOWN", "4"],
                vec!["output", "eth1", "ENXIO", "2"]
            ],
            "{text}"
        );
    }

    #[test]
    fn restarts_are_shown_with_their_reasons() {
        let mut worker = WorkerReport {
            cpu: 1,
            state: "ready".into(),
            ..WorkerReport::default()
        };
        let never = workers(std::slice::from_ref(&worker));
        assert!(
            never
                .lines()
                .next()
                .is_some_and(|l| l.contains("restarted_for"))
        );
        assert_eq!(
            never
                .lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().last()),
            Some("-")
        );
        worker.restarts = 3;
        worker.restart_reasons = [("exited".to_owned(), 1), ("unresponsive".to_owned(), 2)].into();
        let text = workers(&[worker]);
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.trim_end().ends_with("exited=1,unresponsive=2")),
            "{text}"
        );
    }

    #[test]
    fn the_class_column_appears_with_classes_only() {
        let mut worker = WorkerReport {
            cpu: 1,
            state: "ready".into(),
            ..WorkerReport::default()
        };
        let plain = workers(std::slice::from_ref(&worker));
        assert!(!plain.contains("class"), "{plain}");
        let default = worker.clone();
        worker.class = Some("video".into());
        let classed = workers(&[worker, default]);
        let lines: Vec<&str> = classed.lines().collect();
        assert!(lines[0].ends_with(" class"), "{classed}");
        assert!(lines[1].ends_with(" video"), "{classed}");
        assert!(lines[2].ends_with(" default"), "{classed}");
    }
}
