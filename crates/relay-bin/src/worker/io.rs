//! The worker's rings and sockets, and the loop that drives the data path over them.

use super::WorkerError;
use super::datapath::{Datapath, RxChecksum};
use super::sinks::Sinks;
use super::wait::Waiter;
use crate::config::{RingSection, RuleEntry};
use crate::protocol::InterfaceEntry;
use crate::protocol::{self, FromWorker, LineBuffer, ToWorker, WorkerStart};
use crate::rings;
use fanout_core::handoff::RingHandle;
use fanout_core::{RingStats, RxRing};
use relay_rules::shard::ShardSet;
use relay_rules::{Interfaces, RuleSet, VlanTag};
use std::os::unix::net::UnixStream;

/// Most received frames whose output waits for one transmit kick while more frames are already
/// waiting in the ring (the worker is behind, so they are late anyway): with 4 outputs a kick per
/// V3 block cost 4 syscalls per ~370 frames at full load. Never more than a quarter of a
/// transmit ring, so a batch always fits.
const KICK_BATCH: usize = 1024;

/// A worker with everything set up.
pub(super) struct WorkerIo {
    cpu: u32,
    ring: RingSection,
    shard: Option<ShardSet>,
    interfaces: Interfaces,
    rx: Vec<(u32, RxRing)>,
    datapath: Datapath,
    sinks: Sinks,
    waiter: Waiter,
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
        let shard = match &start.shard {
            None => None,
            Some(entry) => Some(entry.to_set().ok_or_else(|| {
                format!(
                    "shards {:?} of {} name no shard or one past the count",
                    entry.indices, entry.count
                )
            })?),
        };
        let table = rings::table(&set, start.generation, shard.as_ref());
        let mut rx = Vec::with_capacity(handles.len());
        for handle in handles {
            let ifindex = handle.descriptor().ifindex;
            let ring = handle.map().map_err(|error| {
                format!("mapping the receive ring of interface #{ifindex}: {error}")
            })?;
            rx.push((ifindex, ring));
        }
        let mut sinks = Sinks::default();
        for rule in table.rules() {
            for output in &rule.outputs {
                sinks.open(output, &interfaces, &start.ring)?;
            }
        }
        Ok(WorkerIo {
            cpu: start.cpu,
            ring: start.ring,
            shard,
            interfaces,
            rx,
            datapath: Datapath::new(table),
            sinks,
            waiter: Waiter::new(start.ring.busy_poll_us, start.cpu),
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
            let control_ready = self
                .waiter
                .wait(&reader, &self.rx)
                .map_err(|errno| WorkerError::Control(errno.into()))?;
            // A ring is drained even without a wake-up: a V3 block can be handed over between
            // the last drain and the poll without the socket becoming readable again.
            self.drain();
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
                            self.log_syscalls();
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
        let table = rings::table(&set, generation, self.shard.as_ref());
        for rule in table.rules() {
            for output in &rule.outputs {
                self.sinks.open(output, &interfaces, &self.ring)?;
            }
        }
        self.interfaces = interfaces;
        self.datapath.replace(table);
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

    /// Serves every block (V3) or run of frames (V2) the kernel has handed over, with one
    /// transmit kick per batch: when nothing more is waiting in the ring, so a frame is never
    /// held back for one that has not arrived, or after [`KICK_BATCH`] frames of a backlog. A V2
    /// run ends at the first slot the kernel has not filled yet, and a worker that fell behind
    /// finds several V3 blocks waiting: kicking per run or block cost a syscall each (per output
    /// interface).
    fn drain(&mut self) {
        let WorkerIo {
            rx,
            datapath,
            sinks,
            ring: section,
            ..
        } = self;
        let batch = KICK_BATCH.min((section.tx_frames as usize / 4).max(1));
        let mut unsent = 0;
        for (ifindex, ring) in rx.iter_mut() {
            loop {
                let Some(block) = ring.next_block() else {
                    break;
                };
                unsent += block.len();
                for frame in block.frames() {
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
                if unsent >= batch || !ring.has_pending() {
                    Self::send(sinks, datapath);
                    unsent = 0;
                }
            }
        }
        if unsent > 0 {
            Self::send(sinks, datapath);
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
        // The supervisor compares these with its own to find drift.
        counters.table_generation = self.generation();
        counters.table_checksum = self.checksum();
        counters
    }
}
