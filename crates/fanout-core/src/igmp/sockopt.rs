//! The `setsockopt` calls that join and leave groups, with the `group_req` structures nix does
//! not wrap (passed through [`crate::sys::set_option`]).
//!
//! # Safety
//!
//! The only unsafe code builds a `sockaddr_in` or `sockaddr_in6` inside a zeroed
//! `sockaddr_storage`.

#![allow(
    unsafe_code,
    reason = "a sockaddr_in or sockaddr_in6 written into a sockaddr_storage"
)]

use super::{GroupMembership, IgmpError};
use crate::sys;
use std::fmt::Debug;
use std::hash::Hash;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsFd;

/// An address family's address, as the membership options take it.
pub(super) trait Address: Copy + Eq + Hash + Ord + Debug + Into<IpAddr> {
    /// The unspecified address, which a holding socket is bound to.
    const ANY: IpAddr;
    /// The socket domain's name, for errors.
    const DOMAIN: &'static str;
    /// The `setsockopt` level of the membership options.
    const LEVEL: libc::c_int;
    /// The address in a `sockaddr_storage`, port 0.
    fn storage(self) -> libc::sockaddr_storage;
}

/// Writes `address` at the start of a zeroed `sockaddr_storage`.
fn storage_of<T>(address: T) -> libc::sockaddr_storage {
    const {
        assert!(size_of::<T>() <= size_of::<libc::sockaddr_storage>());
        assert!(align_of::<T>() <= align_of::<libc::sockaddr_storage>());
    }
    // SAFETY: sockaddr_storage is plain old data for which all-zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // SAFETY: the const block above proves sockaddr_storage at least as large and as aligned as
    // `T`, so the write stays inside `storage` and is aligned.
    unsafe { std::ptr::write((&raw mut storage).cast::<T>(), address) };
    storage
}

impl Address for Ipv4Addr {
    const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    const DOMAIN: &'static str = "AF_INET";
    const LEVEL: libc::c_int = libc::IPPROTO_IP;

    fn storage(self) -> libc::sockaddr_storage {
        storage_of(libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(self).to_be(),
            },
            sin_zero: [0; 8],
        })
    }
}

impl Address for Ipv6Addr {
    const ANY: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    const DOMAIN: &'static str = "AF_INET6";
    const LEVEL: libc::c_int = libc::IPPROTO_IPV6;

    fn storage(self) -> libc::sockaddr_storage {
        storage_of(libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: self.octets(),
            },
            // The interface is the request's own field; a scope here would be ignored.
            sin6_scope_id: 0,
        })
    }
}

pub(super) fn setsockopt_membership<A: Address>(
    socket: &UdpSocket,
    membership: GroupMembership<A>,
    join: bool,
) -> Result<(), IgmpError> {
    let fd = socket.as_fd();
    let (name, result) = match membership.source {
        None => {
            let request = libc::group_req {
                gr_interface: membership.ifindex,
                gr_group: membership.group.storage(),
            };
            let (option, name) = if join {
                (libc::MCAST_JOIN_GROUP, "MCAST_JOIN_GROUP")
            } else {
                (libc::MCAST_LEAVE_GROUP, "MCAST_LEAVE_GROUP")
            };
            (name, sys::set_option(fd, A::LEVEL, option, &request))
        }
        Some(source) => {
            let request = libc::group_source_req {
                gsr_interface: membership.ifindex,
                gsr_group: membership.group.storage(),
                gsr_source: source.storage(),
            };
            let (option, name) = if join {
                (libc::MCAST_JOIN_SOURCE_GROUP, "MCAST_JOIN_SOURCE_GROUP")
            } else {
                (libc::MCAST_LEAVE_SOURCE_GROUP, "MCAST_LEAVE_SOURCE_GROUP")
            };
            (name, sys::set_option(fd, A::LEVEL, option, &request))
        }
    };
    result.map_err(|errno| IgmpError::Setsockopt {
        option: name,
        membership: Box::new(membership.to_ip()),
        source: io::Error::from(errno),
    })
}
