//! A worker process: one CPU, its share of the receive rings, a transmit ring per output
//! interface, and the loop that moves packets from the first to the second.
//!
//! The supervisor starts a worker as `fanout-relay worker --cpu K --supervisor PID` with one end of
//! a control socket as standard input. The worker asks the kernel to kill it when the supervisor
//! dies, so it never relays with a stale table; it receives its receive ring sockets, then its
//! start message, builds its table, maps its rings and says `Ready`, and only then reads frames.

mod channel;
mod contention;
mod datapath;
mod errors;
mod io;
mod sandbox;
mod sinks;
mod wait;

pub use crate::outputs::OutputError;
pub use datapath::{Datapath, Outputs, RxChecksum, Written};
pub use sandbox::SandboxError;

use crate::protocol::{self, FromWorker, ToWorker, WorkerStart};
use nix::sys::signal::Signal;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// Why a worker stopped other than by being told to.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The supervisor is gone (or never was): nothing to serve for.
    #[error("the supervisor (pid {0}) is gone")]
    Orphaned(u32),
    /// The control socket failed.
    #[error("control socket: {0}")]
    Control(#[from] std::io::Error),
    /// The start message was missing or malformed.
    #[error("bad start: {0}")]
    BadStart(#[from] StartError),
    /// Rings, sockets or pinning could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// What was wrong with the start the supervisor handed over.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A receive ring's socket did not arrive.
    #[error("receiving ring {index} of {rings}: {source}")]
    Ring {
        /// Which ring, from 0.
        index: usize,
        /// How many were announced.
        rings: usize,
        /// Why it was not received.
        source: fanout_core::HandoffError,
    },
    /// Another message came where the start was due.
    #[error("expected start, got {got}")]
    NotStart {
        /// The message that came, as debug text.
        got: String,
    },
    /// The start is for another CPU than the command line's.
    #[error("started for cpu {cpu} but told cpu {told}")]
    WrongCpu {
        /// The command line's CPU.
        cpu: u32,
        /// The start message's CPU.
        told: u32,
    },
}

/// Why a worker could not be set up to serve.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The kernel refused to kill the worker with the supervisor.
    #[error("prctl(PR_SET_PDEATHSIG): {0}")]
    DeathSignal(#[source] nix::errno::Errno),
    /// The worker could not be pinned to its CPU.
    #[error("pinning to cpu {cpu}: {source}")]
    Pin {
        /// The CPU.
        cpu: u32,
        /// The refused affinity, with its syscall and errno.
        source: fanout_core::CpuError,
    },
    /// The rules the supervisor checked do not validate in the worker.
    #[error("the rules handed over do not validate here: {0}")]
    Rules(#[source] relay_rules::ValidationErrors),
    /// The worker's shards are not a valid shard set.
    #[error("shards {indices:?} of {count} name no shard or one past the count")]
    Shards {
        /// The shard indices handed over.
        indices: Vec<u32>,
        /// The shard count.
        count: u32,
    },
    /// A handed receive ring could not be mapped.
    #[error("mapping the receive ring of interface #{ifindex}: {source}")]
    MapRing {
        /// The ring's interface index.
        ifindex: u32,
        /// Why, with the syscall and errno.
        source: fanout_core::HandoffError,
    },
    /// An output's socket or ring could not be opened.
    #[error(transparent)]
    Output(OutputError),
    /// The worker could not box itself in.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Runs a worker until the supervisor says stop or goes away.
pub fn run(cpu: u32, supervisor: u32, rings: usize) -> Result<(), WorkerError> {
    // If the supervisor dies, so do we; checking the parent afterwards closes the window in which
    // it died before the request took effect.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(SetupError::DeathSignal)?;
    if nix::unistd::getppid().as_raw() as u32 != supervisor {
        return Err(WorkerError::Orphaned(supervisor));
    }
    let control: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let control = UnixStream::from(control);
    // The receive rings come first, each its own message with its descriptor attached; then
    // lines, read with the descriptors of the outputs that travel beside them, up to the start.
    let mut handles = Vec::with_capacity(rings);
    for index in 0..rings {
        let handle = fanout_core::handoff::recv_ring(control.as_fd()).map_err(|source| {
            StartError::Ring {
                index,
                rings,
                source,
            }
        })?;
        handles.push(handle);
    }
    control.set_nonblocking(true)?;
    let mut writer = control.try_clone()?;
    let mut channel = channel::Channel::new(control);
    let mut handed = sinks::Handed::default();
    let (start, backlog) = receive_start(&mut channel, &mut handed, supervisor)?;
    if start.cpu != cpu {
        return Err(StartError::WrongCpu {
            cpu,
            told: start.cpu,
        }
        .into());
    }
    let set_up = io::WorkerIo::new(&start, handles, handed).and_then(|worker| {
        sandbox::enter(start.user.as_ref(), supervisor)?;
        Ok(worker)
    });
    let mut worker = match set_up {
        Ok(worker) => worker,
        Err(error) => {
            // The supervisor learns of the failure from the worker's exit as well; this message
            // only gives it the reason to log, so failing to send it changes nothing.
            let _ = protocol::send(
                &mut writer,
                &FromWorker::Failed {
                    error: error.to_string(),
                },
            );
            return Err(error.into());
        }
    };
    protocol::send(
        &mut writer,
        &FromWorker::Ready {
            generation: worker.generation(),
            checksum: worker.checksum(),
        },
    )?;
    // The start message and what building the table needed on the way are many times the
    // table's size: dropped, and their pages given back, before the worker settles in.
    drop(start);
    fanout_core::heap::trim();
    worker.serve(channel, backlog)
}

/// Longest a worker waits for its start once its rings came.
const START_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the outputs handed over and the start message; returns the start and whatever came
/// after it in the same read, for the loop to serve first.
fn receive_start(
    channel: &mut channel::Channel,
    handed: &mut sinks::Handed,
    supervisor: u32,
) -> Result<(WorkerStart, Vec<ToWorker>), WorkerError> {
    let deadline = std::time::Instant::now() + START_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(WorkerError::Control(std::io::ErrorKind::TimedOut.into()));
        }
        let mut fds = [nix::poll::PollFd::new(
            channel.stream().as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout = nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(WorkerError::Control(errno.into())),
        }
        let Some(messages) = channel.read()? else {
            return Err(WorkerError::Orphaned(supervisor));
        };
        let mut messages = messages.into_iter();
        while let Some(message) = messages.next() {
            match message {
                ToWorker::Outputs { outputs } => channel.take_outputs(&outputs, handed)?,
                ToWorker::Start(start) => return Ok((*start, messages.collect())),
                other => {
                    return Err(StartError::NotStart {
                        got: format!("{other:?}"),
                    }
                    .into());
                }
            }
        }
    }
}
