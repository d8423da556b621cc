//! UDP datagrams queued and sent with one `sendmmsg(2)` per batch.
//!
//! Where a frame cannot be written whole into a TX ring (a unicast destination whose next hop
//! the kernel must resolve, or an interface without Ethernet headers), the payload goes through an
//! ordinary UDP socket. [`UdpBatch`] keeps that off the per-packet syscall path: payloads are
//! copied into buffers allocated once, and [`UdpBatch::flush`] hands the whole batch to the
//! kernel in one call, to IPv4 or IPv6 destinations; [`ipv6_socket`] opens an IPv6 output's
//! socket with its source, hop limit and traffic class.
//!
//! # Safety
//!
//! `sendmmsg` reads `mmsghdr` / `iovec` / `sockaddr_in` (or `sockaddr_in6`) arrays through raw
//! pointers. The module
//! builds those arrays immediately before the call, from buffers it owns and does not touch
//! until the call returns, so every pointer is valid and unaliased for the call's duration.

#![allow(
    unsafe_code,
    reason = "sendmmsg(2), which std and nix's safe API do not offer allocation-free"
)]

mod v6;

pub use v6::{Ipv6SocketError, Ipv6SocketOptions, ipv6_socket};

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Why a datagram was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// Every slot is taken: flush first.
    #[error("the batch is full ({capacity} datagrams): flush it first")]
    Full {
        /// Slots in the batch.
        capacity: usize,
    },
    /// The payload does not fit a slot.
    #[error("a {len}-byte payload does not fit a {max}-byte slot")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The slot size.
        max: usize,
    },
}

/// What one [`UdpBatch::flush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Datagrams it refused (the first error's errno is in `error`).
    pub failed: usize,
    /// The errno of the first refused datagram, if any.
    pub error: Option<i32>,
}

/// A destination as `sendmmsg` reads it: an IPv4 or IPv6 socket address, whichever the
/// socket's family takes (an AF_INET socket sends to IPv4 destinations only, an AF_INET6 one
/// to IPv6 ones and, unless `IPV6_V6ONLY`, to IPv4-mapped ones).
#[repr(C)]
#[derive(Clone, Copy)]
union Name {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Name")
    }
}

/// A socket with a batch of queued datagrams.
#[derive(Debug)]
pub struct UdpBatch {
    socket: UdpSocket,
    slot_size: usize,
    payloads: Vec<u8>,
    lens: Vec<usize>,
    destinations: Vec<(Name, libc::socklen_t)>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovecs` and `headers` are scratch space rewritten before every
// `sendmmsg` and never dereferenced otherwise; the rest is owned data.
unsafe impl Send for UdpBatch {}

impl UdpBatch {
    /// A batch of `capacity` datagrams of at most `slot_size` bytes each, sent through `socket`
    /// (already bound, connected or not, with its TTL and other options set by the caller).
    pub fn new(socket: UdpSocket, capacity: usize, slot_size: usize) -> Self {
        let capacity = capacity.max(1);
        UdpBatch {
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

    /// Queues a copy of `payload` for `destination` (IPv4 or IPv6, of the socket's family).
    pub fn push(
        &mut self,
        destination: impl Into<SocketAddr>,
        payload: &[u8],
    ) -> Result<(), QueueError> {
        let destination = destination.into();
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
        self.destinations.push(match destination {
            SocketAddr::V4(destination) => (
                Name {
                    v4: libc::sockaddr_in {
                        sin_family: libc::AF_INET as libc::sa_family_t,
                        sin_port: destination.port().to_be(),
                        sin_addr: libc::in_addr {
                            s_addr: u32::from(*destination.ip()).to_be(),
                        },
                        sin_zero: [0; 8],
                    },
                },
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            SocketAddr::V6(destination) => (
                Name {
                    v6: libc::sockaddr_in6 {
                        sin6_family: libc::AF_INET6 as libc::sa_family_t,
                        sin6_port: destination.port().to_be(),
                        sin6_flowinfo: destination.flowinfo().to_be(),
                        sin6_addr: libc::in6_addr {
                            s6_addr: destination.ip().octets(),
                        },
                        sin6_scope_id: destination.scope_id(),
                    },
                },
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        });
        Ok(())
    }

    /// Sends everything queued, with as few `sendmmsg` calls as the kernel allows, and empties
    /// the batch. A datagram the kernel refuses (no route, buffer full with a non-blocking
    /// socket, ...) is counted and skipped, never retried; when the interface is down or gone
    /// (ENETDOWN, ENODEV, ENXIO) the rest of the batch is counted as refused without trying it.
    pub fn flush(&mut self) -> Flushed {
        let mut outcome = Flushed::default();
        let count = self.lens.len();
        if count == 0 {
            return outcome;
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
            let (name, name_len) = &mut self.destinations[index];
            header.msg_hdr.msg_name = (&raw mut *name).cast();
            header.msg_hdr.msg_namelen = *name_len;
            header.msg_hdr.msg_iov = &raw mut self.iovecs[index];
            header.msg_hdr.msg_iovlen = 1;
            self.headers.push(header);
        }
        let fd = self.socket.as_raw_fd();
        let mut next = 0;
        while next < count {
            let remaining = (count - next) as libc::c_uint;
            let headers = self.headers[next..].as_mut_ptr();
            // SAFETY: `headers[next..count]` are initialised mmsghdrs whose name and iovec pointers
            // point into `destinations`, `iovecs` and `payloads`, all owned by `self`, alive and
            // not otherwise accessed until this call returns; `fd` is `self.socket`'s open socket.
            let sent = unsafe { libc::sendmmsg(fd, headers, remaining, libc::MSG_DONTWAIT) };
            if sent < 0 {
                let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if errno == libc::EINTR {
                    continue;
                }
                outcome.error.get_or_insert(errno);
                if matches!(errno, libc::ENETDOWN | libc::ENODEV | libc::ENXIO) {
                    // The interface is down or gone: every datagram left would be refused the
                    // same way, one syscall each.
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
        self.lens.clear();
        self.destinations.clear();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    #[test]
    fn sends_to_ipv6_destinations() {
        let Ok(receiver) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) else {
            eprintln!("skipped: no IPv6 loopback in this network namespace");
            return;
        };
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("read timeout");
        let to = receiver.local_addr().expect("local address");
        assert!(to.is_ipv6());
        let sender = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind on ::1");
        let mut batch = UdpBatch::new(sender, 2, 16);
        batch.push(to, b"six").expect("queued");
        batch.push(to, b"again").expect("queued");
        let outcome = batch.flush();
        assert_eq!((outcome.sent, outcome.failed), (2, 0));
        let mut buf = [0u8; 32];
        let len = receiver.recv(&mut buf).expect("datagram arrives");
        assert_eq!(&buf[..len], b"six");
        let len = receiver.recv(&mut buf).expect("datagram arrives");
        assert_eq!(&buf[..len], b"again");
    }

    #[test]
    fn sends_a_batch_in_order_and_reports_refusals() {
        let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind on loopback");
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("read timeout");
        let SocketAddr::V4(to) = receiver.local_addr().expect("local address") else {
            panic!("bound to an IPv4 address")
        };
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind on loopback");
        let mut batch = UdpBatch::new(sender, 4, 16);
        for n in 0..4u8 {
            batch.push(to, &[n; 10]).expect("room for four");
        }
        assert_eq!(batch.push(to, b"x"), Err(QueueError::Full { capacity: 4 }));
        let outcome = batch.flush();
        assert_eq!((outcome.sent, outcome.failed), (4, 0));
        assert!(batch.is_empty());
        let mut buf = [0u8; 32];
        for n in 0..4u8 {
            let len = receiver.recv(&mut buf).expect("datagram arrives");
            assert_eq!(&buf[..len], &[n; 10]);
        }
        assert_eq!(
            batch.push(to, &[0; 17]),
            Err(QueueError::TooLarge { len: 17, max: 16 })
        );
        // Port 0 is refused by the kernel (EINVAL); the datagram after it still goes out.
        batch
            .push(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), b"bad")
            .expect("queued");
        batch.push(to, b"good").expect("queued");
        let outcome = batch.flush();
        assert_eq!((outcome.sent, outcome.failed), (1, 1));
        assert_eq!(outcome.error, Some(libc::EINVAL));
        let len = receiver.recv(&mut buf).expect("datagram arrives");
        assert_eq!(&buf[..len], b"good");
    }
}
