//! The supervisor's state while the relay runs, and every transition of it.
//!
//! [`World`] holds the rules (with their generation and state file), the inputs' rings and
//! memberships, the worker slots and what is in flight (changes waiting for confirmation, a
//! resize). The loop in `supervisor::run` hands each event to [`World::on`] and calls
//! [`World::tick`] when a deadline passes; the methods that change the state live in this
//! module's files, one concern each:
//!
//! - `workers`: starting worker processes, their messages (confirmations, counters, drift),
//!   their exits;
//! - `changes`: control requests, from validation to the answer; rule changes with their
//!   confirmation; reloads;
//! - `resize`: `ctl workers set` and what `workers` reports;
//! - `autoscale`: the `[autoscale]` step;
//! - `follow`: netlink events about the interfaces the rules name;
//! - `watchdog`: killing a worker that stopped answering;
//! - `reports`: counters, rates and the summary.
//!
//! Decisions that need no state of their own (which worker serves which member, what a resize
//! stops, what a worker's report calls for, when to autoscale) are pure functions in
//! `supervisor::decide`, tested there.

mod autoscale;
mod changes;
mod follow;
mod members;
mod reports;
mod resize;
mod watchdog;
mod workers;

use super::consume::Consume;
use super::decide::autoscale::Autoscaler;
use super::events::Event;
use super::inflight::{PendingChange, Resize};
use super::inputs::Inputs;
use super::life::Then;
use super::lifecycle::Lifecycle;
use super::rates::RateWindow;
use super::state::RuleState;
use super::summary::RunSummary;
use super::workers::{WorkerEvent, WorkerSlot};
use crate::config::{FanoutSetting, PlacementSetting, RingSection};
use crate::notices::Notices;
use crate::protocol::FromWorker;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// How often workers are asked for their counters (and their table checksum).
const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// How long a worker may take to stop when the relay stops before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Whether the loop goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Wait for the next event.
    Continue,
    /// Stop the workers and return.
    Stop,
}

/// What the supervisor holds while the relay runs.
#[derive(Debug)]
pub(super) struct World {
    /// Every worker slot ever made, by index (a retired one keeps its index and counters).
    pub(super) slots: Vec<WorkerSlot>,
    /// By class, the slot serving each fanout member (the same member index on every input).
    pub(super) owners: Vec<Vec<usize>>,
    /// The class names by index: the default class (`None`), then the `[[class]]`es.
    pub(super) classes: Vec<Option<String>>,
    /// The rules, running and waiting, with their generation and the state file.
    pub(super) state: RuleState,
    /// The configuration file, which a reload reads again.
    pub(super) config_path: PathBuf,
    /// The ring settings every worker gets.
    pub(super) ring: RingSection,
    /// The user workers become (`None`: the supervisor's).
    pub(super) worker_user: Option<crate::protocol::WorkerUser>,
    pub(super) fanout: FanoutSetting,
    pub(super) placement: PlacementSetting,
    /// The receive rings, fanout groups, filters and memberships of the rules' inputs.
    pub(super) inputs: Inputs,
    /// With `consume_input`, the ingress filters that drop relayed input after the rings.
    pub(super) consume: Consume,
    /// Applied changes waiting for the workers' confirmations, oldest first.
    pub(super) pending: Vec<PendingChange>,
    /// A change of the worker set in progress.
    pub(super) resize: Option<Resize>,
    /// The CPUs the supervisor may use, as it started; it moves off the workers' ones.
    pub(super) supervisor_cpus: Option<fanout_core::cpu::CpuSet>,
    /// With `[autoscale]`, what decides when the worker set grows or shrinks.
    pub(super) autoscaler: Option<Autoscaler>,
    /// Where worker reader threads send their events, once the loop runs.
    pub(super) worker_events: Option<Sender<WorkerEvent>>,
    /// The two latest counter samples, for rates.
    pub(super) rates: RateWindow,
    /// Rate-limited log lines about workers, and the ring drop detection.
    pub(super) notices: Notices,
    /// Names of the rules the configuration file had when it was last read (at start, or by
    /// the last reload that was applied): a reload tells the rules it removes that were in
    /// neither file, because they existed only at run time.
    pub(super) file_rules: BTreeSet<String>,
    /// The interfaces the rules name, as netlink tells of them.
    pub(super) lifecycle: Lifecycle,
    /// Since when the rules that have counters but no longer run were found gone.
    pub(super) removed: super::removed::RemovedRules,
    /// When the workers are next asked for their counters (none: at the first tick).
    pub(super) next_poll: Option<Instant>,
}

impl World {
    /// Starts every worker and the rules whose interfaces appeared since the plan was made.
    pub(super) fn start(&mut self, events: Sender<WorkerEvent>) {
        self.worker_events = Some(events);
        self.next_poll = Some(Instant::now() + COUNTER_INTERVAL);
        self.log_waiting();
        self.start_due(Instant::now());
        self.activate_waiting();
    }

    /// Handles one event.
    pub(super) fn on(&mut self, event: Event) -> Flow {
        match event {
            Event::Signal(Signal::SIGHUP) if self.resize.is_some() => {
                log::warn!(
                    "SIGHUP: not reloading {} while the worker set changes; send it again once \
                     `workers set` has answered",
                    self.config_path.display()
                );
            }
            Event::Signal(Signal::SIGHUP) => {
                log::info!("SIGHUP: reloading {}", self.config_path.display());
                self.reload(None);
            }
            Event::Signal(signal) => {
                log::info!("{signal}: stopping workers");
                return Flow::Stop;
            }
            Event::Worker(WorkerEvent::Message { slot, pid, message }) => {
                self.message(slot, pid, message)
            }
            Event::Worker(WorkerEvent::Gone { slot, pid, error }) => self.gone(slot, pid, error),
            Event::Control(pending) => self.control(pending),
            Event::Link(event) => self.link(event),
        }
        Flow::Continue
    }

    /// Does what is due at `now`: the once-a-second counters poll (with the autoscale step and
    /// the ring drop notices), worker starts, the watchdog, changes and a resize that waited
    /// too long.
    pub(super) fn tick(&mut self, now: Instant) {
        if self.next_poll.is_none_or(|at| now >= at) {
            self.sample_rates();
            self.poll_counters(now);
            self.forget_removed_rules(now);
            self.autoscale(now);
            self.notices.tick(
                now,
                self.slots.iter().map(|slot| {
                    let counters = slot.counters();
                    (slot.cpu, counters.kernel_drops, counters.freezes)
                }),
            );
            self.next_poll = Some(now + COUNTER_INTERVAL);
        }
        self.start_due(now);
        self.watch(now);
        self.expire_changes(now);
        self.advance_resize();
    }

    /// Drops the counters of rules that have not run for [`super::removed::KEPT_FOR`].
    fn forget_removed_rules(&mut self, now: Instant) {
        let counted: BTreeSet<&str> = self
            .slots
            .iter()
            .flat_map(|slot| slot.retired_rules())
            .collect();
        let gone = counted.into_iter().filter(|name| {
            self.state.set().get(name).is_none() && !self.state.waiting().contains_key(*name)
        });
        let expired = self.removed.expired(now, gone);
        if expired.is_empty() {
            return;
        }
        for slot in &mut self.slots {
            slot.forget_rules(&expired);
        }
        log::debug!(
            "forgot the counters of {} rule(s) removed {} s ago or more",
            expired.len(),
            super::removed::KEPT_FOR.as_secs()
        );
    }

    /// When [`World::tick`] next has something to do.
    pub(super) fn next_deadline(&self) -> Instant {
        self.slots
            .iter()
            .filter_map(|slot| slot.life.start_due())
            .chain(self.change_deadlines())
            .chain(self.watchdog_deadlines())
            .chain(self.resize_deadline())
            .chain(self.next_poll)
            .min()
            .unwrap_or_else(|| Instant::now() + COUNTER_INTERVAL)
    }

    /// Asks every worker to stop, collects their final counters, and kills any that lingers.
    pub(super) fn stop(&mut self, events: &Receiver<Event>) {
        for slot in &mut self.slots {
            slot.stop(Then::End);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.slots.iter().any(|slot| slot.run().is_some()) {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            match events.recv_timeout(wait) {
                Ok(Event::Worker(WorkerEvent::Message {
                    slot,
                    pid,
                    message: FromWorker::Counters(counters),
                })) => {
                    if let Some(worker) = self.slots.get_mut(slot) {
                        worker.take_counters(pid, *counters);
                    }
                }
                Ok(Event::Worker(WorkerEvent::Gone { slot, pid, .. })) => {
                    if let Some(worker) = self.slots.get_mut(slot)
                        && worker.pid() == Some(pid)
                    {
                        worker.reap();
                    }
                }
                Ok(Event::Control(pending)) => crate::control::respond(
                    &pending.reply,
                    crate::control::proto::Response::refused("the relay is stopping"),
                ),
                Ok(Event::Worker(_) | Event::Signal(_) | Event::Link(_))
                | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for slot in &mut self.slots {
            if slot.run().is_some() {
                log::warn!("worker on cpu {} did not stop in time: killed", slot.cpu);
                slot.reap();
            }
        }
    }

    /// Whether every worker in the worker set serves the current table.
    pub(super) fn serves(&self) -> bool {
        let generation = self.state.generation();
        self.active_slots()
            .all(|slot| slot.life.is_ready() && slot.acked_generation() >= generation)
    }

    /// One line on what the relay does, for the service manager.
    pub(super) fn status(&self) -> String {
        format!(
            "relaying {} rule(s) ({} waiting) on {} worker(s), generation {}",
            self.state.set().len(),
            self.state.waiting().len(),
            self.active_slots().count(),
            self.state.generation()
        )
    }

    /// The counters of the run, per worker slot.
    pub(super) fn summary(&self) -> RunSummary {
        let workers: Vec<_> = self
            .slots
            .iter()
            .map(|slot| (slot.cpu, slot.counters(), slot.restarts))
            .collect();
        let removed = workers
            .iter()
            .flat_map(|(_, counters, _)| counters.rules.keys())
            .filter(|name| self.state.set().get(name.as_str()).is_none())
            .cloned()
            .collect();
        RunSummary { workers, removed }
    }
}

impl World {
    /// The slots in the worker set, in slot order.
    pub(super) fn active_slots(&self) -> impl Iterator<Item = &WorkerSlot> + '_ {
        self.slots.iter().filter(|slot| slot.life.in_worker_set())
    }

    /// The slots of class `class` in the worker set, in slot order.
    pub(super) fn class_slots(&self, class: usize) -> impl Iterator<Item = &WorkerSlot> + '_ {
        self.active_slots().filter(move |slot| slot.class == class)
    }
}
