//! Worker processes: spawning one, handing it its rings and rules, and restarting it with backoff.

use super::restarts::{RestartCounts, RestartReason};
use crate::counters::WorkerCounters;
use crate::protocol::{self, FromWorker, ToWorker, WorkerStart};
use fanout_core::handoff::{self, RingHandle};
use std::io::{self, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// First wait before restarting a worker that died; doubled on each quick death.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest a write to a worker may wait for the worker to read (`SO_SNDTIMEO`, per write).
/// A serving worker reads its control socket at least every 200 ms and never blocks on its
/// own writes, and a starting one reads its start message as soon as it runs; one that takes
/// this long is stuck, and the supervisor must not wait for it with it: the write fails, and the
/// worker is killed and restarted.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A worker that ran this long before dying is restarted after [`FIRST_BACKOFF`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// What a worker's reader thread reports to the supervisor's loop.
#[derive(Debug)]
pub enum WorkerEvent {
    /// A message from worker `slot`.
    Message {
        /// Index of the worker slot.
        slot: usize,
        /// Process id the message came from (a restarted slot has a new one).
        pid: u32,
        /// The message.
        message: FromWorker,
    },
    /// The worker process of `slot` closed its control socket: it exited or is about to.
    Gone {
        /// Index of the worker slot.
        slot: usize,
        /// Process id that went away.
        pid: u32,
        /// Why the stream ended, if it ended with an error.
        error: Option<String>,
    },
}

/// The state of one worker slot (a CPU with its rings), across restarts of its process.
#[derive(Debug)]
pub struct WorkerSlot {
    /// Index of the slot.
    pub slot: usize,
    /// CPU the slot's worker is pinned to.
    pub cpu: u32,
    /// The worker class it belongs to (0: the default class), whose rules and rings it serves.
    pub class: usize,
    /// The receive rings this slot's worker serves, each with its fanout member index (the
    /// supervisor keeps their sockets open, so the fanout group keeps its membership while the
    /// process is replaced, or while the ring moves to another slot).
    pub rings: Vec<(u32, RingHandle)>,
    /// Whether the slot is part of the worker set (a slot taken out by a resize keeps its
    /// counters for the summary, and its index, which worker events carry).
    pub active: bool,
    /// Held stopped by a resize: not restarted until its rings have moved.
    pub held: bool,
    /// Since when its worker has not been serving (dead, or started and not ready yet).
    pub down_since: Option<Instant>,
    /// Time its worker was not serving, over past outages.
    pub down_total: Duration,
    /// Outages (a worker that exited or was killed), resizes not included.
    pub outages: u32,
    /// The running process, if any.
    pub process: Option<WorkerProcess>,
    /// Times the process was restarted.
    pub restarts: u32,
    /// Of `restarts`, how many for each reason.
    pub restart_reasons: RestartCounts,
    /// Why the next restart happens, once the process is gone (none yet: it exited by itself).
    next_restart: Option<RestartReason>,
    /// Why the latest restart happened.
    pub last_restart: Option<RestartReason>,
    /// Counters of processes of this slot that have exited, added together.
    pub retired: WorkerCounters,
    /// When the next start may happen after a death.
    pub restart_at: Option<Instant>,
    /// Generation the worker last confirmed (0: none yet).
    pub acked_generation: u64,
    /// Times its table drifted and was resynced.
    pub drift_repairs: u32,
    /// Whether a whole-table resync is on its way to it.
    pub resyncing: bool,
    /// The latest generation sent to its process (start, update or table). A report of an
    /// older one while this is on its way is expected, not a reason for a resync.
    pub sent_generation: u64,
    /// Restart without backoff when the process exits (it was asked to stop to take new rings).
    pub restart_now: bool,
    backoff: Duration,
}

/// A live worker process.
#[derive(Debug)]
pub struct WorkerProcess {
    /// The child.
    pub child: Child,
    /// The supervisor's end of the control socket.
    pub control: UnixStream,
    /// When it was started.
    pub started: Instant,
    /// Whether it reported `Ready`.
    pub ready: bool,
    /// Its latest counters.
    pub counters: WorkerCounters,
    /// When the counters request it has not answered yet was sent (at most one is in flight).
    pub asked_at: Option<Instant>,
    /// When it last sent anything: a worker that answers something else is not silent.
    pub heard_at: Instant,
}

impl WorkerSlot {
    /// A slot for `cpu` in class `class`, with no rings and no process yet.
    pub fn new(slot: usize, cpu: u32, class: usize) -> Self {
        WorkerSlot {
            slot,
            cpu,
            class,
            rings: Vec::new(),
            active: true,
            held: false,
            down_since: None,
            down_total: Duration::ZERO,
            outages: 0,
            process: None,
            restarts: 0,
            restart_reasons: RestartCounts::default(),
            next_restart: None,
            last_restart: None,
            retired: WorkerCounters::default(),
            restart_at: None,
            acked_generation: 0,
            drift_repairs: 0,
            resyncing: false,
            sent_generation: 0,
            restart_now: false,
            backoff: FIRST_BACKOFF,
        }
    }

    /// `ready`, `starting` (started, table not confirmed yet), `restarting` (no process),
    /// `resizing` (held stopped while rings move) or `retired` (taken out of the worker set).
    pub fn state_name(&self) -> &'static str {
        if !self.active {
            return "retired";
        }
        match &self.process {
            None if self.held => "resizing",
            Some(process) if process.ready && self.resyncing => "resyncing",
            Some(process) if process.ready => "ready",
            Some(_) => "starting",
            None => "restarting",
        }
    }

    /// Counters of every process this slot has run, the live one included.
    pub fn counters(&self) -> WorkerCounters {
        let mut total = self.retired.clone();
        if let Some(process) = &self.process {
            total.absorb(&process.counters);
            // Not sums: the table the live process serves now.
            total.table_generation = process.counters.table_generation;
            total.table_checksum = process.counters.table_checksum;
        }
        total.cpu = self.cpu;
        total
    }

    /// Starts the slot's worker process: hands it the rings and `start`, and starts a thread
    /// that forwards its messages to `events`.
    pub fn spawn(&mut self, start: &WorkerStart, events: Sender<WorkerEvent>) -> io::Result<()> {
        let (ours, theirs) = control_pair()?;
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .arg("worker")
            .arg("--cpu")
            .arg(self.cpu.to_string())
            .arg("--supervisor")
            .arg(std::process::id().to_string())
            .arg("--rings")
            .arg(self.rings.len().to_string())
            .env(
                crate::kernel_features::INHERITED_VAR,
                crate::kernel_features::inherited(),
            )
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()?;
        let pid = child.id();
        let mut writer = ours.try_clone()?;
        let handed = self
            .rings
            .iter()
            .try_for_each(|(_, ring)| {
                handoff::send_ring(ours.as_fd(), ring).map_err(io::Error::other)
            })
            .and_then(|()| protocol::send(&mut writer, &ToWorker::Start(Box::new(start.clone()))));
        if let Err(error) = handed {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        let reader = ours.try_clone()?;
        let slot = self.slot;
        std::thread::Builder::new()
            .name(format!("worker-{slot}-reader"))
            .spawn(move || forward_messages(slot, pid, reader, events))?;
        self.process = Some(WorkerProcess {
            child,
            control: ours,
            started: Instant::now(),
            ready: false,
            counters: WorkerCounters::default(),
            asked_at: None,
            heard_at: Instant::now(),
        });
        self.restart_at = None;
        self.down_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// The fanout members (under `steer`, the shards) this slot serves, ascending.
    pub fn members(&self) -> Vec<u32> {
        let mut members: Vec<u32> = self.rings.iter().map(|(member, _)| *member).collect();
        members.sort_unstable();
        members.dedup();
        members
    }

    /// Notes that the worker serves again (it confirmed its table).
    pub fn serving(&mut self) {
        if let Some(since) = self.down_since.take() {
            self.down_total += since.elapsed();
        }
    }

    /// Reaps the slot's process after it went away, keeps its counters and schedules a restart.
    pub fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let mut process = self.process.take()?;
        let _ = process.child.kill();
        let status = process.child.wait().ok();
        self.retired.absorb(&process.counters);
        let ran = process.started.elapsed();
        self.backoff = if ran >= HEALTHY_RUN {
            FIRST_BACKOFF
        } else {
            (self.backoff * 2).min(MAX_BACKOFF)
        };
        self.acked_generation = 0;
        self.resyncing = false;
        self.sent_generation = 0;
        self.down_since.get_or_insert_with(Instant::now);
        let reason = self.next_restart.take();
        if self.held || !self.active {
            self.restart_now = false;
            self.restart_at = None;
        } else if std::mem::take(&mut self.restart_now) {
            self.restart_at = Some(Instant::now());
            self.next_restart = Some(reason.unwrap_or(RestartReason::Handover));
        } else {
            self.restart_at = Some(Instant::now() + self.backoff);
            self.next_restart = Some(reason.unwrap_or(RestartReason::Exited));
        }
        status
    }

    /// Counts the restart about to happen, with the reason its process went away for, and
    /// returns that reason.
    pub fn count_restart(&mut self) -> RestartReason {
        let reason = self.next_restart.take().unwrap_or(RestartReason::Exited);
        self.restarts += 1;
        self.restart_reasons.count(reason);
        self.last_restart = Some(reason);
        reason
    }

    /// Notes that the process could not be started: the next attempt is a restart for that.
    pub fn start_failed(&mut self) {
        self.next_restart = Some(RestartReason::StartFailed);
    }

    /// Kills the live process for `reason`; its exit is then reaped as usual (the control
    /// socket closes), and the restart that follows is counted for `reason`.
    pub fn kill(&mut self, reason: RestartReason) {
        if let Some(process) = &mut self.process {
            self.next_restart = Some(reason);
            let _ = process.child.kill();
        }
    }

    /// Sends `message` to the live process, if any; a failure means it is going away. A
    /// worker that did not read for `WRITE_TIMEOUT` (5 s) is killed (the message may be half
    /// written, and the worker is stuck): its end of the socket closes, and it is restarted.
    pub fn tell(&mut self, message: &ToWorker) -> io::Result<()> {
        let Some(process) = &mut self.process else {
            return Ok(());
        };
        let sent = protocol::send(&mut process.control, message);
        if let Err(error) = &sent
            && matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
        {
            log::error!(
                "worker on cpu {} (pid {}) read nothing for {} s: killed, to be restarted",
                self.cpu,
                process.child.id(),
                WRITE_TIMEOUT.as_secs()
            );
            self.kill(RestartReason::Unresponsive);
        }
        sent
    }
}

/// The supervisor's and the worker's ends of a control socket; the supervisor's writes give up
/// after [`WRITE_TIMEOUT`] instead of blocking for as long as the worker does not read.
pub(super) fn control_pair() -> io::Result<(UnixStream, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_write_timeout(Some(WRITE_TIMEOUT))?;
    Ok((ours, theirs))
}

fn forward_messages(slot: usize, pid: u32, stream: UnixStream, events: Sender<WorkerEvent>) {
    let mut reader = BufReader::new(stream);
    loop {
        match protocol::receive::<_, FromWorker>(&mut reader) {
            Ok(Some(message)) => {
                if events
                    .send(WorkerEvent::Message { slot, pid, message })
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => {
                let _ = events.send(WorkerEvent::Gone {
                    slot,
                    pid,
                    error: None,
                });
                return;
            }
            Err(error) => {
                let _ = events.send(WorkerEvent::Gone {
                    slot,
                    pid,
                    error: Some(error.to_string()),
                });
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write to a worker that reads nothing fails once the timeout passes, instead of
    /// blocking the supervisor for as long as the worker does not read.
    #[test]
    fn writes_to_a_worker_that_does_not_read_give_up() {
        let (mut ours, _theirs) = control_pair().expect("a socket pair");
        assert_eq!(ours.write_timeout().ok().flatten(), Some(WRITE_TIMEOUT));
        // The same mechanism, shorter, so the test does not take WRITE_TIMEOUT.
        ours.set_write_timeout(Some(Duration::from_millis(100)))
            .expect("SO_SNDTIMEO");
        let table = ToWorker::Table {
            generation: 1,
            rules: Vec::new(),
            interfaces: (0..20_000)
                .map(|index| relay_rules::InterfaceFacts {
                    name: format!("eth{index}"),
                    index,
                    mac: None,
                    mtu: 1500,
                    ipv4: Vec::new(),
                })
                .collect(),
        };
        let started = Instant::now();
        let error = protocol::send(&mut ours, &table).expect_err("nobody reads");
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
