//! Everything the supervisor's loop receives, and the threads that turn signals, worker
//! messages and control requests into one stream of events.

use super::links::LinkEvent;
use super::workers::WorkerEvent;
use crate::control::Pending;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use std::sync::mpsc::{self, Sender};

/// Everything the supervisor loop receives.
pub(crate) enum Event {
    /// A worker's message, or its exit.
    Worker(WorkerEvent),
    /// SIGHUP, SIGINT or SIGTERM.
    Signal(Signal),
    /// A control request.
    Control(Pending),
    /// An interface changed.
    Link(LinkEvent),
}

/// Starts the threads that turn signals and worker messages into events, and returns where
/// worker reader threads and the control server send theirs.
pub(crate) fn start_forwarders(
    signals: SignalFd,
    events: Sender<Event>,
) -> std::io::Result<(Sender<WorkerEvent>, Sender<Pending>)> {
    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map(drop)
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
