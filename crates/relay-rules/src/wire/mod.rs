//! Bounds-checked views of the frames the relay receives and writes: Ethernet II, up to two VLAN
//! tags, IPv4 or IPv6 (with the extension headers that may precede UDP), and UDP.
//!
//! Each layer is a view in the style of smoltcp's wire types: a newtype over any buffer
//! (`T: AsRef<[u8]>`) with `new_unchecked`, `check_len` (after which no accessor panics) and
//! `new_checked`; getters need `AsRef<[u8]>`, setters `AsMut<[u8]>`. Views never allocate or copy.
//!
//! The data path does not use the views one by one: [`parse`] walks them once over a received
//! frame and returns a [`Datagram`] that borrows the payload, or the [`DropReason`] the worker
//! counts the frame under. A malformed frame is always a `DropReason`, never a panic.
//!
//! ```
//! use relay_rules::wire::{self, DropReason};
//!
//! // A frame too short to hold an Ethernet header is refused, with the layer that was short.
//! assert_eq!(wire::parse(&[0u8; 10], None).unwrap_err(), DropReason::EthernetTruncated);
//! ```

pub(crate) mod checksum;
mod datagram;
mod ethernet;
mod ipv4;
mod ipv6;
mod udp;
mod vlan_key;

pub use checksum::{adjust, fold, pseudo_header_sum, sum};
pub use datagram::{Datagram, IpBits, parse};
pub use ethernet::{EtherType, EthernetFrame, VlanHeader};
pub use ipv4::{Ipv4Packet, PROTOCOL_UDP};
pub use ipv6::{
    Ipv6Packet, MAX_EXTENSION_HEADERS, NEXT_HEADER_DESTINATION_OPTIONS, NEXT_HEADER_FRAGMENT,
    NEXT_HEADER_HOP_BY_HOP, NEXT_HEADER_ROUTING, udp_offset as ipv6_udp_offset,
};
pub use udp::UdpPacket;
pub use vlan_key::vlan_key;

/// The TPID of an 802.1Q tag.
pub const TPID_8021Q: u16 = 0x8100;

/// A VLAN tag as it appeared on the wire or in the ring's frame header.
///
/// The TPID is kept (not just the VID) because 802.1Q (0x8100) and 802.1ad (0x88a8) tags mean
/// different things on a trunk, and an offloaded tag reports its own TPID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Tag protocol identifier: 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    /// Tag control information: priority (3 bits), drop eligible (1 bit), VLAN id (12 bits).
    pub tci: u16,
}

impl VlanTag {
    /// The VLAN id (low 12 bits of the TCI), which is what rules and interfaces are keyed by.
    pub const fn vid(self) -> u16 {
        self.tci & 0x0fff
    }

    /// The priority code point (top 3 bits of the TCI).
    pub const fn pcp(self) -> u8 {
        (self.tci >> 13) as u8
    }
}

/// Why a received frame was refused.
///
/// One variant per reason, each cheap to copy, so that a worker keeps one counter per reason
/// (indexed by [`DropReason::index`]) and exports it with the label [`DropReason::as_str`].
/// Truncation is reported per layer: a capture length too small for the ring's frame size shows
/// up as `Ipv4PacketTruncated`, a broken sender as a length or checksum reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    /// The frame is shorter than an Ethernet II header (14 bytes).
    #[error("frame shorter than an Ethernet header")]
    EthernetTruncated,
    /// An ethertype announced a VLAN tag but fewer than 4 bytes follow it.
    #[error("frame ends inside a VLAN tag")]
    VlanTruncated,
    /// More than two VLAN tags, counting a tag offloaded into the ring's frame header.
    #[error("more than two VLAN tags")]
    TooManyVlanTags,
    /// The ethertype after the VLAN tags is neither IPv4 (0x0800) nor IPv6 (0x86dd).
    #[error("ethertype is neither IPv4 nor IPv6")]
    NotIp,
    /// Fewer bytes than the IPv4 header needs (20, or the header length the IHL announces).
    #[error("frame ends inside the IPv4 header")]
    Ipv4Truncated,
    /// The IP version nibble is not 4.
    #[error("IP version is not 4")]
    Ipv4BadVersion,
    /// The IHL is below 5 (a header shorter than 20 bytes).
    #[error("IPv4 header length (IHL) below 5")]
    Ipv4BadIhl,
    /// The IPv4 total length is smaller than the header length.
    #[error("IPv4 total length smaller than its header")]
    Ipv4BadTotalLength,
    /// The IPv4 total length is larger than what was captured (a short capture or a lying sender).
    #[error("IPv4 total length larger than the captured frame")]
    Ipv4PacketTruncated,
    /// The IPv4 header checksum does not verify.
    #[error("IPv4 header checksum does not verify")]
    Ipv4BadChecksum,
    /// A fragment (more-fragments set or a non-zero offset): the relay forwards whole datagrams
    /// only, and reassembly would need state and memory per flow.
    #[error("IPv4 fragment")]
    Ipv4Fragment,
    /// The IPv4 protocol, or the IPv6 header after the extension headers, is not UDP (17).
    #[error("IP protocol is not UDP")]
    NotUdp,
    /// The IP payload is shorter than a UDP header (8 bytes).
    #[error("IP payload shorter than a UDP header")]
    UdpTruncated,
    /// The UDP length field is below 8 or differs from the IP payload length.
    #[error("UDP length inconsistent with the IP payload length")]
    UdpBadLength,
    /// The receive ring had no room for the whole frame and kept only its start (the capture
    /// length is below the frame's length: `tp_snaplen < tp_len`). The parser never sees the
    /// frame's length on the wire; the code that reads the ring counts this reason.
    #[error("frame longer than the receive ring's room (truncated by the kernel)")]
    RingTruncated,
    /// Two VLAN tags (802.1ad, Q-in-Q): no rule matches a frame by two tags, so the relay drops
    /// it rather than relay it as if it were of its outer or inner VLAN alone ([`vlan_key`]).
    #[error("two VLAN tags (802.1ad): no rule matches double-tagged frames")]
    DoubleTagged,
    /// Fewer bytes than the IPv6 fixed header (40).
    #[error("frame ends inside the IPv6 header")]
    Ipv6Truncated,
    /// The ethertype said IPv6 but the version nibble is not 6.
    #[error("IP version is not 6")]
    Ipv6BadVersion,
    /// The IPv6 payload length is larger than what was captured.
    #[error("IPv6 payload length larger than the captured frame")]
    Ipv6PacketTruncated,
    /// The IPv6 payload length is 0: a jumbogram (RFC 2675, the length in a hop-by-hop
    /// option) or an empty packet; neither is a datagram the relay forwards.
    #[error("IPv6 payload length 0 (jumbogram)")]
    Ipv6Jumbogram,
    /// An IPv6 extension header (hop-by-hop, routing, destination options) runs past the
    /// payload.
    #[error("IPv6 extension header runs past the payload")]
    Ipv6ExtensionHeaderTruncated,
    /// More IPv6 extension headers before UDP than the relay walks
    /// ([`MAX_EXTENSION_HEADERS`]).
    #[error("more IPv6 extension headers than the relay walks")]
    Ipv6TooManyExtensionHeaders,
    /// An IPv6 fragment header: fragments are dropped, as IPv4's are.
    #[error("IPv6 fragment")]
    Ipv6Fragment,
    /// UDP over IPv6 with checksum 0, which RFC 8200 (section 8.1) forbids and receivers
    /// discard.
    #[error("UDP over IPv6 without a checksum")]
    Ipv6UdpChecksumZero,
}

impl DropReason {
    /// Every reason, in [`DropReason::index`] order, for building counter arrays and labels.
    pub const ALL: [DropReason; 24] = [
        DropReason::EthernetTruncated,
        DropReason::VlanTruncated,
        DropReason::TooManyVlanTags,
        DropReason::NotIp,
        DropReason::Ipv4Truncated,
        DropReason::Ipv4BadVersion,
        DropReason::Ipv4BadIhl,
        DropReason::Ipv4BadTotalLength,
        DropReason::Ipv4PacketTruncated,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4Fragment,
        DropReason::NotUdp,
        DropReason::UdpTruncated,
        DropReason::UdpBadLength,
        DropReason::RingTruncated,
        DropReason::DoubleTagged,
        DropReason::Ipv6Truncated,
        DropReason::Ipv6BadVersion,
        DropReason::Ipv6PacketTruncated,
        DropReason::Ipv6Jumbogram,
        DropReason::Ipv6ExtensionHeaderTruncated,
        DropReason::Ipv6TooManyExtensionHeaders,
        DropReason::Ipv6Fragment,
        DropReason::Ipv6UdpChecksumZero,
    ];

    /// How many reasons there are: the length of a per-reason counter array.
    pub const COUNT: usize = DropReason::ALL.len();

    /// Position of this reason in [`DropReason::ALL`], so a counter array needs no hashing.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the frame is simply not UDP over IP (ARP, TCP, ICMPv6, ...): traffic a UDP relay
    /// does not serve, as opposed to a malformed frame.
    pub const fn is_foreign(self) -> bool {
        matches!(self, DropReason::NotIp | DropReason::NotUdp)
    }

    /// A stable snake_case label for metrics (`reason="ipv4_fragment"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::EthernetTruncated => "ethernet_truncated",
            DropReason::VlanTruncated => "vlan_truncated",
            DropReason::TooManyVlanTags => "too_many_vlan_tags",
            DropReason::NotIp => "not_ip",
            DropReason::Ipv4Truncated => "ipv4_truncated",
            DropReason::Ipv4BadVersion => "ipv4_bad_version",
            DropReason::Ipv4BadIhl => "ipv4_bad_ihl",
            DropReason::Ipv4BadTotalLength => "ipv4_bad_total_length",
            DropReason::Ipv4PacketTruncated => "ipv4_packet_truncated",
            DropReason::Ipv4BadChecksum => "ipv4_bad_checksum",
            DropReason::Ipv4Fragment => "ipv4_fragment",
            DropReason::NotUdp => "not_udp",
            DropReason::UdpTruncated => "udp_truncated",
            DropReason::UdpBadLength => "udp_bad_length",
            DropReason::RingTruncated => "ring_truncated",
            DropReason::DoubleTagged => "double_tagged",
            DropReason::Ipv6Truncated => "ipv6_truncated",
            DropReason::Ipv6BadVersion => "ipv6_bad_version",
            DropReason::Ipv6PacketTruncated => "ipv6_packet_truncated",
            DropReason::Ipv6Jumbogram => "ipv6_jumbogram",
            DropReason::Ipv6ExtensionHeaderTruncated => "ipv6_extension_header_truncated",
            DropReason::Ipv6TooManyExtensionHeaders => "ipv6_too_many_extension_headers",
            DropReason::Ipv6Fragment => "ipv6_fragment",
            DropReason::Ipv6UdpChecksumZero => "ipv6_udp_checksum_zero",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_position_in_all() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
        assert_eq!(DropReason::COUNT, 24);
    }

    #[test]
    fn labels_are_unique_snake_case() {
        let mut labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        for label in &labels {
            assert!(
                label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{label}"
            );
        }
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::COUNT);
    }

    #[test]
    fn vlan_tag_fields() {
        let tag = VlanTag {
            tpid: 0x8100,
            tci: 0xa00a,
        };
        assert_eq!(tag.vid(), 10);
        assert_eq!(tag.pcp(), 5);
    }
}
