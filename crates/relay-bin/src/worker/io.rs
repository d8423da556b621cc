//! The worker's rings and sockets, and the loop that drives the data path over them.

use super::WorkerError;
use super::datapath::{Datapath, Outputs, Written};
use crate::config::{RingSection, RuleEntry};
use crate::protocol::{self, FromWorker, LineBuffer, ToWorker, WorkerStart};
use crate::protocol::{InterfaceEntry, ShardEntry};
use crate::rings;
use fanout_core::handoff::RingHandle;
use fanout_core::udp_batch::UdpBatch;
use fanout_core::{RingStats, RxRing, TxRing, TxRingBuilder};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use relay_rules::table::CompiledOutput;
use relay_rules::{Interfaces, RewriteError, RuleSet, VlanTag};
use smallvec::SmallVec;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

/// How long the loop sleeps in `poll` when nothing arrives, so control messages are never
/// waited on for long even if their wake-up were missed.
const POLL_TIMEOUT_MS: u16 = 200;
/// Datagrams queued per socket output before a `sendmmsg`.
const SOCKET_BATCH: usize = 64;
/// Largest UDP payload a socket output carries.
const MAX_PAYLOAD: usize = 65_507;

/// A socket output's socket, shared by every output with the same interface, source, TTL and DSCP.
struct SocketOut {
    key: (u32, Ipv4Addr, u8, Option<u8>),
    batch: UdpBatch,
}

/// Transmit rings and socket batches: the [`Outputs`] of a worker.
struct Sinks {
    rings: Vec<(u32, TxRing)>,
    sockets: Vec<SocketOut>,
    socket_failures: usize,
}

/// A worker with everything set up.
pub(super) struct WorkerIo {
    cpu: u32,
    ring: RingSection,
    shard: Option<ShardEntry>,
    interfaces: Interfaces,
    rx: Vec<(u32, RxRing)>,
    datapath: Datapath,
    sinks: Sinks,
    kernel: RingStats,
}

impl WorkerIo {
    /// Pins to the CPU, builds the table, maps the handed rings and opens the outputs.
    pub(super) fn new(start: &WorkerStart, handles: Vec<RingHandle>) -> Result<Self, String> {
        fanout_core::cpu::pin_current_thread(start.cpu as usize)
            .map_err(|error| format!("pinning to cpu {}: {error}", start.cpu))?;
        let interfaces: Interfaces = start.interfaces.iter().map(Into::into).collect();
        let rules = start.rules.iter().map(|entry| entry.to_rule()).collect();
        let set = RuleSet::new(rules, interfaces.clone(), relay_rules::Limits::default())
            .map_err(|errors| format!("the rules handed over do not validate here: {errors}"))?;
        let table = rings::table(&set, start.generation, start.shard);
        let mut rx = Vec::with_capacity(handles.len());
        for handle in handles {
            let ifindex = handle.descriptor().ifindex;
            let ring = handle.map().map_err(|error| {
                format!("mapping the receive ring of interface #{ifindex}: {error}")
            })?;
            rx.push((ifindex, ring));
        }
        let mut sinks = Sinks {
            rings: Vec::new(),
            sockets: Vec::new(),
            socket_failures: 0,
        };
        for rule in table.rules() {
            for output in &rule.outputs {
                sinks.open(output, &interfaces, &start.ring)?;
            }
        }
        Ok(WorkerIo {
            cpu: start.cpu,
            ring: start.ring,
            shard: start.shard,
            interfaces,
            rx,
            datapath: Datapath::new(table),
            sinks,
            kernel: RingStats::default(),
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

    /// Serves until told to stop; answers counter requests in between.
    pub(super) fn serve(&mut self, control: UnixStream) -> Result<(), WorkerError> {
        control.set_nonblocking(true)?;
        let mut writer = control.try_clone()?;
        let mut reader = control;
        let mut lines = LineBuffer::default();
        loop {
            let (control_ready, ring_ready) = self.wait(&reader)?;
            if ring_ready {
                self.drain();
            }
            if control_ready {
                let messages = match lines.read_from(&mut reader) {
                    Ok(Some(messages)) => messages,
                    Ok(None) => {
                        return Err(WorkerError::Control(
                            std::io::ErrorKind::UnexpectedEof.into(),
                        ));
                    }
                    Err(error) => return Err(WorkerError::Control(error)),
                };
                for message in messages {
                    match message {
                        ToWorker::Counters => {
                            let counters = self.counters();
                            protocol::send(&mut writer, &FromWorker::Counters(Box::new(counters)))?;
                        }
                        ToWorker::Stop => {
                            self.drain();
                            let counters = self.counters();
                            protocol::send(&mut writer, &FromWorker::Counters(Box::new(counters)))?;
                            return Ok(());
                        }
                        ToWorker::Update {
                            generation,
                            remove,
                            add,
                            interfaces,
                        } => {
                            self.update(generation, &remove, &add, &interfaces);
                            self.send_applied(&mut writer)?;
                        }
                        ToWorker::Table {
                            generation,
                            rules,
                            interfaces,
                        } => {
                            if let Err(error) = self.replace(generation, &rules, &interfaces) {
                                log::error!("worker on cpu {}: resync refused: {error}", self.cpu);
                            }
                            self.send_applied(&mut writer)?;
                        }
                        ToWorker::CorruptTable => self.corrupt(),
                        ToWorker::Start(_) => {
                            log::warn!("worker on cpu {}: ignoring a second start", self.cpu);
                        }
                    }
                }
            }
        }
    }

    fn send_applied(&self, writer: &mut UnixStream) -> Result<(), WorkerError> {
        protocol::send(
            writer,
            &FromWorker::Applied {
                generation: self.generation(),
                checksum: self.checksum(),
            },
        )?;
        Ok(())
    }

    /// Applies a change rule by rule: each insert and remove costs O(1), so the rings wait no
    /// longer than the change itself takes.
    fn update(
        &mut self,
        generation: u64,
        remove: &[String],
        add: &[RuleEntry],
        interfaces: &[InterfaceEntry],
    ) {
        for entry in interfaces {
            if self.interfaces.get(&entry.name) != Some(&entry.into()) {
                self.interfaces.insert(entry.into());
            }
        }
        for name in remove {
            self.datapath.remove(name);
        }
        for entry in add {
            let rule = entry.to_rule();
            match self.datapath.insert(&rule, &self.interfaces) {
                Ok(outputs) => {
                    for output in outputs {
                        if let Err(error) = self.sinks.open(output, &self.interfaces, &self.ring) {
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
    }

    /// Replaces the whole table (a resync); counters of rules that stay are kept.
    fn replace(
        &mut self,
        generation: u64,
        rules: &[RuleEntry],
        interfaces: &[InterfaceEntry],
    ) -> Result<(), String> {
        let interfaces: Interfaces = interfaces.iter().map(Into::into).collect();
        let rules = rules.iter().map(RuleEntry::to_rule).collect();
        let set = RuleSet::new(rules, interfaces.clone(), relay_rules::Limits::default())
            .map_err(|errors| errors.to_string())?;
        let table = rings::table(&set, generation, self.shard);
        for rule in table.rules() {
            for output in &rule.outputs {
                self.sinks.open(output, &interfaces, &self.ring)?;
            }
        }
        self.interfaces = interfaces;
        self.datapath.replace(table);
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

    /// Waits for a ring or the control socket; says which are readable.
    fn wait(&self, control: &UnixStream) -> Result<(bool, bool), WorkerError> {
        let mut fds: SmallVec<[PollFd<'_>; 8]> = SmallVec::new();
        fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        for (_, ring) in &self.rx {
            fds.push(PollFd::new(ring.socket().as_fd(), PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, PollTimeout::from(POLL_TIMEOUT_MS)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(WorkerError::Control(errno.into())),
        }
        let ready = |fd: &PollFd<'_>| !fd.revents().unwrap_or(PollFlags::empty()).is_empty();
        let control_ready = ready(&fds[0]);
        // A ring is drained even without a wake-up: a V3 block can be handed over between the
        // last drain and the poll without the socket becoming readable again.
        Ok((control_ready, true))
    }

    /// Serves every block the kernel has handed over, one transmit kick per block.
    fn drain(&mut self) {
        let WorkerIo {
            rx,
            datapath,
            sinks,
            ..
        } = self;
        for (ifindex, ring) in rx.iter_mut() {
            while let Some(block) = ring.next_block() {
                for frame in block.frames() {
                    let vlan = frame.vlan_tci().map(|tci| VlanTag {
                        tpid: frame.vlan_tpid().unwrap_or(0x8100),
                        tci,
                    });
                    let partial = frame.checksum_partial();
                    let now = frame.timestamp().as_nanos() as u64;
                    datapath.handle(*ifindex, frame.data(), vlan, partial, now, sinks);
                }
                drop(block);
                sinks.flush();
                if sinks.socket_failures > 0 {
                    datapath.count_socket_errors(sinks.socket_failures);
                    sinks.socket_failures = 0;
                }
            }
        }
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
        counters.tx_wrong_format = self
            .sinks
            .rings
            .iter()
            .map(|(_, ring)| ring.counters().wrong_format)
            .sum();
        // The supervisor compares these with its own to find drift.
        counters.table_generation = self.generation();
        counters.table_checksum = self.checksum();
        counters
    }
}

impl Sinks {
    /// Opens what `output` needs, unless an earlier output already did.
    fn open(
        &mut self,
        output: &CompiledOutput,
        interfaces: &Interfaces,
        ring: &RingSection,
    ) -> Result<(), String> {
        let ifindex = output.ifindex();
        let name = interfaces
            .by_index(ifindex)
            .map(|facts| facts.name.clone())
            .ok_or_else(|| {
                format!("output interface #{ifindex} is not among the interfaces handed over")
            })?;
        match output {
            CompiledOutput::Ring { .. } => {
                if self.rings.iter().any(|(index, _)| *index == ifindex) {
                    return Ok(());
                }
                let ring = TxRingBuilder::new(name.as_str())
                    .geometry(rings::tx_geometry(ring))
                    .dont_fork(true)
                    .build()
                    .map_err(|error| format!("transmit ring on {name}: {error}"))?;
                self.rings.push((ifindex, ring));
            }
            CompiledOutput::Socket {
                source, ttl, dscp, ..
            } => {
                let key = (ifindex, *source, *ttl, *dscp);
                if self.sockets.iter().any(|socket| socket.key == key) {
                    return Ok(());
                }
                let socket = output_socket(&name, *source, *ttl, *dscp)
                    .map_err(|error| format!("socket output on {name} from {source}: {error}"))?;
                self.sockets.push(SocketOut {
                    key,
                    batch: UdpBatch::new(
                        socket,
                        SOCKET_BATCH,
                        MAX_PAYLOAD.min(ring.frame_size as usize * 32),
                    ),
                });
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        for (_, ring) in &mut self.rings {
            // A failed kick leaves the frames committed; the next kick sends them.
            let _ = ring.flush();
        }
        for socket in &mut self.sockets {
            let flushed = socket.batch.flush();
            self.socket_failures += flushed.failed;
        }
    }
}

impl Outputs for Sinks {
    #[inline]
    fn write_frame<F>(&mut self, ifindex: u32, write: F) -> Written
    where
        F: FnOnce(&mut [u8]) -> Result<usize, RewriteError>,
    {
        let Some((_, ring)) = self.rings.iter_mut().find(|(index, _)| *index == ifindex) else {
            return Written::RingFull;
        };
        let Some(mut slot) = ring.reserve() else {
            return Written::RingFull;
        };
        match write(slot.buffer()) {
            Ok(len) => {
                slot.commit(len);
                Written::Queued
            }
            Err(_) => Written::Refused,
        }
    }

    fn queue(
        &mut self,
        output: &CompiledOutput,
        destination: SocketAddrV4,
        payload: &[u8],
    ) -> bool {
        let CompiledOutput::Socket {
            ifindex,
            source,
            ttl,
            dscp,
            ..
        } = output
        else {
            return false;
        };
        let key = (*ifindex, *source, *ttl, *dscp);
        let Some(socket) = self.sockets.iter_mut().find(|socket| socket.key == key) else {
            return false;
        };
        if socket.batch.push(destination, payload).is_ok() {
            return true;
        }
        let flushed = socket.batch.flush();
        self.socket_failures += flushed.failed;
        socket.batch.push(destination, payload).is_ok()
    }
}

/// A UDP socket sending from `source` out of interface `name` with the output's TTL and DSCP.
fn output_socket(
    name: &str,
    source: Ipv4Addr,
    ttl: u8,
    dscp: Option<u8>,
) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = UdpSocket::bind((source, 0))?;
    setsockopt(
        &socket,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(name),
    )?;
    socket.set_ttl(u32::from(ttl))?;
    socket.set_multicast_ttl_v4(u32::from(ttl))?;
    socket.set_multicast_loop_v4(false)?;
    if let Some(dscp) = dscp {
        setsockopt(&socket, sockopt::Ipv4Tos, &(i32::from(dscp) << 2))?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}
