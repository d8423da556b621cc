//! Several datagrams of one output flow in one frame, for the kernel or the NIC to split again
//! (UDP segmentation, `VIRTIO_NET_HDR_GSO_UDP_L4`).
//!
//! Every frame on its own costs the sender a socket buffer, a pass through the qdisc and the
//! device, and across veth a pass through the receiving stack; a segmented frame pays these
//! once for up to [`MAX_SEGMENTS`] datagrams. The frame starts as the plain frame
//! [`FrameTemplate::write`] made for the first datagram; [`FrameTemplate::append_segment`] adds
//! the payloads of the next datagrams of the same flow, and [`Segments::finish`] turns the
//! headers into those of the whole, which the splitter copies into each datagram with its own
//! lengths, an IPv4 identification counted up from the first, and a UDP checksum computed from
//! its payload. A frame that got no second datagram stays the plain frame, untouched.
//!
//! The checksum is the price: a datagram that arrived with a wrong UDP checksum would leave with
//! a right one. So only datagrams whose checksum nobody needs carried over join a segmented
//! frame ([`may_segment`]): those that had none, or only a partial one (sent by this host), and
//! those the kernel verified on receipt.
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
//! // Ethernet II, IPv4 10.0.0.1 -> 239.1.1.1, UDP 1234 -> 5004, no UDP checksum, "hi".
//! let frame = [
//!     0x01, 0x00, 0x5e, 0x01, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
//!     0x45, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x11, 0xbf, 0xcc,
//!     0x0a, 0x00, 0x00, 0x01, 0xef, 0x01, 0x01, 0x01,
//!     0x04, 0xd2, 0x13, 0x8c, 0x00, 0x0a, 0x00, 0x00, b'h', b'i',
//! ];
//! let input = wire::parse(&frame, None)?;
//!
//! let mut slot = [0u8; 4096];
//! let len = template.write(&input, 7, &mut slot)?;
//! let mut segments = template.segments(&input, len);
//! assert!(template.append_segment(&mut segments, &input, &mut slot));
//! let split = segments.finish(&mut slot).expect("two datagrams: a segmented frame");
//! assert_eq!((split.udp_offset, split.segment_size), (34, 2));
//! assert_eq!(segments.len(), 14 + 20 + 8 + 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::{FrameTemplate, IPV4_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN};
use crate::wire::checksum::{addr_sum, addr6_sum};
use crate::wire::{Datagram, Ipv4Packet, Ipv6Packet, PROTOCOL_UDP, UdpPacket, fold};

/// Most datagrams in one segmented frame: the kernel's `UDP_MAX_SEGMENTS`, 64 in older
/// releases (later raised), so a frame of 64 is taken by every kernel that segments.
pub const MAX_SEGMENTS: u16 = 64;

/// Whether a datagram may join a segmented frame, where its UDP checksum is computed anew:
/// when it carries none (0, or only a partial one, which the caller has cleared to 0), or the
/// kernel verified it on receipt (`TP_STATUS_CSUM_VALID`). A checksum nobody verified is
/// carried over by [`FrameTemplate::write`] instead, so that a damaged datagram stays
/// detectably damaged.
pub fn may_segment(input: &Datagram<'_>, checksum_verified: bool) -> bool {
    input.udp_checksum == 0 || checksum_verified
}

/// How a finished segmented frame is to be split (the fields of a `virtio_net_hdr` asking for
/// UDP segmentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Offset of the UDP header in the frame.
    pub udp_offset: u16,
    /// Payload bytes of each datagram but the last, which may be shorter.
    pub segment_size: u16,
}

/// A frame being filled with datagrams of one output flow; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    ip_offset: usize,
    /// Whether the frame is IPv6 (else IPv4).
    ipv6: bool,
    segment_size: usize,
    count: u16,
    len: usize,
    /// A shorter datagram ended the frame: the splitter cuts only the last piece short.
    closed: bool,
    /// The flow's fields taken from the first datagram that the template may keep.
    source_port: u16,
    tos: u8,
}

impl FrameTemplate {
    /// Starts a segmented frame from the `frame_len`-byte plain frame [`FrameTemplate::write`]
    /// has just written for `first`.
    pub fn segments(&self, first: &Datagram<'_>, frame_len: usize) -> Segments {
        Segments {
            ip_offset: self.ip_offset,
            ipv6: self.ipv6,
            segment_size: first.payload.len(),
            count: 1,
            len: frame_len,
            closed: first.payload.is_empty(),
            source_port: first.source_port,
            tos: first.tos & 0xfc,
        }
    }

    /// Appends `input`'s payload to the frame in `out` when it can be split off again into the
    /// datagram [`FrameTemplate::write`] would have written for it: `self` is the template the
    /// frame was started with, `input` is of the same flow (the same source port and DSCP where
    /// the template keeps the incoming ones), as long as the first datagram or, as the last,
    /// shorter but not empty, and the frame has room (the buffer, [`MAX_SEGMENTS`], 64 KiB of
    /// IPv4). Returns false, leaving the frame as it was, otherwise. Whether `input` may join at
    /// all is the caller's check: [`may_segment`].
    pub fn append_segment(
        &self,
        segments: &mut Segments,
        input: &Datagram<'_>,
        out: &mut [u8],
    ) -> bool {
        let payload = input.payload;
        let same_flow = (self.spec.source_port.is_some()
            || input.source_port == segments.source_port)
            && (self.spec.dscp.is_some() || input.tos & 0xfc == segments.tos);
        let fits_cut =
            !segments.closed && !payload.is_empty() && payload.len() <= segments.segment_size;
        let len = segments.len + payload.len();
        let ip_len = len - segments.ip_offset;
        if !same_flow
            || !fits_cut
            || segments.count >= MAX_SEGMENTS
            || ip_len > usize::from(u16::MAX)
            || len > out.len()
        {
            return false;
        }
        out[segments.len..len].copy_from_slice(payload);
        segments.len = len;
        segments.count += 1;
        segments.closed = payload.len() < segments.segment_size;
        true
    }
}

impl Segments {
    /// Datagrams in the frame.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Length of the frame so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame holds no bytes (never: it starts as a whole frame).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Turns the headers in `out` into those of the whole frame and returns how to split it,
    /// or `None` when it holds one datagram: then it is the plain frame as written, to be sent
    /// as it is.
    ///
    /// IPv4 total length (or IPv6 payload length) and UDP length cover every datagram, the
    /// IPv4 header checksum is computed for them, and the UDP checksum field gets the folded
    /// pseudo-header sum (of the family's pseudo-header), which the splitter adjusts to each
    /// datagram's length and completes over its payload. The kernel splits IPv6 frames as it
    /// does IPv4 ones (`VIRTIO_NET_HDR_GSO_UDP_L4` is family-neutral).
    pub fn finish(&self, out: &mut [u8]) -> Option<Split> {
        if self.count < 2 {
            return None;
        }
        if self.ipv6 {
            return Some(self.finish_ipv6(out));
        }
        let udp_offset = self.ip_offset + IPV4_HEADER_LEN;
        // Both fit in u16: `append_segment` keeps the IPv4 packet within 64 KiB.
        let ip_len = (self.len - self.ip_offset) as u16;
        let udp_len = (self.len - udp_offset) as u16;

        let mut ip = Ipv4Packet::new_unchecked(&mut out[self.ip_offset..udp_offset]);
        ip.set_total_len(ip_len);
        ip.fill_checksum();
        let (source, destination) = (ip.src_addr(), ip.dst_addr());

        let mut udp = UdpPacket::new_unchecked(&mut out[udp_offset..udp_offset + UDP_HEADER_LEN]);
        udp.set_len(udp_len);
        let pseudo =
            addr_sum(source) + addr_sum(destination) + u64::from(PROTOCOL_UDP) + u64::from(udp_len);
        udp.set_checksum(fold(pseudo));
        Some(Split {
            udp_offset: udp_offset as u16,
            segment_size: self.segment_size as u16,
        })
    }
}

impl Segments {
    /// [`Segments::finish`] for an IPv6 frame of two datagrams or more.
    fn finish_ipv6(&self, out: &mut [u8]) -> Split {
        let udp_offset = self.ip_offset + IPV6_HEADER_LEN;
        // Fits in u16: `append_segment` keeps the whole IP packet within 64 KiB.
        let udp_len = (self.len - udp_offset) as u16;
        let mut ip = Ipv6Packet::new_unchecked(&mut out[self.ip_offset..udp_offset]);
        ip.set_payload_len(udp_len);
        let (source, destination) = (ip.src_addr(), ip.dst_addr());
        let mut udp = UdpPacket::new_unchecked(&mut out[udp_offset..udp_offset + UDP_HEADER_LEN]);
        udp.set_len(udp_len);
        let pseudo = addr6_sum(source)
            + addr6_sum(destination)
            + u64::from(PROTOCOL_UDP)
            + u64::from(udp_len);
        udp.set_checksum(fold(pseudo));
        Split {
            udp_offset: udp_offset as u16,
            segment_size: self.segment_size as u16,
        }
    }
}

#[cfg(test)]
mod tests;
