//! The worker's rings and sockets, and the loop that drives the data path over them.

use super::channel::Channel;
use super::datapath::{Datapath, RxChecksum};
use super::sinks::Handed;
use super::sinks::Sinks;
use super::wait::Waiter;
use super::{SetupError, WorkerError};
use crate::config::RingSection;
use crate::protocol::{FromWorker, Outbox, ToWorker, WorkerStart};
use crate::rings;
use fanout_core::handoff::RingHandle;
use fanout_core::{RingStats, RxRing};
use relay_rules::Rule;
use relay_rules::shard::ShardSet;
use relay_rules::{Interfaces, RuleSet, VlanTag};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Most received frames whose output waits for one transmit kick while more frames are already
/// waiting in the ring (the worker is behind, so they are late anyway): with 4 outputs a kick per
/// V3 block cost 4 syscalls per ~370 frames at full load. Never more than a quarter of a
/// transmit ring, so a batch always fits.
const KICK_BATCH: usize = 1024;
/// Most frames served from one ring before the next ring gets its turn (a V3 block is served
/// whole, so a turn may end up to a block past this). Without a bound, a ring that the kernel
/// refills as fast as it is read kept the worker from the other rings and from the control
/// socket for as long as the burst lasted. At ~0.1-0.5 µs a frame a turn takes well under a
/// millisecond, far inside [`super::wait::CONTROL_EVERY`]; the same as [`KICK_BATCH`], so a
/// turn is at most one transmit batch, and large enough that passing between rings (one status
/// load each) costs nothing measurable.
const RING_BUDGET: usize = KICK_BATCH;
/// Rules removed by one change past which the worker gives the freed memory back at once.
const TRIM_AFTER_REMOVING: usize = 64;
/// Longest the final counters may take to be written when the worker stops.
const FINAL_WRITE: Duration = Duration::from_secs(5);

/// Why a resync's table was refused; the worker keeps serving its previous one.
#[derive(Debug, thiserror::Error)]
enum ResyncError {
    /// The rules do not validate in the worker.
    #[error(transparent)]
    Rules(#[from] relay_rules::ValidationErrors),
    /// An output's socket or ring could not be opened.
    #[error(transparent)]
    Output(super::OutputError),
}

/// A worker with everything set up.
pub(super) struct WorkerIo {
    cpu: u32,
    ring: RingSection,
    shard: Option<ShardSet>,
    interfaces: Interfaces,
    rx: Vec<(u32, RxRing)>,
    datapath: Datapath,
    sinks: Sinks,
    /// Outputs handed over for the next change, until it takes them.
    handed: Handed,
    waiter: Waiter,
    kernel: RingStats,
    /// Received frames whose output has not been kicked yet, across passes over the rings.
    unsent: usize,
}

impl WorkerIo {
    /// Pins to the CPU, builds the table, maps the handed rings and opens the outputs.
    pub(super) fn new(
        start: &WorkerStart,
        handles: Vec<RingHandle>,
        mut handed: Handed,
    ) -> Result<Self, SetupError> {
        fanout_core::cpu::pin_current_thread(start.cpu as usize).map_err(|source| {
            SetupError::Pin {
                cpu: start.cpu,
                source,
            }
        })?;
        let interfaces: Interfaces = start.interfaces.iter().cloned().collect();
        let rules = start.rules.clone();
        let set = RuleSet::new(rules, interfaces.clone(), relay_rules::Limits::default())
            .map_err(SetupError::Rules)?;
        let shard = match &start.shard {
            None => None,
            Some(entry) => Some(entry.to_set().ok_or_else(|| SetupError::Shards {
                indices: entry.indices.clone(),
                count: entry.count,
            })?),
        };
        let table = rings::table(&set, start.generation, shard.as_ref());
        let mut rx = Vec::with_capacity(handles.len());
        for handle in handles {
            let ifindex = handle.descriptor().ifindex;
            let ring = handle
                .map()
                .map_err(|source| SetupError::MapRing { ifindex, source })?;
            rx.push((ifindex, ring));
        }
        let mut sinks = Sinks::default();
        for rule in table.rules() {
            for output in &rule.outputs {
                // Like a rule added later: the other outputs serve, this one counts what it
                // cannot send.
                if let Err(error) = sinks.open(output, &start.ring, &mut handed) {
                    log::error!("worker on cpu {}: rule {:?}: {error}", start.cpu, rule.name);
                }
            }
        }
        Ok(WorkerIo {
            cpu: start.cpu,
            ring: start.ring,
            shard,
            interfaces,
            rx,
            datapath: {
                let mut datapath = Datapath::new(table);
                datapath.set_guard_share(start.guard_share);
                datapath
            },
            sinks,
            handed: Handed::default(),
            waiter: Waiter::new(start.ring.busy_poll_us, start.cpu),
            kernel: RingStats::default(),
            unsent: 0,
        })
    }

    /// Generation of the table served.
    pub(super) fn generation(&self) -> u64 {
        self.datapath.table().generation()
    }

    /// Checksum of the table served.
    pub(super) fn checksum(&self) -> u64 {
        self.datapath.table().checksum()
    }

    /// Serves until told to stop; answers counter requests in between. Replies go through an
    /// [`Outbox`]: the socket is non-blocking, and a counters reply (an entry per rule that saw
    /// traffic) can outgrow its buffer; what does not fit is written when `poll` says the socket
    /// is writable, so the data path never waits for the supervisor.
    pub(super) fn serve(
        &mut self,
        mut channel: Channel,
        backlog: Vec<ToWorker>,
    ) -> Result<(), WorkerError> {
        let mut writer = channel.stream().try_clone()?;
        let mut outbox = Outbox::default();
        let mut backlog = Some(backlog);
        loop {
            let woken = self
                .waiter
                .wait(channel.stream(), !outbox.is_empty(), &self.rx)
                .map_err(|errno| WorkerError::Control(errno.into()))?;
            // A ring is drained even without a wake-up: a V3 block can be handed over between
            // the last drain and the poll without the socket becoming readable again.
            self.drain();
            if woken.writable {
                outbox.write_to(&mut writer)?;
            }
            let messages = match backlog.take() {
                Some(messages) if !messages.is_empty() => Some(messages),
                _ if woken.control => match channel.read() {
                    Ok(Some(messages)) => Some(messages),
                    Ok(None) => {
                        return Err(WorkerError::Control(
                            std::io::ErrorKind::UnexpectedEof.into(),
                        ));
                    }
                    Err(error) => return Err(WorkerError::Control(error)),
                },
                _ => None,
            };
            if let Some(messages) = messages {
                for message in messages {
                    match message {
                        ToWorker::Outputs { outputs } => {
                            channel.take_outputs(&outputs, &mut self.handed)?;
                        }
                        ToWorker::Rings { rings, drop } => {
                            let handles = channel.take_rings(&rings)?;
                            self.change_rings(handles, &drop);
                        }
                        ToWorker::Counters => {
                            let counters = self.counters();
                            outbox.push(&FromWorker::Counters(Box::new(counters)))?;
                        }
                        ToWorker::Stop => {
                            self.drain_all();
                            self.log_syscalls();
                            let counters = self.counters();
                            outbox.push(&FromWorker::Counters(Box::new(counters)))?;
                            return finish_writing(&mut outbox, &mut writer);
                        }
                        ToWorker::Update {
                            generation,
                            remove,
                            add,
                            interfaces,
                        } => {
                            self.update(generation, &remove, &add, &interfaces);
                            self.queue_applied(&mut outbox)?;
                        }
                        ToWorker::Table {
                            generation,
                            rules,
                            interfaces,
                        } => {
                            if let Err(error) = self.replace(generation, &rules, &interfaces) {
                                log::error!("worker on cpu {}: resync refused: {error}", self.cpu);
                            }
                            self.queue_applied(&mut outbox)?;
                        }
                        ToWorker::CorruptTable => self.corrupt(),
                        ToWorker::ForbiddenSyscall => self.forbidden_syscall(),
                        ToWorker::Start(_) => {
                            log::warn!("worker on cpu {}: ignoring a second start", self.cpu);
                        }
                    }
                }
                // Most replies fit the socket at once: no wait for a POLLOUT.
                outbox.write_to(&mut writer)?;
            }
        }
    }

    fn queue_applied(&self, outbox: &mut Outbox) -> Result<(), WorkerError> {
        outbox.push(&FromWorker::Applied {
            generation: self.generation(),
            checksum: self.checksum(),
        })?;
        Ok(())
    }

    /// Applies a change rule by rule: each insert and remove costs O(1), so the rings wait no
    /// longer than the change itself takes.
    fn update(
        &mut self,
        generation: u64,
        remove: &[String],
        add: &[Rule],
        interfaces: &[relay_rules::InterfaceFacts],
    ) {
        for entry in interfaces {
            if self.interfaces.get(&entry.name) != Some(entry) {
                self.interfaces.insert(entry.clone());
            }
        }
        // A ring or socket that a removed rule leaves without users is closed once the change
        // is in (a rule it adds may use it again).
        let mut unused = false;
        for name in remove {
            if let Some(rule) = self.datapath.table().by_name(name) {
                for output in &rule.outputs {
                    unused |= self.sinks.release(output);
                }
            }
            self.datapath.remove(name);
        }
        for entry in add {
            let rule = entry.clone();
            match self.datapath.insert(&rule, &self.interfaces) {
                Ok(outputs) => {
                    for output in outputs {
                        if let Err(error) = self.sinks.open(output, &self.ring, &mut self.handed) {
                            log::error!(
                                "worker on cpu {}: rule {:?}: {error}",
                                self.cpu,
                                rule.name
                            );
                        }
                    }
                }
                Err(error) => {
                    log::error!(
                        "worker on cpu {}: cannot add rule {:?}: {error}",
                        self.cpu,
                        rule.name
                    )
                }
            }
        }
        self.datapath.set_generation(generation);
        self.forget_unused_handed();
        if unused {
            self.close_unused_outputs();
        }
        // What the removed rules and closed outputs held goes back to the system, not to a
        // heap that keeps it: a worker that saw a thousand rules come and go would otherwise
        // keep their memory for good. Trimming walks the heap, so not for a rule or two.
        if unused || remove.len() >= TRIM_AFTER_REMOVING {
            fanout_core::heap::trim();
        }
    }

    /// Lets the rings of the interfaces `drop` go and maps `handles`, which are served from
    /// the next pass on. A ring that cannot be mapped is logged and left out: its frames wait
    /// for the next worker, which the supervisor starts with every ring.
    fn change_rings(&mut self, handles: Vec<RingHandle>, drop: &[u32]) {
        let kept: Vec<bool> = self
            .rx
            .iter()
            .map(|(ifindex, _)| !drop.contains(ifindex))
            .collect();
        self.waiter.keep_rings(&kept);
        let mut index = 0;
        self.rx.retain(|_| {
            let keep = kept[index];
            index += 1;
            keep
        });
        for handle in handles {
            let ifindex = handle.descriptor().ifindex;
            match handle.map() {
                Ok(ring) => self.rx.push((ifindex, ring)),
                Err(error) => log::error!(
                    "worker on cpu {}: the receive ring of interface #{ifindex}: {error}",
                    self.cpu
                ),
            }
        }
        log::info!(
            "worker on cpu {}: serves {} receive ring(s) now",
            self.cpu,
            self.rx.len()
        );
    }

    /// Closes what was handed over for a change that did not take it: a resync hands over
    /// everything the table needs, open or not, and a rule the worker refused takes nothing.
    /// Whatever the next change needs comes with it.
    fn forget_unused_handed(&mut self) {
        if !self.handed.is_empty() {
            log::debug!(
                "worker on cpu {}: {} handed output(s) not needed",
                self.cpu,
                self.handed.len()
            );
            self.handed.clear();
        }
    }

    /// Closes the rings and sockets no rule of the table uses any more.
    fn close_unused_outputs(&mut self) {
        let table = self.datapath.table();
        let closed = self
            .sinks
            .close_unused(table.rules().flat_map(|rule| rule.outputs.iter()));
        if closed > 0 {
            let (rings, sockets) = self.sinks.open_count();
            log::debug!(
                "worker on cpu {}: closed {closed} unused output(s); {rings} transmit ring(s) \
                 and {sockets} socket(s) stay open",
                self.cpu
            );
        }
    }

    /// Replaces the whole table (a resync); counters of rules that stay are kept.
    fn replace(
        &mut self,
        generation: u64,
        rules: &[Rule],
        interfaces: &[relay_rules::InterfaceFacts],
    ) -> Result<(), ResyncError> {
        let interfaces: Interfaces = interfaces.iter().cloned().collect();
        let rules = rules.to_vec();
        let set = RuleSet::new(rules, interfaces.clone(), relay_rules::Limits::default())?;
        let table = rings::table(&set, generation, self.shard.as_ref());
        for rule in table.rules() {
            for output in &rule.outputs {
                self.sinks
                    .open(output, &self.ring, &mut self.handed)
                    .map_err(ResyncError::Output)?;
            }
        }
        self.forget_unused_handed();
        self.interfaces = interfaces;
        self.datapath.replace(table);
        self.close_unused_outputs();
        fanout_core::heap::trim();
        Ok(())
    }

    /// Damages the table without changing its generation, so that drift repair can be tested.
    fn corrupt(&mut self) {
        if cfg!(feature = "drift-test") {
            let first = self
                .datapath
                .table()
                .rules()
                .next()
                .map(|rule| rule.name.clone());
            if let Some(name) = first {
                log::warn!(
                    "worker on cpu {}: dropping rule {name:?} to simulate drift",
                    self.cpu
                );
                self.datapath.remove(&name);
            }
        } else {
            log::warn!(
                "worker on cpu {}: ignoring a table corruption request",
                self.cpu
            );
        }
    }

    /// Opens a socket, which the seccomp filter forbids: the kernel kills the worker on the
    /// spot, so that the supervisor's handling of it can be tested.
    fn forbidden_syscall(&mut self) {
        if cfg!(feature = "drift-test") {
            log::warn!(
                "worker on cpu {}: making a forbidden system call (socket) on request",
                self.cpu
            );
            let opened = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0));
            log::error!(
                "worker on cpu {}: the forbidden system call returned: {opened:?}",
                self.cpu
            );
        } else {
            log::warn!(
                "worker on cpu {}: ignoring a forbidden system call request",
                self.cpu
            );
        }
    }

    /// Serves what the kernel has handed over, each ring in turn for at most [`RING_BUDGET`]
    /// frames (whole blocks), with one transmit kick per batch: when nothing more is waiting in
    /// any ring, so a frame is never held back for one that has not arrived, or after
    /// [`KICK_BATCH`] frames of a backlog. A V2 run ends at the first slot the kernel has not
    /// filled yet, and a worker that fell behind finds several V3 blocks waiting: kicking per
    /// run or block cost a syscall each (per output interface). What a ring has left after its
    /// turn waits for the next pass, which the waiter starts without a syscall.
    fn drain(&mut self) {
        let WorkerIo {
            rx,
            datapath,
            sinks,
            ring: section,
            unsent,
            ..
        } = self;
        let batch = KICK_BATCH.min((section.tx_frames as usize / 4).max(1));
        for (ifindex, ring) in rx.iter_mut() {
            let mut turn = 0;
            while turn < RING_BUDGET {
                let Some(block) = ring.next_block() else {
                    break;
                };
                turn += block.len();
                *unsent += block.len();
                for frame in block.frames() {
                    if frame.is_truncated() {
                        datapath.truncated();
                        continue;
                    }
                    let vlan = frame.vlan_tci().map(|tci| VlanTag {
                        tpid: frame.vlan_tpid().unwrap_or(0x8100),
                        tci,
                    });
                    let checksum = if frame.checksum_partial() {
                        RxChecksum::Partial
                    } else if frame.checksum_verified() {
                        RxChecksum::Verified
                    } else {
                        RxChecksum::Unverified
                    };
                    let now = frame.timestamp().as_nanos() as u64;
                    datapath.handle(*ifindex, frame.data(), vlan, checksum, now, sinks);
                }
                drop(block);
                if *unsent >= batch {
                    Self::send(sinks, datapath);
                    *unsent = 0;
                }
            }
        }
        if *unsent > 0 && !rx.iter().any(|(_, ring)| ring.has_pending()) {
            Self::send(sinks, datapath);
            *unsent = 0;
        }
    }

    /// Drains until the rings are empty (bounded: a ring the kernel keeps filling stops it
    /// after a second), and kicks what is left; for a worker about to stop.
    fn drain_all(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            self.drain();
            if !self.rx.iter().any(|(_, ring)| ring.has_pending()) || Instant::now() >= deadline {
                break;
            }
        }
        if self.unsent > 0 {
            Self::send(&mut self.sinks, &mut self.datapath);
            self.unsent = 0;
        }
    }

    /// Kicks the outputs and counts what their sockets refused.
    fn send(sinks: &mut Sinks, datapath: &mut Datapath) {
        sinks.flush();
        if sinks.socket_failures > 0 {
            datapath.count_socket_errors(sinks.socket_failures);
            sinks.socket_failures = 0;
        }
    }

    /// Logs the syscalls the loop made, for `bench/run`: waiting (`poll`) and sending
    /// (transmit kicks, `sendmmsg`), against the frames received; and the segmented frames
    /// sent (`tx_gso`) with the datagrams they carried.
    fn log_syscalls(&self) {
        let waits = self.waiter.counts();
        let (kicks, sendmmsg) = self.sinks.syscalls();
        let (segmented, in_segmented) = self.sinks.segmented();
        let received = self.datapath.received();
        log::info!(
            "worker on cpu {}: syscalls polls={} sleeps={} kicks={} sendmmsg={} received={} \
             spin_hits={} spin_pauses={} segmented={} segmented_datagrams={}",
            self.cpu,
            waits.polls,
            waits.sleeps,
            kicks,
            sendmmsg,
            received,
            waits.spin_hits,
            waits.spin_pauses,
            segmented,
            in_segmented
        );
    }

    fn counters(&mut self) -> crate::counters::WorkerCounters {
        for (_, ring) in &mut self.rx {
            if let Ok(delta) = ring.statistics() {
                self.kernel += delta;
            }
        }
        let mut counters = self.datapath.counters(self.cpu);
        counters.kernel_drops = self.kernel.drops;
        counters.freezes = self.kernel.freezes;
        counters.tx_wrong_format = self.sinks.wrong_format();
        (counters.tx_segmented, counters.tx_segmented_datagrams) = self.sinks.segmented();
        let name = |ifindex: u32| match self.interfaces.by_index(ifindex) {
            Some(facts) => facts.name.clone(),
            None => format!("#{ifindex}"),
        };
        for ((ifindex, _), health) in self.rx.iter().zip(self.waiter.ring_health()) {
            health
                .errors
                .report(&name(*ifindex), &mut counters.interface_errors);
        }
        for (ifindex, errors) in self.sinks.errors() {
            errors.report(&name(ifindex), &mut counters.output_errors);
        }
        // The supervisor compares these with its own to find drift.
        counters.table_generation = self.generation();
        counters.table_checksum = self.checksum();
        counters
    }
}

/// Writes what `outbox` holds, waiting for the socket to take it for at most [`FINAL_WRITE`]:
/// the last message of a worker that stops.
fn finish_writing(outbox: &mut Outbox, writer: &mut UnixStream) -> Result<(), WorkerError> {
    let deadline = Instant::now() + FINAL_WRITE;
    loop {
        outbox.write_to(writer)?;
        if outbox.is_empty() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WorkerError::Control(std::io::ErrorKind::TimedOut.into()));
        }
        let mut fds = [nix::poll::PollFd::new(
            writer.as_fd(),
            nix::poll::PollFlags::POLLOUT,
        )];
        let timeout = nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(WorkerError::Control(errno.into())),
        }
    }
}
