//! IPv6 destinations: the output socket ([`ipv6_socket`]) and its batch ([`UdpBatch6`]).
//!
//! The same batching as [`super::UdpBatch`], with `sockaddr_in6` names: an IPv6 output's
//! payloads are copied into buffers allocated once and handed to the kernel with one
//! `sendmmsg(2)` per flush. The socket carries what the output asks of every packet: the source
//! address it is bound to, the hop limit (`IPV6_UNICAST_HOPS` and `IPV6_MULTICAST_HOPS`, so a
//! unicast and a multicast destination both get it) and the traffic class (`IPV6_TCLASS`).
//!
//! # Safety
//!
//! `sendmmsg` reads `mmsghdr` / `iovec` / `sockaddr_in6` arrays through raw pointers. The
//! module builds those arrays immediately before the call, from buffers it owns and does not
//! touch until the call returns, so every pointer is valid and unaliased for the call's
//! duration.

#![allow(
    unsafe_code,
    reason = "sendmmsg(2), which std and nix's safe API do not offer allocation-free"
)]

use super::{Flushed, QueueError};
use crate::sys;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

/// What an IPv6 output socket is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6SocketOptions {
    /// The interface the datagrams leave by (`SO_BINDTODEVICE`).
    pub interface: String,
    /// The source address the socket is bound to; a link-local one is scoped to `interface`.
    pub source: Ipv6Addr,
    /// The hop limit of unicast and multicast datagrams alike.
    pub hop_limit: u8,
    /// The traffic class byte (DSCP in its upper six bits, ECN in the lower two); `None` keeps
    /// the kernel's 0.
    pub traffic_class: Option<u8>,
}

/// A call that failed while opening an IPv6 output socket.
#[derive(Debug, thiserror::Error)]
#[error("{call} for an IPv6 output socket from {from} on {interface}: {errno}")]
pub struct Ipv6SocketError {
    /// The call: `bind`, `setsockopt(IPV6_TCLASS)`, ...
    pub call: &'static str,
    /// The output interface.
    pub interface: String,
    /// The source address.
    pub from: Ipv6Addr,
    /// What the call returned.
    #[source]
    pub errno: io::Error,
}

/// A non-blocking UDP socket bound to `options.source` on `options.interface`, with its hop
/// limit and traffic class set, that sends its own multicast back to no local listener.
pub fn ipv6_socket(options: &Ipv6SocketOptions) -> Result<UdpSocket, Ipv6SocketError> {
    let fail = |call: &'static str| {
        move |errno: io::Error| Ipv6SocketError {
            call,
            interface: options.interface.clone(),
            from: options.source,
            errno,
        }
    };
    // A link-local source means nothing without the link it belongs to.
    let scope = if options.source.is_unicast_link_local() {
        crate::iface::index_of(&options.interface)
            .map_err(|error| fail("if_nametoindex")(io::Error::other(error)))?
    } else {
        0
    };
    let socket =
        UdpSocket::bind(SocketAddrV6::new(options.source, 0, 0, scope)).map_err(fail("bind"))?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(&options.interface),
    )
    .map_err(|errno| fail("setsockopt(SO_BINDTODEVICE)")(errno.into()))?;
    let set = |call: &'static str, name: libc::c_int, value: libc::c_int| {
        sys::set_option(socket.as_fd(), libc::IPPROTO_IPV6, name, &value)
            .map_err(|errno| fail(call)(errno.into()))
    };
    let hops = libc::c_int::from(options.hop_limit);
    set(
        "setsockopt(IPV6_UNICAST_HOPS)",
        libc::IPV6_UNICAST_HOPS,
        hops,
    )?;
    set(
        "setsockopt(IPV6_MULTICAST_HOPS)",
        libc::IPV6_MULTICAST_HOPS,
        hops,
    )?;
    set(
        "setsockopt(IPV6_MULTICAST_LOOP)",
        libc::IPV6_MULTICAST_LOOP,
        0,
    )?;
    if let Some(class) = options.traffic_class {
        set(
            "setsockopt(IPV6_TCLASS)",
            libc::IPV6_TCLASS,
            libc::c_int::from(class),
        )?;
    }
    socket
        .set_nonblocking(true)
        .map_err(fail("fcntl(O_NONBLOCK)"))?;
    Ok(socket)
}

/// An IPv6 socket with a batch of queued datagrams.
#[derive(Debug)]
pub struct UdpBatch6 {
    socket: UdpSocket,
    slot_size: usize,
    payloads: Vec<u8>,
    lens: Vec<usize>,
    destinations: Vec<libc::sockaddr_in6>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovecs` and `headers` are scratch space rewritten before every
// `sendmmsg` and never dereferenced otherwise; the rest is owned data.
unsafe impl Send for UdpBatch6 {}

impl UdpBatch6 {
    /// A batch of `capacity` datagrams of at most `slot_size` bytes each, sent through `socket`
    /// (an `AF_INET6` socket, from [`ipv6_socket`] or set up by the caller).
    pub fn new(socket: UdpSocket, capacity: usize, slot_size: usize) -> Self {
        let capacity = capacity.max(1);
        UdpBatch6 {
            socket,
            slot_size,
            payloads: vec![0; capacity * slot_size],
            lens: Vec::with_capacity(capacity),
            destinations: Vec::with_capacity(capacity),
            iovecs: Vec::with_capacity(capacity),
            headers: Vec::with_capacity(capacity),
        }
    }

    /// The socket the batch is sent through.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Datagrams queued and not yet flushed.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Queues a copy of `payload` for `destination` (its scope id names the link of a
    /// link-local destination).
    pub fn push(&mut self, destination: SocketAddrV6, payload: &[u8]) -> Result<(), QueueError> {
        let capacity = self.lens.capacity();
        let index = self.lens.len();
        if index == capacity {
            return Err(QueueError::Full { capacity });
        }
        if payload.len() > self.slot_size {
            return Err(QueueError::TooLarge {
                len: payload.len(),
                max: self.slot_size,
            });
        }
        let start = index * self.slot_size;
        self.payloads[start..start + payload.len()].copy_from_slice(payload);
        self.lens.push(payload.len());
        self.destinations.push(libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: destination.port().to_be(),
            sin6_flowinfo: destination.flowinfo().to_be(),
            sin6_addr: libc::in6_addr {
                s6_addr: destination.ip().octets(),
            },
            sin6_scope_id: destination.scope_id(),
        });
        Ok(())
    }

    /// Sends everything queued and empties the batch, as [`super::UdpBatch::flush`] does: a
    /// refused datagram is counted and skipped, and when the interface is down or gone the rest
    /// is counted as refused without trying it.
    pub fn flush(&mut self) -> Flushed {
        let count = self.lens.len();
        if count == 0 {
            return Flushed::default();
        }
        self.iovecs.clear();
        self.headers.clear();
        let base = self.payloads.as_mut_ptr();
        for (index, &len) in self.lens.iter().enumerate() {
            self.iovecs.push(libc::iovec {
                // SAFETY: index < capacity, so the offset stays inside `payloads`.
                iov_base: unsafe { base.add(index * self.slot_size) }.cast(),
                iov_len: len,
            });
        }
        for index in 0..count {
            // SAFETY: mmsghdr is plain old data for which all-zero bytes are a valid value.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = (&raw mut self.destinations[index]).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &raw mut self.iovecs[index];
            header.msg_hdr.msg_iovlen = 1;
            self.headers.push(header);
        }
        // SAFETY: `headers` holds `count` initialised mmsghdrs whose name and iovec pointers point
        // into `destinations`, `iovecs` and `payloads`, all owned by `self`, alive and not
        // otherwise accessed until `send_all` returns.
        let outcome = unsafe { send_all(self.socket.as_raw_fd(), &mut self.headers) };
        self.lens.clear();
        self.destinations.clear();
        outcome
    }
}

/// Hands `headers` to the kernel with as few `sendmmsg` calls as it allows.
///
/// # Safety
///
/// Every header's name and iovec pointers must point to live memory of the sizes they state,
/// not accessed by anything else until this returns; `fd` must be an open socket.
unsafe fn send_all(fd: libc::c_int, headers: &mut [libc::mmsghdr]) -> Flushed {
    let mut outcome = Flushed::default();
    let count = headers.len();
    let mut next = 0;
    while next < count {
        let remaining = (count - next) as libc::c_uint;
        let pending = headers[next..].as_mut_ptr();
        // SAFETY: `pending` points at `remaining` initialised headers whose pointers the caller
        // keeps valid (this function's contract).
        let sent = unsafe { libc::sendmmsg(fd, pending, remaining, libc::MSG_DONTWAIT) };
        if sent < 0 {
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if errno == libc::EINTR {
                continue;
            }
            outcome.error.get_or_insert(errno);
            if matches!(errno, libc::ENETDOWN | libc::ENODEV | libc::ENXIO) {
                // The interface is down or gone: every datagram left would be refused the same
                // way, one syscall each.
                outcome.failed += count - next;
                break;
            }
            // The datagram at `next` was refused: skip it and carry on with the rest.
            outcome.failed += 1;
            next += 1;
        } else {
            outcome.sent += sent as usize;
            next += sent as usize;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    #[test]
    fn sends_a_batch_in_order_and_reports_refusals() {
        let Ok(receiver) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) else {
            println!("skipped: no IPv6 loopback here");
            return;
        };
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("read timeout");
        let SocketAddr::V6(to) = receiver.local_addr().expect("local address") else {
            panic!("bound to an IPv6 address")
        };
        let sender = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind on loopback");
        let mut batch = UdpBatch6::new(sender, 3, 16);
        for n in 0..3u8 {
            batch.push(to, &[n; 12]).expect("room for three");
        }
        assert_eq!(batch.push(to, b"x"), Err(QueueError::Full { capacity: 3 }));
        let outcome = batch.flush();
        assert_eq!((outcome.sent, outcome.failed), (3, 0));
        assert!(batch.is_empty());
        let mut buf = [0u8; 32];
        for n in 0..3u8 {
            let len = receiver.recv(&mut buf).expect("datagram arrives");
            assert_eq!(&buf[..len], &[n; 12]);
        }
        assert_eq!(
            batch.push(to, &[0; 17]),
            Err(QueueError::TooLarge { len: 17, max: 16 })
        );
        // Port 0 is refused by the kernel (EINVAL); the datagram after it still goes out.
        batch
            .push(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 0, 0, 0), b"bad")
            .expect("queued");
        batch.push(to, b"good").expect("queued");
        let outcome = batch.flush();
        assert_eq!((outcome.sent, outcome.failed), (1, 1));
        assert_eq!(outcome.error, Some(libc::EINVAL));
        let len = receiver.recv(&mut buf).expect("datagram arrives");
        assert_eq!(&buf[..len], b"good");
    }
}
