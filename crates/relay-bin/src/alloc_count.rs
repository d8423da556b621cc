//! A global allocator that counts heap allocations, for the benchmark's "allocations per packet".
//!
//! Built only with the `count-allocs` feature. It forwards every call to the system allocator
//! and adds one to a process-wide counter per allocation (a `realloc` counts as one, since it may
//! move the block). A worker process logs the totals when it stops; the benchmark runs the same
//! relay with two traffic volumes and divides the difference in allocations by the difference in
//! packets, so set-up and shut-down cancel out and what remains is the hot path's share.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations (`alloc`, `alloc_zeroed`, `realloc`) since the process started.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Bytes requested by those allocations.
static BYTES: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting.
pub(crate) struct Counting;

impl Counting {
    fn count(size: usize) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

/// Allocations and bytes requested since the process started.
pub(crate) fn totals() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// contract `GlobalAlloc` asks of an implementation is the one `System` already keeps; counting
// touches only two atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller keeps `alloc`'s contract (non-zero size), which we pass on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: as for `alloc`: the caller's layout is passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        // SAFETY: `ptr` came from `System` with `layout`, and the caller keeps `realloc`'s
        // contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
