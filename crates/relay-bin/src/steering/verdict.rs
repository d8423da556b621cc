//! The verdict of `check-steering`: from an interface's steering facts, the workers' CPUs and the
//! fanout mode, which workers will see packets, and what to change when not all of them will.
//!
//! Pure: it takes a [`SteeringReport`] and returns words, so every case is tested below on
//! reports built by hand. The facts it leans on:
//! - under fanout `cpu` the kernel hands a packet to member `cpu % members` of the group, where
//!   `cpu` is the CPU that processes the packet and members are in the order the workers joined
//!   (the workers' CPUs, ascending);
//! - that CPU is the one taking the RX queue's interrupt, unless RPS re-steers the queue to a CPU
//!   of its mask chosen by flow hash; a virtual device (veth) has no interrupt, so it is the CPU
//!   of the sender;
//! - `hash`, `lb`, `rnd` and `rollover` ignore the CPU; `qm` uses the RX queue number instead.

use crate::config::FanoutSetting;
use fanout_core::CpuSet;
use fanout_core::steering::{Irq, RssIndirection, SteeringReport};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// How well packets will spread over the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Every worker gets a share.
    Good,
    /// Some workers get less or nothing, or it depends on where the senders run.
    Warning,
    /// One worker gets every packet.
    Bad,
}

/// What `check-steering` concludes about one interface.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// How well packets will spread.
    pub level: Level,
    /// What will happen and why, in one sentence.
    pub summary: String,
    /// What to change, when something should change.
    pub advice: Vec<String>,
    /// What qualifies the summary (flows, ordering, where the kernel's work happens).
    pub notes: Vec<String>,
    /// CPUs of the workers that will see packets, when the facts tell.
    pub workers_reached: Option<Vec<u32>>,
}

/// Where the kernel processes an interface's packets: the CPU a fanout group in `cpu` mode sees.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Processing {
    /// CPUs known to process packets: the RPS masks of queues with RPS, the interrupt CPUs of
    /// the others.
    cpus: CpuSet,
    /// Whether `cpus` came (at least partly) from RPS masks.
    by_rps: bool,
    /// Whether `cpus` came (at least partly) from interrupt affinities.
    by_irq: bool,
    /// Whether an interrupt's CPUs came from the allowed affinity rather than the effective one.
    affinity_only: bool,
    /// Queues in use without RPS and without any interrupt: processed on the sender's CPU.
    on_sender_cpu: Vec<usize>,
    /// Queues packets arrive on: those the RSS table names, else every queue.
    active: Vec<usize>,
}

/// Judges how `report`'s interface spreads packets over workers on `workers` (ascending) under
/// `fanout`.
pub fn verdict(report: &SteeringReport, workers: &[u32], fanout: FanoutSetting) -> Verdict {
    let processing = processing(report);
    let n = workers.len();
    if n <= 1 {
        return Verdict {
            level: Level::Good,
            summary: match workers.first() {
                Some(cpu) => format!(
                    "one worker (cpu {cpu}): it receives every packet, there is nothing to spread"
                ),
                None => "no worker: nothing receives packets".into(),
            },
            advice: Vec::new(),
            notes: Vec::new(),
            workers_reached: Some(workers.to_vec()),
        };
    }
    match fanout {
        FanoutSetting::Cpu => by_cpu(report, &processing, workers),
        FanoutSetting::Qm => by_queue(report, &processing, workers),
        FanoutSetting::Hash => {
            let mut notes = vec![
                "a flow (addresses and ports) always reaches the same worker: one heavy flow \
                 loads one worker"
                    .to_owned(),
            ];
            notes.extend(single_cpu_note(report, &processing));
            Verdict {
                level: Level::Good,
                summary: format!(
                    "fanout hash spreads flows over all {n} workers by their hash, whichever CPU \
                     processes them"
                ),
                advice: Vec::new(),
                notes,
                workers_reached: Some(workers.to_vec()),
            }
        }
        FanoutSetting::Lb | FanoutSetting::Rnd => {
            let mut notes = vec![
                "packets of one flow are spread too, so they may leave in another order than \
                 they arrived"
                    .to_owned(),
            ];
            notes.extend(single_cpu_note(report, &processing));
            Verdict {
                level: Level::Good,
                summary: if fanout == FanoutSetting::Lb {
                    format!("fanout lb deals packets round robin over all {n} workers")
                } else {
                    format!("fanout rnd gives each packet to one of all {n} workers at random")
                },
                advice: Vec::new(),
                notes,
                workers_reached: Some(workers.to_vec()),
            }
        }
        FanoutSetting::Steer => Verdict {
            level: Level::Good,
            summary: format!(
                "fanout steer sends each packet to the worker that holds its rule (its shard of \
                 group and port) among all {n} workers, whichever CPU took it"
            ),
            advice: Vec::new(),
            notes: vec![
                "the load per worker follows the traffic per shard, not the CPUs: a heavy \
                 stream loads one worker"
                    .to_owned(),
            ],
            workers_reached: Some(workers.to_vec()),
        },
        FanoutSetting::Rollover => Verdict {
            level: Level::Warning,
            summary: "fanout rollover gives every packet to one worker until its ring is full, \
                      then spills to the next: expect one busy worker"
                .into(),
            advice: vec!["use --fanout cpu or --fanout hash to share the load".into()],
            notes: Vec::new(),
            workers_reached: None,
        },
    }
}

fn by_cpu(report: &SteeringReport, p: &Processing, workers: &[u32]) -> Verdict {
    let n = workers.len();
    let all = cpu_list(workers.iter().map(|&cpu| cpu as usize));
    let rps_advice = String::from(
        "use --rps auto (relay.rps = \"auto\") to spread it over the workers' CPUs, or --fanout hash",
    );
    if p.cpus.is_empty() {
        if p.active.len() <= 1 {
            return Verdict {
                level: Level::Bad,
                summary: format!(
                    "1 RX queue and no RPS: every packet is processed on the CPU that received \
                     it (for a virtual device such as veth: the sender's CPU), so under fanout \
                     cpu only the worker for that CPU sees traffic, not all {n}"
                ),
                advice: vec![rps_advice],
                notes: Vec::new(),
                workers_reached: None,
            };
        }
        return Verdict {
            level: Level::Warning,
            summary: format!(
                "{} RX queues without interrupts or RPS: packets are processed on the CPUs that \
                 send them (a virtual device), so which of the {n} workers see traffic depends on \
                 where the senders run",
                p.active.len()
            ),
            advice: vec![format!(
                "set the queues' RPS masks to the workers' CPUs (mask {}), or use --fanout hash",
                mask_of(workers)
            )],
            notes: Vec::new(),
            workers_reached: None,
        };
    }
    // Worker CPU -> the processing CPUs that fanout cpu maps onto it.
    let mut reached: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for cpu in p.cpus.iter() {
        reached.entry(workers[cpu % n]).or_default().push(cpu);
    }
    let idle: Vec<u32> = workers
        .iter()
        .copied()
        .filter(|cpu| !reached.contains_key(cpu))
        .collect();
    let source = match (p.by_rps, p.by_irq) {
        (true, true) => "by RPS and by the queues' interrupts",
        (true, false) => "by RPS",
        _ => "by the queues' interrupts",
    };
    let processed = format!("packets are processed on cpus {} ({source})", p.cpus);
    let mut notes = Vec::new();
    if p.by_rps {
        notes.push(
            "RPS picks the CPU by flow hash: one flow stays on one CPU, and so on one worker; \
             the spread needs several flows"
                .to_owned(),
        );
    }
    if p.affinity_only {
        notes.push(
            "an interrupt may go to several CPUs and the kernel does not say which one takes it \
             (no effective affinity): the interrupt controller often picks one of them"
                .to_owned(),
        );
    }
    let foreign: Vec<usize> = p
        .cpus
        .iter()
        .filter(|&cpu| !workers.contains(&(cpu as u32)))
        .collect();
    if !foreign.is_empty() {
        notes.push(format!(
            "cpus {} process packets but run no worker: their packets still reach a worker, \
             written into its ring from another CPU",
            cpu_list(foreign)
        ));
    }
    let mut level = Level::Good;
    if !p.on_sender_cpu.is_empty() {
        level = Level::Warning;
        notes.push(format!(
            "queues {} have neither RPS nor an interrupt: their packets reach the worker of the \
             sender's CPU",
            queue_list(&p.on_sender_cpu)
        ));
    }
    let summary = if reached.len() == 1 {
        level = Level::Bad;
        let (worker, _) = reached.iter().next().expect("one worker is reached");
        format!(
            "{processed}, which fanout cpu maps all to the worker on cpu {worker}: {}",
            others_get_nothing(n - 1)
        )
    } else if !idle.is_empty() {
        level = Level::Warning;
        format!(
            "{processed}, which reach only the workers on cpus {}; the workers on cpus {} get \
             nothing",
            cpu_list(reached.keys().map(|&cpu| cpu as usize)),
            cpu_list(idle.iter().map(|&cpu| cpu as usize))
        )
    } else {
        let most = reached.values().map(Vec::len).max().unwrap_or(0);
        let least = reached.values().map(Vec::len).min().unwrap_or(0);
        if most == least {
            format!("{processed}, which fanout cpu maps evenly onto all {n} workers (cpus {all})")
        } else {
            level = level.max(Level::Warning);
            let shares: Vec<String> = reached
                .iter()
                .map(|(worker, cpus)| format!("cpu {worker} gets cpus {}", cpu_list(cpus.clone())))
                .collect();
            format!(
                "{processed}: every worker gets traffic, but unevenly ({})",
                shares.join("; ")
            )
        }
    };
    let mut advice = Vec::new();
    if level != Level::Good {
        if p.active.len() == 1 && !p.by_rps {
            advice.push(rps_advice);
        } else if p.by_rps {
            advice.push(format!(
                "set the queues' RPS masks to the workers' CPUs (echo {} > \
                 /sys/class/net/{}/queues/rx-N/rps_cpus), or use --fanout hash",
                mask_of(workers),
                report.interface
            ));
        } else {
            advice.push(format!(
                "spread the queues' interrupts over the workers' CPUs (irqbalance, or \
                 /proc/irq/N/smp_affinity_list), or set RPS masks to {}, or use --fanout hash",
                mask_of(workers)
            ));
        }
    }
    Verdict {
        level,
        summary,
        advice,
        notes,
        workers_reached: Some(reached.keys().copied().collect()),
    }
}

fn by_queue(report: &SteeringReport, p: &Processing, workers: &[u32]) -> Verdict {
    let n = workers.len();
    let reached: BTreeSet<u32> = p.active.iter().map(|&queue| workers[queue % n]).collect();
    let mut notes = Vec::new();
    if report.irqs.is_empty() {
        notes.push(
            "a virtual device may not record the receive queue, which puts every packet on the \
             first worker"
                .to_owned(),
        );
    }
    let (level, summary) = if reached.len() == 1 {
        (
            Level::Bad,
            format!(
                "{} RX queue(s) in use: fanout qm maps them all to the worker on cpu {}; {}",
                p.active.len(),
                workers[p.active.first().copied().unwrap_or(0) % n],
                others_get_nothing(n - 1)
            ),
        )
    } else if reached.len() < n {
        (
            Level::Warning,
            format!(
                "{} RX queues in use: fanout qm reaches only the workers on cpus {}",
                p.active.len(),
                cpu_list(reached.iter().map(|&cpu| cpu as usize))
            ),
        )
    } else {
        (
            Level::Good,
            format!(
                "{} RX queues in use: fanout qm maps them onto all {n} workers",
                p.active.len()
            ),
        )
    };
    Verdict {
        level,
        advice: if level == Level::Good {
            Vec::new()
        } else {
            vec!["use --fanout hash, or --fanout cpu with the queues spread over the workers' CPUs (or --rps auto)".into()]
        },
        summary,
        notes,
        workers_reached: Some(reached.into_iter().collect()),
    }
}

/// A note for modes that ignore the CPU, when the kernel's own receive work sits on one CPU.
fn single_cpu_note(report: &SteeringReport, p: &Processing) -> Option<String> {
    let one_cpu =
        p.cpus.len() == 1 && p.on_sender_cpu.is_empty() || p.cpus.is_empty() && p.active.len() <= 1;
    one_cpu.then(|| {
        format!(
            "the kernel processes every packet of {} on one CPU before the fanout, which may \
             bound the rate; --rps auto spreads that work too",
            report.interface
        )
    })
}

fn processing(report: &SteeringReport) -> Processing {
    let used: Option<BTreeSet<usize>> = match &report.rss {
        RssIndirection::Table(table) if !table.is_empty() => {
            Some(table.iter().map(|&queue| queue as usize).collect())
        }
        _ => None,
    };
    let active: Vec<usize> = report
        .rx_queues
        .iter()
        .map(|queue| queue.index)
        .filter(|index| used.as_ref().is_none_or(|used| used.contains(index)))
        .collect();
    let mut p = Processing {
        cpus: CpuSet::new(),
        by_rps: false,
        by_irq: false,
        affinity_only: false,
        on_sender_cpu: Vec::new(),
        active,
    };
    let mut plain = Vec::new();
    for queue in report
        .rx_queues
        .iter()
        .filter(|queue| p.active.contains(&queue.index))
    {
        if queue.rps_cpus.is_empty() {
            plain.push(queue.index);
        } else {
            p.by_rps = true;
            for cpu in queue.rps_cpus.iter() {
                p.cpus.insert(cpu);
            }
        }
    }
    if plain.is_empty() {
        return p;
    }
    // Interrupts that carry received packets, when their names tell; else all of them.
    let receive: Vec<&Irq> = report.irqs.iter().filter(|irq| carries_rx(irq)).collect();
    let irqs: Vec<&Irq> = if receive.is_empty() {
        report.irqs.iter().collect()
    } else {
        receive
    };
    for irq in irqs {
        let cpus = match (&irq.effective_affinity, &irq.affinity) {
            (Some(effective), _) if !effective.is_empty() => effective,
            (_, Some(allowed)) => {
                p.affinity_only |= allowed.len() > 1;
                allowed
            }
            _ => continue,
        };
        p.by_irq = true;
        for cpu in cpus.iter() {
            p.cpus.insert(cpu);
        }
    }
    if !p.by_irq {
        p.on_sender_cpu = plain;
    }
    p
}

/// Whether an interrupt's handler names suggest it carries received packets (`eth0-TxRx-0`,
/// `eth0-rx-1`, `virtio0-input.0`, `mlx5_comp3`), as opposed to link or transmit interrupts.
fn carries_rx(irq: &Irq) -> bool {
    let text = irq.description.to_ascii_lowercase();
    ["rx", "input", "comp"]
        .iter()
        .any(|token| text.contains(token))
}

fn others_get_nothing(others: usize) -> String {
    match others {
        1 => "the other worker gets nothing".into(),
        n => format!("the other {n} workers get nothing"),
    }
}

fn cpu_list(cpus: impl IntoIterator<Item = usize>) -> String {
    let set: CpuSet = cpus.into_iter().collect();
    set.to_string()
}

fn mask_of(workers: &[u32]) -> String {
    let set: CpuSet = workers.iter().map(|&cpu| cpu as usize).collect();
    set.to_mask()
}

fn queue_list(queues: &[usize]) -> String {
    queues
        .iter()
        .map(|queue| format!("rx-{queue}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
