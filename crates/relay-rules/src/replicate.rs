//! Writing output frames from precomputed header templates.
//!
//! Every output of a rule gets a [`FrameTemplate`] when the rule table is built: the Ethernet
//! header (and 802.1Q tag), the IPv4 or IPv6 header and the UDP ports, already in wire order,
//! plus the parts of the checksums that never change. Per packet, [`FrameTemplate::write`]
//! copies the header and the payload into the caller's buffer (a TX ring slot) and patches what
//! depends on the packet: IPv4 total length, identification, (TOS), header checksum, or IPv6
//! payload length, (hop limit, traffic class); then UDP length and checksum.
//!
//! # What the UDP checksum costs
//!
//! The output's family may differ from the input's (an IPv4 input relayed to an IPv6 output,
//! or the reverse): the pseudo-header changes only in its address words, so one incremental
//! update serves every case where the input carried a checksum.
//!
//! | input | output | UDP checksum | cost per datagram |
//! |---|---|---|---|
//! | IPv4 with checksum | IPv4 | updated (RFC 1624) | a few additions |
//! | IPv4 without checksum (0) | IPv4 | none (0), as it came | nothing |
//! | IPv4 with checksum | IPv6 | updated | a few additions (16 more address words) |
//! | IPv4 without checksum (0) | IPv6 | computed: mandatory over IPv6 | one pass over the payload |
//! | IPv6 (always has one) | IPv6 or IPv4 | updated | a few additions |
//!
//! So the payload is copied once and summed only when an IPv4 sender left the checksum out and
//! the output is IPv6. An updated checksum stays as right or as wrong as it arrived.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use relay_rules::replicate::{FrameTemplate, TemplateSpec, multicast_mac};
//! use relay_rules::{wire, Ttl};
//!
//! let group = Ipv4Addr::new(239, 10, 0, 1);
//! let template = FrameTemplate::new(&TemplateSpec {
//!     src_mac: [0x02, 0, 0, 0, 0, 0x01],
//!     dst_mac: multicast_mac(group),
//!     vlan: None,
//!     source: Ipv4Addr::new(10, 1, 0, 1).into(),
//!     destination: group.into(),
//!     source_port: None,
//!     destination_port: 5004,
//!     ttl: Ttl::Fixed(8),
//!     dscp: None,
//!     mtu: 1500,
//! });
//!
//! // Ethernet II, IPv4 10.0.0.1 -> 239.1.1.1, UDP 1234 -> 5004, no UDP checksum, "hi".
//! let frame = [
//!     0x01, 0x00, 0x5e, 0x01, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
//!     0x45, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x11, 0xbf, 0xcc,
//!     0x0a, 0x00, 0x00, 0x01, 0xef, 0x01, 0x01, 0x01,
//!     0x04, 0xd2, 0x13, 0x8c, 0x00, 0x0a, 0x00, 0x00, b'h', b'i',
//! ];
//! let input = wire::parse(&frame, None)?;
//!
//! let mut slot = [0u8; 2048];
//! let len = template.write(&input, 7, &mut slot)?;
//! let output = wire::parse(&slot[..len], None)?;
//! assert_eq!((output.destination_addr(), output.destination_port), (group.into(), 5004));
//! assert_eq!(output.source_port, 1234);
//! assert_eq!(output.payload, b"hi");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{IpAddr, Ipv4Addr};

use crate::rule::Ttl;

use crate::wire::checksum::{addr_sum, bits_sum};
use crate::wire::{
    Datagram, EtherType, EthernetFrame, Ipv4Packet, PROTOCOL_UDP, UdpPacket, VlanHeader, adjust,
    fold, sum,
};

/// The Ethernet destination of a multicast group: for IPv4 (RFC 1112 section 6.4) 01:00:5e
/// followed by the low 23 bits of the group, for IPv6 (RFC 2464 section 7) 33:33 followed by
/// the group's last 32 bits.
///
/// Several groups share each MAC, so receivers still filter on the IP destination.
///
/// ```
/// use relay_rules::replicate::multicast_mac;
/// use std::net::{Ipv4Addr, Ipv6Addr};
///
/// assert_eq!(multicast_mac(Ipv4Addr::new(239, 129, 2, 3)), [0x01, 0, 0x5e, 0x01, 2, 3]);
/// let group: Ipv6Addr = "ff3e::8000:1".parse().unwrap();
/// assert_eq!(multicast_mac(group), [0x33, 0x33, 0x80, 0, 0, 1]);
/// ```
pub fn multicast_mac(group: impl Into<IpAddr>) -> [u8; 6] {
    match group.into() {
        IpAddr::V4(group) => {
            let o = group.octets();
            [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
        }
        IpAddr::V6(group) => {
            let o = group.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        }
    }
}

/// What an output frame looks like, as the rule table derives it from a rule's output and the
/// output interface's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// Source MAC: the output interface's address.
    pub src_mac: [u8; 6],
    /// Destination MAC: [`multicast_mac`] of the group for a multicast output.
    pub dst_mac: [u8; 6],
    /// 802.1Q VLAN id to tag the output with (1..=4094, checked by rule validation; only the low
    /// 12 bits are written), or `None` for an untagged frame.
    pub vlan: Option<u16>,
    /// Source address of the output, of the destination's family (rule validation checks it;
    /// a template given one of the other family writes the destination family's unspecified
    /// address instead).
    pub source: IpAddr,
    /// Destination address of the output: its family is the output frame's.
    pub destination: IpAddr,
    /// UDP source port; `None` keeps the incoming source port, so receivers see the sender's.
    pub source_port: Option<u16>,
    /// UDP destination port.
    pub destination_port: u16,
    /// IPv4 time to live or IPv6 hop limit of the output: fixed, or the incoming one less one.
    pub ttl: Ttl,
    /// DiffServ code point (0..=63) to write into the TOS or traffic class; `None` keeps the
    /// incoming DSCP.
    pub dscp: Option<u8>,
    /// Largest IP packet (header included) the output interface carries.
    pub mtu: u32,
}

/// Length of an 802.1Q tag (TPID and TCI).
const VLAN_TAG_LEN: usize = 4;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;
/// Largest header a template writes: Ethernet, one VLAN tag, IPv6, UDP.
const MAX_HEADER_LEN: usize = 14 + VLAN_TAG_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;

/// The precomputed output headers of one rule output.
///
/// Immutable once built and shared by every packet of the rule: `write` reads it and patches
/// only the per-packet fields in the output buffer.
#[derive(Debug, Clone)]
pub struct FrameTemplate {
    spec: TemplateSpec,
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    /// Offset of the IP header (after Ethernet and an optional tag).
    ip_offset: usize,
    /// Whether the output is IPv6 (else IPv4).
    ipv6: bool,
    /// One's complement sum of the IPv4 header with total length, ID and checksum zero (and the
    /// TOS zero when the incoming DSCP is kept).
    ip_partial: u64,
    /// Sum of the output's pseudo-header addresses and ports that replace the incoming ones
    /// (the source port only when it is rewritten).
    udp_added: u64,
}

/// Why an output frame could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The IP packet would be larger than the output's MTU (or than IPv4, or IPv6 without a
    /// jumbogram, allows). The relay
    /// does not fragment: counted and dropped.
    #[error("IP packet of {packet} bytes exceeds the output MTU of {mtu}")]
    ExceedsMtu {
        /// Length the IP packet would have.
        packet: usize,
        /// The output's MTU.
        mtu: u32,
    },
    /// The caller's buffer (a TX ring slot) cannot hold the frame.
    #[error("output frame of {needed} bytes does not fit a buffer of {available}")]
    BufferTooSmall {
        /// Length of the whole frame.
        needed: usize,
        /// Length of the buffer given.
        available: usize,
    },
    /// The output decrements the TTL and the datagram arrived with 1 or 0: a router would
    /// drop it, and so does the relay, so that a loop between relays dies out.
    #[error("the datagram arrived with TTL {ttl}, which this output would decrement to 0")]
    TtlExpired {
        /// The TTL it arrived with.
        ttl: u8,
    },
}

impl FrameTemplate {
    /// Builds the header bytes and partial checksums of an output.
    ///
    /// The IPv4 header has no options, DF clear (the relay never fragments and refuses what does
    /// not fit, so DF would change nothing on the first hop and only stop routers further on),
    /// protocol UDP, and the TTL, addresses and TOS of the spec. The IPv6 header has flow label
    /// 0, next header UDP (no extension headers), and the hop limit, addresses and traffic
    /// class of the spec.
    pub fn new(spec: &TemplateSpec) -> FrameTemplate {
        let mut header = [0u8; MAX_HEADER_LEN];
        let mut ethernet = EthernetFrame::new_unchecked(&mut header[..]);
        ethernet.set_dst_addr(spec.dst_mac);
        ethernet.set_src_addr(spec.src_mac);
        let ethertype = match spec.destination {
            IpAddr::V4(_) => EtherType::IPV4,
            IpAddr::V6(_) => EtherType::IPV6,
        };
        let ip_offset = match spec.vlan {
            Some(vid) => {
                ethernet.set_ethertype(EtherType::VLAN);
                let mut tag = VlanHeader::new_unchecked(ethernet.payload_mut());
                tag.set_tci(vid & 0x0fff);
                tag.set_ethertype(ethertype);
                EthernetFrame::<&[u8]>::HEADER_LEN + VLAN_TAG_LEN
            }
            None => {
                ethernet.set_ethertype(ethertype);
                EthernetFrame::<&[u8]>::HEADER_LEN
            }
        };
        let (source, destination) = match (spec.source, spec.destination) {
            (IpAddr::V4(source), IpAddr::V4(destination)) => (source, destination),
            (_, IpAddr::V6(destination)) => {
                return ipv6::new(spec, header, ip_offset, destination);
            }
            (IpAddr::V6(_), IpAddr::V4(destination)) => (Ipv4Addr::UNSPECIFIED, destination),
        };
        let header_len = ip_offset + IPV4_HEADER_LEN + UDP_HEADER_LEN;

        let mut ip = Ipv4Packet::new_unchecked(&mut header[ip_offset..ip_offset + IPV4_HEADER_LEN]);
        ip.set_version_and_header_len(IPV4_HEADER_LEN);
        ip.set_tos(spec.dscp.map_or(0, |dscp| (dscp & 0x3f) << 2));
        ip.set_flags_and_offset(false, false, 0);
        // A decremented TTL is written per datagram, and summed into the checksum then.
        ip.set_ttl(match spec.ttl {
            Ttl::Fixed(ttl) => ttl,
            Ttl::Decrement => 0,
        });
        ip.set_protocol(PROTOCOL_UDP);
        ip.set_src_addr(source);
        ip.set_dst_addr(destination);
        let ip_partial = sum(&header[ip_offset..ip_offset + IPV4_HEADER_LEN]);

        let udp_offset = ip_offset + IPV4_HEADER_LEN;
        let mut udp = UdpPacket::new_unchecked(&mut header[udp_offset..header_len]);
        udp.set_src_port(spec.source_port.unwrap_or(0));
        udp.set_dst_port(spec.destination_port);
        let udp_added = addr_sum(source)
            + addr_sum(destination)
            + u64::from(spec.destination_port)
            + spec.source_port.map_or(0, u64::from);

        FrameTemplate {
            spec: spec.clone(),
            header,
            header_len,
            ip_offset,
            ipv6: false,
            ip_partial,
            udp_added,
        }
    }

    /// The spec this template was built from.
    pub fn spec(&self) -> &TemplateSpec {
        &self.spec
    }

    /// Whether the output's TTL is the incoming one less one, which differs per datagram (so
    /// its datagrams cannot share a segmented frame's one header).
    #[inline]
    pub fn decrements_ttl(&self) -> bool {
        self.spec.ttl == Ttl::Decrement
    }

    /// Whether the output frames are IPv6 (else IPv4).
    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.ipv6
    }

    /// Length of the headers written before the payload: Ethernet (+ VLAN tag), IPv4 (20) or
    /// IPv6 (40), UDP (8).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Length of the whole output frame for a payload of `payload_len` bytes (no Ethernet
    /// padding is added: the driver pads short frames).
    pub fn frame_len(&self, payload_len: usize) -> usize {
        self.header_len + payload_len
    }

    /// Copies the template's headers and `payload` into the front of `out` and returns the
    /// headers there, for the caller to patch; refused when `out` cannot hold the frame.
    #[inline(always)]
    fn copy_frame<'o>(
        &self,
        payload: &[u8],
        out: &'o mut [u8],
    ) -> Result<&'o mut [u8], RewriteError> {
        let frame_len = self.header_len + payload.len();
        let available = out.len();
        let Some(out) = out.get_mut(..frame_len) else {
            return Err(RewriteError::BufferTooSmall {
                needed: frame_len,
                available,
            });
        };
        let (headers, rest) = out.split_at_mut(self.header_len);
        headers.copy_from_slice(&self.header[..self.header_len]);
        rest.copy_from_slice(payload);
        Ok(headers)
    }

    /// Writes the whole output frame for `input` into `out` and returns its length.
    ///
    /// `ip_id` is the IPv4 identification to use (a per-worker counter: the relay originates
    /// these packets; unused for an IPv6 output). `input`, of either family, must come from
    /// [`crate::wire::parse`], whose checks this relies on.
    ///
    /// The UDP checksum: when the incoming one is non-zero it is updated incrementally for the
    /// changed addresses and ports (RFC 1624 eqn. 3); the UDP length, and so the pseudo-header
    /// length, is unchanged because the payload is. A correct checksum stays correct and a
    /// corrupt one stays corrupt, so receivers still catch damage done before the relay. When it
    /// is zero (the sender computed none, legal in IPv4) an IPv4 output carries none either
    /// (computing one would cost a pass over the payload on every output), and an IPv6 output,
    /// where it is mandatory, gets one computed over the payload (see the [module docs](self)).
    ///
    /// With [`TemplateSpec::dscp`] `None` the incoming DSCP is kept and ECN is cleared, in either
    /// family: the relay ends the sender's transport path, so its ECN capability does not carry
    /// over.
    #[inline]
    pub fn write(
        &self,
        input: &Datagram<'_>,
        ip_id: u16,
        out: &mut [u8],
    ) -> Result<usize, RewriteError> {
        if self.ipv6 {
            return self.write_ipv6(input, out);
        }
        let payload_len = input.payload.len();
        let packet = IPV4_HEADER_LEN + UDP_HEADER_LEN + payload_len;
        if packet > self.spec.mtu as usize || packet > usize::from(u16::MAX) {
            return Err(RewriteError::ExceedsMtu {
                packet,
                mtu: self.spec.mtu,
            });
        }
        let headers = self.copy_frame(input.payload, out)?;

        // Both fit in u16: checked against u16::MAX above.
        let total_len = packet as u16;
        let udp_len = (UDP_HEADER_LEN + payload_len) as u16;

        let (ip_bytes, udp_bytes) = headers[self.ip_offset..].split_at_mut(IPV4_HEADER_LEN);
        let mut ip = Ipv4Packet::new_unchecked(ip_bytes);
        ip.set_total_len(total_len);
        ip.set_ident(ip_id);
        let mut ip_sum = self.ip_partial + u64::from(total_len) + u64::from(ip_id);
        if self.spec.ttl == Ttl::Decrement {
            let ttl = input.ttl.saturating_sub(1);
            if ttl == 0 {
                return Err(RewriteError::TtlExpired { ttl: input.ttl });
            }
            ip.set_ttl(ttl);
            // The TTL is the high byte of the header's fifth word (the protocol is the low).
            ip_sum += u64::from(ttl) << 8;
        }
        if self.spec.dscp.is_none() {
            let tos = input.tos & 0xfc;
            ip.set_tos(tos);
            // The TOS is the low byte of the header's first word (version and IHL are the high).
            ip_sum += u64::from(tos);
        }
        ip.set_checksum(!fold(ip_sum));

        let mut udp = UdpPacket::new_unchecked(udp_bytes);
        udp.set_len(udp_len);
        if self.spec.source_port.is_none() {
            udp.set_src_port(input.source_port);
        }
        udp.set_checksum(self.udp_checksum(input));
        Ok(self.header_len + payload_len)
    }

    /// The output's UDP checksum, from the incoming one (see [`FrameTemplate::write`]).
    #[inline]
    fn udp_checksum(&self, input: &Datagram<'_>) -> u16 {
        if input.udp_checksum == 0 {
            return 0;
        }
        // The words the output replaces: both addresses, the destination port, and the source
        // port when it is rewritten (a kept one is in both sums and cancels out, so it is left out).
        let mut removed = bits_sum(input.source.0, input.ipv6)
            + bits_sum(input.destination.0, input.ipv6)
            + u64::from(input.destination_port);
        if self.spec.source_port.is_some() {
            removed += u64::from(input.source_port);
        }
        match adjust(input.udp_checksum, removed, self.udp_added) {
            // 0 on the wire means "no checksum"; its one's complement twin 0xffff is the same value.
            0 => 0xffff,
            other => other,
        }
    }
}

mod ipv6;
pub mod segments;
pub use segments::{MAX_SEGMENTS, Segments, Split, may_segment};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod ipv6_tests;
