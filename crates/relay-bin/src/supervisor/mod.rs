//! The supervisor: sets up what outlives workers, starts one worker per CPU, keeps them running.
//!
//! The supervisor owns everything whose identity must survive a worker's death: the receive ring
//! sockets (and so each fanout group's membership order, which decides which CPU's packets reach
//! which ring), the IGMP memberships, and the sockets that keep unicast inputs from being answered
//! with ICMP port-unreachable. Workers are processes of the same executable; each receives its
//! rings over `SCM_RIGHTS` and its rules as a message, builds its table and says `Ready` with the
//! table's checksum before it reads a single frame. Until then its ring fills and waits, so no
//! packet is ever looked up in a partial table.

mod setup;
mod workers;

pub use setup::{Overrides, Plan, SetupError};
pub use workers::{WorkerEvent, WorkerSlot};

use crate::counters::{self, WorkerCounters};
use crate::protocol::{FromWorker, ToWorker, WorkerStart};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How often workers are asked for their counters.
const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// How long a worker may take to stop before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration, interfaces or rings could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
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
}

/// The counters of the run, per worker slot, when it ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// (CPU, counters, restarts) per worker.
    pub workers: Vec<(u32, WorkerCounters, u32)>,
}

impl RunSummary {
    /// The human summary table.
    pub fn render(&self) -> String {
        counters::summary(&self.workers)
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
    let mut world = plan.build()?;

    let (event_tx, events) = mpsc::channel::<Event>();
    let signal_tx = event_tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(Some(info)) = signals.read_signal() {
                if let Ok(signal) = Signal::try_from(info.ssi_signo as i32)
                    && signal_tx.send(Event::Signal(signal)).is_err()
                {
                    return;
                }
            }
        })
        .map_err(|source| RunError::System {
            what: "starting the signal thread",
            source,
        })?;
    let (worker_tx, worker_events) = mpsc::channel::<WorkerEvent>();
    std::thread::Builder::new()
        .name("worker-events".into())
        .spawn(move || {
            for event in worker_events {
                if event_tx.send(Event::Worker(event)).is_err() {
                    return;
                }
            }
        })
        .map_err(|source| RunError::System {
            what: "starting the worker event thread",
            source,
        })?;

    for index in 0..world.slots.len() {
        let start = world.start_message(world.slots[index].cpu);
        let slot = &mut world.slots[index];
        if let Err(error) = slot.spawn(&start, worker_tx.clone()) {
            log::error!("worker on cpu {}: cannot start: {error}", slot.cpu);
            slot.restart_at = Some(Instant::now() + Duration::from_millis(100));
        }
    }
    log::info!(
        "relaying with {} rule(s) on {} worker(s) (cpus {:?}), fanout {:?}",
        world.rule_count(),
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
            for slot in &mut world.slots {
                if slot.process.as_ref().is_some_and(|process| process.ready) {
                    let _ = slot.tell(&ToWorker::Counters);
                }
            }
            next_poll = now + COUNTER_INTERVAL;
        }
        let due: Vec<usize> = (0..world.slots.len())
            .filter(|&index| {
                let slot = &world.slots[index];
                slot.process.is_none() && slot.restart_at.is_some_and(|at| at <= now)
            })
            .collect();
        for index in due {
            let start = world.start_message(world.slots[index].cpu);
            let slot = &mut world.slots[index];
            {
                slot.restarts += 1;
                match slot.spawn(&start, worker_tx.clone()) {
                    Ok(()) => log::warn!(
                        "worker on cpu {} restarted (restart #{})",
                        slot.cpu,
                        slot.restarts
                    ),
                    Err(error) => {
                        log::error!("worker on cpu {}: cannot restart: {error}", slot.cpu);
                        slot.restart_at = Some(now + Duration::from_secs(1));
                    }
                }
            }
        }
        let wait = world
            .slots
            .iter()
            .filter_map(|slot| slot.restart_at)
            .chain([next_poll])
            .chain(next_print)
            .min()
            .map_or(COUNTER_INTERVAL, |at| at.saturating_duration_since(now));
        match events.recv_timeout(wait) {
            Ok(Event::Signal(Signal::SIGHUP)) => {
                log::info!("SIGHUP: configuration reload arrives with the control plane; ignored");
            }
            Ok(Event::Signal(signal)) => {
                log::info!("{signal}: stopping workers");
                break;
            }
            Ok(Event::Worker(event)) => world.handle(event),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    world.stop(&events);
    Ok(world.summary())
}

impl setup::World {
    fn summary(&self) -> RunSummary {
        RunSummary {
            workers: self
                .slots
                .iter()
                .map(|slot| (slot.cpu, slot.counters(), slot.restarts))
                .collect(),
        }
    }

    fn handle(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Message { slot, pid, message } => {
                let expected = self.checksum;
                let generation = self.generation;
                let Some(worker) = self.slots.get_mut(slot) else {
                    return;
                };
                let cpu = worker.cpu;
                let Some(process) = worker.process.as_mut().filter(|p| p.child.id() == pid) else {
                    return;
                };
                match message {
                    FromWorker::Ready {
                        generation: their_generation,
                        checksum,
                    } => {
                        if checksum != expected || their_generation != generation {
                            log::error!(
                                "worker on cpu {cpu} built generation {their_generation} checksum {checksum:#x}, expected generation {generation} checksum {expected:#x}: restarting it"
                            );
                            let _ = process.child.kill();
                        } else {
                            log::debug!("worker on cpu {cpu} (pid {pid}) ready");
                            process.ready = true;
                        }
                    }
                    FromWorker::Counters(counters) => process.counters = *counters,
                    FromWorker::Failed { error } => {
                        log::error!("worker on cpu {cpu} failed to start: {error}");
                    }
                }
            }
            WorkerEvent::Gone { slot, pid, error } => {
                let Some(worker) = self.slots.get_mut(slot) else {
                    return;
                };
                if worker.process.as_ref().is_none_or(|p| p.child.id() != pid) {
                    return;
                }
                let status = worker.reap();
                log::warn!(
                    "worker on cpu {} (pid {pid}) exited ({}){}; restarting",
                    worker.cpu,
                    status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string()),
                    error.map(|e| format!(": {e}")).unwrap_or_default()
                );
            }
        }
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
                        process.counters = *counters;
                    }
                }
                Ok(Event::Worker(WorkerEvent::Gone { slot, pid, .. })) => {
                    if let Some(worker) = self.slots.get_mut(slot)
                        && worker.process.as_ref().is_some_and(|p| p.child.id() == pid)
                    {
                        worker.reap();
                    }
                }
                Ok(Event::Signal(_)) | Err(RecvTimeoutError::Timeout) => {}
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

    fn start_message(&self, cpu: u32) -> WorkerStart {
        WorkerStart {
            cpu,
            generation: self.generation,
            rules: self.rules.clone(),
            interfaces: self.interfaces.clone(),
            ring: self.ring,
        }
    }
}
