//! TPACKET_V2 receive frames: per-frame status, read in place and handed back one by one.
//!
//! # Safety
//!
//! The kernel (`tpacket_rcv()` in `net/packet/af_packet.c`) copies a frame into a slot whose
//! `tp_status` is TP_STATUS_KERNEL, issues `smp_wmb()`, then sets TP_STATUS_USER; it then leaves
//! the slot alone until user space writes TP_STATUS_KERNEL. This module views a slot's bytes only
//! after an acquire load saw TP_STATUS_USER, and its caller (the `Block` guard in `rx.rs`) hands
//! slots back only in `Drop`, after every borrow of them (tied to the guard) has ended.
#![allow(unsafe_code, reason = "views of kernel-shared ring frames")]

use super::frame::{self, Frame, Header, Malformed, u16_at, u32_at};
use super::geometry::Geometry;
use super::mmap::Mapping;

/// Byte offset of frame slot `index`: frames never straddle blocks.
pub(crate) fn frame_offset(geometry: &Geometry, index: u32) -> usize {
    let per_block = geometry.frames_per_block().max(1);
    (index / per_block) as usize * geometry.block_size() as usize
        + (index % per_block) as usize * geometry.frame_size() as usize
}

/// True when user space owns slot `index` (acquire).
pub(crate) fn is_ready(map: &Mapping, geometry: &Geometry, index: u32) -> bool {
    map.load_status(frame_offset(geometry, index) + frame::v2::STATUS) & libc::TP_STATUS_USER != 0
}

/// A run of consecutive slots seen user-owned. Only [`ready_run`] makes one, and only
/// [`release`] (which consumes it) hands the slots back, so a borrow of it proves the slots are
/// still user-owned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) first: u32,
    pub(crate) count: u32,
}

/// Slots in the ring (validated to fit `u32`).
pub(crate) fn frame_count(geometry: &Geometry) -> u32 {
    u32::try_from(geometry.frame_count())
        .expect("validated: tp_frame_nr fits u32")
        .max(1)
}

/// The run of user-owned slots starting at `first`, at most `limit` long, or `None`.
pub(crate) fn ready_run(map: &Mapping, geometry: &Geometry, first: u32, limit: u32) -> Option<Run> {
    let total = frame_count(geometry);
    let count = (0..limit.min(total))
        .take_while(|&i| is_ready(map, geometry, (first + i) % total))
        .count();
    let count = u32::try_from(count).expect("bounded by limit, a u32");
    (count > 0).then_some(Run { first, count })
}

/// Writes `status` into every frame's status word (see [`super::v3::set_every_status`]).
pub(crate) fn set_every_status(map: &Mapping, geometry: &Geometry, status: u32) {
    for index in 0..frame_count(geometry) {
        map.store_status(frame_offset(geometry, index) + frame::v2::STATUS, status);
    }
}

/// Hands a run back (release), pairing with the kernel's `smp_rmb()` after it reads `tp_status`
/// in `packet_current_frame()`.
pub(crate) fn release(map: &Mapping, geometry: &Geometry, run: Run) {
    let total = frame_count(geometry);
    for i in 0..run.count {
        let index = (run.first + i) % total;
        map.store_status(
            frame_offset(geometry, index) + frame::v2::STATUS,
            libc::TP_STATUS_KERNEL,
        );
    }
}

/// Where a new owner resumes: the first user-owned slot that follows a kernel-owned one (the
/// oldest frame of the run the kernel filled last), or slot 0 when no slot is user-owned.
pub(crate) fn resume_point(map: &Mapping, geometry: &Geometry) -> u32 {
    let count = u32::try_from(geometry.frame_count()).unwrap_or(u32::MAX);
    (0..count)
        .find(|&i| is_ready(map, geometry, i) && !is_ready(map, geometry, (i + count - 1) % count))
        .unwrap_or(0)
}

/// The frames of a run of user-owned slots.
#[derive(Debug)]
pub(crate) struct V2Frames<'b> {
    map: &'b Mapping,
    _run: &'b Run,
    geometry: Geometry,
    next: u32,
    remaining: u32,
}

/// Walks the slots of `run`, which must come from [`ready_run`] on this same mapping and
/// geometry (the only caller, `RxRing`, owns all three together).
pub(crate) fn frames<'b>(map: &'b Mapping, geometry: &Geometry, run: &'b Run) -> V2Frames<'b> {
    V2Frames {
        map,
        _run: run,
        geometry: *geometry,
        next: run.first,
        remaining: run.count,
    }
}

impl<'b> Iterator for V2Frames<'b> {
    type Item = Result<Frame<'b>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let index = self.next;
        self.next = (index + 1) % frame_count(&self.geometry);
        let offset = frame_offset(&self.geometry, index);
        // SAFETY: the slot belongs to the run borrowed for `'b`; ready_run saw it user-owned
        // (acquire) and it goes back only through `release(run)`, which cannot run while the run
        // is borrowed, so the kernel does not write the slot while the slice lives.
        let slot = unsafe {
            self.map
                .user_bytes(offset, self.geometry.frame_size() as usize)
        };
        Some(slot_frame(slot))
    }
}

/// The frame in one slot (`slot` spans the whole slot, header included): the one decoding of
/// both the mapped ring and [`super::walk::v2_slot`].
pub(crate) fn slot_frame(slot: &[u8]) -> Result<Frame<'_>, Malformed> {
    if slot.len() < frame::v2::SIZE {
        return Err(Malformed::HeaderOutOfBounds);
    }
    let field32 = |at| u32_at(slot, at).unwrap_or(0);
    let field16 = |at| u16_at(slot, at).unwrap_or(0);
    let header = Header {
        status: field32(frame::v2::STATUS),
        original_len: field32(frame::v2::LEN),
        snap_len: field32(frame::v2::SNAPLEN),
        mac: field16(frame::v2::MAC),
        sec: field32(frame::v2::SEC),
        nsec: field32(frame::v2::NSEC),
        vlan_tci: field16(frame::v2::VLAN_TCI),
        vlan_tpid: field16(frame::v2::VLAN_TPID),
        rx_hash: None,
    };
    Frame::cut(slot, header, frame::v2::SLL, None)
}
