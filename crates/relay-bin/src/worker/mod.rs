//! A worker process: one CPU, its share of the receive rings, a transmit ring per output
//! interface, and the loop that moves packets from the first to the second.
//!
//! The supervisor starts a worker as `fanout-relay worker --cpu K --supervisor PID` with one end of
//! a control socket as standard input. The worker asks the kernel to kill it when the supervisor
//! dies, so it never relays with a stale table; it receives its receive ring sockets, then its
//! start message, builds its table, maps its rings and says `Ready`, and only then reads frames.

mod contention;
mod datapath;
mod errors;
mod io;
mod sinks;
mod wait;

pub use datapath::{Datapath, Outputs, RxChecksum, Written};

use crate::protocol::{self, FromWorker, ToWorker, WorkerStart};
use nix::sys::signal::Signal;
use std::io::BufReader;
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
    BadStart(String),
    /// Rings, sockets or pinning could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// Runs a worker until the supervisor says stop or goes away.
pub fn run(cpu: u32, supervisor: u32, rings: usize) -> Result<(), WorkerError> {
    // If the supervisor dies, so do we; checking the parent afterwards closes the window in which
    // it died before the request took effect.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .map_err(|errno| WorkerError::Setup(format!("prctl(PR_SET_PDEATHSIG): {errno}")))?;
    if nix::unistd::getppid().as_raw() as u32 != supervisor {
        return Err(WorkerError::Orphaned(supervisor));
    }
    let control: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let control = UnixStream::from(control);
    // The rings come first, each its own message with its descriptor attached; only then the
    // start line, so no buffered read can swallow a descriptor.
    let mut handles = Vec::with_capacity(rings);
    for index in 0..rings {
        let handle = fanout_core::handoff::recv_ring(control.as_fd()).map_err(|error| {
            WorkerError::BadStart(format!("receiving ring {index} of {rings}: {error}"))
        })?;
        handles.push(handle);
    }
    let mut reader = BufReader::new(control.try_clone()?);
    let mut writer = control.try_clone()?;
    let start: WorkerStart = match protocol::receive(&mut reader)? {
        Some(ToWorker::Start(start)) => *start,
        Some(other) => {
            return Err(WorkerError::BadStart(format!(
                "expected start, got {other:?}"
            )));
        }
        None => return Err(WorkerError::Orphaned(supervisor)),
    };
    if start.cpu != cpu {
        return Err(WorkerError::BadStart(format!(
            "started for cpu {cpu} but told cpu {}",
            start.cpu
        )));
    }
    let mut worker = match io::WorkerIo::new(&start, handles) {
        Ok(worker) => worker,
        Err(error) => {
            let _ = protocol::send(
                &mut writer,
                &FromWorker::Failed {
                    error: error.clone(),
                },
            );
            return Err(WorkerError::Setup(error));
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
    drop(reader);
    fanout_core::heap::trim();
    worker.serve(control)
}
