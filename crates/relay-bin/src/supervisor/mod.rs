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

mod checks;
mod consume;
mod decide;
mod events;
mod handover;
mod inflight;
mod inputs;
mod life;
mod lifecycle;
mod links;
mod placement;
mod privileges;
mod rates;
mod removed;
mod restarts;
mod service;
mod setup;
mod state;
mod summary;
mod workers;
mod world;

pub use privileges::PrivilegeError;
pub use restarts::{RestartCounts, RestartReason};
pub use setup::{Overrides, Plan, SetupError};
pub use state::{Change, Problem, StateError, write_atomically};
pub use summary::RunSummary;

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

use crate::control::ControlServer;
use events::Event;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};
use world::Flow;

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration, interfaces or rings could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A capability the relay needs is missing.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
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

/// Runs the relay described by `plan` until SIGINT or SIGTERM; returns the final counters.
///
/// The caller must call this from the main thread before starting other threads: the signal
/// mask set here is inherited by the threads started afterwards, and a worker's parent-death
/// signal is tied to the thread that spawned it.
pub fn run(plan: Plan, options: &RunOptions) -> Result<RunSummary, RunError> {
    privileges::check(plan.config.relay.rps == crate::config::RpsSetting::Auto)?;
    let worker_user = privileges::worker_user(plan.config.relay.user.as_deref())?;
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
    crate::kernel_features::warn_fallbacks(&plan.config.ring, plan.config.relay.fanout);
    for warning in crate::rings::room::rule_set_warnings(&plan.config.ring, &plan.set) {
        log::warn!("{warning}");
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
    world.worker_user = worker_user;
    let (event_tx, events) = mpsc::channel::<Event>();
    // Subscribed before the workers start; interfaces that appeared since the plan looked
    // for them are caught up with below.
    links::follow(event_tx.clone(), Event::Link).map_err(|error| RunError::System {
        what: "following interfaces through netlink",
        source: std::io::Error::other(error),
    })?;
    let (worker_tx, control_tx) =
        events::start_forwarders(signals, event_tx).map_err(|source| RunError::System {
            what: "starting a supervisor thread",
            source,
        })?;
    let metrics = metrics_addr
        .map(|addr| crate::metrics::MetricsServer::start(addr, control_tx.clone()))
        .transpose()?;
    let _control = ControlServer::start(&control_path, control_tx)?;
    log::info!("control socket {}", control_path.display());
    if let Some(metrics) = &metrics {
        log::info!("metrics on http://{}/metrics", metrics.local_addr());
    }

    let mut service = service::Service::from_env();
    world.start(worker_tx);
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

    let mut next_print = options.stats_every.map(|every| Instant::now() + every);
    loop {
        let now = Instant::now();
        if let (Some(at), Some(every)) = (next_print, options.stats_every)
            && now >= at
        {
            eprint!("{}", world.summary().render());
            next_print = Some(now + every);
        }
        world.tick(now);
        service.tick(now);
        if !service.is_ready() && world.serves() {
            service.ready(&world.status());
        }
        let wake = [next_print, service.deadline()]
            .into_iter()
            .flatten()
            .fold(world.next_deadline(), Instant::min);
        match events.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(event @ Event::Signal(Signal::SIGHUP)) => {
                service.reloading();
                let flow = world.on(event);
                service.reloaded(&world.status());
                if flow == Flow::Stop {
                    break;
                }
            }
            Ok(event) => {
                if world.on(event) == Flow::Stop {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    service.stopping();
    world.stop(&events);
    world.consume.close();
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
