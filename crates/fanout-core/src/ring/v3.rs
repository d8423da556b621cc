//! TPACKET_V3 receive blocks: finding the next retired block, walking its frames, handing it
//! back.
//!
//! # Safety
//!
//! The kernel (`prb_close_block()` / `prb_retire_current_block()` in `net/packet/af_packet.c`)
//! fills a block, issues `smp_wmb()`, then sets `block_status` to TP_STATUS_USER; from then on
//! it neither reads nor writes the block's bytes except to check that status word, until user
//! space writes TP_STATUS_KERNEL. This module views a block's bytes only after an acquire load
//! saw TP_STATUS_USER, and the caller (the `Block` guard in `rx.rs`) hands the block back only in
//! its `Drop`, after every borrow of those bytes (all tied to the guard) has ended.
#![allow(unsafe_code, reason = "views of kernel-shared ring blocks")]

use super::frame::{self, Frame, Header, Malformed, u16_at, u32_at, u64_at};
use super::geometry::{Geometry, V3_BLOCK_HEADER_LEN};
use super::mmap::Mapping;

/// A retired block, as described by its header. Only [`ready_block`] makes one, and only
/// [`release`] (which consumes it) hands the block back, so a borrow of it proves the block is
/// still user-owned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BlockInfo {
    pub(crate) index: u32,
    pub(crate) status: u32,
    pub(crate) num_pkts: u32,
    pub(crate) first_offset: u32,
    pub(crate) seq_num: u64,
}

fn block_offset(geometry: &Geometry, index: u32) -> usize {
    index as usize * geometry.block_size() as usize
}

/// The status word of block `index` (acquire).
pub(crate) fn status(map: &Mapping, geometry: &Geometry, index: u32) -> u32 {
    map.load_status(block_offset(geometry, index) + frame::v3::BLOCK_STATUS)
}

/// The block `index` if user space owns it, with its header decoded.
pub(crate) fn ready_block(map: &Mapping, geometry: &Geometry, index: u32) -> Option<BlockInfo> {
    let block_status = status(map, geometry, index);
    if block_status & libc::TP_STATUS_USER == 0 {
        return None;
    }
    // SAFETY: the header bytes are written by the kernel only while it owns the block, and
    // TP_STATUS_USER was just observed with acquire ordering; the slice ends with this function.
    let bytes =
        unsafe { map.user_bytes(block_offset(geometry, index), V3_BLOCK_HEADER_LEN as usize) };
    Some(BlockInfo {
        index,
        status: block_status,
        num_pkts: u32_at(bytes, frame::v3::BLOCK_NUM_PKTS).unwrap_or(0),
        first_offset: u32_at(bytes, frame::v3::BLOCK_FIRST).unwrap_or(0),
        seq_num: u64_at(bytes, frame::v3::BLOCK_SEQ).unwrap_or(0),
    })
}

/// Writes `status` into every block's status word: [`libc::TP_STATUS_USER`] makes the ring look
/// full to the kernel (a fanout group with the rollover flag then passes the ring over), and
/// [`libc::TP_STATUS_KERNEL`] hands every block back. Only for a ring nobody reads yet.
pub(crate) fn set_every_status(map: &Mapping, geometry: &Geometry, status: u32) {
    for index in 0..geometry.block_count() {
        map.store_status(
            block_offset(geometry, index) + frame::v3::BLOCK_STATUS,
            status,
        );
    }
}

/// Hands block `index` back to the kernel (release), pairing with the kernel's `smp_rmb()` in
/// `prb_dispatch_next_block()` before it reuses the block.
pub(crate) fn release(map: &Mapping, geometry: &Geometry, block: BlockInfo) {
    map.store_status(
        block_offset(geometry, block.index) + frame::v3::BLOCK_STATUS,
        libc::TP_STATUS_KERNEL,
    );
}

/// Where a new owner of a running ring resumes: the user-owned block with the lowest sequence
/// number if any (the kernel retires blocks in ring order), else the block the kernel opened
/// last (highest sequence number), which is the next to retire.
pub(crate) fn resume_point(map: &Mapping, geometry: &Geometry) -> u32 {
    let mut oldest_user: Option<(u64, u32)> = None;
    let mut newest: Option<(u64, u32)> = None;
    for index in 0..geometry.block_count() {
        let user = status(map, geometry, index) & libc::TP_STATUS_USER != 0;
        // The kernel may be filling this block: read only the sequence number, atomically.
        let seq = map.load_u64(block_offset(geometry, index) + frame::v3::BLOCK_SEQ);
        if user && oldest_user.is_none_or(|(s, _)| seq < s) {
            oldest_user = Some((seq, index));
        }
        if newest.is_none_or(|(s, _)| seq > s) {
            newest = Some((seq, index));
        }
    }
    oldest_user.or(newest).map_or(0, |(_, index)| index)
}

/// The frames of one user-owned block.
#[derive(Debug)]
pub(crate) struct V3Frames<'b> {
    block: &'b [u8],
    next: Option<usize>,
    remaining: u32,
    seq_num: u64,
    rx_hash: bool,
}

/// Starts walking the frames of `info`, which must come from [`ready_block`] on this same
/// mapping and geometry (the only caller, `RxRing`, owns all three together).
pub(crate) fn frames<'b>(
    map: &'b Mapping,
    geometry: &Geometry,
    info: &'b BlockInfo,
    rx_hash: bool,
) -> V3Frames<'b> {
    // SAFETY: `info` exists only for a block ready_block saw TP_STATUS_USER (acquire), and the
    // block goes back only through `release(info)`, which cannot run while `info` is borrowed
    // for `'b`; so the kernel does not write the block while the slice lives.
    let block = unsafe {
        map.user_bytes(
            block_offset(geometry, info.index),
            geometry.block_size() as usize,
        )
    };
    V3Frames::over(
        block,
        info.first_offset,
        info.num_pkts,
        info.seq_num,
        rx_hash,
    )
}

impl<'b> V3Frames<'b> {
    /// Walks `num_pkts` frames of `block` (a whole block, header included) from
    /// `first_offset`: the one walk of both the mapped ring and [`super::walk::v3_block`].
    pub(crate) fn over(
        block: &'b [u8],
        first_offset: u32,
        num_pkts: u32,
        seq_num: u64,
        rx_hash: bool,
    ) -> Self {
        V3Frames {
            block,
            next: Some(first_offset as usize),
            remaining: num_pkts,
            seq_num,
            rx_hash,
        }
    }
}

impl<'b> Iterator for V3Frames<'b> {
    type Item = Result<Frame<'b>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let Some(offset) = self.next.filter(|&o| o >= V3_BLOCK_HEADER_LEN as usize) else {
            self.remaining = 0;
            return Some(Err(Malformed::HeaderOutOfBounds));
        };
        let Some(region) = self
            .block
            .get(offset..)
            .filter(|r| r.len() >= frame::v3::SIZE)
        else {
            self.remaining = 0;
            return Some(Err(Malformed::HeaderOutOfBounds));
        };
        let field32 = |at| u32_at(region, at).unwrap_or(0);
        let field16 = |at| u16_at(region, at).unwrap_or(0);
        let next_offset = field32(frame::v3::NEXT_OFFSET) as usize;
        self.next = (next_offset >= frame::v3::SIZE)
            .then(|| offset.checked_add(next_offset))
            .flatten()
            .filter(|&n| n < self.block.len());
        let header = Header {
            status: field32(frame::v3::STATUS),
            original_len: field32(frame::v3::LEN),
            snap_len: field32(frame::v3::SNAPLEN),
            mac: field16(frame::v3::MAC),
            sec: field32(frame::v3::SEC),
            nsec: field32(frame::v3::NSEC),
            // tp_vlan_tci is a u32 in the V3 header; the TCI is its low 16 bits.
            vlan_tci: (field32(frame::v3::VLAN_TCI) & 0xffff) as u16,
            vlan_tpid: field16(frame::v3::VLAN_TPID),
            rx_hash: self.rx_hash.then(|| field32(frame::v3::RXHASH)),
        };
        let result = Frame::cut(region, header, frame::v3::SLL, Some(self.seq_num));
        if result.is_err() {
            self.remaining = 0;
        }
        Some(result)
    }
}
