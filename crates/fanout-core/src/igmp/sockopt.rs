//! The `setsockopt` calls that join and leave groups, with the `group_req` structures nix does
//! not wrap.
//!
//! # Safety
//!
//! `setsockopt(MCAST_JOIN_GROUP …)` takes `group_req` / `group_source_req` structures by pointer;
//! the only unsafe code passes a pointer to a local, initialised structure with its exact size.

#![allow(
    unsafe_code,
    reason = "setsockopt with the group_req structures that nix does not wrap"
)]

use super::{IgmpError, Membership};
use std::io;
use std::mem;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

fn sockaddr_in(address: Ipv4Addr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data for which all-zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_storage is larger than and at least as aligned as sockaddr_in, so the
    // write stays inside `storage`.
    unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
    storage
}

pub(super) fn setsockopt_membership(
    socket: &UdpSocket,
    membership: Membership,
    join: bool,
) -> Result<(), IgmpError> {
    let fd = socket.as_raw_fd();
    let (name, result) = match membership.source {
        None => {
            let request = libc::group_req {
                gr_interface: membership.ifindex,
                gr_group: sockaddr_in(membership.group),
            };
            let (option, name) = if join {
                (libc::MCAST_JOIN_GROUP, "MCAST_JOIN_GROUP")
            } else {
                (libc::MCAST_LEAVE_GROUP, "MCAST_LEAVE_GROUP")
            };
            // SAFETY: `fd` is an open socket borrowed from `socket` for this call; the pointer and
            // length describe `request`, a live, initialised group_req.
            let result = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    option,
                    (&raw const request).cast(),
                    size_of::<libc::group_req>() as libc::socklen_t,
                )
            };
            (name, result)
        }
        Some(source) => {
            let request = libc::group_source_req {
                gsr_interface: membership.ifindex,
                gsr_group: sockaddr_in(membership.group),
                gsr_source: sockaddr_in(source),
            };
            let (option, name) = if join {
                (libc::MCAST_JOIN_SOURCE_GROUP, "MCAST_JOIN_SOURCE_GROUP")
            } else {
                (libc::MCAST_LEAVE_SOURCE_GROUP, "MCAST_LEAVE_SOURCE_GROUP")
            };
            // SAFETY: as above, with a live, initialised group_source_req.
            let result = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    option,
                    (&raw const request).cast(),
                    size_of::<libc::group_source_req>() as libc::socklen_t,
                )
            };
            (name, result)
        }
    };
    if result == 0 {
        Ok(())
    } else {
        Err(IgmpError::Setsockopt {
            option: name,
            membership,
            source: io::Error::last_os_error(),
        })
    }
}
