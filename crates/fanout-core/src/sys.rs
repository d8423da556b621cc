//! Thin wrappers over the socket-option and socket-address syscalls that nix does not cover for
//! packet sockets.
//!
//! # Safety
//!
//! `setsockopt(2)` and `getsockopt(2)` copy `optlen` bytes between the kernel and a user buffer.
//! This module keeps two invariants for every call:
//! - the buffer is a live, properly aligned value of a type implementing [`OptionValue`], and the
//!   length passed is exactly `size_of` that type, so the kernel never reads or writes past it;
//! - [`OptionValue`] is only implemented for `#[repr(C)]` kernel ABI structs and integers for
//!   which every bit pattern is a valid value, so whatever the kernel writes is a valid `T`.
//!
//! `bind(2)` receives a fully initialised `sockaddr_ll` and its exact size.
#![allow(unsafe_code, reason = "socket-option syscalls on kernel ABI structs")]

use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// A value that can cross the socket-option boundary as raw bytes.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` (or primitive) types without padding-dependent invariants,
/// for which every bit pattern the kernel may write is a valid value, and which contain no
/// references (raw pointers are allowed: the kernel reads them only during the call).
pub(crate) unsafe trait OptionValue: Copy {}

// SAFETY: integers accept every bit pattern.
unsafe impl OptionValue for libc::c_int {}
// SAFETY: integers accept every bit pattern.
unsafe impl OptionValue for u32 {}
// SAFETY: repr(C) struct of u32 fields (kernel `struct tpacket_req3`).
unsafe impl OptionValue for libc::tpacket_req3 {}
// SAFETY: repr(C) struct of u32 fields (kernel `struct tpacket_req`).
unsafe impl OptionValue for libc::tpacket_req {}
// SAFETY: repr(C) struct of u32 fields (kernel `struct tpacket_stats_v3`).
unsafe impl OptionValue for libc::tpacket_stats_v3 {}
// SAFETY: repr(C) struct of u64 fields (kernel `struct tpacket_rollover_stats`).
unsafe impl OptionValue for libc::tpacket_rollover_stats {}
// SAFETY: repr(C) struct of integers (kernel `struct fanout_args`).
unsafe impl OptionValue for libc::fanout_args {}
// SAFETY: repr(C) struct of an interface index and a sockaddr_storage, integers and byte arrays
// only (kernel `struct group_req`); the kernel only reads it.
unsafe impl OptionValue for libc::group_req {}
// SAFETY: repr(C) struct of an interface index and two sockaddr_storage (kernel
// `struct group_source_req`); the kernel only reads it.
unsafe impl OptionValue for libc::group_source_req {}
// SAFETY: repr(C) struct of integers and a byte array (kernel `struct packet_mreq`).
unsafe impl OptionValue for libc::packet_mreq {}
// SAFETY: repr(C) struct of a length and a raw pointer the kernel only reads during the call.
unsafe impl OptionValue for libc::sock_fprog {}

/// `setsockopt(fd, level, name, &value, sizeof value)`.
pub(crate) fn set_option<T: OptionValue>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> Result<(), Errno> {
    let len = libc::socklen_t::try_from(size_of::<T>())
        .expect("option structs are a few dozen bytes, far below socklen_t::MAX");
    // SAFETY: `value` is a live `T` and `len` is exactly its size (module invariant); the fd is
    // borrowed, so it stays open for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    Errno::result(rc).map(drop)
}

/// `getsockopt(fd, level, name, &mut value, &mut len)`; returns the value and the length the
/// kernel wrote (some options write less than `size_of::<T>()`, e.g. V1/V2 statistics).
pub(crate) fn get_option<T: OptionValue>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> Result<(T, usize), Errno> {
    let mut value = MaybeUninit::<T>::zeroed();
    let mut len = libc::socklen_t::try_from(size_of::<T>())
        .expect("option structs are a few dozen bytes, far below socklen_t::MAX");
    // SAFETY: the buffer is `len` bytes of writable memory owned by this frame; the kernel writes
    // at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    Errno::result(rc)?;
    // SAFETY: the buffer was zero-initialised and the kernel overwrote a prefix of it; every bit
    // pattern is a valid `T` (OptionValue contract).
    let value = unsafe { value.assume_init() };
    Ok((value, len as usize))
}

/// `bind(fd, sockaddr_ll { ifindex, protocol })`; `protocol` is in host byte order.
pub(crate) fn bind_packet(fd: BorrowedFd<'_>, ifindex: u32, protocol: u16) -> Result<(), Errno> {
    // SAFETY: sockaddr_ll is a repr(C) struct of integers and bytes; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol.to_be();
    addr.sll_ifindex = i32::try_from(ifindex).map_err(|_| Errno::ENODEV)?;
    let len =
        libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("sockaddr_ll is 20 bytes");
    // SAFETY: `addr` is a fully initialised sockaddr_ll and `len` is its exact size.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) };
    Errno::result(rc).map(drop)
}

/// The runtime page size; ring blocks must be a multiple of it.
pub(crate) fn page_size() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => usize::try_from(size).unwrap_or(4096),
        // sysconf(_SC_PAGESIZE) cannot fail on Linux; 4096 is the smallest page Linux supports.
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_a_power_of_two_of_at_least_4k() {
        let size = page_size();
        assert!(size >= 4096 && size.is_power_of_two(), "page size {size}");
    }
}
