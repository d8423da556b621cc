//! Memory-mapped packet rings: TPACKET_V3 and TPACKET_V2 receive rings and the transmit ring.
//!
//! Build a receive ring with [`RxRingBuilder`], which performs the kernel's required order
//! (version, reserve, ring, mmap, filter, bind, fanout) so no other order can be written; read it
//! with [`RxRing::next_block`]. Build a transmit ring with [`TxRingBuilder`].

mod builder;
mod frame;
pub mod geometry;
mod mmap;
mod rx;
mod tx;
mod tx_builder;
mod tx_handle;
mod tx_held;
mod v2;
mod v3;
pub mod walk;

use nix::errno::Errno;

pub use builder::{RetireTimeout, RxRingBuilder};
pub use frame::{Frame, Malformed, PacketType};
pub use geometry::{Geometry, GeometryError};
pub use rx::{Block, Frames, Readiness, RxCounters, RxRing};
pub use tx::{TxCounters, TxRing, TxSlot, UdpSegments};
pub use tx_builder::{TxRingBuilder, TxVersion};
pub use tx_handle::{TxDescriptor, TxRingHandle};
pub use tx_held::HeldSlot;

use std::os::fd::BorrowedFd;

use crate::bpf::BpfError;
use crate::fanout::FanoutError;
use crate::socket::SocketError;

/// The ring layout version (`PACKET_VERSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RingVersion {
    /// Per-frame slots handed over one by one: lowest latency, a wake-up per frame.
    V2,
    /// Variable-size frames packed into blocks handed over whole: highest throughput; a frame
    /// waits until its block is full or the retire timer fires.
    V3,
}

impl RingVersion {
    /// `tp_hdrlen`: the frame header plus `sockaddr_ll` (TPACKET2_HDRLEN / TPACKET3_HDRLEN).
    pub const fn header_len(self) -> u32 {
        match self {
            Self::V2 => libc::TPACKET2_HDRLEN as u32,
            Self::V3 => libc::TPACKET3_HDRLEN as u32,
        }
    }

    pub(crate) const fn raw(self) -> libc::c_int {
        match self {
            Self::V2 => libc::tpacket_versions::TPACKET_V2 as libc::c_int,
            Self::V3 => libc::tpacket_versions::TPACKET_V3 as libc::c_int,
        }
    }

    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        [Self::V2, Self::V3]
            .into_iter()
            .find(|v| v.raw() as u32 == raw)
    }
}

/// Failures setting up or serving a ring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The geometry breaks a kernel rule (found before any syscall).
    #[error("ring geometry for {interface}: {source}")]
    Geometry {
        /// The interface the ring was for.
        interface: String,
        /// The rule broken.
        #[source]
        source: GeometryError,
    },
    /// A receive ring must be bound with a non-zero protocol, or it receives nothing.
    #[error("receive ring on {interface}: protocol 0 receives nothing; choose e.g. Protocol::ALL")]
    NoProtocol {
        /// The interface.
        interface: String,
    },
    /// `setsockopt(PACKET_RX_RING/PACKET_TX_RING)` failed; ENOMEM means the kernel could not
    /// allocate the blocks: shrink the block size or count.
    #[error(
        "setsockopt({option}) on {interface} failed: {errno} ({version:?}, {} blocks of {} bytes, \
         frames of {} bytes)",
        geometry.block_count(), geometry.block_size(), geometry.frame_size()
    )]
    Create {
        /// `PACKET_RX_RING` or `PACKET_TX_RING`.
        option: &'static str,
        /// The interface.
        interface: String,
        /// The version asked for.
        version: RingVersion,
        /// The geometry that failed.
        geometry: Geometry,
        /// The errno.
        errno: Errno,
    },
    /// `mmap(2)` of the ring failed.
    #[error("mmap of the {len}-byte ring on {interface} failed: {errno}")]
    Map {
        /// The interface.
        interface: String,
        /// Bytes asked for.
        len: u64,
        /// The errno.
        errno: Errno,
    },
    /// `poll(2)` or `send(2)` on the ring's socket failed.
    #[error("{syscall} on the ring of {interface} failed: {errno}")]
    Io {
        /// `poll` or `send`.
        syscall: &'static str,
        /// The interface.
        interface: String,
        /// The errno.
        errno: Errno,
    },
    /// A socket option or bind failed.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// Joining the fanout group failed.
    #[error(transparent)]
    Fanout(#[from] FanoutError),
    /// Attaching the socket filter failed.
    #[error(transparent)]
    Filter(#[from] BpfError),
}

impl RingError {
    /// The errno of a failed syscall, for callers that count failures by errno.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            RingError::Create { errno, .. }
            | RingError::Map { errno, .. }
            | RingError::Io { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Maps an existing receive ring (hand-off): shared, pre-faulted, inherited by nobody.
pub(crate) fn map_ring(fd: BorrowedFd<'_>, len: usize) -> Result<mmap::Mapping, Errno> {
    mmap::Mapping::map(fd, len, true, true)
}
