//! `fanout-relay check-steering IFACE`: how the kernel spreads an interface's packets over CPUs
//! before the relay sees them (RX queues, RSS, RPS, interrupts), and whether they will reach
//! every worker; and the RPS fallback that fixes the common single-queue case ([`RpsFallback`]).
//!
//! The facts come from [`fanout_core::steering`]; the judgement is [`verdict()`], a pure function
//! of them, the workers' CPUs and the fanout mode. Sysfs shows the network namespace of whoever
//! mounted it, so run this in the relay's namespace the way the relay runs (`ip netns exec`).

mod consume;
mod error;
mod rps;
mod verdict;

pub use consume::ConsumeCheck;
pub use error::{CheckSteeringError, NamespaceError};
pub use rps::RpsFallback;
pub use verdict::{Level, Verdict, verdict};

use crate::cli::CheckSteeringArgs;
use crate::config::{ConfigFile, FanoutSetting, WorkersSetting};
use fanout_core::CpuSet;
use fanout_core::steering::{RssIndirection, Steering, SteeringReport};
use serde::Serialize;
use std::fmt::Write as _;

/// Runs `check-steering`; `Err` says why there is no verdict, and means exit status 1.
pub fn run(args: &CheckSteeringArgs) -> Result<(), CheckSteeringError> {
    let (workers_setting, fanout) = match &args.config {
        Some(path) => {
            let file = ConfigFile::load(path)?;
            (file.relay.workers, file.relay.fanout)
        }
        None => (WorkersSetting::All, FanoutSetting::default()),
    };
    let workers_setting = args.worker_override().unwrap_or(workers_setting);
    let fanout = args.fanout.unwrap_or(fanout);
    let workers =
        crate::cpus::choose(&workers_setting).map_err(|source| CheckSteeringError::Workers {
            setting: match (&args.cpus, &args.workers, &args.config) {
                (Some(_), _, _) => "--cpus".to_owned(),
                (None, Some(_), _) => "--workers".to_owned(),
                (None, None, Some(path)) => format!("{}: relay.workers", path.display()),
                (None, None, None) => "every online CPU".to_owned(),
            },
            source,
        })?;
    let report = Steering::new().report(&args.interface)?;
    let verdict = verdict(&report, &workers, fanout);
    let consume = ConsumeCheck::of(&args.interface);
    if args.json {
        let mut json = JsonReport::new(&report, &workers, fanout, &verdict);
        json.consume_input = Some(&consume);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", render(&report, &workers, fanout, &consume, &verdict));
    }
    Ok(())
}

/// The human report: the facts, then the verdict.
pub fn render(
    report: &SteeringReport,
    workers: &[u32],
    fanout: FanoutSetting,
    consume: &ConsumeCheck,
    verdict: &Verdict,
) -> String {
    let mut out = String::new();
    crate::text::append(&mut out, |out| {
        writeln!(out, "interface {}", report.interface)?;
        let channels = match &report.channels {
            Some(c) => format!(
                "channels rx {} tx {} combined {} other {} (max: rx {} tx {} combined {})",
                c.rx, c.tx, c.combined, c.other, c.max_rx, c.max_tx, c.max_combined
            ),
            None => "the driver reports no channels".into(),
        };
        writeln!(
            out,
            "  RX queues   {} (TX {}); {channels}",
            report.queues.rx, report.queues.tx
        )?;
        let rss = match &report.rss {
            RssIndirection::Table(table) => {
                format!("{} entries over queues {}", table.len(), queues_in(table))
            }
            RssIndirection::NotExposed { errno } => format!("not exposed by the driver ({errno})"),
        };
        writeln!(out, "  RSS table   {rss}")?;
        for queue in &report.rx_queues {
            let rps = if queue.rps_cpus.is_empty() {
                "off".to_owned()
            } else {
                format!(
                    "cpus {} (mask {})",
                    queue.rps_cpus,
                    queue.rps_cpus.to_mask()
                )
            };
            writeln!(
                out,
                "  RPS rx-{:<4} {rps}, flow table {}",
                queue.index, queue.rps_flow_cnt
            )?;
        }
        let rfs = match report.rps_sock_flow_entries {
            Some(entries) => format!("{entries} socket flow entries"),
            None => "socket flow table not visible here (only in the initial namespace)".into(),
        };
        writeln!(out, "  RFS         {rfs}")?;
        if report.irqs.is_empty() {
            writeln!(
                out,
                "  IRQs        none (a virtual device: packets are processed on the CPU that sends them)"
            )?;
        }
        for irq in &report.irqs {
            writeln!(
                out,
                "  IRQ {:<7} {}: cpus {} (allowed {}), {} interrupts",
                irq.number,
                irq.description
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                cpus_or_unknown(irq.effective_affinity.as_ref()),
                cpus_or_unknown(irq.affinity.as_ref()),
                irq.counts.iter().sum::<u64>()
            )?;
        }
        let worker_cpus: CpuSet = workers.iter().map(|&cpu| cpu as usize).collect();
        writeln!(
            out,
            "  workers     {} on cpus {worker_cpus}, fanout {}",
            workers.len(),
            fanout_name(fanout)
        )?;
        writeln!(out, "  consume     {}", consume.describe())?;
        let level = match verdict.level {
            Level::Good => "GOOD",
            Level::Warning => "WARNING",
            Level::Bad => "BAD",
        };
        writeln!(out, "\nverdict: {level}: {}", verdict.summary)?;
        for advice in &verdict.advice {
            writeln!(out, "  advice: {advice}")?;
        }
        for note in &verdict.notes {
            writeln!(out, "  note: {note}")?;
        }
        Ok(())
    });
    out
}

fn cpus_or_unknown(cpus: Option<&CpuSet>) -> String {
    cpus.map_or_else(|| "unknown".to_owned(), ToString::to_string)
}

fn queues_in(table: &[u32]) -> String {
    let queues: CpuSet = table.iter().map(|&queue| queue as usize).collect();
    queues.to_string()
}

fn fanout_name(fanout: FanoutSetting) -> String {
    serde_json::to_value(fanout)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{fanout:?}"))
}

/// `check-steering --json`: the facts as plain values, and the verdict.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    interface: &'a str,
    rx_queues: usize,
    tx_queues: usize,
    channels: Option<JsonChannels>,
    rss_table: Option<&'a [u32]>,
    rss_error: Option<String>,
    rps: Vec<JsonQueue>,
    rps_sock_flow_entries: Option<u32>,
    irqs: Vec<JsonIrq<'a>>,
    workers: &'a [u32],
    fanout: FanoutSetting,
    verdict: &'a Verdict,
    /// Whether the relay's ingress filter is on the interface.
    consume_input: Option<&'a ConsumeCheck>,
}

#[derive(Debug, Serialize)]
struct JsonChannels {
    rx: u32,
    tx: u32,
    other: u32,
    combined: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
}

#[derive(Debug, Serialize)]
struct JsonQueue {
    queue: usize,
    rps_cpus: String,
    rps_mask: String,
    rps_flow_cnt: u32,
}

#[derive(Debug, Serialize)]
struct JsonIrq<'a> {
    number: u32,
    description: &'a str,
    affinity: Option<String>,
    effective_affinity: Option<String>,
    interrupts: u64,
}

impl<'a> JsonReport<'a> {
    fn new(
        report: &'a SteeringReport,
        workers: &'a [u32],
        fanout: FanoutSetting,
        verdict: &'a Verdict,
    ) -> Self {
        let (rss_table, rss_error) = match &report.rss {
            RssIndirection::Table(table) => (Some(table.as_slice()), None),
            RssIndirection::NotExposed { errno } => (None, Some(errno.to_string())),
        };
        JsonReport {
            interface: &report.interface,
            rx_queues: report.queues.rx,
            tx_queues: report.queues.tx,
            channels: report.channels.map(|c| JsonChannels {
                rx: c.rx,
                tx: c.tx,
                other: c.other,
                combined: c.combined,
                max_rx: c.max_rx,
                max_tx: c.max_tx,
                max_other: c.max_other,
                max_combined: c.max_combined,
            }),
            rss_table,
            rss_error,
            rps: report
                .rx_queues
                .iter()
                .map(|queue| JsonQueue {
                    queue: queue.index,
                    rps_cpus: queue.rps_cpus.to_string(),
                    rps_mask: queue.rps_cpus.to_mask(),
                    rps_flow_cnt: queue.rps_flow_cnt,
                })
                .collect(),
            rps_sock_flow_entries: report.rps_sock_flow_entries,
            irqs: report
                .irqs
                .iter()
                .map(|irq| JsonIrq {
                    number: irq.number,
                    description: &irq.description,
                    affinity: irq.affinity.as_ref().map(ToString::to_string),
                    effective_affinity: irq.effective_affinity.as_ref().map(ToString::to_string),
                    interrupts: irq.counts.iter().sum(),
                })
                .collect(),
            workers,
            fanout,
            verdict,
            consume_input: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_core::steering::{QueueCounts, RxQueue};
    use nix::errno::Errno;

    fn veth() -> SteeringReport {
        SteeringReport {
            interface: "veth0".into(),
            queues: QueueCounts { rx: 1, tx: 1 },
            channels: None,
            rx_queues: vec![RxQueue {
                index: 0,
                rps_cpus: CpuSet::new(),
                rps_flow_cnt: 0,
            }],
            rps_sock_flow_entries: None,
            irqs: Vec::new(),
            rss: RssIndirection::NotExposed {
                errno: Errno::EOPNOTSUPP,
            },
        }
    }

    #[test]
    fn the_human_report_shows_facts_and_verdict() {
        let report = veth();
        let verdict = verdict(&report, &[0, 1], FanoutSetting::Cpu);
        let text = render(
            &report,
            &[0, 1],
            FanoutSetting::Cpu,
            &ConsumeCheck::Installed,
            &verdict,
        );
        for needle in [
            "interface veth0",
            "RX queues   1 (TX 1)",
            "RSS table   not exposed by the driver (EOPNOTSUPP",
            "RPS rx-0    off, flow table 0",
            "IRQs        none",
            "workers     2 on cpus 0-1, fanout cpu",
            "verdict: BAD: 1 RX queue and no RPS",
            "advice: use --rps auto",
            "consume     the relay's ingress filter drops the relayed frames",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn the_json_report_names_every_fact() {
        let mut report = veth();
        report.rx_queues[0].rps_cpus = CpuSet::parse_list("0-1").expect("a CPU list");
        let verdict = verdict(&report, &[0, 1], FanoutSetting::Cpu);
        let json = serde_json::to_value(JsonReport::new(
            &report,
            &[0, 1],
            FanoutSetting::Cpu,
            &verdict,
        ))
        .expect("serialisable");
        assert_eq!(json["rx_queues"], 1);
        assert_eq!(json["rps"][0]["rps_cpus"], "0-1");
        assert_eq!(json["rps"][0]["rps_mask"], "3");
        assert_eq!(json["rss_table"], serde_json::Value::Null);
        assert_eq!(json["fanout"], "cpu");
        assert_eq!(json["verdict"]["level"], "good");
        assert_eq!(
            json["verdict"]["workers_reached"],
            serde_json::json!([0, 1])
        );
    }
}
