//! The receive ring builder: every setting first, then one `build` that performs the kernel's
//! required order, so a wrong order cannot be written.
//!
//! Order (see `packet_setsockopt()` and `packet_set_ring()` in `net/packet/af_packet.c`):
//! validate geometry → `socket(AF_PACKET, SOCK_RAW, 0)` (receives nothing) → `PACKET_VERSION` →
//! `PACKET_RESERVE` (both EBUSY once a ring exists) → `PACKET_RX_RING` → `mmap` → socket filter
//! (before bind, so no unfiltered frame gets in) → `bind(ifindex, protocol)` → memberships →
//! fanout join → fanout program (EINVAL before the join).

use std::os::fd::AsFd;

use super::geometry::{Constraints, Geometry};
use super::mmap::Mapping;
use super::rx::{RxCounters, RxRing};
use super::{RingError, RingVersion};
use crate::bpf::{self, BpfProgram};
use crate::fanout::{self, FanoutConfig};
use crate::features::{Feature, Features};
use crate::socket::{self, LinkMembership, PacketSocket, Protocol, TimestampSource};
use crate::stats::StatsTracker;
use crate::sys;

/// When the kernel hands over a V3 block that is not full (`tp_retire_blk_tov`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireTimeout {
    /// `0`: the kernel derives a timeout from the link speed (8 ms when it is unknown, as on
    /// veth). It does NOT mean "never".
    KernelDefault,
    /// Hand over a partly filled block after this many milliseconds (0 is the same as
    /// [`RetireTimeout::KernelDefault`]).
    Millis(u32),
}

impl RetireTimeout {
    fn raw(self) -> u32 {
        match self {
            Self::KernelDefault => 0,
            Self::Millis(ms) => ms,
        }
    }
}

/// Settings of a receive ring. Defaults: TPACKET_V3, 32 blocks of 1 MiB, 2048-byte frames,
/// 10 ms retire timeout, protocol `ETH_P_ALL`, pages pre-faulted.
#[derive(Debug, Clone)]
pub struct RxRingBuilder {
    interface: String,
    protocol: Protocol,
    version: RingVersion,
    geometry: Geometry,
    retire: RetireTimeout,
    rx_hash: bool,
    private_size: u32,
    reserve: u32,
    ignore_outgoing: bool,
    promiscuous: bool,
    timestamp: Option<TimestampSource>,
    filter: Option<BpfProgram>,
    fanout: Option<FanoutConfig>,
    populate: bool,
    dont_fork: bool,
}

impl RxRingBuilder {
    /// A ring on the interface `interface` (resolved in the calling thread's network namespace).
    pub fn new(interface: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            protocol: Protocol::ALL,
            version: RingVersion::V3,
            geometry: Geometry::new(1 << 20, 32, 2048),
            retire: RetireTimeout::Millis(10),
            rx_hash: false,
            private_size: 0,
            reserve: 0,
            ignore_outgoing: false,
            promiscuous: false,
            timestamp: None,
            filter: None,
            fanout: None,
            populate: true,
            dont_fork: false,
        }
    }

    /// The EtherType to receive (non-zero).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// V3 (blocks, throughput) or V2 (frames, latency); everything else stays the same.
    pub fn version(mut self, version: RingVersion) -> Self {
        self.version = version;
        self
    }

    /// Bytes per block: a multiple of the page size; on V3 also the largest frame that fits.
    pub fn block_size(mut self, bytes: u32) -> Self {
        self.geometry = Geometry::new(
            bytes,
            self.geometry.block_count(),
            self.geometry.frame_size(),
        );
        self
    }

    /// Number of blocks.
    pub fn block_count(mut self, count: u32) -> Self {
        self.geometry = Geometry::new(
            self.geometry.block_size(),
            count,
            self.geometry.frame_size(),
        );
        self
    }

    /// Bytes per frame slot (a multiple of 16). On V2 it caps the captured length; on V3 it only
    /// sets the `tp_frame_nr` bookkeeping, frames are packed by their real size.
    pub fn frame_size(mut self, bytes: u32) -> Self {
        self.geometry = Geometry::new(
            self.geometry.block_size(),
            self.geometry.block_count(),
            bytes,
        );
        self
    }

    /// The whole layout at once.
    pub fn geometry(mut self, geometry: Geometry) -> Self {
        self.geometry = geometry;
        self
    }

    /// V3 block retire timeout.
    pub fn retire_timeout(mut self, timeout: RetireTimeout) -> Self {
        self.retire = timeout;
        self
    }

    /// Ask the kernel for the flow hash of each frame (V3, `TP_FT_REQ_FILL_RXHASH`).
    pub fn rx_hash(mut self, on: bool) -> Self {
        self.rx_hash = on;
        self
    }

    /// Bytes of per-block private area for the application (V3, `tp_sizeof_priv`).
    pub fn private_size(mut self, bytes: u32) -> Self {
        self.private_size = bytes;
        self
    }

    /// Headroom before each frame's data (`PACKET_RESERVE`).
    pub fn reserve(mut self, bytes: u32) -> Self {
        self.reserve = bytes;
        self
    }

    /// Do not receive frames this host sends (`PACKET_IGNORE_OUTGOING`).
    ///
    /// Inside a fanout group the kernel consults only the group's flag, not the socket option
    /// (the group's hook replaces the socket's), so with [`RxRingBuilder::fanout`] this also adds
    /// [`FanoutFlags::IGNORE_OUTGOING`](crate::FanoutFlags::IGNORE_OUTGOING) to the group's
    /// flags: every member of the group must then be built with the same setting.
    ///
    /// Where the kernel lacks the one that applies ([`Feature::IgnoreOutgoing`](crate::Feature::IgnoreOutgoing)
    /// outside a group, [`Feature::FanoutIgnoreOutgoing`](crate::Feature::FanoutIgnoreOutgoing)
    /// in one, as [`Features::get`](crate::Features::get) says), the socket filter drops the
    /// frames instead ([`BpfProgram::dropping_outgoing`]), after the kernel has copied them for
    /// the socket.
    pub fn ignore_outgoing(mut self, on: bool) -> Self {
        self.ignore_outgoing = on;
        self
    }

    /// Put the interface in promiscuous mode for as long as the socket lives.
    pub fn promiscuous(mut self, on: bool) -> Self {
        self.promiscuous = on;
        self
    }

    /// Receive timestamp source.
    pub fn timestamp_source(mut self, source: TimestampSource) -> Self {
        self.timestamp = Some(source);
        self
    }

    /// A socket filter, attached before bind so no unfiltered frame reaches the ring.
    pub fn filter(mut self, program: BpfProgram) -> Self {
        self.filter = Some(program);
        self
    }

    /// Join a fanout group once bound (and set its cBPF program, if the config has one).
    pub fn fanout(mut self, config: FanoutConfig) -> Self {
        self.fanout = Some(config);
        self
    }

    /// Pre-fault the ring's pages at mmap (`MAP_POPULATE`; default on).
    pub fn populate(mut self, on: bool) -> Self {
        self.populate = on;
        self
    }

    /// Keep forked children from inheriting the mapping (`MADV_DONTFORK`); a process that hands
    /// the ring to a child passes the descriptor instead (see [`crate::handoff`]).
    pub fn dont_fork(mut self, on: bool) -> Self {
        self.dont_fork = on;
        self
    }

    fn constraints(&self, page_size: u32) -> Constraints {
        Constraints {
            version: self.version,
            page_size,
            reserve: self.reserve,
            private_size: if self.version == RingVersion::V3 {
                self.private_size
            } else {
                0
            },
        }
    }

    /// Validates everything, then sets the ring up in the kernel's order.
    pub fn build(&self) -> Result<RxRing, RingError> {
        let interface = self.interface.clone();
        let page_size = u32::try_from(sys::page_size()).unwrap_or(u32::MAX);
        self.geometry
            .validate(&self.constraints(page_size))
            .map_err(|source| RingError::Geometry {
                interface: interface.clone(),
                source,
            })?;
        if self.protocol == Protocol::NONE {
            return Err(RingError::NoProtocol { interface });
        }
        let ifindex = socket::interface_index(&self.interface)?;
        let mut socket = PacketSocket::open()?.intended_for(&self.interface);
        socket.set_packet_int("PACKET_VERSION", libc::PACKET_VERSION, self.version.raw())?;
        if self.reserve > 0 {
            socket.set_packet_option("PACKET_RESERVE", libc::PACKET_RESERVE, &self.reserve)?;
        }
        self.create_ring(&socket)?;
        let len = usize::try_from(self.geometry.ring_bytes())
            .expect("validated: ring fits the address space");
        let map =
            Mapping::map(socket.as_fd(), len, self.populate, self.dont_fork).map_err(|errno| {
                RingError::Map {
                    interface: interface.clone(),
                    len: self.geometry.ring_bytes(),
                    errno,
                }
            })?;
        let features = Features::get();
        let option_ignores = features.has(Feature::IgnoreOutgoing);
        let group_ignores = features.has(Feature::FanoutIgnoreOutgoing);
        let kernel_ignores = if self.fanout.is_some() {
            group_ignores
        } else {
            option_ignores
        };
        let drops_outgoing = self.ignore_outgoing && !kernel_ignores;
        let filter = if drops_outgoing {
            let program = self.filter.clone().unwrap_or_else(BpfProgram::accept_all);
            Some(program.dropping_outgoing()?)
        } else {
            self.filter.clone()
        };
        if self.ignore_outgoing && option_ignores {
            socket.set_ignore_outgoing(true)?;
        }
        if let Some(source) = self.timestamp {
            socket.set_timestamp_source(source)?;
        }
        // Between bind and joining a fanout group the socket receives every frame on its own:
        // copies of frames the group also delivers, so a member joining a live group would see
        // them twice. It binds rejecting everything, and takes its real filter once it is a
        // member. In between, its ring looks full (every status word user-owned), so a group
        // with the rollover flag passes the frames it steers to the newcomer on to the others
        // instead of handing them to a filter that drops them.
        let joining = self.fanout.is_some();
        if joining {
            self.set_every_status(&map, libc::TP_STATUS_USER);
            bpf::attach_filter(socket.as_fd(), &BpfProgram::reject_all())?;
        } else if let Some(program) = &filter {
            bpf::attach_filter(socket.as_fd(), program)?;
        }
        socket.bind_resolved(ifindex, interface, self.protocol)?;
        if self.promiscuous {
            socket.add_membership(LinkMembership::Promiscuous)?;
        }
        let fanout = self
            .fanout
            .as_ref()
            .map(|config| {
                if self.ignore_outgoing && group_ignores {
                    let config = config.clone().flags(fanout::FanoutFlags::IGNORE_OUTGOING);
                    fanout::join(&socket, &config)
                } else {
                    fanout::join(&socket, config)
                }
            })
            .transpose()?;
        if joining {
            match &filter {
                Some(program) => bpf::attach_filter(socket.as_fd(), program)?,
                None => bpf::detach_filter(socket.as_fd())?,
            }
            self.set_every_status(&map, libc::TP_STATUS_KERNEL);
        }
        Ok(RxRing {
            socket,
            map,
            geometry: self.geometry,
            version: self.version,
            rx_hash: self.rx_hash && self.version == RingVersion::V3,
            cursor: 0,
            expected_seq: None,
            counters: RxCounters::default(),
            stats: StatsTracker::default(),
            fanout,
            drops_outgoing,
        })
    }

    fn set_every_status(&self, map: &Mapping, status: u32) {
        match self.version {
            RingVersion::V3 => super::v3::set_every_status(map, &self.geometry, status),
            RingVersion::V2 => super::v2::set_every_status(map, &self.geometry, status),
        }
    }

    fn create_ring(&self, socket: &PacketSocket) -> Result<(), RingError> {
        let g = self.geometry;
        let frame_nr = u32::try_from(g.frame_count()).expect("validated: tp_frame_nr fits u32");
        let result = match self.version {
            RingVersion::V3 => {
                let req = libc::tpacket_req3 {
                    tp_block_size: g.block_size(),
                    tp_block_nr: g.block_count(),
                    tp_frame_size: g.frame_size(),
                    tp_frame_nr: frame_nr,
                    tp_retire_blk_tov: self.retire.raw(),
                    tp_sizeof_priv: self.private_size,
                    tp_feature_req_word: if self.rx_hash {
                        libc::TP_FT_REQ_FILL_RXHASH
                    } else {
                        0
                    },
                };
                socket.set_packet_option("PACKET_RX_RING", libc::PACKET_RX_RING, &req)
            }
            RingVersion::V2 => {
                let req = libc::tpacket_req {
                    tp_block_size: g.block_size(),
                    tp_block_nr: g.block_count(),
                    tp_frame_size: g.frame_size(),
                    tp_frame_nr: frame_nr,
                };
                socket.set_packet_option("PACKET_RX_RING", libc::PACKET_RX_RING, &req)
            }
        };
        result.map_err(|error| match error {
            socket::SocketError::SetOption { errno, .. } => RingError::Create {
                option: "PACKET_RX_RING",
                interface: self.interface.clone(),
                version: self.version,
                geometry: g,
                errno,
            },
            other => other.into(),
        })
    }
}
