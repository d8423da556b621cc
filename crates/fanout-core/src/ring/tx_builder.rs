//! The transmit ring builder: validate, then version, loss, vnet header, ring, bind, qdisc
//! bypass, mmap, in the order the kernel accepts (`PACKET_VERSION`, `PACKET_LOSS` and
//! `PACKET_VNET_HDR` must precede `PACKET_TX_RING`).

use nix::errno::Errno;

use super::geometry::{Constraints, Geometry};
use super::tx::{TxRing, VNET_HDR_LEN};
use super::tx_handle::{TxDescriptor, TxRingHandle};
use super::{RingError, RingVersion};
use crate::socket::{self, PacketSocket, Protocol, SocketError};
use crate::sys;
use crate::vnet::PACKET_VNET_HDR;

/// Which transmit ring version to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxVersion {
    /// V3 where the kernel supports it (≥ 4.11), else V2.
    Auto,
    /// TPACKET_V3 only.
    V3,
    /// TPACKET_V2 only.
    V2,
}

/// Settings of a transmit ring. Defaults: `Auto` version, 32 blocks of 64 KiB, 2048-byte slots,
/// protocol 0 (the socket never receives).
#[derive(Debug, Clone)]
pub struct TxRingBuilder {
    interface: String,
    geometry: Geometry,
    version: TxVersion,
    protocol: Protocol,
    qdisc_bypass: bool,
    loss: bool,
    linear: bool,
    segmentation: bool,
    populate: bool,
    dont_fork: bool,
}

impl TxRingBuilder {
    /// A ring sending on `interface`.
    pub fn new(interface: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            geometry: Geometry::new(1 << 16, 32, 2048),
            version: TxVersion::Auto,
            protocol: Protocol::NONE,
            qdisc_bypass: false,
            loss: false,
            linear: false,
            segmentation: false,
            populate: true,
            dont_fork: false,
        }
    }

    /// The layout: slots of `frame_size` bytes, `block_size / frame_size` per block.
    pub fn geometry(mut self, geometry: Geometry) -> Self {
        self.geometry = geometry;
        self
    }

    /// Ring version.
    pub fn version(mut self, version: TxVersion) -> Self {
        self.version = version;
        self
    }

    /// The protocol the socket is bound with (0: it never receives).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Bypass the qdisc (`PACKET_QDISC_BYPASS`): faster, no qdisc backpressure, and other packet
    /// sockets do not see the frames.
    pub fn qdisc_bypass(mut self, on: bool) -> Self {
        self.qdisc_bypass = on;
        self
    }

    /// Skip refused frames instead of stopping at them (`PACKET_LOSS`).
    pub fn loss(mut self, on: bool) -> Self {
        self.loss = on;
        self
    }

    /// Hand each frame to the kernel whole, copied into the socket buffer's linear part, instead
    /// of lending the ring's pages to it (the default).
    ///
    /// `tpacket_snd()` copies only the link-layer header and attaches the rest of a slot as page
    /// fragments; a device that must own its data (veth, when a frame crosses into another
    /// namespace: `skb_orphan_frags_rx()` then `skb_copy_ubufs()`) copies those fragments into
    /// freshly allocated pages, and the receiving stack pulls headers out of them again. With
    /// this set the socket gets `PACKET_VNET_HDR` and every slot a `virtio_net_hdr` (no offloads)
    /// whose `hdr_len` is the frame's length, which the kernel copies linear in one go. A NIC
    /// that could have sent from the ring's pages by DMA pays a copy per frame instead.
    ///
    /// A kernel whose `tpacket_snd()` predates vnet headers would send the header as frame
    /// data and never says so: check [`Feature::TxLinear`](crate::Feature::TxLinear) in
    /// [`Features::get`](crate::Features::get) first.
    pub fn linear(mut self, on: bool) -> Self {
        self.linear = on;
        self
    }

    /// Let frames ask the kernel to split them into UDP datagrams ([`UdpSegments`](super::UdpSegments), committed
    /// through [`TxRing::commit_held`]); implies [`TxRingBuilder::linear`].
    ///
    /// One such frame carries many datagrams of one flow through `tpacket_snd()`, the qdisc
    /// and the device as one socket buffer; it is split by the NIC (UDP segmentation offload),
    /// by the stack just before a device that cannot, or, across veth, by the receiving
    /// socket. The slots must be large enough to hold the datagrams, and each datagram's UDP
    /// checksum is computed anew from its payload. Check
    /// [`Feature::TxSegmentation`](crate::Feature::TxSegmentation) in
    /// [`Features::get`](crate::Features::get) first: an older kernel refuses these frames.
    pub fn segmentation(mut self, on: bool) -> Self {
        self.segmentation = on;
        self
    }

    /// Pre-fault the ring's pages at mmap (default on).
    pub fn populate(mut self, on: bool) -> Self {
        self.populate = on;
        self
    }

    /// Keep forked children from inheriting the mapping (`MADV_DONTFORK`).
    pub fn dont_fork(mut self, on: bool) -> Self {
        self.dont_fork = on;
        self
    }

    /// Validates, then sets up: version, loss, ring, bind, qdisc bypass, mmap.
    pub fn build(&self) -> Result<TxRing, RingError> {
        // A handle made here matches its own description: no need to check it.
        self.build_unmapped()?
            .map_checked_by_caller(self.populate, self.dont_fork)
    }

    /// Sets the ring up like [`TxRingBuilder::build`] but leaves it unmapped: for a process
    /// that may open packet sockets to hand to one that may not, which maps it with
    /// [`TxRingHandle::map`] (sending the descriptor with [`crate::handoff::send_with_fds`]).
    pub fn build_unmapped(&self) -> Result<TxRingHandle, RingError> {
        let interface = self.interface.clone();
        let page_size = u32::try_from(sys::page_size()).unwrap_or(u32::MAX);
        let constraints = |version| Constraints {
            version,
            page_size,
            reserve: 0,
            private_size: 0,
        };
        // V3 frames need the larger header: check against it unless V2 is forced.
        let check = if self.version == TxVersion::V2 {
            RingVersion::V2
        } else {
            RingVersion::V3
        };
        // The vnet header sits where the frame would start: count it as reserved room.
        let mut constraints = constraints(check);
        let linear = self.linear || self.segmentation;
        if linear {
            constraints.reserve = VNET_HDR_LEN as u32;
        }
        self.geometry
            .validate(&constraints)
            .map_err(|source| RingError::Geometry {
                interface: interface.clone(),
                source,
            })?;
        let ifindex = socket::interface_index(&self.interface)?;
        let mut socket = PacketSocket::open()?.intended_for(&self.interface);
        if self.loss {
            socket.set_packet_int("PACKET_LOSS", libc::PACKET_LOSS, 1)?;
        }
        if linear {
            socket.set_packet_int("PACKET_VNET_HDR", PACKET_VNET_HDR, 1)?;
        }
        let version = match self.version {
            TxVersion::V2 => self.create_ring(&socket, RingVersion::V2)?,
            TxVersion::V3 => self.create_ring(&socket, RingVersion::V3)?,
            TxVersion::Auto => match self.create_ring(&socket, RingVersion::V3) {
                Ok(version) => version,
                Err(RingError::Create {
                    errno: Errno::EINVAL,
                    ..
                })
                | Err(RingError::Socket(SocketError::SetOption {
                    errno: Errno::EINVAL,
                    ..
                })) => {
                    log::info!(
                        "TPACKET_V3 transmit refused on {interface} (kernel < 4.11?); using V2"
                    );
                    self.create_ring(&socket, RingVersion::V2)?
                }
                Err(other) => return Err(other),
            },
        };
        socket.bind_resolved(ifindex, interface, self.protocol)?;
        if self.qdisc_bypass {
            socket.set_qdisc_bypass(true)?;
        }
        Ok(TxRingHandle::from_socket(
            socket,
            TxDescriptor {
                version,
                geometry: self.geometry,
                linear,
                segmentation: self.segmentation,
                ifindex,
            },
        ))
    }

    fn create_ring(
        &self,
        socket: &PacketSocket,
        version: RingVersion,
    ) -> Result<RingVersion, RingError> {
        socket.set_packet_int("PACKET_VERSION", libc::PACKET_VERSION, version.raw())?;
        let g = self.geometry;
        let frame_nr = u32::try_from(g.frame_count()).expect("validated: tp_frame_nr fits u32");
        // For V3 the extra fields must be zero on a transmit ring.
        let req = libc::tpacket_req3 {
            tp_block_size: g.block_size(),
            tp_block_nr: g.block_count(),
            tp_frame_size: g.frame_size(),
            tp_frame_nr: frame_nr,
            tp_retire_blk_tov: 0,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        let result = match version {
            RingVersion::V3 => {
                socket.set_packet_option("PACKET_TX_RING", libc::PACKET_TX_RING, &req)
            }
            RingVersion::V2 => {
                let req = libc::tpacket_req {
                    tp_block_size: req.tp_block_size,
                    tp_block_nr: req.tp_block_nr,
                    tp_frame_size: req.tp_frame_size,
                    tp_frame_nr: req.tp_frame_nr,
                };
                socket.set_packet_option("PACKET_TX_RING", libc::PACKET_TX_RING, &req)
            }
        };
        result.map(|()| version).map_err(|error| match error {
            SocketError::SetOption { errno, .. } => RingError::Create {
                option: "PACKET_TX_RING",
                interface: self.interface.clone(),
                version,
                geometry: g,
                errno,
            },
            other => other.into(),
        })
    }
}
