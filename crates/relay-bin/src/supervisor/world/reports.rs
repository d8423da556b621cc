//! Rates: counters sampled once per counter interval, and the difference between two samples.

use super::World;
use crate::control::proto::{Rates, RuleStats, StatsReport, WorkerReport, WorkerStats};
use crate::counters::WorkerCounters;
use std::collections::BTreeMap;
use std::time::Instant;

impl World {
    /// Samples the counters for the rates (called once per counter interval).
    pub(super) fn sample_rates(&mut self) {
        let counters = self.slots.iter().map(|slot| slot.counters()).collect();
        self.rates.sample(Instant::now(), counters);
        self.log_limited_rules();
    }

    /// Says, once per counter interval, which rules' storm guards dropped datagrams in it.
    fn log_limited_rules(&self) {
        let (Some((then, before)), Some((now, after))) = (&self.rates.previous, &self.rates.latest)
        else {
            return;
        };
        let (before, after) = (limited_by_rule(before), limited_by_rule(after));
        let seconds = now.duration_since(*then).as_secs_f64();
        for (name, total) in after {
            let dropped = total.saturating_sub(before.get(name).copied().unwrap_or(0));
            if dropped == 0 {
                continue;
            }
            let limits = self
                .state
                .set()
                .rules()
                .iter()
                .find(|rule| rule.name == name)
                .map(|rule| match (rule.max_pps, rule.max_bps) {
                    (Some(pps), Some(bps)) => format!("max_pps {pps}, max_bps {bps}"),
                    (Some(pps), None) => format!("max_pps {pps}"),
                    (None, Some(bps)) => format!("max_bps {bps}"),
                    (None, None) => "no limit now".to_owned(),
                })
                .unwrap_or_else(|| "removed".to_owned());
            log::warn!(
                "rule {name:?} is limited ({limits}): its storm guard dropped {dropped} \
                 datagram(s) in the last {seconds:.1} s"
            );
        }
    }

    /// Counters per rule and per worker, with rates over the last interval and each worker's
    /// share of the packets received in it.
    pub(super) fn stats_report(&self) -> StatsReport {
        let current: Vec<WorkerCounters> = self.slots.iter().map(|slot| slot.counters()).collect();
        let (interval, before) = match (&self.rates.previous, &self.rates.latest) {
            (Some((then, before)), Some((now, _))) => {
                (now.duration_since(*then).as_secs_f64(), Some(before))
            }
            _ => (0.0, None),
        };
        let after: Vec<WorkerCounters> = match &self.rates.latest {
            Some((_, latest)) => latest.clone(),
            None => current.clone(),
        };
        let after = after.as_slice();
        let per_second = |delta: u64| {
            if interval > 0.0 {
                delta as f64 / interval
            } else {
                0.0
            }
        };
        let mut rules: BTreeMap<String, RuleStats> = BTreeMap::new();
        for counters in &current {
            for (name, count) in &counters.rules {
                let entry = rules.entry(name.clone()).or_default();
                entry.packets += count.packets;
                entry.bytes += count.bytes;
                if let Some(stream) = &count.stream {
                    entry.stream.get_or_insert_default().add(stream);
                }
            }
        }
        for rule in self.state.set().rules() {
            rules.entry(rule.name.clone()).or_default();
        }
        let rule_total = |sample: &[WorkerCounters], name: &str| -> (u64, u64) {
            sample
                .iter()
                .filter_map(|counters| counters.rules.get(name))
                .fold((0, 0), |(p, b), count| (p + count.packets, b + count.bytes))
        };
        for (name, stats) in &mut rules {
            if let Some(before) = before {
                let (p1, b1) = rule_total(after, name);
                let (p0, b0) = rule_total(before, name);
                stats.rates = Rates {
                    packets_per_second: per_second(p1.saturating_sub(p0)),
                    bits_per_second: per_second(b1.saturating_sub(b0) * 8),
                };
            }
        }
        let received_in_interval: Vec<u64> = match before {
            Some(before) => after
                .iter()
                .zip(before)
                .map(|(a, b)| a.received.saturating_sub(b.received))
                .collect(),
            None => vec![0; after.len()],
        };
        let total: u64 = received_in_interval.iter().sum();
        let workers = current
            .into_iter()
            .enumerate()
            .map(|(index, counters)| {
                let delta = received_in_interval.get(index).copied().unwrap_or(0);
                let forwarded = match before {
                    Some(before) => after
                        .get(index)
                        .zip(before.get(index))
                        .map_or(0, |(a, b)| a.forwarded.saturating_sub(b.forwarded)),
                    None => 0,
                };
                WorkerStats {
                    cpu: counters.cpu,
                    rates: Rates {
                        packets_per_second: per_second(delta),
                        bits_per_second: per_second(forwarded),
                    },
                    share: if total > 0 {
                        delta as f64 / total as f64
                    } else {
                        0.0
                    },
                    counters,
                }
            })
            .collect();
        StatsReport {
            interval_seconds: interval,
            rules,
            workers,
        }
    }

    /// What `workers` reports: the slots in the worker set.
    pub(super) fn worker_reports(&self) -> Vec<WorkerReport> {
        self.slots
            .iter()
            .filter(|slot| slot.life.in_worker_set())
            .map(|slot| {
                let counters = slot.counters();
                let serving = slot.life.is_ready();
                WorkerReport {
                    cpu: slot.cpu,
                    pid: slot.pid(),
                    state: slot.life.name().into(),
                    restarts: slot.restarts,
                    restart_reasons: slot.restart_reasons.by_name(),
                    generation: slot.acked_generation(),
                    drift_repairs: slot.drift_repairs,
                    received: counters.received,
                    forwarded: counters.forwarded,
                    members: slot.members(),
                    unserved_rules: if serving {
                        0
                    } else {
                        self.shard_rules(slot.slot)
                    },
                    outages: slot.outages,
                    down_ms: slot.down_for().as_millis() as u64,
                    class: self.classes.get(slot.class).cloned().flatten(),
                }
            })
            .collect()
    }
}

/// The storm guards' dropped datagrams in `sample`, by rule, summed over workers.
fn limited_by_rule(sample: &[WorkerCounters]) -> BTreeMap<&str, u64> {
    let mut totals = BTreeMap::new();
    for counters in sample {
        for (name, count) in &counters.rules {
            if let Some(stream) = &count.stream {
                *totals.entry(name.as_str()).or_default() += stream.limited_packets;
            }
        }
    }
    totals
}
