//! Handing a set-up receive ring to another process.
//!
//! A supervisor builds the ring (created, bound, joined to its fanout group), keeps the socket
//! open, and gives a worker the descriptor, by inheritance or over a Unix socket
//! (`SCM_RIGHTS`). The worker maps the ring itself: a mapping is never shared across `fork`
//! (set `MADV_DONTFORK` with [`crate::ring::RxRingBuilder::dont_fork`]). While the supervisor
//! holds the socket, the group's membership and member order never change, whatever happens to
//! workers. The kernel cannot report a ring's geometry back, so a [`RingDescriptor`] travels
//! with the descriptor.
//!
//! A new owner resumes at the oldest block user space still owns (lowest `seq_num` with
//! TP_STATUS_USER; the kernel retires blocks in ring order): the block a dead worker held is read
//! again, nothing else.
//!
//! # Safety
//!
//! The one unsafe operation takes ownership of descriptors the kernel installed in this
//! process's table while receiving an `SCM_RIGHTS` message; nothing else refers to them.
#![allow(unsafe_code, reason = "owning descriptors received over SCM_RIGHTS")]

use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::str::FromStr;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags};

mod fds;

pub use fds::{MAX_FDS, recv_with_fds, send_with_fds};

use crate::fanout;
use crate::ring::geometry::{Constraints, FRAME_ALIGNMENT, Geometry};
use crate::ring::{RingError, RingVersion, RxRing};
use crate::socket::{Binding, PacketSocket, Protocol};
use crate::sys;

/// What the receiver of a ring descriptor needs to map and serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingDescriptor {
    /// The ring version.
    pub version: RingVersion,
    /// The ring layout (RX only; the mmap length is `geometry.ring_bytes()`).
    pub geometry: Geometry,
    /// Whether frames carry the RX hash.
    pub rx_hash: bool,
    /// The interface the socket is bound to.
    pub ifindex: u32,
    /// The protocol it is bound with.
    pub protocol: Protocol,
}

const MAGIC: u32 = 0x4652_4731;
/// Size of [`RingDescriptor::to_bytes`].
pub const DESCRIPTOR_LEN: usize = 24;

/// Failures handing a ring over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// `sendmsg(SCM_RIGHTS)` failed.
    #[error("sendmsg(SCM_RIGHTS) of a ring descriptor failed: {errno}")]
    Send {
        /// The errno.
        errno: Errno,
    },
    /// `recvmsg` failed.
    #[error("recvmsg(SCM_RIGHTS) of a ring descriptor failed: {errno}")]
    Receive {
        /// The errno.
        errno: Errno,
    },
    /// The peer closed the channel or sent no descriptor.
    #[error("the hand-off message carried no file descriptor (peer closed or sent plain data)")]
    NoDescriptor,
    /// More descriptors than one message may carry were sent or received.
    #[error("{count} descriptors in one message; at most {max} may travel together")]
    TooManyDescriptors {
        /// How many (a received message says only that there were more than `max`).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The ring description is malformed.
    #[error("malformed ring descriptor: {reason}")]
    BadDescriptor {
        /// What was wrong.
        reason: &'static str,
    },
    /// The socket's ring version differs from the description.
    #[error("getsockopt(PACKET_VERSION) says {found}, the ring descriptor says {expected:?}")]
    VersionMismatch {
        /// From the descriptor.
        expected: RingVersion,
        /// What the kernel reported (`TPACKET_V<n-1>` numbering: 0 = V1).
        found: u32,
    },
    /// `dup`/`fcntl` on the descriptor failed.
    #[error("{syscall} on a ring descriptor failed: {errno}")]
    Descriptor {
        /// The syscall.
        syscall: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// Mapping the ring failed (EINVAL: the geometry does not match the socket's ring).
    #[error(transparent)]
    Ring(#[from] RingError),
}

impl RingDescriptor {
    /// Fixed little-endian encoding, sent alongside the descriptor.
    pub fn to_bytes(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut out = [0u8; DESCRIPTOR_LEN];
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4] = match self.version {
            RingVersion::V2 => 2,
            RingVersion::V3 => 3,
        };
        out[5] = u8::from(self.rx_hash);
        out[6..8].copy_from_slice(&self.protocol.0.to_le_bytes());
        out[8..12].copy_from_slice(&self.geometry.block_size().to_le_bytes());
        out[12..16].copy_from_slice(&self.geometry.block_count().to_le_bytes());
        out[16..20].copy_from_slice(&self.geometry.frame_size().to_le_bytes());
        out[20..24].copy_from_slice(&self.ifindex.to_le_bytes());
        out
    }

    /// Decodes [`RingDescriptor::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HandoffError> {
        let bytes: &[u8; DESCRIPTOR_LEN] =
            bytes.try_into().map_err(|_| HandoffError::BadDescriptor {
                reason: "wrong length",
            })?;
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if word(0) != MAGIC {
            return Err(HandoffError::BadDescriptor {
                reason: "bad magic",
            });
        }
        let version = match bytes[4] {
            2 => RingVersion::V2,
            3 => RingVersion::V3,
            _ => {
                return Err(HandoffError::BadDescriptor {
                    reason: "unknown ring version",
                });
            }
        };
        let rx_hash = match bytes[5] {
            0 => false,
            1 => true,
            _ => {
                return Err(HandoffError::BadDescriptor {
                    reason: "bad rx_hash flag",
                });
            }
        };
        let geometry = Geometry::new(word(8), word(12), word(16));
        // The kernel checks only the mapping's length against the socket's ring (at mmap), so
        // the rest of the layout is checked here: the worker's ring walk divides by these
        // fields and steps through the mapping by them. The page size is the kernel's to check.
        let structural = Constraints {
            version,
            page_size: FRAME_ALIGNMENT,
            reserve: 0,
            private_size: 0,
        };
        if geometry.validate(&structural).is_err() {
            return Err(HandoffError::BadDescriptor {
                reason: "a ring geometry the kernel would refuse",
            });
        }
        Ok(Self {
            version,
            geometry,
            rx_hash,
            ifindex: word(20),
            protocol: Protocol(u16::from_le_bytes([bytes[6], bytes[7]])),
        })
    }
}

/// Hex of [`RingDescriptor::to_bytes`], for an environment variable or command line.
impl fmt::Display for RingDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_bytes()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for RingDescriptor {
    type Err = HandoffError;
    fn from_str(text: &str) -> Result<Self, HandoffError> {
        let bad = HandoffError::BadDescriptor {
            reason: "not 48 hex digits",
        };
        // Digits only: `from_str_radix` alone would take "+f" for 0x0f.
        if text.len() != DESCRIPTOR_LEN * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad);
        }
        let mut bytes = [0u8; DESCRIPTOR_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| {
                HandoffError::BadDescriptor {
                    reason: "not 48 hex digits",
                }
            })?;
        }
        Self::from_bytes(&bytes)
    }
}

/// A set-up receive ring that this process has not mapped: what a supervisor keeps and a
/// worker receives.
#[derive(Debug)]
pub struct RingHandle {
    fd: OwnedFd,
    descriptor: RingDescriptor,
}

impl RingHandle {
    /// Pairs a received or inherited descriptor with its description; checked when mapped.
    pub fn from_fd(fd: OwnedFd, descriptor: RingDescriptor) -> Self {
        Self { fd, descriptor }
    }

    /// The description to send along.
    pub fn descriptor(&self) -> RingDescriptor {
        self.descriptor
    }

    /// A second handle on the same socket (`dup`); the socket lives while any handle does.
    pub fn try_clone(&self) -> Result<Self, HandoffError> {
        let fd = self.fd.try_clone().map_err(|e| HandoffError::Descriptor {
            syscall: "dup",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        Ok(Self {
            fd,
            descriptor: self.descriptor,
        })
    }

    /// Clears or sets `FD_CLOEXEC`, so a child started with `exec` inherits the descriptor
    /// (pass its number and the descriptor text, e.g. in the environment).
    pub fn set_inheritable(&self, inheritable: bool) -> Result<(), HandoffError> {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let flags = if inheritable {
            FdFlag::empty()
        } else {
            FdFlag::FD_CLOEXEC
        };
        fcntl(self.fd.as_fd(), FcntlArg::F_SETFD(flags))
            .map(drop)
            .map_err(|errno| HandoffError::Descriptor {
                syscall: "fcntl(F_SETFD)",
                errno,
            })
    }

    /// Maps the ring in this process and resumes at the oldest block (or frame) user space still
    /// owns. The socket keeps its binding and fanout membership.
    pub fn map(self) -> Result<RxRing, HandoffError> {
        let d = self.descriptor;
        let (raw_version, _) =
            sys::get_option::<libc::c_int>(self.fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VERSION)
                .map_err(|errno| HandoffError::Descriptor {
                    syscall: "getsockopt(PACKET_VERSION)",
                    errno,
                })?;
        let found = u32::try_from(raw_version).unwrap_or(u32::MAX);
        if RingVersion::from_raw(found) != Some(d.version) {
            return Err(HandoffError::VersionMismatch {
                expected: d.version,
                found,
            });
        }
        // By index: looking the name up would take a socket, which a process boxed in may not
        // open (mapping makes no system call but `getsockopt` and `mmap`).
        let interface = format!("#{}", d.ifindex);
        let len =
            usize::try_from(d.geometry.ring_bytes()).map_err(|_| HandoffError::BadDescriptor {
                reason: "ring larger than the address space",
            })?;
        let map = crate::ring::map_ring(self.fd.as_fd(), len).map_err(|errno| RingError::Map {
            interface: interface.clone(),
            len: d.geometry.ring_bytes(),
            errno,
        })?;
        let binding = Binding {
            interface,
            ifindex: d.ifindex,
            protocol: d.protocol,
        };
        let socket = PacketSocket::from_parts(self.fd, Some(binding));
        let membership = fanout::membership(&socket).map_err(RingError::from)?;
        Ok(RxRing::resume(
            socket, map, d.geometry, d.version, d.rx_hash, membership,
        ))
    }
}

impl AsFd for RingHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl RxRing {
    /// The description a new owner needs.
    pub fn descriptor(&self) -> RingDescriptor {
        RingDescriptor {
            version: self.version,
            geometry: self.geometry,
            rx_hash: self.rx_hash,
            ifindex: self.socket.ifindex().unwrap_or(0),
            protocol: self.socket.protocol().unwrap_or(Protocol::NONE),
        }
    }

    /// Unmaps the ring here and keeps only the socket, to hand to a worker.
    pub fn into_handle(self) -> RingHandle {
        let descriptor = self.descriptor();
        RingHandle {
            fd: self.socket.into_fd(),
            descriptor,
        }
    }
}

/// Sends `handle`'s descriptor and description over a connected Unix socket.
pub fn send_ring(channel: BorrowedFd<'_>, handle: &RingHandle) -> Result<(), HandoffError> {
    let bytes = handle.descriptor.to_bytes();
    let fds = [handle.fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(|errno| HandoffError::Send { errno })
}

/// Receives a ring sent with [`send_ring`] (blocking until it arrives; the descriptor is
/// close-on-exec in this process).
pub fn recv_ring(channel: BorrowedFd<'_>) -> Result<RingHandle, HandoffError> {
    let mut bytes = [0u8; DESCRIPTOR_LEN];
    let mut cmsg_space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [IoSliceMut::new(&mut bytes)];
    let (received, fds) = {
        let msg = nix::sys::socket::recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|errno| HandoffError::Receive { errno })?;
        let mut fds = Vec::new();
        for cmsg in msg
            .cmsgs()
            .map_err(|errno| HandoffError::Receive { errno })?
        {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        (msg.bytes, fds)
    };
    // SAFETY: the kernel installed these descriptors in our table for this message; nothing
    // else in the process knows their numbers, so each OwnedFd is the sole owner.
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let fd = match owned.len() {
        0 => return Err(HandoffError::NoDescriptor),
        _ => owned.swap_remove(0),
    };
    let descriptor = RingDescriptor::from_bytes(&bytes[..received.min(DESCRIPTOR_LEN)])?;
    Ok(RingHandle { fd, descriptor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RingDescriptor {
        RingDescriptor {
            version: RingVersion::V3,
            geometry: Geometry::new(1 << 16, 8, 2048),
            rx_hash: true,
            ifindex: 7,
            protocol: Protocol::IPV4,
        }
    }

    #[test]
    fn descriptor_round_trips_through_bytes_and_text() {
        let d = sample();
        assert_eq!(RingDescriptor::from_bytes(&d.to_bytes()).expect("valid"), d);
        let text = d.to_string();
        assert_eq!(text.len(), 48);
        assert_eq!(text.parse::<RingDescriptor>().expect("valid"), d);
    }

    #[test]
    fn malformed_descriptors_are_refused() {
        let mut bytes = sample().to_bytes();
        bytes[4] = 9;
        assert!(matches!(
            RingDescriptor::from_bytes(&bytes),
            Err(HandoffError::BadDescriptor { .. })
        ));
        assert!(matches!(
            RingDescriptor::from_bytes(&bytes[..10]),
            Err(HandoffError::BadDescriptor { .. })
        ));
        assert!("zz".parse::<RingDescriptor>().is_err());
    }

    #[test]
    fn the_text_form_is_hex_digits_only() {
        // Found by fuzz/handoff: "+0" was read as the byte 0.
        let found = include_bytes!("../fuzz-regressions/handoff-plus-sign");
        let text = std::str::from_utf8(found).expect("ASCII");
        assert!(text.contains('+'));
        assert!(text.parse::<RingDescriptor>().is_err());
        assert!(text.replace('+', "0").parse::<RingDescriptor>().is_ok());
    }

    #[test]
    fn geometries_the_kernel_would_refuse_are_refused() {
        // Found by fuzz/handoff: no blocks of 0 bytes, which a worker would divide by.
        let found = include_bytes!("../fuzz-regressions/handoff-empty-geometry");
        assert!(matches!(
            RingDescriptor::from_bytes(found),
            Err(HandoffError::BadDescriptor { .. })
        ));
        for geometry in [
            Geometry::new(1 << 16, 0, 2048),
            Geometry::new(0, 8, 2048),
            Geometry::new(1 << 16, 8, 0),
            Geometry::new(1 << 16, 8, 2050),
            Geometry::new(1 << 16, 8, 1 << 17),
            Geometry::new(1 << 16, 8, 16),
        ] {
            let d = RingDescriptor {
                geometry,
                ..sample()
            };
            assert!(
                RingDescriptor::from_bytes(&d.to_bytes()).is_err(),
                "{geometry:?}"
            );
        }
    }

    #[test]
    fn a_descriptor_travels_over_scm_rights() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        // Any descriptor travels; a pipe stands in for a packet socket here.
        let (pipe_read, _pipe_write) = nix::unistd::pipe().expect("pipe");
        let handle = RingHandle::from_fd(pipe_read, sample());
        send_ring(a.as_fd(), &handle).expect("send");
        let received = recv_ring(b.as_fd()).expect("receive");
        assert_eq!(received.descriptor(), sample());
        assert_ne!(received.as_fd().as_raw_fd(), handle.as_fd().as_raw_fd());
        // Mapping a non-packet socket is refused with the syscall named.
        assert!(matches!(
            received.map(),
            Err(HandoffError::Descriptor {
                syscall: "getsockopt(PACKET_VERSION)",
                ..
            })
        ));
        drop(a);
        assert!(matches!(
            recv_ring(b.as_fd()),
            Err(HandoffError::NoDescriptor)
        ));
    }
}
