//! The supervisor: sets up what outlives workers, starts one worker per CPU, keeps them running,
//! and answers the control socket.
//!
//! The supervisor owns everything whose identity must survive a worker's death: the receive ring
//! sockets (and so each fanout group's membership order, which decides which CPU's packets reach
//! which ring), the IGMP memberships, the sockets that keep unicast inputs from being answered
//! with ICMP port-unreachable, and the authoritative rule set with its generation. Workers are
//! processes of the same executable; each receives its rings over `SCM_RIGHTS` and its rules as a
//! message, builds its table and says `Ready` with the table's checksum before it reads a single
//! frame. Until then its ring fills and waits, so no packet is ever looked up in a partial table.
//!
//! A worker serves one or more fanout members; the members never change, which worker serves
//! them may (`ctl workers set`, `[autoscale]`: see `scaling`), and under shard placement the
//! members a worker serves are the shards whose rules it holds.
//!
//! With `[[class]]`es, each class (the default one first) has its own workers, its own fanout
//! group on each input interface and its own member numbering: a worker serves members of its
//! class's groups only and holds only its class's rules (see `inputs` for the filters that keep
//! each class's frames in its own rings).
//!
//! Everything happens on one thread, in [`run`]'s loop: worker messages, signals and control
//! requests arrive over one channel and are handled one at a time, so there are no locks.

mod autoscale;
mod changes;
mod follow;
mod inputs;
mod lifecycle;
mod links;
mod restarts;
mod scaling;
mod setup;
mod state;
mod stats;
mod watchdog;
mod workers;

pub use restarts::{RestartCounts, RestartReason};
pub use setup::{Overrides, Plan, SetupError};
pub use state::{Change, Problem, StateError, write_atomically};

/// The rules and settings a start would restore from the state file `path` and its journal for
/// the configuration whose text is `config_text` ([`Plan::load`] with its state), recovering
/// from damage as a start does (set aside, logged, written afresh). Public so that the state
/// file and journal readers can be fuzzed as a start uses them.
pub fn restore_state(
    path: &std::path::Path,
    config_text: &str,
) -> Result<Option<crate::config::ConfigFile>, StateError> {
    state::restore(path, config_text)
}
pub use workers::{WorkerEvent, WorkerSlot};

use crate::config::PlacementSetting;
use crate::control::{ControlServer, Pending};
use crate::counters::{self, WorkerCounters};
use crate::protocol::{FromWorker, ShardEntry, ToWorker, WorkerStart};
use crate::ratelimit::Kind;
use crate::rings;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use relay_rules::Rule;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// How often workers are asked for their counters (and their table checksum).
const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// How long a worker may take to stop before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration, interfaces or rings could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The control socket could not be opened.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// The metrics listener could not be opened.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// A system call of the supervisor itself failed.
    #[error("{what}: {source}")]
    System {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// How the supervisor reports while it runs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print the counters table to standard error this often.
    pub stats_every: Option<Duration>,
}

/// Everything the supervisor loop receives.
enum Event {
    Worker(WorkerEvent),
    Signal(Signal),
    Control(Pending),
    Link(links::LinkEvent),
}

/// The counters of the run, per worker slot, when it ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// (CPU, counters, restarts) per worker.
    pub workers: Vec<(u32, WorkerCounters, u32)>,
    /// Rules that were counted but are no longer running (removed at run time): their counters
    /// stay in the summary, marked.
    pub removed: std::collections::BTreeSet<String>,
}

impl RunSummary {
    /// The human summary table.
    pub fn render(&self) -> String {
        counters::summary_marking(&self.workers, &self.removed)
    }
}

/// Runs the relay described by `plan` until SIGINT or SIGTERM; returns the final counters.
///
/// The caller must call this from the main thread before starting other threads: the signal
/// mask set here is inherited by the threads started afterwards, and a worker's parent-death
/// signal is tied to the thread that spawned it.
pub fn run(plan: Plan, options: &RunOptions) -> Result<RunSummary, RunError> {
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(signal);
    }
    mask.thread_block().map_err(|errno| RunError::System {
        what: "blocking SIGINT, SIGTERM and SIGHUP",
        source: errno.into(),
    })?;
    let signals = SignalFd::new(&mask).map_err(|errno| RunError::System {
        what: "signalfd",
        source: errno.into(),
    })?;
    if plan.restored {
        log::info!(
            "restored {} rule(s) from the state file of {}",
            plan.set.len(),
            plan.path.display()
        );
    }
    if plan.config.ring.tx_linear && !fanout_core::TxRingBuilder::linear_supported() {
        log::warn!(
            "ring.tx_linear: this kernel is older than {} (or its release is unreadable), on \
             which transmit rings may send a vnet header as data: they lend their pages instead",
            fanout_core::TxRingBuilder::LINEAR_SINCE
        );
    }
    if plan.config.ring.tx_gso && !fanout_core::TxRingBuilder::segmentation_supported() {
        log::warn!(
            "ring.tx_gso: this kernel is older than {} (or its release is unreadable), which \
             refuses segmented frames: datagrams leave one frame each",
            fanout_core::TxRingBuilder::SEGMENTATION_SINCE
        );
    }
    if plan.config.ring.busy_poll_us > 0 {
        warn_shared_spinning_cpus(&plan.worker_cpus());
    }
    let control_path = plan.config.relay.control_socket_for(&plan.path);
    // Dropped last: the masks go back once the workers are gone, on every way out of here.
    let _rps = crate::steering::RpsFallback::apply(
        plan.config.relay.rps,
        plan.set
            .rules()
            .iter()
            .map(|rule| rule.input.interface.as_str()),
        &plan.worker_cpus(),
    );
    let metrics_addr = plan.config.relay.metrics;
    let mut world = plan.build()?;
    let (event_tx, events) = mpsc::channel::<Event>();
    // Subscribed before the workers start; interfaces that appeared since the plan looked
    // for them are caught up with below.
    links::follow(event_tx.clone(), Event::Link).map_err(|error| RunError::System {
        what: "following interfaces through netlink",
        source: std::io::Error::other(error),
    })?;
    let (worker_tx, control_tx) = start_forwarders(signals, event_tx)?;
    world.worker_events = Some(worker_tx.clone());
    let metrics = metrics_addr
        .map(|addr| crate::metrics::MetricsServer::start(addr, control_tx.clone()))
        .transpose()?;
    let _control = ControlServer::start(&control_path, control_tx)?;
    log::info!("control socket {}", control_path.display());
    if let Some(metrics) = &metrics {
        log::info!("metrics on http://{}/metrics", metrics.local_addr());
    }

    world.log_waiting();
    for index in 0..world.slots.len() {
        world.spawn(index, &worker_tx);
    }
    world.activate_waiting();
    // Parsing the configuration and writing the workers' tables needed many times the rules'
    // memory for a moment (700 MB for 100,000 rules); give it back.
    fanout_core::heap::trim();
    log::info!(
        "relaying with {} rule(s) on {} worker(s) (cpus {:?}), fanout {:?}",
        world.state.set().len(),
        world.slots.len(),
        world.slots.iter().map(|slot| slot.cpu).collect::<Vec<_>>(),
        world.fanout
    );

    let mut next_poll = Instant::now() + COUNTER_INTERVAL;
    let mut next_print = options.stats_every.map(|every| Instant::now() + every);
    loop {
        let now = Instant::now();
        if let (Some(at), Some(every)) = (next_print, options.stats_every)
            && now >= at
        {
            eprint!("{}", world.summary().render());
            next_print = Some(now + every);
        }
        if now >= next_poll {
            world.sample_rates();
            world.poll_counters();
            world.autoscale(now);
            world.notices.tick(
                now,
                world.slots.iter().map(|slot| {
                    let counters = slot.counters();
                    (slot.cpu, counters.kernel_drops, counters.freezes)
                }),
            );
            next_poll = now + COUNTER_INTERVAL;
        }
        let due: Vec<usize> = (0..world.slots.len())
            .filter(|&index| {
                let slot = &world.slots[index];
                slot.process.is_none() && slot.restart_at.is_some_and(|at| at <= now)
            })
            .collect();
        for index in due {
            world.slots[index].count_restart();
            world.spawn(index, &worker_tx);
        }
        world.watch(now);
        world.expire_changes(now);
        world.advance_resize();
        let wait = world
            .slots
            .iter()
            .filter_map(|slot| slot.restart_at)
            .chain(world.change_deadlines())
            .chain(world.watchdog_deadlines())
            .chain(world.resize_deadline())
            .chain([next_poll])
            .chain(next_print)
            .min()
            .map_or(COUNTER_INTERVAL, |at| at.saturating_duration_since(now));
        match events.recv_timeout(wait) {
            Ok(Event::Signal(Signal::SIGHUP)) if world.resize.is_some() => {
                log::warn!(
                    "SIGHUP: not reloading {} while the worker set changes; send it again once                      `workers set` has answered",
                    world.config_path.display()
                );
            }
            Ok(Event::Signal(Signal::SIGHUP)) => {
                log::info!("SIGHUP: reloading {}", world.config_path.display());
                world.reload(None);
            }
            Ok(Event::Signal(signal)) => {
                log::info!("{signal}: stopping workers");
                break;
            }
            Ok(Event::Worker(event)) => world.handle(event),
            Ok(Event::Control(pending)) => world.control(pending),
            Ok(Event::Link(event)) => world.link(event),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    world.stop(&events);
    Ok(world.summary())
}

/// Says which busy-polling workers' CPUs are not isolated from other tasks: a spinning worker
/// never sleeps, so it earns no wake-up priority, and any task that wants its CPU takes it by
/// time slices (hundreds of microseconds added, measured in `bench/README.md`).
fn warn_shared_spinning_cpus(cpus: &[u32]) {
    let isolated = fanout_core::cpu::read_cpu_list("/sys/devices/system/cpu/isolated")
        .unwrap_or_else(|_| fanout_core::cpu::CpuSet::new());
    let shared: Vec<u32> = cpus
        .iter()
        .copied()
        .filter(|&cpu| !isolated.contains(cpu as usize))
        .collect();
    if !shared.is_empty() {
        log::warn!(
            "ring.busy_poll_us: the workers on cpus {shared:?} spin, and those CPUs are not \
             isolated (isolcpus): a task that wants one takes it from its worker by time slices, \
             hundreds of microseconds each, so the worker stops spinning while that lasts and \
             wakes from poll like any other; and under SCHED_FIFO the kernel throttles a worker \
             that spins for most of a second (sched_rt_runtime_us)"
        );
    }
}

/// Starts the threads that turn signals and worker messages into events, and returns where
/// worker reader threads and the control server send theirs.
fn start_forwarders(
    signals: SignalFd,
    events: Sender<Event>,
) -> Result<(Sender<WorkerEvent>, Sender<Pending>), RunError> {
    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map(drop)
            .map_err(|source| RunError::System {
                what: "starting a supervisor thread",
                source,
            })
    };
    let signal_tx = events.clone();
    spawn(
        "signals",
        Box::new(move || {
            while let Ok(Some(info)) = signals.read_signal() {
                if let Ok(signal) = Signal::try_from(info.ssi_signo as i32)
                    && signal_tx.send(Event::Signal(signal)).is_err()
                {
                    return;
                }
            }
        }),
    )?;
    let (worker_tx, worker_events) = mpsc::channel::<WorkerEvent>();
    let worker_event_tx = events.clone();
    spawn(
        "worker-events",
        Box::new(move || {
            for event in worker_events {
                if worker_event_tx.send(Event::Worker(event)).is_err() {
                    return;
                }
            }
        }),
    )?;
    let (control_tx, control_requests) = mpsc::channel::<Pending>();
    spawn(
        "control-events",
        Box::new(move || {
            for pending in control_requests {
                if events.send(Event::Control(pending)).is_err() {
                    return;
                }
            }
        }),
    )?;
    Ok((worker_tx, control_tx))
}

impl setup::World {
    fn summary(&self) -> RunSummary {
        let workers: Vec<(u32, WorkerCounters, u32)> = self
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

    /// Starts slot `index`'s worker now, as a resize does (not counted as a restart).
    pub(super) fn spawn_now(&mut self, index: usize) {
        if let Some(events) = self.worker_events.clone() {
            self.spawn(index, &events);
        }
    }

    /// Starts slot `index`'s worker with the current rule set.
    fn spawn(&mut self, index: usize, events: &Sender<WorkerEvent>) {
        let start = self.start_message(index);
        let slot = &mut self.slots[index];
        slot.sent_generation = start.generation;
        match slot.spawn(&start, events.clone()) {
            Ok(()) if slot.restarts > 0 => {
                if let Some(held) = self.notices.allow(Kind::Restart, slot.cpu) {
                    log::warn!(
                        "worker on cpu {} restarted (restart #{}, {}, pid {}){held}",
                        slot.cpu,
                        slot.restarts,
                        slot.last_restart.unwrap_or(RestartReason::Exited).as_str(),
                        slot.process.as_ref().map_or(0, |p| p.child.id())
                    );
                }
            }
            Ok(()) => {}
            Err(error) => {
                if let Some(held) = self.notices.allow(Kind::StartFailure, slot.cpu) {
                    log::error!("worker on cpu {}: cannot start: {error}{held}", slot.cpu);
                }
                slot.restart_at = Some(Instant::now() + Duration::from_secs(1));
                slot.start_failed();
            }
        }
    }

    /// Asks every ready worker for its counters, unless it still owes the previous answer:
    /// one request in flight per worker is enough for the watchdog to time, and a worker that
    /// is slow to answer is not sent a pile of them.
    fn poll_counters(&mut self) {
        for slot in &mut self.slots {
            let owes = |process: &workers::WorkerProcess| process.asked_at.is_some();
            if slot
                .process
                .as_ref()
                .is_some_and(|process| process.ready && !owes(process))
                && slot.tell(&ToWorker::Counters).is_ok()
                && let Some(process) = &mut slot.process
            {
                process.asked_at = Some(Instant::now());
            }
        }
    }

    fn handle(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Message { slot, pid, message } => self.message(slot, pid, message),
            WorkerEvent::Gone { slot, pid, error } => {
                let Some(worker) = self.slots.get_mut(slot) else {
                    return;
                };
                if worker.process.as_ref().is_none_or(|p| p.child.id() != pid) {
                    return;
                }
                let unexpected = !worker.restart_now && !worker.held && worker.active;
                if unexpected {
                    worker.outages += 1;
                }
                let status = worker.reap();
                if let Some(held) = self.notices.allow(Kind::Exit, worker.cpu) {
                    let counters = worker.counters();
                    log::warn!(
                        "worker on cpu {} (pid {pid}) exited ({}){}; restarting in {} ms \
                         (restarts so far: {}; received {}, forwarded {}){held}",
                        worker.cpu,
                        status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string()),
                        error.map(|e| format!(": {e}")).unwrap_or_default(),
                        worker.restart_at.map_or(0, |at| {
                            at.saturating_duration_since(Instant::now()).as_millis()
                        }),
                        worker.restarts,
                        counters.received,
                        counters.forwarded
                    );
                }
                if unexpected {
                    self.report_outage(slot);
                }
                self.settle_changes();
                self.advance_resize();
            }
        }
    }

    fn message(&mut self, slot: usize, pid: u32, message: FromWorker) {
        let generation = self.state.generation();
        let expected = self.expected_checksum(slot);
        let Some(worker) = self.slots.get_mut(slot) else {
            return;
        };
        let cpu = worker.cpu;
        let Some(process) = worker.process.as_mut().filter(|p| p.child.id() == pid) else {
            return;
        };
        process.heard_at = Instant::now();
        let (their_generation, checksum) = match message {
            FromWorker::Ready {
                generation,
                checksum,
            } => {
                log::debug!("worker on cpu {cpu} (pid {pid}) ready with generation {generation}");
                process.ready = true;
                (generation, checksum)
            }
            FromWorker::Applied {
                generation,
                checksum,
            } => (generation, checksum),
            FromWorker::Counters(counters) => {
                process.asked_at = None;
                let seen = (counters.table_generation, counters.table_checksum);
                counters::update_keeping_rules(
                    &mut process.counters,
                    *counters,
                    &mut worker.retired,
                );
                seen
            }
            FromWorker::Failed { error } => {
                if let Some(held) = self.notices.allow(Kind::StartFailure, cpu) {
                    log::error!("worker on cpu {cpu} failed to start: {error}{held}");
                }
                return;
            }
        };
        if their_generation == generation && checksum != expected {
            worker.drift_repairs += 1;
            if let Some(held) = self.notices.allow(Kind::Drift, cpu) {
                log::warn!(
                    "worker on cpu {cpu}: table of generation {generation} has checksum \
                     {checksum:#x}, expected {expected:#x}: drift, resyncing (repair #{}){held}",
                    worker.drift_repairs
                );
            }
            worker.acked_generation = 0;
            worker.sent_generation = generation;
            let table = self.table_message(slot);
            let _ = self.slots[slot].tell(&table);
        } else if their_generation == generation {
            worker.acked_generation = generation;
        } else if their_generation < generation
            && process.ready
            && !worker.resyncing
            && worker.sent_generation < generation
        {
            // A worker that started (or missed an update) before the latest change, and was
            // sent nothing since that brings it there: send it the whole current set. A report
            // that crossed an update on its way is not a reason: the update is in flight.
            worker.resyncing = true;
            worker.sent_generation = generation;
            let table = self.table_message(slot);
            let _ = self.slots[slot].tell(&table);
        }
        if self.slots[slot].acked_generation == generation {
            self.slots[slot].resyncing = false;
        }
        if self.slots[slot]
            .process
            .as_ref()
            .is_some_and(|process| process.ready)
        {
            self.slots[slot].serving();
        }
        self.settle_changes();
        self.advance_resize();
    }

    /// Asks every worker to stop, collects their final counters, and kills any that lingers.
    fn stop(&mut self, events: &mpsc::Receiver<Event>) {
        for slot in &mut self.slots {
            let _ = slot.tell(&ToWorker::Stop);
            slot.restart_at = None;
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.slots.iter().any(|slot| slot.process.is_some()) {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            match events.recv_timeout(wait) {
                Ok(Event::Worker(WorkerEvent::Message { slot, pid, message })) => {
                    if let (Some(worker), FromWorker::Counters(counters)) =
                        (self.slots.get_mut(slot), message)
                        && let Some(process) =
                            worker.process.as_mut().filter(|p| p.child.id() == pid)
                    {
                        counters::update_keeping_rules(
                            &mut process.counters,
                            *counters,
                            &mut worker.retired,
                        );
                    }
                }
                Ok(Event::Worker(WorkerEvent::Gone { slot, pid, .. })) => {
                    if let Some(worker) = self.slots.get_mut(slot)
                        && worker.process.as_ref().is_some_and(|p| p.child.id() == pid)
                    {
                        worker.reap();
                    }
                }
                Ok(Event::Control(pending)) => {
                    let _ = pending.reply.send(crate::control::proto::Response::refused(
                        "the relay is stopping",
                    ));
                }
                Ok(Event::Signal(_) | Event::Link(_)) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for slot in &mut self.slots {
            if slot.process.is_some() {
                log::warn!("worker on cpu {} did not stop in time: killed", slot.cpu);
                slot.reap();
            }
            slot.restart_at = None;
        }
    }

    fn start_message(&self, slot: usize) -> WorkerStart {
        WorkerStart {
            cpu: self.slots[slot].cpu,
            generation: self.state.generation(),
            shard: self.shard_of(slot),
            rules: self.slot_entries(slot),
            interfaces: self.interface_entries(),
            ring: self.ring,
        }
    }

    fn table_message(&self, slot: usize) -> ToWorker {
        ToWorker::Table {
            generation: self.state.generation(),
            rules: self.slot_entries(slot),
            interfaces: self.interface_entries(),
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
}
