//! Held transmit slots: a slot taken in ring order and filled over time (datagrams appended to a
//! frame the kernel will segment) while the slots after it are filled and committed.
//!
//! The kernel's `tpacket_snd()` stops at the first slot not marked TP_STATUS_SEND_REQUEST, so a
//! held slot holds back every frame behind it until it is committed: commit every held slot
//! before the kick that should send them. [`TxRing::reclaim`] stops at the oldest held slot for
//! the same reason the kernel does.
//!
//! # Safety
//!
//! A held slot keeps the status it had when it was taken (TP_STATUS_AVAILABLE or
//! TP_STATUS_WRONG_FORMAT, both of which the kernel leaves alone) until
//! [`TxRing::commit_held`] stores TP_STATUS_SEND_REQUEST; its bytes are written only through
//! [`TxRing::held_buffer`], whose slice borrows the ring mutably.
#![allow(unsafe_code, reason = "writes into kernel-shared transmit slots")]

use super::tx::{TxRing, UdpSegments};
use super::v2;

/// A transmit slot taken with [`TxRing::hold_with`] and not yet committed. It belongs to the
/// ring that gave it out; hand it back with [`TxRing::commit_held`]. Dropped uncommitted, the
/// slot stays held for good and every frame behind it waits: there is no way back.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a held slot holds back every frame behind it until it is committed"]
pub struct HeldSlot {
    index: u32,
}

impl TxRing {
    /// Takes the next slot in ring order, lets `write` fill it (it returns what the caller wants
    /// back, e.g. the length written), and keeps it held: frames reserved after it go into the
    /// slots behind it. `None` when the ring is full (counted in
    /// [`TxCounters::ring_full`](super::TxCounters::ring_full)); when `write` fails the slot is
    /// given back untouched by the kernel and the error returned.
    pub fn hold_with<T, E>(
        &mut self,
        write: impl FnOnce(&mut [u8]) -> Result<T, E>,
    ) -> Option<Result<(HeldSlot, T), E>> {
        let index = self.reserve()?.index();
        let held = HeldSlot { index };
        self.head = (self.head + 1) % self.frame_count();
        self.in_flight += 1;
        self.held.push(index);
        match write(self.held_buffer(&held)) {
            Ok(value) => Some(Ok((held, value))),
            Err(error) => {
                // Still the newest slot: nothing was reserved since, so the head can step back.
                self.held.retain(|other| *other != index);
                self.head = index;
                self.in_flight -= 1;
                Some(Err(error))
            }
        }
    }

    /// The frame buffer of a held slot ([`TxRing::max_frame_len`] bytes from the Ethernet
    /// header), as left by earlier writes.
    ///
    /// # Panics
    ///
    /// When `slot` is not held by this ring (another ring's slot): writing it could race the
    /// kernel.
    pub fn held_buffer(&mut self, slot: &HeldSlot) -> &mut [u8] {
        assert!(
            self.held.contains(&slot.index),
            "slot {} is not held by this transmit ring",
            slot.index
        );
        let offset = v2::frame_offset(&self.geometry, slot.index);
        let size = self.geometry.frame_size() as usize;
        let data = self.data_offset();
        // SAFETY: the slot is held (checked above): its status is AVAILABLE or WRONG_FORMAT, so
        // the kernel does not touch its bytes until `commit_held` stores SEND_REQUEST, and the
        // slice borrows the ring mutably, so it ends before that store.
        let bytes = unsafe { self.map.user_bytes_mut(offset, size) };
        &mut bytes[data..]
    }

    /// Commits a held slot's first `len` bytes as a frame, to be split into UDP datagrams when
    /// `segments` is given and the ring was built with
    /// [`TxRingBuilder::segmentation`](super::TxRingBuilder::segmentation) (see
    /// [`TxRing::segmentation`]; elsewhere `segments` is ignored). It leaves on the next
    /// [`TxRing::flush`] once every held slot before it is committed too.
    ///
    /// # Panics
    ///
    /// When `slot` is not held by this ring.
    pub fn commit_held(&mut self, slot: HeldSlot, len: usize, segments: Option<UdpSegments>) {
        let position = self.held.iter().position(|&index| index == slot.index);
        let Some(position) = position else {
            panic!("slot {} is not held by this transmit ring", slot.index);
        };
        self.held.remove(position);
        let segments = segments.filter(|_| self.segmentation);
        self.finish_slot(slot.index, len, segments);
    }

    /// Slots held and not yet committed.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}
