//! Giving freed heap memory back to the system.
//!
//! A long-lived process that once needed a lot of memory for a moment (parsing a configuration
//! of 100,000 rules peaks at tens of times the file's size) keeps that memory in its
//! allocator's free lists: the C allocator returns to the system only what lies at the top of
//! its heap. [`trim`] asks it to release every free page it can.

#![allow(
    unsafe_code,
    reason = "one FFI call to the C library's malloc_trim, whose safety is stated where it is made"
)]

/// Returns free heap pages to the system; true when some were released. A no-op (false) with a
/// C library that has no `malloc_trim` (musl).
pub fn trim() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only walks and shrinks the allocator's own free lists under its
        // locks; it takes no pointer and leaves every live allocation where it is, so it is
        // sound to call at any time from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("Linux has it");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in kB")
    }

    #[test]
    fn freed_small_allocations_go_back_after_a_trim() {
        // Many small blocks come from the heap (not mmap), and one kept at the end pins its top,
        // so freeing the rest does not shrink it by itself.
        let mut blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 512]).collect();
        let pin = vec![1u8; 512];
        let full = rss_kib();
        blocks.clear();
        blocks.shrink_to_fit();
        let freed = rss_kib();
        let trimmed = trim();
        let after = rss_kib();
        std::hint::black_box(&pin);
        if cfg!(target_env = "gnu") {
            assert!(trimmed, "nothing released");
            assert!(
                after + 50_000 < full.max(freed),
                "RSS {full} KiB full, {freed} KiB freed, {after} KiB after the trim"
            );
        }
    }
}
