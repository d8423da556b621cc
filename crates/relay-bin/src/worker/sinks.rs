//! Where a worker's output frames go: a transmit ring per output interface and a batched UDP
//! socket per socket output, kicked together once per batch of received frames.
//!
//! A ring or socket lives as long as a rule of the worker's table uses it: each counts its
//! users, and when a change leaves one without any (checked against the table, so a count
//! thrown off by an output that failed to open never closes one in use), what it holds is sent
//! and it is closed; its counters live on in [`Closed`], so the worker's totals never go back.

use super::datapath::{Outputs, Written};
use super::errors::ErrnoCounts;
use crate::config::RingSection;
use crate::outputs::{OutputError, OutputKey, Received};
use fanout_core::TxRing;
use fanout_core::ring::{HeldSlot, UdpSegments};
use fanout_core::udp_batch::{QueueError, UdpBatch};
use relay_rules::replicate::Segments;
use relay_rules::table::CompiledOutput;
use relay_rules::{Datagram, FrameTemplate, RewriteError};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Datagrams queued per socket output before a `sendmmsg`.
const SOCKET_BATCH: usize = 64;
/// Largest UDP payload a socket output carries.
const MAX_PAYLOAD: usize = 65_507;

/// The rings and sockets the supervisor handed over that no output has taken yet.
pub(super) type Handed = HashMap<OutputKey, Received>;

/// Segmented frames open at once on one transmit ring: one per output being written in a
/// batch; past this the oldest is closed, which costs only its further datagrams a slot each.
const MAX_OPEN: usize = 8;
/// Largest segmented frame: the kernel copies it into one socket buffer, and with its
/// `skb_shared_info` and headroom this stays within a 16 KiB allocation (12 datagrams of
/// 1,316 bytes, 64 of up to 200).
const SEGMENTED_FRAME_MAX: usize = 15_872;

/// How long a transmit ring whose kick failed (ENETDOWN: its interface is down; ENXIO: gone)
/// waits before it is kicked again. Its frames stay queued in the ring meanwhile (see
/// `TxRing::flush`), and once it is full further output frames are counted as `tx_full`. Without
/// the wait, a full ring would try a kick, one syscall that cannot succeed, for every frame
/// received; with it, a dead output costs a syscall per 100 ms, and relaying resumes within
/// 100 ms (plus one batch) of the link's return, well inside a second.
const KICK_RETRY: Duration = Duration::from_millis(100);

/// A segmented frame being filled in a held transmit slot.
struct OpenFrame {
    /// Address of the output's template: the identity of the output during one batch, in which
    /// the table does not change.
    output: usize,
    slot: HeldSlot,
    segments: Segments,
}

/// A transmit ring and the segmented frames open on it.
struct RingOut {
    ifindex: u32,
    ring: TxRing,
    open: SmallVec<[OpenFrame; MAX_OPEN]>,
    /// Segmented frames committed, and the datagrams in them.
    segmented: (u64, u64),
    /// Failed kicks, by errno.
    errors: ErrnoCounts,
    /// After a failed kick: when the next kick may be tried.
    retry_at: Option<Instant>,
    /// Outputs of the table that write to this ring.
    users: usize,
}

impl RingOut {
    fn write(
        &mut self,
        template: &FrameTemplate,
        input: &Datagram<'_>,
        ip_id: u16,
        segmentable: bool,
    ) -> Written {
        let output = std::ptr::from_ref(template) as usize;
        if let Some(at) = self.open.iter().position(|open| open.output == output) {
            if segmentable {
                let open = &mut self.open[at];
                let buffer = self.ring.held_buffer(&open.slot);
                let room = buffer.len().min(SEGMENTED_FRAME_MAX);
                if template.append_segment(&mut open.segments, input, &mut buffer[..room]) {
                    return Written::Queued;
                }
            }
            // This output's earlier datagrams must leave first: close their frame.
            let open = self.open.remove(at);
            self.close(open);
        }
        if segmentable && self.ring.segmentation() {
            if self.open.len() == MAX_OPEN {
                let oldest = self.open.remove(0);
                self.close(oldest);
            }
            let held = self.hold(|buffer| template.write(input, ip_id, buffer));
            return match held {
                None => Written::RingFull,
                Some(Err(
                    RewriteError::ExceedsMtu { .. } | RewriteError::BufferTooSmall { .. },
                )) => Written::TooBig,
                Some(Err(RewriteError::TtlExpired { .. })) => Written::TtlExpired,
                Some(Ok((slot, len))) => {
                    let segments = template.segments(input, len);
                    self.open.push(OpenFrame {
                        output,
                        slot,
                        segments,
                    });
                    Written::Queued
                }
            };
        }
        if !self.has_room() {
            return Written::RingFull;
        }
        let Some(mut slot) = self.ring.reserve() else {
            return Written::RingFull;
        };
        match template.write(input, ip_id, slot.buffer()) {
            Ok(len) => {
                slot.commit(len);
                Written::Queued
            }
            Err(RewriteError::ExceedsMtu { .. } | RewriteError::BufferTooSmall { .. }) => {
                Written::TooBig
            }
            Err(RewriteError::TtlExpired { .. }) => Written::TtlExpired,
        }
    }

    /// Holds the next slot and lets `write` fill it, kicking the ring once if it is full.
    fn hold<T, E>(
        &mut self,
        write: impl FnOnce(&mut [u8]) -> Result<T, E>,
    ) -> Option<Result<(HeldSlot, T), E>> {
        if !self.has_room() {
            return None;
        }
        self.ring.hold_with(write)
    }

    /// Whether a slot is free, after [`RingOut::make_room`] if need be.
    fn has_room(&mut self) -> bool {
        self.ring.reclaim();
        self.ring.in_flight() < self.ring.slot_count() || self.make_room()
    }

    /// A full ring: sends what is queued (closing the open frames first) and takes back what
    /// the kernel is done with. Linear frames crossing veth come back within the kick, a NIC's
    /// at its transmit completions, so a batch larger than the ring is, where the device keeps
    /// up, slowed down rather than dropped.
    fn make_room(&mut self) -> bool {
        self.close_all();
        self.kick();
        self.ring.reclaim();
        self.ring.in_flight() < self.ring.slot_count()
    }

    /// Commits an open frame, segmented if it took more than one datagram.
    fn close(&mut self, open: OpenFrame) {
        let buffer = self.ring.held_buffer(&open.slot);
        let split = open.segments.finish(buffer).map(|split| UdpSegments {
            udp_offset: split.udp_offset,
            segment_size: split.segment_size,
        });
        if split.is_some() {
            self.segmented.0 += 1;
            self.segmented.1 += u64::from(open.segments.count());
        }
        self.ring.commit_held(open.slot, open.segments.len(), split);
    }

    fn close_all(&mut self) {
        while let Some(open) = self.open.pop() {
            self.close(open);
        }
    }

    /// Kicks the ring unless a failed kick is still waiting for [`KICK_RETRY`]; counts a
    /// failure by errno and logs when the output stops and starts again. The clock is read only
    /// while the output is failing.
    fn kick(&mut self) {
        if let Some(at) = self.retry_at
            && Instant::now() < at
        {
            return;
        }
        match self.ring.flush() {
            Ok(()) => {
                if self.retry_at.take().is_some() {
                    log::info!(
                        "output {}: transmit kicks succeed again; the queued frames are sent",
                        self.ring.socket().interface_label()
                    );
                }
            }
            Err(error) => {
                let errno = error.errno().unwrap_or(nix::errno::Errno::EIO);
                self.errors.add(errno, 1);
                if self.retry_at.is_none() {
                    log::warn!(
                        "output {}: {error}; its frames stay queued and the kick is retried \
                         every {} ms",
                        self.ring.socket().interface_label(),
                        KICK_RETRY.as_millis()
                    );
                }
                self.retry_at = Some(Instant::now() + KICK_RETRY);
            }
        }
    }
}

/// A socket output's socket, shared by every output with the same interface, source, TTL and DSCP.
struct SocketOut {
    key: OutputKey,
    batch: UdpBatch,
    /// Refused datagrams, by errno.
    errors: ErrnoCounts,
    /// Outputs of the table that send through this socket.
    users: usize,
}

impl SocketOut {
    /// Sends the batch; returns the datagrams the kernel refused, counted by errno. A flush
    /// reports only its first error's errno, so a batch refused for several reasons (rare: the
    /// reasons are mostly the link's or the route's, shared by the whole batch) is counted
    /// under the first.
    fn flush(&mut self, calls: &mut u64) -> usize {
        *calls += 1;
        let flushed = self.batch.flush();
        if flushed.failed > 0 {
            let errno = flushed
                .error
                .map_or(nix::errno::Errno::EIO, nix::errno::Errno::from_raw);
            self.errors.add(errno, flushed.failed as u64);
        }
        flushed.failed
    }
}

/// What the rings and sockets that were closed counted, kept for the worker's totals. Its
/// size is bounded by the interfaces, not by the outputs that came and went.
#[derive(Default)]
struct Closed {
    /// Errors by output interface index.
    errors: Vec<(u32, ErrnoCounts)>,
    wrong_format: u64,
    segmented: (u64, u64),
    kicks: u64,
}

impl Closed {
    fn errors_of(&mut self, ifindex: u32, errors: &ErrnoCounts) {
        match self.errors.iter_mut().find(|(known, _)| *known == ifindex) {
            Some((_, counts)) => counts.absorb(errors),
            None => self.errors.push((ifindex, errors.clone())),
        }
    }
}

/// Transmit rings and socket batches: the [`Outputs`] of a worker.
#[derive(Default)]
pub(super) struct Sinks {
    rings: Vec<RingOut>,
    sockets: Vec<SocketOut>,
    closed: Closed,
    /// Datagrams the kernel refused in `sendmmsg` since the data path last counted them.
    pub(super) socket_failures: usize,
    /// `sendmmsg` calls made.
    sendmmsg_calls: u64,
}

impl Sinks {
    /// Opens what `output` needs from what the supervisor handed over, unless an earlier
    /// output already did.
    pub(super) fn open(
        &mut self,
        output: &CompiledOutput,
        ring: &RingSection,
        handed: &mut Handed,
    ) -> Result<(), OutputError> {
        let key = OutputKey::of(output);
        let ifindex = key.ifindex();
        if let Some(users) = self.users_of(output) {
            *users += 1;
            return Ok(());
        }
        match handed.remove(&key) {
            None => Err(OutputError::NotHanded { key }),
            Some(Received::Ring(handle)) => {
                let tx = handle
                    .map()
                    .map_err(|source| OutputError::MapRing { ifindex, source })?;
                self.rings.push(RingOut {
                    ifindex,
                    ring: tx,
                    open: SmallVec::new(),
                    segmented: (0, 0),
                    errors: ErrnoCounts::default(),
                    retry_at: None,
                    users: 1,
                });
                Ok(())
            }
            Some(Received::Socket(socket)) => {
                self.sockets.push(SocketOut {
                    key,
                    batch: UdpBatch::new(
                        socket,
                        SOCKET_BATCH,
                        ring.frame_size
                            .map_or(MAX_PAYLOAD, |size| MAX_PAYLOAD.min(size as usize * 32)),
                    ),
                    errors: ErrnoCounts::default(),
                    users: 1,
                });
                Ok(())
            }
        }
    }

    /// Notes that an output of a rule leaving the table no longer uses its ring or socket;
    /// says whether that left it without users (then [`Sinks::close_unused`] should follow).
    pub(super) fn release(&mut self, output: &CompiledOutput) -> bool {
        self.users_of(output).is_some_and(|users| {
            *users = users.saturating_sub(1);
            *users == 0
        })
    }

    /// The count of rules using the ring or socket that `output` goes through, if it is open.
    fn users_of(&mut self, output: &CompiledOutput) -> Option<&mut usize> {
        match OutputKey::of(output) {
            OutputKey::Ring { ifindex } => self
                .rings
                .iter_mut()
                .find(|out| out.ifindex == ifindex)
                .map(|out| &mut out.users),
            key @ OutputKey::Socket { .. } => self
                .sockets
                .iter_mut()
                .find(|socket| socket.key == key)
                .map(|socket| &mut socket.users),
        }
    }

    /// Counts the users of every ring and socket among `outputs` (every output of the table)
    /// and closes those that have none, after sending what they hold. Returns how many closed.
    pub(super) fn close_unused<'a>(
        &mut self,
        outputs: impl Iterator<Item = &'a CompiledOutput>,
    ) -> usize {
        for out in &mut self.rings {
            out.users = 0;
        }
        for socket in &mut self.sockets {
            socket.users = 0;
        }
        for output in outputs {
            if let Some(users) = self.users_of(output) {
                *users += 1;
            }
        }
        let before = self.rings.len() + self.sockets.len();
        let mut index = 0;
        while index < self.rings.len() {
            if self.rings[index].users > 0 {
                index += 1;
                continue;
            }
            let mut out = self.rings.swap_remove(index);
            // Frames written for the removed rules in this batch still leave.
            out.close_all();
            out.kick();
            let counters = out.ring.counters();
            self.closed.wrong_format += counters.wrong_format;
            self.closed.kicks += counters.kicks;
            self.closed.segmented.0 += out.segmented.0;
            self.closed.segmented.1 += out.segmented.1;
            self.closed.errors_of(out.ifindex, &out.errors);
        }
        let mut index = 0;
        while index < self.sockets.len() {
            if self.sockets[index].users > 0 {
                index += 1;
                continue;
            }
            let mut socket = self.sockets.swap_remove(index);
            if !socket.batch.is_empty() {
                self.socket_failures += socket.flush(&mut self.sendmmsg_calls);
            }
            self.closed.errors_of(socket.key.ifindex(), &socket.errors);
        }
        before - self.rings.len() - self.sockets.len()
    }

    /// Open transmit rings and output sockets.
    pub(super) fn open_count(&self) -> (usize, usize) {
        (self.rings.len(), self.sockets.len())
    }

    /// Kicks every transmit ring holding unsent frames and sends every queued datagram.
    pub(super) fn flush(&mut self) {
        for out in &mut self.rings {
            out.close_all();
            out.kick();
        }
        for socket in &mut self.sockets {
            if socket.batch.is_empty() {
                continue;
            }
            self.socket_failures += socket.flush(&mut self.sendmmsg_calls);
        }
    }

    /// Errors of every output so far, by output interface index: failed kicks of the transmit
    /// rings and datagrams refused by the sockets.
    pub(super) fn errors(&self) -> impl Iterator<Item = (u32, &ErrnoCounts)> {
        let rings = self.rings.iter().map(|out| (out.ifindex, &out.errors));
        let sockets = self
            .sockets
            .iter()
            .map(|out| (out.key.ifindex(), &out.errors));
        let closed = self
            .closed
            .errors
            .iter()
            .map(|(ifindex, errors)| (*ifindex, errors));
        rings.chain(sockets).chain(closed)
    }

    /// Frames refused by the kernel on the transmit rings (TP_STATUS_WRONG_FORMAT).
    pub(super) fn wrong_format(&self) -> u64 {
        self.closed.wrong_format
            + self
                .rings
                .iter()
                .map(|out| out.ring.counters().wrong_format)
                .sum::<u64>()
    }

    /// Segmented frames sent so far, and the datagrams they carried.
    pub(super) fn segmented(&self) -> (u64, u64) {
        self.rings
            .iter()
            .fold(self.closed.segmented, |(frames, datagrams), out| {
                (frames + out.segmented.0, datagrams + out.segmented.1)
            })
    }

    /// Transmit kicks (`send`) and `sendmmsg` calls made so far: the worker's syscalls per
    /// batch of output.
    pub(super) fn syscalls(&self) -> (u64, u64) {
        let kicks = self.closed.kicks
            + self
                .rings
                .iter()
                .map(|out| out.ring.counters().kicks)
                .sum::<u64>();
        (kicks, self.sendmmsg_calls)
    }
}

impl Outputs for Sinks {
    #[inline]
    fn write_datagram(
        &mut self,
        ifindex: u32,
        template: &FrameTemplate,
        input: &Datagram<'_>,
        ip_id: u16,
        segmentable: bool,
    ) -> Written {
        match self.rings.iter_mut().find(|out| out.ifindex == ifindex) {
            Some(out) => out.write(template, input, ip_id, segmentable),
            None => Written::Unopened,
        }
    }

    fn queue(
        &mut self,
        output: &CompiledOutput,
        destination: SocketAddr,
        payload: &[u8],
    ) -> Written {
        // The data path hands socket outputs only; a ring output has no socket here either.
        let key = OutputKey::of(output);
        let Some(socket) = self.sockets.iter_mut().find(|socket| socket.key == key) else {
            return Written::Unopened;
        };
        let queued = match socket.batch.push(destination, payload) {
            Err(QueueError::Full { .. }) => {
                self.socket_failures += socket.flush(&mut self.sendmmsg_calls);
                socket.batch.push(destination, payload)
            }
            other => other,
        };
        match queued {
            Ok(()) => Written::Queued,
            Err(QueueError::TooLarge { .. }) => Written::TooBig,
            // Not after a flush, which empties the batch.
            Err(QueueError::Full { .. }) => Written::RingFull,
        }
    }
}
