//! The transmit ring: reserve a slot, write a frame, commit, and kick the kernel once per batch.
//!
//! TPACKET_V3 transmit (kernel ≥ 4.11) is frame based like V2: each slot starts with a
//! `tpacket3_hdr` whose `tp_next_offset` must be 0, and the ring request must have
//! `tp_retire_blk_tov`, `tp_sizeof_priv` and `tp_feature_req_word` all 0. Frame data starts at
//! `TPACKET3_HDRLEN - sizeof(struct sockaddr_ll)` (48) in V3 and `TPACKET2_HDRLEN -
//! sizeof(struct sockaddr_ll)` (32) in V2. A linear ring (`PACKET_VNET_HDR`) has a 10-byte
//! `virtio_net_hdr` there, counted in `tp_len`, and the frame after it.
//!
//! The kernel's `tpacket_snd()` walks slots from its own position and stops at the first slot not
//! marked TP_STATUS_SEND_REQUEST, so slots are filled strictly in ring order: when the next one
//! is still in flight the ring is full (counted), never skipped.
//!
//! # Safety
//!
//! A slot's bytes are written only while its status, read with acquire ordering, is
//! TP_STATUS_AVAILABLE or TP_STATUS_WRONG_FORMAT: the kernel neither reads nor writes such a
//! slot (it looks only at the status word) until user space stores TP_STATUS_SEND_REQUEST with
//! release ordering, which `commit` does after the last write through the slot's slice, whose
//! borrow has then ended. The one exception is moving committed frames up past a refused one
//! (`drop_refused`): the kernel reads committed slots only inside `send()` (`tpacket_snd()` runs
//! in the sender's context, and stopped at the refused slot), and no `send()` runs while the ring
//! is borrowed mutably.
#![allow(unsafe_code, reason = "writes into kernel-shared transmit slots")]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use smallvec::SmallVec;

use super::frame::{u32_at, v2 as h2, v3 as h3};
use super::geometry::Geometry;
use super::mmap::Mapping;
use super::{RingError, RingVersion, v2};
use crate::socket::PacketSocket;
use crate::vnet::VnetHeader;

/// Bytes of the `virtio_net_hdr` in front of each frame of a linear ring (see
/// [`TxRingBuilder::linear`](super::TxRingBuilder::linear)).
pub(super) const VNET_HDR_LEN: usize = VnetHeader::LEN;

/// The `virtio_net_hdr` of a linear slot holding a `len`-byte frame: `hdr_len`, the bytes the
/// kernel copies linear (`__packet_snd_vnet_parse()` refuses more than the frame), is the whole
/// frame; without `segments` it asks for no offload.
fn vnet_header(len: usize, segments: Option<UdpSegments>) -> [u8; VNET_HDR_LEN] {
    match segments {
        Some(s) => VnetHeader::udp_segments(len, s.udp_offset, s.segment_size),
        None => VnetHeader::plain(len),
    }
    .to_bytes()
}

/// How the kernel is to split a frame into UDP datagrams (`VIRTIO_NET_HDR_GSO_UDP_L4`), on a
/// ring built with [`TxRingBuilder::segmentation`](super::TxRingBuilder::segmentation).
///
/// The frame is one IPv4 packet whose payload is a UDP header and the datagrams' payloads back
/// to back; IPv4 total length and UDP length cover all of them, the IPv4 header checksum is
/// correct for that length, and the UDP checksum field holds the folded (not complemented)
/// pseudo-header sum over that length. The kernel, or a NIC with UDP segmentation offload, cuts
/// the payload every `segment_size` bytes (the last piece may be shorter), gives each piece a
/// copy of the headers with its own lengths, an IPv4 identification counted up from the
/// frame's, and a computed UDP checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSegments {
    /// Offset of the UDP header in the frame (after Ethernet, tags and IPv4).
    pub udp_offset: u16,
    /// Payload bytes of every datagram but the last.
    pub segment_size: u16,
}

/// Transmit counters, for the socket's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxCounters {
    /// Frames committed to the ring.
    pub committed: u64,
    /// Frames the kernel sent and returned (TP_STATUS_AVAILABLE again).
    pub completed: u64,
    /// Times a slot was asked for while the next slot was still in flight.
    pub ring_full: u64,
    /// Frames the kernel refused (TP_STATUS_WRONG_FORMAT: bad length or header).
    pub wrong_format: u64,
    /// `send` kicks issued.
    pub kicks: u64,
    /// Kicks that failed with an error other than congestion or a refused frame (ENETDOWN while
    /// the interface is down, ENXIO once it is gone); their frames stay queued.
    pub kick_errors: u64,
}

/// A transmit ring on a bound packet socket.
#[derive(Debug)]
pub struct TxRing {
    pub(super) socket: PacketSocket,
    pub(super) map: Mapping,
    pub(super) geometry: Geometry,
    pub(super) version: RingVersion,
    /// Each slot starts with a `virtio_net_hdr` asking for the whole frame to be copied linear.
    pub(super) linear: bool,
    /// Frames may ask the kernel to split them into UDP datagrams (implies `linear`).
    pub(super) segmentation: bool,
    /// Slots given out by `hold_with` and not yet committed, oldest first.
    pub(super) held: SmallVec<[u32; 8]>,
    /// Next slot to hand out.
    pub(super) head: u32,
    /// Oldest committed slot not yet seen returned.
    pub(super) tail: u32,
    pub(super) in_flight: u32,
    pub(super) unkicked: u32,
    pub(super) counters: TxCounters,
}

/// A reserved transmit slot; write the frame into [`TxSlot::buffer`] and [`TxSlot::commit`] it.
/// Dropping it uncommitted leaves the slot free for the next reservation.
#[derive(Debug)]
pub struct TxSlot<'r> {
    ring: &'r mut TxRing,
    index: u32,
}

impl TxRing {
    pub(super) fn frame_count(&self) -> u32 {
        u32::try_from(self.geometry.frame_count())
            .expect("validated: tp_frame_nr fits u32")
            .max(1)
    }

    /// Where the kernel reads a slot's data (`tp_hdrlen - sizeof(struct sockaddr_ll)`): the
    /// vnet header of a linear ring, else the frame.
    fn header_end(&self) -> usize {
        match self.version {
            RingVersion::V2 => h2::SLL,
            RingVersion::V3 => h3::SLL,
        }
    }

    /// Where a slot's frame starts.
    pub(super) fn data_offset(&self) -> usize {
        self.header_end() + if self.linear { VNET_HDR_LEN } else { 0 }
    }

    fn status_offset(&self, index: u32) -> usize {
        let header = match self.version {
            RingVersion::V2 => h2::STATUS,
            RingVersion::V3 => h3::STATUS,
        };
        v2::frame_offset(&self.geometry, index) + header
    }

    /// Slots in the ring.
    pub fn slot_count(&self) -> u32 {
        self.frame_count()
    }

    /// Largest frame a slot holds.
    pub fn max_frame_len(&self) -> usize {
        self.geometry.frame_size() as usize - self.data_offset()
    }

    /// The version the kernel accepted.
    pub fn version(&self) -> RingVersion {
        self.version
    }

    /// Counters so far.
    pub fn counters(&self) -> TxCounters {
        self.counters
    }

    /// Whether frames may ask to be split into UDP datagrams ([`UdpSegments`]).
    pub fn segmentation(&self) -> bool {
        self.segmentation
    }

    /// Frames committed and not yet returned by the kernel, and slots held.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Takes back slots the kernel has finished with, oldest first; stops at the first slot
    /// still queued or being sent, or held. Refused frames are counted in
    /// [`TxCounters::wrong_format`] and removed once no slot is held. Returns how many slots
    /// came back.
    ///
    /// Callers need not call it: [`TxRing::reserve`] (and so [`TxRing::send`]) does before it
    /// looks for a free slot. Call it to see [`TxRing::in_flight`] and the counters up to date,
    /// e.g. after [`TxRing::flush`].
    pub fn reclaim(&mut self) -> u32 {
        let mut reclaimed = 0;
        while self.in_flight > 0 {
            if self.held.first() == Some(&self.tail) {
                break;
            }
            let offset = self.status_offset(self.tail);
            let status = self.map.load_status(offset);
            if status & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0 {
                break;
            }
            if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
                // Removing it moves the slots behind it, held ones among them.
                if !self.held.is_empty() {
                    break;
                }
                self.counters.wrong_format += 1;
                self.drop_refused();
                continue;
            }
            self.counters.completed += 1;
            self.in_flight -= 1;
            self.tail = (self.tail + 1) % self.frame_count();
            reclaimed += 1;
        }
        reclaimed
    }

    /// Removes the refused frame at `tail`. Without `PACKET_LOSS` the kernel stays at a refused
    /// slot (its head does not move) until user space resubmits it, stranding every frame behind
    /// it; so the frames behind it move up one slot, in order, and the last slot is freed. The
    /// kernel touches committed slots only inside `send()` (`tpacket_snd()` runs in the caller's
    /// context), and none is running while `&mut self` is held.
    fn drop_refused(&mut self) {
        let count = self.frame_count();
        let size = self.geometry.frame_size() as usize;
        let mut slot = self.tail;
        let mut moved = Vec::new();
        for _ in 1..self.in_flight {
            let next = (slot + 1) % count;
            let from = v2::frame_offset(&self.geometry, next);
            let to = v2::frame_offset(&self.geometry, slot);
            moved.clear();
            // SAFETY: slot `next` is committed and not yet taken by the kernel (it stopped at
            // the refused slot before it), and no send() runs while `&mut self` is held, so the
            // kernel neither reads nor writes it; the slice ends with this statement.
            let source = unsafe { self.map.user_bytes_mut(from, size) };
            moved.extend_from_slice(source);
            // SAFETY: slot `slot` is the refused one or one already moved up; the kernel does
            // not touch it for the same reason.
            unsafe { self.map.user_bytes_mut(to, size) }.copy_from_slice(&moved);
            self.map
                .store_status(self.status_offset(slot), libc::TP_STATUS_SEND_REQUEST);
            slot = next;
        }
        self.map
            .store_status(self.status_offset(slot), libc::TP_STATUS_AVAILABLE);
        self.head = slot;
        self.in_flight -= 1;
        if self.in_flight > 0 {
            self.unkicked = self.unkicked.max(1);
        }
    }

    /// Reserves the next slot in ring order, or `None` (counted as ring full) when it is still
    /// in flight.
    pub fn reserve(&mut self) -> Option<TxSlot<'_>> {
        self.reclaim();
        if self.in_flight >= self.frame_count() {
            self.counters.ring_full += 1;
            return None;
        }
        let index = self.head;
        Some(TxSlot { ring: self, index })
    }

    /// Copies `frame` into the next slot and commits it; `Ok(false)` when the ring is full.
    pub fn send(&mut self, frame: &[u8]) -> Result<bool, RingError> {
        let max = self.max_frame_len();
        if frame.len() > max {
            return Err(RingError::Io {
                syscall: "tx slot (frame longer than the slot)",
                interface: self.socket.interface_label(),
                errno: Errno::EMSGSIZE,
            });
        }
        let Some(mut slot) = self.reserve() else {
            return Ok(false);
        };
        slot.buffer()[..frame.len()].copy_from_slice(frame);
        slot.commit(frame.len());
        Ok(true)
    }

    /// Kicks the kernel to send every committed frame: one `send(fd, NULL, 0, MSG_DONTWAIT)`
    /// per batch. EAGAIN/ENOBUFS leave the frames queued for the next kick. A refused frame
    /// (EMSGSIZE, EINVAL) is not an error here: [`TxRing::reclaim`] counts and removes it, and
    /// the frames behind it go out on the next kick.
    ///
    /// Any other error (ENETDOWN: the interface is down; ENXIO: it is gone) is returned and
    /// counted in [`TxCounters::kick_errors`], and the frames stay queued: `tpacket_snd()`
    /// checks the device before it looks at a slot, so every slot still says
    /// TP_STATUS_SEND_REQUEST and only a later successful kick sends it and gives it back. The
    /// next `flush` kicks again; a caller that sees the error repeat should kick less often,
    /// since until the link returns each kick is a syscall that sends nothing.
    pub fn flush(&mut self) -> Result<(), RingError> {
        if self.unkicked == 0 {
            return Ok(());
        }
        self.counters.kicks += 1;
        match nix::sys::socket::send(self.socket.as_fd().as_raw_fd(), &[], MsgFlags::MSG_DONTWAIT) {
            Ok(_) => {
                self.unkicked = 0;
                Ok(())
            }
            Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::EINTR) => Ok(()),
            Err(Errno::EMSGSIZE | Errno::EINVAL) => {
                self.unkicked = 0;
                self.reclaim();
                Ok(())
            }
            Err(errno) => {
                self.counters.kick_errors += 1;
                Err(RingError::Io {
                    syscall: "send(MSG_DONTWAIT) kick",
                    interface: self.socket.interface_label(),
                    errno,
                })
            }
        }
    }

    /// Whether committed frames wait for a kick.
    pub fn has_unkicked(&self) -> bool {
        self.unkicked > 0
    }

    /// Flushes and reclaims until nothing is in flight or `timeout` passes; true when done.
    pub fn drain(&mut self, timeout: Duration) -> Result<bool, RingError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.flush()?;
            self.reclaim();
            if self.in_flight == 0 {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Writes slot `index`'s frame header (and vnet header) for a frame of `len` bytes, stores
    /// TP_STATUS_SEND_REQUEST with release ordering and counts the frame as committed. The caller
    /// holds the slot: reserved or held, so the kernel does not touch it before the status store.
    pub(super) fn finish_slot(&mut self, index: u32, len: usize, segments: Option<UdpSegments>) {
        let len = len.min(self.max_frame_len());
        let offset = v2::frame_offset(&self.geometry, index);
        let size = self.geometry.frame_size() as usize;
        let version = self.version;
        let vnet = self.linear.then(|| self.header_end());
        {
            // SAFETY: the slot is reserved or held by the caller, so it is not in flight (its
            // status is AVAILABLE or WRONG_FORMAT and the kernel does not touch its bytes), and
            // no other borrow of it exists: `&mut self` is held.
            let slot = unsafe { self.map.user_bytes_mut(offset, size) };
            let put = |slot: &mut [u8], at: usize, value: u32| {
                slot[at..at + 4].copy_from_slice(&value.to_ne_bytes())
            };
            let mut wire_len = len;
            if let Some(at) = vnet {
                slot[at..at + VNET_HDR_LEN].copy_from_slice(&vnet_header(len, segments));
                wire_len += VNET_HDR_LEN;
            }
            let len32 = u32::try_from(wire_len).expect("clamped to the slot size, a u32");
            match version {
                RingVersion::V2 => {
                    put(slot, h2::LEN, len32);
                    put(slot, h2::SNAPLEN, len32);
                }
                RingVersion::V3 => {
                    put(slot, h3::NEXT_OFFSET, 0);
                    put(slot, h3::LEN, len32);
                    put(slot, h3::SNAPLEN, len32);
                }
            }
            debug_assert_eq!(
                u32_at(
                    slot,
                    if version == RingVersion::V2 {
                        h2::LEN
                    } else {
                        h3::LEN
                    }
                ),
                Some(len32)
            );
        }
        self.map
            .store_status(self.status_offset(index), libc::TP_STATUS_SEND_REQUEST);
        self.unkicked += 1;
        self.counters.committed += 1;
    }

    /// The socket, for options that may change at any time.
    pub fn socket(&self) -> &PacketSocket {
        &self.socket
    }
}

impl AsFd for TxRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl TxSlot<'_> {
    pub(super) fn index(&self) -> u32 {
        self.index
    }

    fn slot_range(&self) -> (usize, usize) {
        let offset = v2::frame_offset(&self.ring.geometry, self.index);
        (offset, self.ring.geometry.frame_size() as usize)
    }

    /// The slot's frame buffer ([`TxRing::max_frame_len`] bytes), starting at the Ethernet
    /// header.
    pub fn buffer(&mut self) -> &mut [u8] {
        let (offset, len) = self.slot_range();
        let data = self.ring.data_offset();
        // SAFETY: `reserve` reclaimed up to this slot, so it is not in flight: its status is
        // AVAILABLE or WRONG_FORMAT and the kernel does not touch its bytes; the slice borrows
        // the slot (and through it the ring) mutably, so it ends before `commit` stores the
        // status.
        let slot = unsafe { self.ring.map.user_bytes_mut(offset, len) };
        &mut slot[data..]
    }

    /// Marks the first `len` bytes of the buffer as a frame to send (TP_STATUS_SEND_REQUEST,
    /// release); it leaves on the next [`TxRing::flush`]. `len` is clamped to the slot.
    pub fn commit(self, len: usize) {
        let ring = self.ring;
        ring.finish_slot(self.index, len, None);
        ring.head = (ring.head + 1) % ring.frame_count();
        ring.in_flight += 1;
    }
}
