//! The transmit rings and sockets of a worker's outputs, as the supervisor hands them over
//! (`supervisor/handover.rs` opens them) and the worker takes them.
//!
//! Opening a packet socket takes `CAP_NET_RAW`, and a worker keeps no capability: so the
//! supervisor opens what a worker's rules send through (a transmit ring per output interface, a
//! UDP socket per socket output's interface, source, TTL and DSCP), set up but not mapped, and
//! sends the descriptors over the worker's control socket ([`crate::protocol`]). A worker maps a
//! ring or takes a socket when a rule first needs it, and closes it when no rule does any more.

use fanout_core::{HandoffError, RingVersion, TxDescriptor, TxRingHandle};
use relay_rules::CompiledOutput;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, UdpSocket};
use std::os::fd::OwnedFd;

/// What an output sends through: outputs with equal keys share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputKey {
    /// The transmit ring of an interface.
    Ring {
        /// The interface's index.
        ifindex: u32,
    },
    /// A UDP socket bound to `source` on an interface, with a TTL and DSCP.
    Socket {
        /// The interface's index.
        ifindex: u32,
        /// The address it is bound to (IPv4 or IPv6: the socket's family).
        source: IpAddr,
        /// Its unicast and multicast TTL.
        ttl: u8,
        /// Its DSCP; `None` leaves the default.
        dscp: Option<u8>,
    },
}

impl OutputKey {
    /// What `output` sends through.
    pub fn of(output: &CompiledOutput) -> Self {
        match output {
            CompiledOutput::Ring { ifindex, .. } => OutputKey::Ring { ifindex: *ifindex },
            CompiledOutput::Socket {
                ifindex,
                source,
                ttl,
                dscp,
                ..
            } => OutputKey::Socket {
                ifindex: *ifindex,
                source: *source,
                ttl: *ttl,
                dscp: *dscp,
            },
        }
    }

    /// The interface it sends on.
    pub fn ifindex(&self) -> u32 {
        match self {
            OutputKey::Ring { ifindex } | OutputKey::Socket { ifindex, .. } => *ifindex,
        }
    }
}

/// Why an output's transmit ring or socket could not be opened or taken over.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output's interface is not among the facts the supervisor handed over.
    #[error("output interface #{ifindex} is not among the interfaces handed over")]
    UnknownInterface {
        /// The interface index the compiled output names.
        ifindex: u32,
    },
    /// The transmit ring could not be set up.
    #[error("transmit ring on {interface}: {source}")]
    TxRing {
        /// The output interface.
        interface: String,
        /// The step that failed, with its syscall and errno.
        source: fanout_core::RingError,
    },
    /// The socket of a socket output could not be made or configured.
    #[error("socket output on {interface} from {from}: {call}: {source}")]
    Socket {
        /// The output interface.
        interface: String,
        /// The address it sends from.
        from: IpAddr,
        /// The call that failed: `bind`, `setsockopt(SO_BINDTODEVICE)`, ...
        call: &'static str,
        /// What it returned.
        source: std::io::Error,
    },
    /// The supervisor did not hand over what the output sends through.
    #[error("no {key:?} was handed over (the supervisor could not open it; see its log)")]
    NotHanded {
        /// What is missing.
        key: OutputKey,
    },
    /// A handed transmit ring could not be mapped.
    #[error("mapping the transmit ring of interface #{ifindex}: {source}")]
    MapRing {
        /// The interface.
        ifindex: u32,
        /// Why, with the syscall and errno.
        source: HandoffError,
    },
}

/// A transmit ring's description as it travels with its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingLayout {
    /// 2 or 3: TPACKET_V2 or V3.
    pub version: u8,
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks.
    pub block_count: u32,
    /// Bytes per slot.
    pub frame_size: u32,
    /// Slots start with a vnet header.
    pub linear: bool,
    /// Frames may ask for UDP segmentation.
    pub segmentation: bool,
}

impl RingLayout {
    /// The layout `descriptor` describes.
    pub fn of(descriptor: &TxDescriptor) -> Self {
        RingLayout {
            version: match descriptor.version {
                RingVersion::V2 => 2,
                RingVersion::V3 => 3,
            },
            block_size: descriptor.geometry.block_size(),
            block_count: descriptor.geometry.block_count(),
            frame_size: descriptor.geometry.frame_size(),
            linear: descriptor.linear,
            segmentation: descriptor.segmentation,
        }
    }

    /// The library's description of the ring on interface `ifindex`; `None` for an unknown
    /// version.
    pub fn descriptor(&self, ifindex: u32) -> Option<TxDescriptor> {
        let version = match self.version {
            2 => RingVersion::V2,
            3 => RingVersion::V3,
            _ => return None,
        };
        Some(TxDescriptor {
            version,
            geometry: fanout_core::ring::Geometry::new(
                self.block_size,
                self.block_count,
                self.frame_size,
            ),
            linear: self.linear,
            segmentation: self.segmentation,
            ifindex,
        })
    }
}

/// One output handed over: its key, and for a ring its layout; its descriptor travels beside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedOutput {
    /// What it is.
    pub key: OutputKey,
    /// The ring's layout, for a ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingLayout>,
}

/// What a worker does with a handed output: a ring to map, or a socket to send through.
#[derive(Debug)]
pub enum Received {
    /// An unmapped transmit ring.
    Ring(TxRingHandle),
    /// A UDP socket, set up and non-blocking.
    Socket(UdpSocket),
}

impl Received {
    /// Pairs a received descriptor with what the message says of it; `None` when the message
    /// describes a ring without a layout, or one of an unknown version.
    pub fn new(handed: &HandedOutput, fd: OwnedFd) -> Option<Self> {
        match handed.key {
            OutputKey::Ring { ifindex } => {
                let descriptor = handed.ring?.descriptor(ifindex)?;
                Some(Received::Ring(TxRingHandle::from_fd(fd, descriptor)))
            }
            OutputKey::Socket { .. } => Some(Received::Socket(UdpSocket::from(fd))),
        }
    }
}
