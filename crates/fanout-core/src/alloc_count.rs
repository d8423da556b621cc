//! A global allocator that counts, for proving a hot path allocates nothing and for measuring
//! memory per item.
//!
//! [`CountingAllocator`] forwards every call to the system allocator and keeps process-wide
//! counters: allocations made (`alloc`, `alloc_zeroed`, `realloc`), bytes requested, bytes live
//! now and the peak of live bytes. Install it in a benchmark or a measurement build:
//!
//! ```
//! use fanout_core::alloc_count::{self, CountingAllocator};
//!
//! #[global_allocator]
//! static ALLOCATOR: CountingAllocator = CountingAllocator;
//!
//! let before = alloc_count::snapshot();
//! let v: Vec<u8> = Vec::with_capacity(100);
//! let after = alloc_count::snapshot();
//! assert_eq!(after.allocations - before.allocations, 1);
//! # drop(v);
//! ```
//!
//! The counters are relaxed atomics, touched once per allocation: a cost that matters only where
//! allocations happen, which is exactly where the measurement wants to find them.
//!
//! # Safety
//!
//! The one unsafe item is the `GlobalAlloc` implementation, which passes every call on to
//! [`System`] unchanged; counting neither allocates nor touches the memory handed out.

#![allow(
    unsafe_code,
    reason = "a GlobalAlloc implementation is unsafe by definition"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocSnapshot {
    /// Allocations since the process started (a `realloc` counts as one: it may move).
    pub allocations: u64,
    /// Bytes those allocations requested.
    pub bytes: u64,
    /// Bytes allocated and not yet freed.
    pub live: u64,
    /// The highest `live` since the start or the last [`reset_peak`].
    pub peak: u64,
}

/// The counters now (all zero unless [`CountingAllocator`] is the global allocator).
pub fn snapshot() -> AllocSnapshot {
    AllocSnapshot {
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        live: LIVE.load(Ordering::Relaxed),
        peak: PEAK.load(Ordering::Relaxed),
    }
}

/// Starts a new peak measurement from the bytes live now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

fn grew(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    let live = LIVE.fetch_add(size as u64, Ordering::Relaxed) + size as u64;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrank(size: usize) {
    LIVE.fetch_sub(size as u64, Ordering::Relaxed);
}

// SAFETY: every method passes the caller's arguments to `System` unchanged and returns its
// result, so the contract `GlobalAlloc` asks of an implementation is the one `System` keeps;
// the counting around it only updates atomics.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller keeps `alloc`'s contract (a non-zero size), passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`, and the caller keeps `realloc`'s
        // contract for `new_size`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        new
    }
}
