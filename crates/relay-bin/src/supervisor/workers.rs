//! Worker processes: spawning one, handing it its rings and rules, and restarting it with backoff.

use super::handover::{HandedOutputs, hand_over};
use super::life::{Life, Run, Then};
use super::restarts::{RestartCounts, RestartReason};
use crate::config::RingSection;
use crate::counters::WorkerCounters;
use crate::outputs::OutputKey;
use crate::protocol::{self, FromWorker, ToWorker, WorkerStart};
use fanout_core::handoff::{self, RingHandle};
use relay_rules::Interfaces;
use std::io::{self, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
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
pub(crate) enum WorkerEvent {
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

/// One worker slot (a CPU with its rings), across the runs of its process.
#[derive(Debug)]
pub(crate) struct WorkerSlot {
    /// Index of the slot, which worker events carry.
    pub(crate) slot: usize,
    /// CPU the slot's worker is pinned to.
    pub(crate) cpu: u32,
    /// The worker class it belongs to (0: the default class), whose rules and rings it serves.
    pub(crate) class: usize,
    /// The receive rings this slot's worker serves, each with its fanout member index (the
    /// supervisor keeps their sockets open, so the fanout group keeps its membership while the
    /// process is replaced, or while the ring moves to another slot).
    pub(crate) rings: Vec<(u32, RingHandle)>,
    /// Where it is in its life, with its live process if it has one.
    pub(crate) life: Life<WorkerProcess>,
    /// Since when its worker has not been serving (dead, or started and not ready yet).
    down_since: Option<Instant>,
    /// Time its worker was not serving, over past outages.
    down_total: Duration,
    /// Outages (a worker that exited or was killed), resizes not included.
    pub(crate) outages: u32,
    /// Times the process was restarted.
    pub(crate) restarts: u32,
    /// Of `restarts`, how many for each reason.
    pub(crate) restart_reasons: RestartCounts,
    /// Why the latest restart happened.
    pub(crate) last_restart: Option<RestartReason>,
    /// Counters of processes of this slot that have exited, added together.
    retired: WorkerCounters,
    /// Times its table drifted and was resynced.
    pub(crate) drift_repairs: u32,
    /// The wait before the next restart after a death: doubled on each quick death.
    backoff: Duration,
}

/// The handles of a live worker process.
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    /// The child.
    child: Child,
    /// The supervisor's end of the control socket.
    control: UnixStream,
    /// The transmit rings and sockets it was handed.
    outputs: HandedOutputs,
}

impl WorkerSlot {
    /// A slot for `cpu` in class `class`, with no rings, whose first start is due now.
    pub(crate) fn new(slot: usize, cpu: u32, class: usize) -> Self {
        WorkerSlot {
            slot,
            cpu,
            class,
            rings: Vec::new(),
            life: Life::first(Instant::now()),
            down_since: None,
            down_total: Duration::ZERO,
            outages: 0,
            restarts: 0,
            restart_reasons: RestartCounts::default(),
            last_restart: None,
            retired: WorkerCounters::default(),
            drift_repairs: 0,
            backoff: FIRST_BACKOFF,
        }
    }

    /// A slot made for a resize, which starts it once its rings have moved.
    pub(crate) fn joining(slot: usize, cpu: u32, class: usize) -> Self {
        WorkerSlot {
            life: Life::Retired,
            ..WorkerSlot::new(slot, cpu, class)
        }
    }

    /// The live process's run, if there is one.
    pub(crate) fn run(&self) -> Option<&Run<WorkerProcess>> {
        self.life.run()
    }

    /// The live process's id, if there is one.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.run().map(|run| run.pid)
    }

    /// The live run whose process is `pid`: messages of an earlier process are ignored.
    pub(crate) fn run_of(&mut self, pid: u32) -> Option<&mut Run<WorkerProcess>> {
        self.life.run_mut().filter(|run| run.pid == pid)
    }

    /// The generation its live process confirmed (0: none, or no process).
    pub(crate) fn acked_generation(&self) -> u64 {
        self.run().map_or(0, |run| run.acked_generation)
    }

    /// Counters of every process this slot has run, the live one included.
    pub(crate) fn counters(&self) -> WorkerCounters {
        let mut total = self.retired.clone();
        if let Some(run) = self.run() {
            total.absorb(&run.counters);
            // Not sums: the table the live process serves now.
            total.table_generation = run.counters.table_generation;
            total.table_checksum = run.counters.table_checksum;
        }
        total.cpu = self.cpu;
        total
    }

    /// The rules of the slot's past counters: removed ones, and those its earlier processes
    /// counted.
    pub(crate) fn retired_rules(&self) -> impl Iterator<Item = &str> {
        self.retired.rules.keys().map(String::as_str)
    }

    /// Drops the counters of the rules `names`, which were removed long enough ago (a live
    /// process no longer counts a removed rule).
    pub(crate) fn forget_rules(&mut self, names: &[String]) {
        for name in names {
            self.retired.rules.remove(name);
        }
    }

    /// Folds `counters` from its live process `pid` in, keeping the counts of rules it no
    /// longer reports (removed ones) with the slot's retired counters.
    pub(crate) fn take_counters(&mut self, pid: u32, counters: WorkerCounters) {
        if let Some(run) = self.life.run_mut().filter(|run| run.pid == pid) {
            crate::counters::update_keeping_rules(&mut run.counters, counters, &mut self.retired);
        }
    }

    /// How long it has not been serving, over every outage, the current one included.
    pub(crate) fn down_for(&self) -> Duration {
        self.down_total + self.down_since.map_or(Duration::ZERO, |at| at.elapsed())
    }

    /// Starts the slot's worker process: hands it the rings and `start`, and starts a thread
    /// that forwards its messages to `events`. A start that fails is tried again later.
    pub(crate) fn spawn(
        &mut self,
        start: &WorkerStart,
        events: Sender<WorkerEvent>,
    ) -> io::Result<()> {
        let now = Instant::now();
        self.down_since.get_or_insert(now);
        match self.launch(start, events) {
            Ok(process) => {
                let pid = process.child.id();
                self.life
                    .started(Run::new(process, pid, start.generation, now));
                Ok(())
            }
            Err(error) => {
                self.life.start_failed(now);
                Err(error)
            }
        }
    }

    fn launch(
        &self,
        start: &WorkerStart,
        events: Sender<WorkerEvent>,
    ) -> io::Result<WorkerProcess> {
        let (ours, theirs) = control_pair()?;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
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
            // The supervisor alone speaks to the service manager.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .spawn()?;
        let pid = child.id();
        let mut outputs = HandedOutputs::default();
        let handed = ours.try_clone().and_then(|mut writer| {
            self.rings
                .iter()
                .try_for_each(|(_, ring)| {
                    handoff::send_ring(ours.as_fd(), ring).map_err(io::Error::other)
                })
                .and_then(|()| {
                    let interfaces: Interfaces = start.interfaces.iter().cloned().collect();
                    let keys = outputs.reset(start.rules.iter(), &interfaces);
                    hand_over(
                        &mut writer,
                        &mut outputs,
                        &keys,
                        &interfaces,
                        &start.ring,
                        self.cpu,
                    )
                })
                .and_then(|()| {
                    protocol::send(&mut writer, &ToWorker::Start(Box::new(start.clone())))
                })
        });
        let reader = handed.and_then(|()| ours.try_clone());
        let forwarding = reader.and_then(|reader| {
            let slot = self.slot;
            std::thread::Builder::new()
                .name(format!("worker-{slot}-reader"))
                .spawn(move || forward_messages(slot, pid, reader, events))
                .map(drop)
        });
        if let Err(error) = forwarding {
            // It never got what it needs to serve: make sure it is gone before it is retried.
            if let Err(kill) = child.kill() {
                log::debug!("worker on cpu {} (pid {pid}): kill: {kill}", self.cpu);
            }
            if let Err(wait) = child.wait() {
                log::debug!("worker on cpu {} (pid {pid}): wait: {wait}", self.cpu);
            }
            return Err(error);
        }
        Ok(WorkerProcess {
            child,
            control: ours,
            outputs,
        })
    }

    /// The fanout members (under `steer`, the shards) this slot serves, ascending.
    pub(crate) fn members(&self) -> Vec<u32> {
        let mut members: Vec<u32> = self.rings.iter().map(|(member, _)| *member).collect();
        members.sort_unstable();
        members.dedup();
        members
    }

    /// Notes that its process `pid` confirmed a table: a starting one serves now.
    pub(crate) fn confirmed(&mut self, pid: u32) {
        if self.pid() != Some(pid) {
            return;
        }
        self.life.confirmed();
        if self.life.is_serving()
            && let Some(since) = self.down_since.take()
        {
            self.down_total += since.elapsed();
        }
    }

    /// Stops the live process for `then` (see [`Life::stop`]), telling it to stop when it has
    /// to be told.
    pub(crate) fn stop(&mut self, then: Then) {
        if self.life.stop(then) {
            // A worker that cannot be told is stuck: `tell` kills it, and its exit is reaped
            // as this stop's.
            if let Err(error) = self.tell(&ToWorker::Stop) {
                log::debug!("worker on cpu {}: stop not sent: {error}", self.cpu);
            }
        }
    }

    /// Reaps the slot's process after it went away (killing it first if it lingers), keeps its
    /// counters and moves on in its life; says whether nobody asked for the exit, and its
    /// status. `None` when it had no process.
    pub(crate) fn reap(&mut self) -> Option<(bool, Option<std::process::ExitStatus>)> {
        let ran = self.run()?.started.elapsed();
        self.backoff = next_backoff(self.backoff, ran);
        let exit = self.life.exited(Instant::now(), self.backoff)?;
        let mut process = exit.run.process;
        // It may still run (a worker asked to stop that took too long): it must be gone
        // before its rings go to another process. Killing a process that exited fails
        // harmlessly.
        if let Err(error) = process.child.kill() {
            log::debug!("worker on cpu {}: kill: {error}", self.cpu);
        }
        let status = process.child.wait().ok();
        if exit.unexpected && status.and_then(|status| status.signal()) == Some(libc::SIGSYS) {
            log::error!(
                "worker on cpu {} (pid {}) made a system call outside its allow list and was \
                 killed by the kernel (SIGSYS); see the kernel log (audit type 1326) for which",
                self.cpu,
                exit.run.pid
            );
            self.life.blame(RestartReason::ForbiddenSyscall);
        }
        self.retired.absorb(&exit.run.counters);
        if exit.unexpected {
            self.outages += 1;
        }
        if self.life.in_worker_set() {
            self.down_since.get_or_insert_with(Instant::now);
        }
        Some((exit.unexpected, status))
    }

    /// Counts the restart about to happen, if it is one, with the reason its process went
    /// away for.
    pub(crate) fn count_restart(&mut self) {
        if let Some(reason) = self.life.restart_reason() {
            self.restarts += 1;
            self.restart_reasons.count(reason);
            self.last_restart = Some(reason);
        }
    }

    /// Takes the slot out of the worker set: its outage ends with it.
    pub(crate) fn retire(&mut self) {
        self.life.retire();
        self.down_since = None;
    }

    /// Kills the live process for `reason`; its exit is then reaped as usual (the control
    /// socket closes), and the restart that follows is counted for `reason`.
    pub(crate) fn kill(&mut self, reason: RestartReason) {
        if self.life.killed(reason)
            && let Some(run) = self.life.run_mut()
            && let Err(error) = run.process.child.kill()
        {
            log::debug!("worker on cpu {}: kill: {error}", self.cpu);
        }
    }

    /// Sends `message` to the live process, if any; a failure means it is going away. A
    /// worker that did not read for `WRITE_TIMEOUT` (5 s) is killed (the message may be half
    /// written, and the worker is stuck): its end of the socket closes, and it is restarted.
    pub(crate) fn tell(&mut self, message: &ToWorker) -> io::Result<()> {
        let Some(run) = self.life.run_mut() else {
            return Ok(());
        };
        let sent = protocol::send(&mut run.process.control, message);
        self.unless_stuck(sent)
    }

    /// Hands the live process, if any, the transmit rings and sockets that `change` (a count
    /// of the rules it is about to hold, see [`HandedOutputs`]) says it lacks: before the
    /// message with the rules that need them. Fails like [`WorkerSlot::tell`].
    pub(crate) fn hand_outputs(
        &mut self,
        interfaces: &Interfaces,
        ring: &RingSection,
        change: impl FnOnce(&mut HandedOutputs) -> Vec<OutputKey>,
    ) -> io::Result<()> {
        let cpu = self.cpu;
        let Some(run) = self.life.run_mut() else {
            return Ok(());
        };
        let process = &mut run.process;
        let keys = change(&mut process.outputs);
        let sent = hand_over(
            &mut process.control,
            &mut process.outputs,
            &keys,
            interfaces,
            ring,
            cpu,
        );
        self.unless_stuck(sent)
    }

    /// Adds `rings` (fanout member, ring) to those the slot serves, and hands them to its live
    /// process, if any, which serves them from then on; a later process gets them at start.
    pub(crate) fn add_rings(&mut self, rings: Vec<(u32, RingHandle)>) {
        let sent = self.send_rings(rings.iter().map(|(_, ring)| ring), &[]);
        if let Err(error) = sent {
            log::debug!("worker on cpu {}: rings not sent: {error}", self.cpu);
        }
        self.rings.extend(rings);
    }

    /// Lets the rings on interface `ifindex` go (it was deleted: the kernel unbound them), and
    /// tells the live process, if any, to close its own.
    pub(crate) fn drop_rings(&mut self, ifindex: u32) {
        let before = self.rings.len();
        self.rings
            .retain(|(_, ring)| ring.descriptor().ifindex != ifindex);
        if self.rings.len() == before {
            return;
        }
        if let Err(error) = self.send_rings(std::iter::empty(), &[ifindex]) {
            log::debug!("worker on cpu {}: ring release not sent: {error}", self.cpu);
        }
    }

    fn send_rings<'a>(
        &mut self,
        rings: impl Iterator<Item = &'a RingHandle>,
        drop: &[u32],
    ) -> io::Result<()> {
        let Some(run) = self.life.run_mut() else {
            return Ok(());
        };
        let rings: Vec<&RingHandle> = rings.collect();
        let mut sent = Ok(());
        // At most MAX_FDS to a message; the releases go with the first.
        let mut batches = rings.chunks(handoff::MAX_FDS).peekable();
        let mut first = true;
        while first || batches.peek().is_some() {
            let batch = batches.next().unwrap_or(&[]);
            let message = ToWorker::Rings {
                rings: batch
                    .iter()
                    .map(|ring| ring.descriptor().to_string())
                    .collect(),
                drop: if first { drop.to_vec() } else { Vec::new() },
            };
            let fds: Vec<_> = batch.iter().map(|ring| ring.as_fd()).collect();
            sent = protocol::send_with_fds(&mut run.process.control, &message, &fds);
            first = false;
            if sent.is_err() {
                break;
            }
        }
        self.unless_stuck(sent)
    }

    /// Kills the live process if `sent` timed out: it has not read for [`WRITE_TIMEOUT`].
    fn unless_stuck(&mut self, sent: io::Result<()>) -> io::Result<()> {
        if let Err(error) = &sent
            && matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
            && let Some(pid) = self.pid()
        {
            log::error!(
                "worker on cpu {} (pid {pid}) read nothing for {} s: killed, to be restarted",
                self.cpu,
                WRITE_TIMEOUT.as_secs()
            );
            self.kill(RestartReason::Unresponsive);
        }
        sent
    }
}

/// The wait before restarting a worker that died after running for `ran`, given the previous
/// wait: doubled on each quick death, up to [`MAX_BACKOFF`], and back to [`FIRST_BACKOFF`]
/// after a healthy run.
fn next_backoff(previous: Duration, ran: Duration) -> Duration {
    if ran >= HEALTHY_RUN {
        FIRST_BACKOFF
    } else {
        (previous * 2).min(MAX_BACKOFF)
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
            // Nothing is lost when the loop has gone: it stopped listening because the relay
            // stops.
            Ok(None) => {
                drop(events.send(WorkerEvent::Gone {
                    slot,
                    pid,
                    error: None,
                }));
                return;
            }
            Err(error) => {
                drop(events.send(WorkerEvent::Gone {
                    slot,
                    pid,
                    error: Some(error.to_string()),
                }));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_deaths_back_off_and_a_healthy_run_resets_the_wait() {
        let mut wait = FIRST_BACKOFF;
        for _ in 0..10 {
            wait = next_backoff(wait, Duration::from_millis(50));
        }
        assert_eq!(wait, MAX_BACKOFF);
        assert_eq!(next_backoff(wait, HEALTHY_RUN), FIRST_BACKOFF);
        assert_eq!(
            next_backoff(FIRST_BACKOFF, Duration::ZERO),
            FIRST_BACKOFF * 2
        );
    }

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
                    ipv6: Vec::new(),
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
