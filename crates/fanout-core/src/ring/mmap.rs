//! Ownership of a packet ring's mapping.
//!
//! # Safety
//!
//! A [`Mapping`] is created only by [`Mapping::map`], which maps exactly the ring's length from
//! offset 0 of a packet socket that has a ring of that size (`packet_mmap()` in
//! `net/packet/af_packet.c` refuses any other length). The mapping is `MAP_SHARED` with the
//! kernel and lives until `Drop` unmaps it; the pointer is never exposed beyond this crate, and
//! the ring modules derive every access from it within `len` bytes. The kernel keeps the pages
//! alive while they are mapped even if the socket is closed, so the mapping does not borrow the
//! descriptor.
#![allow(unsafe_code, reason = "mmap/munmap/madvise of a packet ring")]

use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags};

/// A `MAP_SHARED` mapping of a packet socket's ring(s), unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory shared with the kernel, not tied to a thread; moving the
// owner to another thread moves the only handle to it (Mapping is not Clone and not Sync).
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of the rings of `fd` (RX first, then TX), read-write and shared.
    ///
    /// `populate` pre-faults the pages (`MAP_POPULATE`) so the first packets do not pay for
    /// page faults; `dont_fork` sets `MADV_DONTFORK` so a forked child does not share the ring
    /// (a child that needs the ring receives the descriptor and maps it itself).
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        len: usize,
        populate: bool,
        dont_fork: bool,
    ) -> Result<Self, Errno> {
        let length = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        let mut flags = MapFlags::MAP_SHARED;
        if populate {
            flags |= MapFlags::MAP_POPULATE;
        }
        // SAFETY: a new mapping at an address the kernel chooses cannot alias any Rust object;
        // the length and offset 0 are those `packet_mmap()` requires (module invariant).
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                flags,
                fd,
                0,
            )
        }?;
        let mapping = Self {
            ptr: ptr.cast(),
            len,
        };
        if dont_fork {
            // SAFETY: the range is exactly the mapping just created and still owned by `mapping`.
            unsafe { nix::sys::mman::madvise(ptr, len, MmapAdvise::MADV_DONTFORK) }?;
        }
        Ok(mapping)
    }

    fn status_word(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset.is_multiple_of(4) && offset.checked_add(4).is_some_and(|end| end <= self.len),
            "status word offset {offset} is computed from the validated geometry and lies inside the {} byte ring",
            self.len
        );
        // SAFETY: the word is inside the mapping (checked above) and 4-aligned (the mapping is
        // page-aligned and the offset a multiple of 4); it lives as long as `&self`. The kernel
        // accesses status words with single aligned 32-bit loads and stores (`__packet_set_status`,
        // `BLOCK_STATUS`), so treating the word as an atomic matches what it does; no Rust
        // reference covering this word is alive while it is stored to (see `user_bytes`).
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().wrapping_add(offset).cast()) }
    }

    /// Reads the status word at `offset` with acquire ordering, pairing with the kernel's
    /// `smp_wmb()` before it publishes a block or frame to user space.
    pub(crate) fn load_status(&self, offset: usize) -> u32 {
        self.status_word(offset).load(Ordering::Acquire)
    }

    /// Writes the status word at `offset` with release ordering, so every read (RX) or write (TX)
    /// of the region happens before the kernel sees it handed back; pairs with the kernel's
    /// `smp_rmb()` after it reads the status.
    pub(crate) fn store_status(&self, offset: usize, value: u32) {
        self.status_word(offset).store(value, Ordering::Release);
    }

    /// Reads an 8-aligned 64-bit header word that the kernel may be writing (a block's
    /// `seq_num` while the kernel owns the block), without tearing.
    pub(crate) fn load_u64(&self, offset: usize) -> u64 {
        assert!(
            offset.is_multiple_of(8) && offset.checked_add(8).is_some_and(|end| end <= self.len),
            "64-bit word offset {offset} is computed from the validated geometry and lies inside the ring"
        );
        // SAFETY: in bounds and 8-aligned (checked above, the mapping is page-aligned); the
        // kernel writes this word with a single aligned store; no Rust reference covers it
        // mutably.
        let word = unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().wrapping_add(offset).cast()) };
        word.load(Ordering::Acquire)
    }

    /// Views `len` bytes at `offset` that user space owns.
    ///
    /// # Safety
    ///
    /// The caller must have observed, with [`Mapping::load_status`], a status giving the region
    /// to user space (TP_STATUS_USER for RX), and must not hand it back with
    /// [`Mapping::store_status`] while the returned slice is alive: the kernel does not write a
    /// user-owned region, so the bytes do not change under the slice.
    pub(crate) unsafe fn user_bytes(&self, offset: usize, len: usize) -> &[u8] {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "region {offset}+{len} is computed from the validated geometry and lies inside the ring"
        );
        // SAFETY: in bounds (checked above); not written by anyone while borrowed (caller).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().wrapping_add(offset), len) }
    }

    /// Mutable view of `len` bytes at `offset` that user space owns (a TX slot that is
    /// TP_STATUS_AVAILABLE).
    ///
    /// # Safety
    ///
    /// As for [`Mapping::user_bytes`], and additionally no other slice of the region may be alive
    /// (the `&mut self` receiver makes that the case for slices this type handed out).
    pub(crate) unsafe fn user_bytes_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "region {offset}+{len} is computed from the validated geometry and lies inside the ring"
        );
        // SAFETY: in bounds (checked above); the kernel does not read or write an AVAILABLE TX
        // slot, and `&mut self` excludes other borrows (caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().wrapping_add(offset), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and nobody else unmaps; every
        // borrow derived from it (blocks, frames, slots) borrows `self`, so none is alive here.
        let result = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
        if let Err(errno) = result {
            log::error!("munmap of packet ring ({} bytes) failed: {errno}", self.len);
        }
    }
}
