//! A set-up transmit ring that this process has not mapped.
//!
//! Opening a packet socket takes `CAP_NET_RAW`; mapping one does not. So a process that may
//! open sockets sets the ring up ([`super::TxRingBuilder::build_unmapped`]) and hands the
//! descriptor to one that may not, which maps it here. The kernel cannot report a ring's
//! geometry back, so a [`TxDescriptor`] travels with the descriptor; what the socket can say
//! about itself (its ring version, whether it has vnet headers) is checked against it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use smallvec::SmallVec;

use super::geometry::{Constraints, FRAME_ALIGNMENT, Geometry};
use super::mmap::Mapping;
use super::tx::{TxCounters, TxRing, VNET_HDR_LEN};
use super::{RingError, RingVersion};
use crate::handoff::HandoffError;
use crate::socket::{Binding, PacketSocket, Protocol};
use crate::sys;
use crate::vnet::PACKET_VNET_HDR;

/// What the receiver of a transmit ring's descriptor needs to map and fill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxDescriptor {
    /// The ring version.
    pub version: RingVersion,
    /// The ring layout (the mmap length is `geometry.ring_bytes()`).
    pub geometry: Geometry,
    /// Each slot starts with a `virtio_net_hdr` ([`super::TxRingBuilder::linear`]).
    pub linear: bool,
    /// Frames may ask for UDP segmentation ([`super::TxRingBuilder::segmentation`]).
    pub segmentation: bool,
    /// The interface the socket is bound to.
    pub ifindex: u32,
}

/// A bound packet socket with a transmit ring, not mapped in this process.
#[derive(Debug)]
pub struct TxRingHandle {
    socket: PacketSocket,
    descriptor: TxDescriptor,
}

impl TxRingHandle {
    pub(super) fn from_socket(socket: PacketSocket, descriptor: TxDescriptor) -> Self {
        Self { socket, descriptor }
    }

    /// Pairs a received descriptor with its description; checked when mapped. Errors name the
    /// interface by index: looking its name up would take a socket, which a process boxed in
    /// may not open (mapping makes no system call but `getsockopt` and `mmap`).
    pub fn from_fd(fd: OwnedFd, descriptor: TxDescriptor) -> Self {
        let binding = Binding {
            interface: format!("#{}", descriptor.ifindex),
            ifindex: descriptor.ifindex,
            protocol: Protocol::NONE,
        };
        Self {
            socket: PacketSocket::from_parts(fd, Some(binding)),
            descriptor,
        }
    }

    /// The description to send along.
    pub fn descriptor(&self) -> TxDescriptor {
        self.descriptor
    }

    /// Gives up the socket without mapping it (once it has been sent elsewhere).
    pub fn into_fd(self) -> OwnedFd {
        self.socket.into_fd()
    }

    /// Checks the socket against its description, then maps the ring (pre-faulted, and not
    /// inherited by forked children).
    pub fn map(self) -> Result<TxRing, HandoffError> {
        let d = self.descriptor;
        let linear_room = if d.linear { VNET_HDR_LEN as u32 } else { 0 };
        let structural = Constraints {
            version: d.version,
            page_size: FRAME_ALIGNMENT,
            reserve: linear_room,
            private_size: 0,
        };
        if d.geometry.validate(&structural).is_err() || (d.segmentation && !d.linear) {
            return Err(HandoffError::BadDescriptor {
                reason: "a transmit ring layout the kernel would refuse",
            });
        }
        let fd = self.socket.as_fd();
        let (raw_version, _) =
            sys::get_option::<libc::c_int>(fd, libc::SOL_PACKET, libc::PACKET_VERSION).map_err(
                |errno| HandoffError::Descriptor {
                    syscall: "getsockopt(PACKET_VERSION)",
                    errno,
                },
            )?;
        let found = u32::try_from(raw_version).unwrap_or(u32::MAX);
        if RingVersion::from_raw(found) != Some(d.version) {
            return Err(HandoffError::VersionMismatch {
                expected: d.version,
                found,
            });
        }
        let (vnet, _) = sys::get_option::<libc::c_int>(fd, libc::SOL_PACKET, PACKET_VNET_HDR)
            .map_err(|errno| HandoffError::Descriptor {
                syscall: "getsockopt(PACKET_VNET_HDR)",
                errno,
            })?;
        if (vnet != 0) != d.linear {
            return Err(HandoffError::BadDescriptor {
                reason: "the socket's vnet header setting differs from the description",
            });
        }
        Ok(self.map_checked_by_caller(true, true)?)
    }

    /// Maps the ring without checking the description: for the builder, whose description is
    /// the socket's own.
    pub(super) fn map_checked_by_caller(
        self,
        populate: bool,
        dont_fork: bool,
    ) -> Result<TxRing, RingError> {
        let d = self.descriptor;
        let bytes = d.geometry.ring_bytes();
        let map_error = |errno| RingError::Map {
            interface: self.socket.interface_label(),
            len: bytes,
            errno,
        };
        let len = usize::try_from(bytes).map_err(|_| map_error(nix::errno::Errno::ENOMEM))?;
        let map = Mapping::map(self.socket.as_fd(), len, populate, dont_fork).map_err(map_error)?;
        Ok(TxRing {
            socket: self.socket,
            map,
            geometry: d.geometry,
            version: d.version,
            linear: d.linear,
            segmentation: d.segmentation,
            held: SmallVec::new(),
            head: 0,
            tail: 0,
            in_flight: 0,
            unkicked: 0,
            counters: TxCounters::default(),
        })
    }
}

impl AsFd for TxRingHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
