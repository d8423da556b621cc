//! The relay's counters in the Prometheus text exposition format 0.0.4.
//!
//! Names follow the Prometheus conventions: `fanout_relay_` first, counters end in `_total`,
//! bytes are bytes, a gauge has no suffix. Labels: `rule` (its name), `cpu` (the worker's CPU),
//! `reason` (why a frame was refused), `interface`. Counters are the relay's since it started:
//! a worker's restart does not reset them (the supervisor keeps what its earlier processes
//! counted), so only a restart of the relay does, which Prometheus' `rate()` handles.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `fanout_relay_generation`, `fanout_relay_rules`, `fanout_relay_rules_waiting` | gauge | |
//! | `fanout_relay_interface_up` | gauge | interface |
//! | `fanout_relay_interface_{downs,removals}_total` | counter | interface |
//! | `fanout_relay_rule_packets_total`, `fanout_relay_rule_bytes_total` | counter | rule |
//! | `fanout_relay_rtp_{packets,invalid,lost,reordered,duplicated,ssrc_changes,restarts}_total`, `fanout_relay_rtp_jitter_microseconds` (gauge) | counter | rule (rules with `inspect` of RTP) |
//! | `fanout_relay_ts_{packets,cc_errors,sync_errors,tei_packets,pid_overflow}_total`, `fanout_relay_ts_pids` (gauge) | counter | rule (rules with `inspect` of MPEG-TS) |
//! | `fanout_relay_ts_pid_cc_errors_total` | counter | rule, pid |
//! | `fanout_relay_rule_limited_{packets,bytes}_total` | counter | rule (rules with stream options) |
//! | `fanout_relay_worker_{received,forwarded,no_rule,not_udp,tx_full,too_big,unopened,ttl_expired,socket_errors,tx_wrong_format,tx_segmented,tx_segmented_datagrams,kernel_drops,freezes,drift_repairs}_total` | counter | cpu |
//! | `fanout_relay_worker_restarts_total` | counter | cpu, reason |
//! | `fanout_relay_worker_malformed_total` | counter | cpu, reason |
//! | `fanout_relay_interface_errors_total` | counter | cpu, interface, errno |
//! | `fanout_relay_output_errors_total` | counter | cpu, interface, errno |
//! | `fanout_relay_worker_ready`, `fanout_relay_worker_table_generation` | gauge | cpu |
//! | `fanout_relay_worker_outages_total`, `fanout_relay_worker_down_seconds_total` | counter | cpu |
//! | `fanout_relay_worker_unserved_rules` | gauge | cpu |
//! | `fanout_relay_interface_{receive,transmit}_{packets,bytes,dropped}_total` | counter | interface |
//! | `fanout_relay_kernel_feature` (always 1) | gauge | feature, available |
//!
//! `interface_errors` are the errors the kernel reported on a worker's receive ring sockets
//! (`ENETDOWN` once per ring each time an input goes down); `output_errors` are transmit kicks
//! that failed (their frames stay queued and leave when the link returns) and datagrams a
//! socket output refused, by output interface. The errno label is the C name.
//!
//! The interface counters are the kernel's (`/proc/net/dev` of the relay's namespace) for every
//! interface a rule names, so a dashboard can set what reached an input against what the
//! workers received.

mod streams;

use super::netdev::InterfaceCounters;
use crate::control::proto::{StatsReport, WorkerReport};
use crate::counters::WorkerCounters;
use crate::supervisor::RestartReason;
use relay_rules::Rule;
use std::fmt::Write as _;

/// Everything one scrape shows, as the supervisor answered it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Counters per rule and per worker.
    pub stats: StatsReport,
    /// The worker slots: restarts, confirmed generation, state.
    pub workers: Vec<WorkerReport>,
    /// Generation of the running rule set.
    pub generation: u64,
    /// The running rules.
    pub rules: Vec<Rule>,
    /// The kernel's counters of the interfaces the rules name.
    pub interfaces: Vec<InterfaceCounters>,
    /// Rules waiting for interfaces that do not exist.
    pub waiting: usize,
    /// The interfaces the rules name, as netlink told of them.
    pub links: Vec<crate::control::proto::InterfaceState>,
    /// With `consume_input`, the ingress filter of each input interface.
    pub consume: Vec<crate::control::proto::ConsumeFilter>,
}

/// A metric type.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Renders `snapshot` as an exposition.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = Exposition::default();
    out.family(
        "fanout_relay_generation",
        Kind::Gauge,
        "Generation of the running rule set; every applied change raises it.",
        vec![(String::new(), snapshot.generation)],
    );
    out.family(
        "fanout_relay_rules",
        Kind::Gauge,
        "Rules in the running set.",
        vec![(String::new(), snapshot.rules.len() as u64)],
    );
    out.family(
        "fanout_relay_rules_waiting",
        Kind::Gauge,
        "Rules of the configuration that wait for an interface that does not exist.",
        vec![(String::new(), snapshot.waiting as u64)],
    );
    let by_link = |value: fn(&crate::control::proto::InterfaceState) -> u64| {
        snapshot
            .links
            .iter()
            .map(|link| (labels(&[("interface", &link.name)]), value(link)))
            .collect()
    };
    out.family(
        "fanout_relay_interface_up",
        Kind::Gauge,
        "1 when an interface a rule names exists and runs, 0 while it is down or absent.",
        by_link(|link| u64::from(link.up)),
    );
    out.family(
        "fanout_relay_interface_downs_total",
        Kind::Counter,
        "Times an interface a rule names went down.",
        by_link(|link| link.downs),
    );
    out.family(
        "fanout_relay_interface_removals_total",
        Kind::Counter,
        "Times an interface a rule names was deleted or renamed away.",
        by_link(|link| link.removals),
    );
    out.family(
        "fanout_relay_consume_filter_installed",
        Kind::Gauge,
        "With consume_input, 1 while the ingress filter that drops relayed input after the \
         relay's receive rings took it is installed on the input interface, 0 when it could not \
         be (the host's stack then takes every relayed frame as well).",
        snapshot
            .consume
            .iter()
            .map(|filter| {
                (
                    labels(&[("interface", &filter.interface)]),
                    u64::from(filter.installed),
                )
            })
            .collect(),
    );
    out.family(
        "fanout_relay_consume_keys",
        Kind::Gauge,
        "With consume_input, the (destination, port) keys the input interface's ingress filter \
         drops.",
        snapshot
            .consume
            .iter()
            .map(|filter| {
                (
                    labels(&[("interface", &filter.interface)]),
                    filter.keys as u64,
                )
            })
            .collect(),
    );
    let rules = &snapshot.stats.rules;
    let by_rule = |value: fn(&crate::control::proto::RuleStats) -> u64| {
        rules
            .iter()
            .map(|(name, stats)| (labels(&[("rule", name)]), value(stats)))
            .collect()
    };
    out.family(
        "fanout_relay_rule_packets_total",
        Kind::Counter,
        "Packets the rule matched.",
        by_rule(|stats| stats.packets),
    );
    out.family(
        "fanout_relay_rule_bytes_total",
        Kind::Counter,
        "UDP payload bytes of the packets the rule matched.",
        by_rule(|stats| stats.bytes),
    );
    streams::streams(&mut out, rules);
    let features = fanout_core::Features::get();
    out.family(
        "fanout_relay_kernel_feature",
        Kind::Gauge,
        "1 per kernel feature the relay uses where the kernel has it; available says whether \
         the running kernel offers it (probed at start), see `fanout-relay features`.",
        fanout_core::Feature::ALL
            .iter()
            .map(|feature| {
                let available = if features.has(*feature) {
                    "true"
                } else {
                    "false"
                };
                (
                    labels(&[("feature", feature.name()), ("available", available)]),
                    1,
                )
            })
            .collect(),
    );
    workers(&mut out, snapshot);
    interfaces(&mut out, &snapshot.interfaces);
    out.text
}

type CounterOf = fn(&WorkerCounters) -> u64;
type InterfaceCounterOf = fn(&InterfaceCounters) -> u64;

fn workers(out: &mut Exposition, snapshot: &Snapshot) {
    let workers = &snapshot.stats.workers;
    let cpu = |cpu: u32| labels(&[("cpu", &cpu.to_string())]);
    let counters: [(&str, &str, CounterOf); 14] = [
        (
            "received",
            "Frames the worker took off its receive rings.",
            |c| c.received,
        ),
        (
            "forwarded",
            "Frames the worker wrote to an output, one per output of each matched packet.",
            |c| c.forwarded,
        ),
        (
            "no_rule",
            "Well-formed UDP frames that matched no rule.",
            |c| c.no_rule,
        ),
        (
            "not_udp",
            "Frames that are not IPv4 UDP (ARP, IPv6, ...) that reached the worker anyway.",
            |c| c.not_udp,
        ),
        (
            "tx_full",
            "Output frames dropped because the transmit ring had no free slot.",
            |c| c.tx_full,
        ),
        (
            "too_big",
            "Output frames dropped because they would exceed the output's MTU or ring slot.",
            |c| c.too_big,
        ),
        (
            "unopened",
            "Output frames dropped because their output's transmit ring or socket could not be \
             opened (the worker's log says why).",
            |c| c.unopened,
        ),
        (
            "ttl_expired",
            "Output datagrams dropped because their output decrements the TTL and they arrived \
             with a TTL of 1 or 0 (a loop between relays dying out).",
            |c| c.ttl_expired,
        ),
        (
            "socket_errors",
            "Datagrams the kernel refused on a socket output (by errno in \
             fanout_relay_output_errors_total).",
            |c| c.socket_errors,
        ),
        (
            "tx_wrong_format",
            "Frames the transmit ring rejected as malformed.",
            |c| c.tx_wrong_format,
        ),
        (
            "tx_segmented",
            "Segmented frames sent (ring.tx_gso): frames carrying two datagrams or more.",
            |c| c.tx_segmented,
        ),
        (
            "tx_segmented_datagrams",
            "Datagrams that left in segmented frames (also counted in forwarded).",
            |c| c.tx_segmented_datagrams,
        ),
        (
            "kernel_drops",
            "Frames the kernel dropped because the worker's receive ring was full \
             (PACKET_STATISTICS).",
            |c| c.kernel_drops,
        ),
        (
            "freezes",
            "Times the kernel froze the worker's receive queue (PACKET_STATISTICS, TPACKET_V3).",
            |c| c.freezes,
        ),
    ];
    for (name, help, value) in counters {
        out.family(
            &format!("fanout_relay_worker_{name}_total"),
            Kind::Counter,
            help,
            workers
                .iter()
                .map(|w| (cpu(w.cpu), value(&w.counters)))
                .collect(),
        );
    }
    out.family(
        "fanout_relay_worker_malformed_total",
        Kind::Counter,
        "Malformed frames the worker counted and dropped, by reason.",
        workers
            .iter()
            .flat_map(|w| {
                let cpu = w.cpu.to_string();
                w.counters.malformed.iter().map(move |(reason, &count)| {
                    (labels(&[("cpu", &cpu), ("reason", reason)]), count)
                })
            })
            .collect(),
    );
    let by_errno = |errors: fn(&WorkerCounters) -> &crate::counters::ErrorCounts| {
        workers
            .iter()
            .flat_map(move |w| {
                let cpu = w.cpu.to_string();
                crate::counters::errors(errors(&w.counters)).map(move |(interface, errno, n)| {
                    (
                        labels(&[("cpu", &cpu), ("interface", interface), ("errno", errno)]),
                        n,
                    )
                })
            })
            .collect()
    };
    out.family(
        "fanout_relay_interface_errors_total",
        Kind::Counter,
        "Errors the kernel reported on the worker's receive ring sockets (SO_ERROR), by input \
         interface and errno: ENETDOWN each time the input went down.",
        by_errno(|c| &c.interface_errors),
    );
    out.family(
        "fanout_relay_output_errors_total",
        Kind::Counter,
        "Failed transmit kicks (their frames stay queued) and datagrams a socket output refused, \
         by output interface and errno.",
        by_errno(|c| &c.output_errors),
    );
    let slots = &snapshot.workers;
    let by_slot = |value: fn(&WorkerReport) -> u64| {
        slots
            .iter()
            .map(|slot| (cpu(slot.cpu), value(slot)))
            .collect()
    };
    out.family(
        "fanout_relay_worker_restarts_total",
        Kind::Counter,
        "Times the supervisor restarted the worker's process, by reason: exited (it died by \
         itself or was killed by someone else), unresponsive (the watchdog killed it), \
         start_failed, forbidden_syscall (its seccomp filter killed it).",
        slots
            .iter()
            .flat_map(|slot| {
                RestartReason::ALL.into_iter().map(|reason| {
                    let name = reason.as_str();
                    (
                        labels(&[("cpu", &slot.cpu.to_string()), ("reason", name)]),
                        u64::from(slot.restart_reasons.get(name).copied().unwrap_or(0)),
                    )
                })
            })
            .collect(),
    );
    out.family(
        "fanout_relay_worker_drift_repairs_total",
        Kind::Counter,
        "Times the worker's rule table differed from the supervisor's and was resent.",
        by_slot(|slot| u64::from(slot.drift_repairs)),
    );
    out.family(
        "fanout_relay_worker_table_generation",
        Kind::Gauge,
        "Generation of the rule table the worker confirmed (0: none yet).",
        by_slot(|slot| slot.generation),
    );
    out.family(
        "fanout_relay_worker_ready",
        Kind::Gauge,
        "1 when the worker's process runs with its table, 0 while it starts or restarts.",
        by_slot(|slot| u64::from(slot.state == "ready" || slot.state == "resyncing")),
    );
    out.family(
        "fanout_relay_worker_outages_total",
        Kind::Counter,
        "Times the worker's process exited or was killed (not counting resizes).",
        by_slot(|slot| u64::from(slot.outages)),
    );
    out.family(
        "fanout_relay_worker_down_seconds_total",
        Kind::Counter,
        "Time the worker was not serving (starting or restarting), in seconds.",
        slots
            .iter()
            .map(|slot| (cpu(slot.cpu), slot.down_ms as f64 / 1000.0))
            .collect(),
    );
    out.family(
        "fanout_relay_worker_unserved_rules",
        Kind::Gauge,
        "Under shard placement, rules of the worker's shards that no worker serves right now.",
        by_slot(|slot| slot.unserved_rules),
    );
    out.family(
        "fanout_relay_worker_info",
        Kind::Gauge,
        "Always 1; its labels say which worker class (a [[class]], or \"default\") the worker \
         on that cpu serves, to join the other worker series on.",
        slots
            .iter()
            .map(|slot| {
                let class = slot.class.as_deref().unwrap_or("default");
                (
                    labels(&[("cpu", &slot.cpu.to_string()), ("class", class)]),
                    1,
                )
            })
            .collect(),
    );
}

fn interfaces(out: &mut Exposition, interfaces: &[InterfaceCounters]) {
    let families: [(&str, &str, InterfaceCounterOf); 6] = [
        ("receive_packets", "Packets the interface received", |i| {
            i.receive_packets
        }),
        ("receive_bytes", "Bytes the interface received", |i| {
            i.receive_bytes
        }),
        (
            "receive_dropped",
            "Received packets the kernel dropped on the interface",
            |i| i.receive_dropped,
        ),
        ("transmit_packets", "Packets the interface sent", |i| {
            i.transmit_packets
        }),
        ("transmit_bytes", "Bytes the interface sent", |i| {
            i.transmit_bytes
        }),
        (
            "transmit_dropped",
            "Packets the kernel dropped on their way out of the interface",
            |i| i.transmit_dropped,
        ),
    ];
    for (name, help, value) in families {
        out.family(
            &format!("fanout_relay_interface_{name}_total"),
            Kind::Counter,
            &format!(
                "{help}, as the kernel counts it (/proc/net/dev), for interfaces the rules name."
            ),
            interfaces
                .iter()
                .map(|i| (labels(&[("interface", &i.name)]), value(i)))
                .collect(),
        );
    }
}

/// The text being written.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// Writes one metric family: HELP, TYPE and its samples (`labels` already rendered). A
    /// family without samples is left out.
    fn family<V: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        samples: Vec<(String, V)>,
    ) {
        if samples.is_empty() {
            return;
        }
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        crate::text::append(&mut self.text, |text| {
            writeln!(text, "# HELP {name} {help}")?;
            writeln!(text, "# TYPE {name} {kind}")?;
            for (labels, value) in samples {
                writeln!(text, "{name}{labels} {value}")?;
            }
            Ok(())
        });
    }
}

/// `{a="x",b="y"}`, values escaped as the format requires (`\\`, `\"`, `\n`).
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(key, value)| {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{key}=\"{value}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{RuleStats, WorkerStats};
    use relay_rules::Input;
    use std::collections::BTreeSet;

    fn snapshot() -> Snapshot {
        let mut snapshot = Snapshot {
            generation: 3,
            ..Snapshot::default()
        };
        snapshot.stats.rules.insert(
            "cam \"1\"\\".into(),
            RuleStats {
                packets: 10,
                bytes: 1000,
                ..RuleStats::default()
            },
        );
        let mut counters = WorkerCounters {
            cpu: 1,
            received: 12,
            forwarded: 20,
            kernel_drops: 2,
            ..WorkerCounters::default()
        };
        counters.malformed.insert("bad_checksum".into(), 2);
        snapshot.stats.workers.push(WorkerStats {
            cpu: 1,
            counters,
            ..WorkerStats::default()
        });
        snapshot.workers.push(WorkerReport {
            cpu: 1,
            state: "ready".into(),
            restarts: 4,
            restart_reasons: [("exited".to_owned(), 3), ("unresponsive".to_owned(), 1)].into(),
            generation: 3,
            ..WorkerReport::default()
        });
        snapshot.rules.push(Rule {
            name: "cam".into(),
            input: Input {
                interface: "in0".into(),
                destination: [239, 1, 1, 1].into(),
                port: 5000,
                source: None,
                vlan: None,
            },
            outputs: Vec::new(),
            class: None,
            inspect: None,
            rtp_clock_hz: None,
            max_pps: None,
            max_bps: None,
        });
        snapshot.interfaces.push(InterfaceCounters {
            name: "in0".into(),
            receive_packets: 15,
            ..InterfaceCounters::default()
        });
        snapshot.consume.push(crate::control::proto::ConsumeFilter {
            interface: "in0".into(),
            ifindex: 4,
            installed: true,
            keys: 1,
            problem: None,
        });
        snapshot
    }

    #[test]
    fn every_family_has_help_type_and_samples() {
        let text = render(&snapshot());
        for line in [
            "fanout_relay_generation 3",
            "fanout_relay_rules 1",
            "fanout_relay_rule_packets_total{rule=\"cam \\\"1\\\"\\\\\"} 10",
            "fanout_relay_rule_bytes_total{rule=\"cam \\\"1\\\"\\\\\"} 1000",
            "fanout_relay_worker_received_total{cpu=\"1\"} 12",
            "fanout_relay_worker_forwarded_total{cpu=\"1\"} 20",
            "fanout_relay_worker_kernel_drops_total{cpu=\"1\"} 2",
            "fanout_relay_worker_malformed_total{cpu=\"1\",reason=\"bad_checksum\"} 2",
            "fanout_relay_worker_restarts_total{cpu=\"1\",reason=\"exited\"} 3",
            "fanout_relay_worker_restarts_total{cpu=\"1\",reason=\"unresponsive\"} 1",
            "fanout_relay_worker_restarts_total{cpu=\"1\",reason=\"forbidden_syscall\"} 0",
            "fanout_relay_worker_table_generation{cpu=\"1\"} 3",
            "fanout_relay_worker_ready{cpu=\"1\"} 1",
            "fanout_relay_worker_info{cpu=\"1\",class=\"default\"} 1",
            "fanout_relay_interface_receive_packets_total{interface=\"in0\"} 15",
            "fanout_relay_consume_filter_installed{interface=\"in0\"} 1",
            "fanout_relay_consume_keys{interface=\"in0\"} 1",
            "# TYPE fanout_relay_worker_tx_full_total counter",
            "# TYPE fanout_relay_worker_ready gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        // Each family is introduced exactly once, right before its samples.
        let mut seen = BTreeSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().expect("a name").to_owned();
                assert!(seen.insert(name.clone()), "{name} twice");
                current = name;
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().expect("a name");
                assert_eq!(name, current, "{line} outside its family");
                if name.ends_with("_total") {
                    assert!(!name.ends_with("_total_total"));
                }
            }
        }
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# HELP ")).count(),
            seen.len()
        );
    }

    #[test]
    fn empty_families_are_left_out() {
        let text = render(&Snapshot::default());
        assert!(text.contains("fanout_relay_generation 0\n"), "{text}");
        assert!(!text.contains("fanout_relay_rule_packets_total"), "{text}");
        assert!(!text.contains("malformed"), "{text}");
    }
}
