//! The `setsockopt` calls that join and leave groups, with the `group_req` structures nix does
//! not wrap (passed through [`crate::sys::set_option`]).
//!
//! # Safety
//!
//! The only unsafe code builds a `sockaddr_in` inside a zeroed `sockaddr_storage`.

#![allow(unsafe_code, reason = "a sockaddr_in written into a sockaddr_storage")]

use super::{IgmpError, Membership};
use crate::sys;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;

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
    let fd = socket.as_fd();
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
            (
                name,
                sys::set_option(fd, libc::IPPROTO_IP, option, &request),
            )
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
            (
                name,
                sys::set_option(fd, libc::IPPROTO_IP, option, &request),
            )
        }
    };
    result.map_err(|errno| IgmpError::Setsockopt {
        option: name,
        membership,
        source: io::Error::from(errno),
    })
}
