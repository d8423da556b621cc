//! Worker processes as the state sees them: starts, what their messages call for, their exits,
//! and which rules each one holds.

use super::World;
use crate::config::PlacementSetting;
use crate::protocol::{FromWorker, ShardEntry, ToWorker, WorkerStart};
use crate::ratelimit::Kind;
use crate::rings;
use crate::supervisor::decide::reports::{Sent, TableReport, TableVerdict, judge_table};
use crate::supervisor::restarts::RestartReason;
use relay_rules::Rule;
use relay_rules::stream::Share;
use std::time::Instant;

impl World {
    /// Starts every slot whose start is due at `now`, counting the restarts among them.
    pub(super) fn start_due(&mut self, now: Instant) {
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&index| {
                self.slots[index]
                    .life
                    .start_due()
                    .is_some_and(|at| at <= now)
            })
            .collect();
        for index in due {
            self.slots[index].count_restart();
            self.spawn(index);
        }
    }

    /// Starts slot `index`'s worker with the current rule set.
    pub(super) fn spawn(&mut self, index: usize) {
        let Some(events) = self.worker_events.clone() else {
            return;
        };
        let start = self.start_message(index);
        let slot = &mut self.slots[index];
        if !slot.life.may_start() {
            return;
        }
        let restart = slot.life.restart_reason();
        match slot.spawn(&start, events) {
            Ok(()) => {
                if restart.is_some()
                    && let Some(held) = self.notices.allow(Kind::Restart, slot.cpu)
                {
                    log::warn!(
                        "worker on cpu {} restarted (restart #{}, {}, pid {}){held}",
                        slot.cpu,
                        slot.restarts,
                        slot.last_restart.unwrap_or(RestartReason::Exited).as_str(),
                        slot.pid().unwrap_or(0)
                    );
                }
            }
            Err(error) => {
                if let Some(held) = self.notices.allow(Kind::StartFailure, slot.cpu) {
                    log::error!("worker on cpu {}: cannot start: {error}{held}", slot.cpu);
                }
            }
        }
    }

    /// Asks every serving worker for its counters, unless it still owes the previous answer:
    /// one request in flight per worker is enough for the watchdog to time, and a worker that
    /// is slow to answer is not sent a pile of them.
    pub(super) fn poll_counters(&mut self, now: Instant) {
        for slot in &mut self.slots {
            let due =
                slot.life.is_serving() && slot.run().is_some_and(|run| run.asked_at.is_none());
            if due
                && slot.tell(&ToWorker::Counters).is_ok()
                && let Some(run) = slot.life.run_mut()
            {
                run.asked_at = Some(now);
            }
        }
    }

    /// The worker process `pid` of slot `index` went away.
    pub(super) fn gone(&mut self, index: usize, pid: u32, error: Option<String>) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.pid() != Some(pid) {
            return;
        }
        let counters = slot.counters();
        let Some((unexpected, status)) = slot.reap() else {
            return;
        };
        if let Some(held) = self.notices.allow(Kind::Exit, slot.cpu) {
            let next = match slot.life.start_due() {
                Some(at) => format!(
                    "restarting in {} ms",
                    at.saturating_duration_since(Instant::now()).as_millis()
                ),
                None => format!("not restarted: {}", slot.life.name()),
            };
            log::warn!(
                "worker on cpu {} (pid {pid}) exited ({}){}; {next} (restarts so far: {}; \
                 received {}, forwarded {}){held}",
                slot.cpu,
                status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string()),
                error.map(|e| format!(": {e}")).unwrap_or_default(),
                slot.restarts,
                counters.received,
                counters.forwarded
            );
        }
        if unexpected {
            self.report_outage(index);
        }
        self.settle_changes();
        self.advance_resize();
    }

    /// A message from the worker process `pid` of slot `index`.
    pub(super) fn message(&mut self, index: usize, pid: u32, message: FromWorker) {
        let generation = self.state.generation();
        let expected = self.expected_checksum(index);
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let cpu = slot.cpu;
        let Some(run) = slot.run_of(pid) else {
            return;
        };
        run.heard_at = Instant::now();
        let report = match message {
            FromWorker::Ready {
                generation,
                checksum,
            } => {
                log::debug!("worker on cpu {cpu} (pid {pid}) ready with generation {generation}");
                slot.confirmed(pid);
                TableReport {
                    generation,
                    checksum,
                }
            }
            FromWorker::Applied {
                generation,
                checksum,
            } => TableReport {
                generation,
                checksum,
            },
            FromWorker::Counters(counters) => {
                run.asked_at = None;
                let report = TableReport {
                    generation: counters.table_generation,
                    checksum: counters.table_checksum,
                };
                slot.take_counters(pid, *counters);
                report
            }
            FromWorker::Failed { error } => {
                if let Some(held) = self.notices.allow(Kind::StartFailure, cpu) {
                    log::error!("worker on cpu {cpu} failed to start: {error}{held}");
                }
                return;
            }
        };
        let sent = Sent {
            serving: slot.life.is_serving(),
            resyncing: slot.life.is_serving() && !slot.life.is_ready(),
            generation: slot.run().map_or(0, |run| run.sent_generation),
        };
        match judge_table(generation, expected, report, sent) {
            TableVerdict::Confirmed => {
                if let Some(run) = slot.life.run_mut() {
                    run.acked_generation = generation;
                }
                slot.life.set_resyncing(false);
            }
            TableVerdict::Drifted => {
                slot.drift_repairs += 1;
                if let Some(held) = self.notices.allow(Kind::Drift, cpu) {
                    log::warn!(
                        "worker on cpu {cpu}: table of generation {generation} has checksum \
                         {:#x}, expected {expected:#x}: drift, resyncing (repair #{}){held}",
                        report.checksum,
                        slot.drift_repairs
                    );
                }
                self.resync(index, generation);
            }
            TableVerdict::Behind => {
                self.slots[index].life.set_resyncing(true);
                self.resync(index, generation);
            }
            TableVerdict::InFlight => {}
        }
        self.settle_changes();
        self.advance_resize();
    }

    /// Sends slot `index`'s worker its whole table of `generation`, which it confirms anew.
    pub(super) fn resync(&mut self, index: usize, generation: u64) {
        let rules = self.slot_entries(index);
        let slot = &mut self.slots[index];
        // Everything it needs goes over again: a resync also repairs outputs it lost.
        let interfaces = self.state.set().interfaces();
        if let Err(error) = slot.hand_outputs(interfaces, &self.ring, |handed| {
            handed.reset(rules.iter(), interfaces)
        }) {
            log::debug!("worker on cpu {}: outputs not sent: {error}", slot.cpu);
        }
        if let Some(run) = slot.life.run_mut() {
            run.acked_generation = 0;
            run.sent_generation = generation;
        }
        // A worker that cannot be told is going away (`tell` kills a stuck one); its
        // successor starts with the whole table anyway.
        let table = ToWorker::Table {
            generation: self.state.generation(),
            rules,
            interfaces: interfaces.iter().cloned().collect(),
        };
        if let Err(error) = slot.tell(&table) {
            log::debug!("worker on cpu {}: table not sent: {error}", slot.cpu);
        }
    }

    fn start_message(&self, slot: usize) -> WorkerStart {
        WorkerStart {
            cpu: self.slots[slot].cpu,
            generation: self.state.generation(),
            shard: self.shard_of(slot),
            guard_share: match self.placement {
                PlacementSetting::Shard => Share::WHOLE,
                PlacementSetting::Replicate => Share {
                    served: u32::try_from(self.slots[slot].members().len()).unwrap_or(u32::MAX),
                    of: self.inputs.members(self.slots[slot].class),
                },
            },
            rules: self.slot_entries(slot),
            interfaces: self.interface_entries(),
            ring: self.ring,
            user: self.worker_user.clone(),
        }
    }

    /// Whether slot `slot`'s worker holds `rule`, given the shards it serves (`shard_of`): the
    /// rules of its class, and under shard placement only those of its shards.
    pub(super) fn holds(&self, slot: usize, rule: &Rule, shard: Option<&ShardEntry>) -> bool {
        self.inputs.class_of(rule) == self.slots[slot].class && rings::in_shard(rule, shard)
    }

    /// The rules slot `slot`'s worker holds.
    pub(super) fn slot_rules(&self, slot: usize) -> impl Iterator<Item = &Rule> + '_ {
        let shard = self.shard_of(slot);
        self.state
            .set()
            .rules()
            .iter()
            .filter(move |rule| self.holds(slot, rule, shard.as_ref()))
    }

    /// The rules slot `slot`'s worker holds, as it receives them.
    fn slot_entries(&self, slot: usize) -> Vec<Rule> {
        self.slot_rules(slot).cloned().collect()
    }

    /// The shards slot `slot`'s worker holds under shard placement: the fanout members of its
    /// class whose rings it serves (the steering program sends member k the packets of shard k).
    pub(super) fn shard_of(&self, slot: usize) -> Option<ShardEntry> {
        (self.placement == PlacementSetting::Shard).then(|| ShardEntry {
            indices: self.slots[slot].members(),
            count: self.inputs.members(self.slots[slot].class),
        })
    }

    /// The checksum slot `slot`'s table must have at the current generation.
    fn expected_checksum(&self, slot: usize) -> u64 {
        if self.classes.len() == 1 && self.placement == PlacementSetting::Replicate {
            return self.state.set().checksum();
        }
        relay_rules::table::checksum_of(self.slot_rules(slot))
    }

    fn interface_entries(&self) -> Vec<relay_rules::InterfaceFacts> {
        self.state.set().interfaces().iter().cloned().collect()
    }

    /// Rules of the shards slot `slot` serves, under shard placement (0 otherwise).
    pub(super) fn shard_rules(&self, slot: usize) -> u64 {
        if self.placement == PlacementSetting::Shard {
            self.slot_rules(slot).count() as u64
        } else {
            0
        }
    }

    /// Logs what a worker's death leaves unserved under shard placement.
    pub(super) fn report_outage(&self, slot: usize) {
        if self.placement != PlacementSetting::Shard {
            return;
        }
        let worker = &self.slots[slot];
        log::warn!(
            "shards {:?} of {} ({} rules) are not served until the worker on cpu {} is back: \
             their packets wait in its rings and are dropped by the kernel once those are full",
            worker.members(),
            self.inputs.members(worker.class),
            self.shard_rules(slot),
            worker.cpu
        );
    }
}
