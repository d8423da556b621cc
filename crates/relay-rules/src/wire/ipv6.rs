//! IPv6 headers (RFC 8200): the fixed header, and the walk over the extension headers that may
//! stand between it and UDP.

use std::net::Ipv6Addr;

use super::DropReason;

/// Next-header value of a hop-by-hop options header.
pub const NEXT_HEADER_HOP_BY_HOP: u8 = 0;
/// Next-header value of a routing header.
pub const NEXT_HEADER_ROUTING: u8 = 43;
/// Next-header value of a fragment header.
pub const NEXT_HEADER_FRAGMENT: u8 = 44;
/// Next-header value of a destination options header.
pub const NEXT_HEADER_DESTINATION_OPTIONS: u8 = 60;

/// Most extension headers [`udp_offset`] walks before it gives up on a packet
/// ([`DropReason::Ipv6TooManyExtensionHeaders`]). Real senders put zero to two before UDP (a
/// hop-by-hop header with a router alert, a destination options header); the bound keeps the
/// walk, and the cBPF programs that follow it, short.
pub const MAX_EXTENSION_HEADERS: usize = 4;

mod field {
    use std::ops::Range;

    pub(super) const VER_TC_FLOW: Range<usize> = 0..4;
    pub(super) const PAYLOAD_LEN: Range<usize> = 4..6;
    pub(super) const NEXT_HEADER: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SOURCE: Range<usize> = 8..24;
    pub(super) const DESTINATION: Range<usize> = 24..40;
}

/// A view of an IPv6 packet.
///
/// After [`Self::check_len`] the fixed header and the `payload_len` bytes it announces are known
/// to be in the buffer; bytes after them (Ethernet padding) are not part of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = 40;

    /// Wraps a buffer without checking it; accessors may panic until [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>, DropReason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensures the fixed header and the payload it announces fit in the buffer, so that no
    /// accessor panics afterwards. A payload length of 0 is refused: it is either a jumbogram
    /// (RFC 2675, whose length is in a hop-by-hop option) or a packet with nothing in it, and
    /// neither carries a UDP datagram the relay forwards.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < Self::HEADER_LEN {
            return Err(DropReason::Ipv6Truncated);
        }
        let payload_len = usize::from(self.payload_len());
        if payload_len == 0 {
            return Err(DropReason::Ipv6Jumbogram);
        }
        if len - Self::HEADER_LEN < payload_len {
            return Err(DropReason::Ipv6PacketTruncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_word(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The version nibble (6 for IPv6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// The traffic class: DSCP in the top 6 bits, ECN in the low 2.
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// The flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000f_ffff
    }

    /// Length of what follows the fixed header (extension headers and upper layer).
    pub fn payload_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The type of the header that follows the fixed one.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// The hop limit (IPv6's time to live).
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::SOURCE])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// The payload: from the end of the fixed header to `payload_len`, padding excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..Self::HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<'a> Ipv6Packet<&'a [u8]> {
    /// The payload (padding excluded), borrowed for as long as the packet is.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let end = Self::HEADER_LEN + usize::from(self.payload_len());
        &self.buffer[Self::HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, the traffic class and the flow label (its low 20 bits).
    pub fn set_version_class_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = 6 << 28 | u32::from(traffic_class) << 20 | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the traffic class, keeping the version and the flow label.
    pub fn set_traffic_class(&mut self, traffic_class: u8) {
        let b = self.buffer.as_mut();
        b[0] = (b[0] & 0xf0) | (traffic_class >> 4);
        b[1] = (b[1] & 0x0f) | (traffic_class << 4);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.octets());
    }
}

/// Walks the extension headers of an IPv6 payload that may precede UDP and returns the offset
/// of the upper-layer header in `payload` with the type found there.
///
/// Hop-by-hop options, routing and destination options headers are skipped (at most
/// [`MAX_EXTENSION_HEADERS`], each checked to lie within `payload`); a fragment header refuses
/// the packet as [`DropReason::Ipv6Fragment`], as IPv4 fragments are. Any other type ends the
/// walk: the caller checks it is UDP. (RFC 8200 allows hop-by-hop options only first; the walk
/// does not insist, since skipping it elsewhere forwards nothing the relay should not.)
///
/// ```
/// use relay_rules::wire::{ipv6_udp_offset, DropReason};
///
/// // A destination options header (8 bytes, next header UDP), then 8 bytes of UDP header.
/// let payload = [17, 0, 1, 4, 0, 0, 0, 0, 0x13, 0x88, 0x13, 0x88, 0, 8, 0, 0];
/// assert_eq!(ipv6_udp_offset(60, &payload), Ok((8, 17)));
/// assert_eq!(ipv6_udp_offset(60, &payload[..6]), Err(DropReason::Ipv6ExtensionHeaderTruncated));
/// assert_eq!(ipv6_udp_offset(44, &payload), Err(DropReason::Ipv6Fragment));
/// ```
#[inline]
pub fn udp_offset(first: u8, payload: &[u8]) -> Result<(usize, u8), DropReason> {
    let mut next = first;
    let mut offset = 0usize;
    for _ in 0..=MAX_EXTENSION_HEADERS {
        match next {
            NEXT_HEADER_HOP_BY_HOP | NEXT_HEADER_ROUTING | NEXT_HEADER_DESTINATION_OPTIONS => {}
            NEXT_HEADER_FRAGMENT => return Err(DropReason::Ipv6Fragment),
            other => return Ok((offset, other)),
        }
        let (Some(&following), Some(&units)) = (payload.get(offset), payload.get(offset + 1))
        else {
            return Err(DropReason::Ipv6ExtensionHeaderTruncated);
        };
        // The length counts 8-byte units after the first 8 bytes.
        let len = (usize::from(units) + 1) * 8;
        if payload.len() - offset < len {
            return Err(DropReason::Ipv6ExtensionHeaderTruncated);
        }
        offset += len;
        next = following;
    }
    Err(DropReason::Ipv6TooManyExtensionHeaders)
}

fn addr(bytes: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(bytes);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2001:db8::1 -> ff3e::8000:1, traffic class 0xb8 (EF), flow label 0x12345, hop limit 7,
    /// next header UDP, 4 bytes of payload, 2 bytes of Ethernet padding.
    static PACKET: [u8; 46] = [
        0x6b, 0x81, 0x23, 0x45, // version 6, traffic class 0xb8, flow label 0x12345
        0x00, 0x04, 0x11, 0x07, // payload length 4, UDP, hop limit 7
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // source
        0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 1, // destination
        0xde, 0xad, 0xbe, 0xef, // payload
        0x00, 0x00, // padding
    ];

    #[test]
    fn deconstruct() {
        let packet = Ipv6Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.payload_len(), 4);
        assert_eq!(packet.next_header(), 17);
        assert_eq!(packet.hop_limit(), 7);
        assert_eq!(
            packet.src_addr(),
            "2001:db8::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            packet.dst_addr(),
            "ff3e::8000:1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(packet.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(packet.into_payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0u8; 46];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_version_class_flow(0x00, 0x12345);
        packet.set_traffic_class(0xb8);
        packet.set_payload_len(4);
        packet.set_next_header(17);
        packet.set_hop_limit(7);
        packet.set_src_addr("2001:db8::1".parse().unwrap());
        packet.set_dst_addr("ff3e::8000:1".parse().unwrap());
        bytes[40..44].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn length_checks() {
        assert_eq!(
            Ipv6Packet::new_checked(&PACKET[..39]).unwrap_err(),
            DropReason::Ipv6Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&PACKET[..43]).unwrap_err(),
            DropReason::Ipv6PacketTruncated
        );
        assert!(Ipv6Packet::new_checked(&PACKET[..44]).is_ok());
        let mut jumbo = PACKET;
        jumbo[4..6].fill(0);
        assert_eq!(
            Ipv6Packet::new_checked(&jumbo[..]).unwrap_err(),
            DropReason::Ipv6Jumbogram
        );
    }

    #[test]
    fn extension_headers_are_walked_and_bounded() {
        // Hop-by-hop (16 bytes) -> routing (8) -> destination options (8) -> UDP.
        let mut payload = vec![43, 1, 5, 2, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        payload.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        payload.extend_from_slice(&[0; 8]);
        assert_eq!(udp_offset(0, &payload), Ok((32, 17)));
        assert_eq!(udp_offset(17, &payload), Ok((0, 17)));
        assert_eq!(udp_offset(6, &payload), Ok((0, 6)));
        // The last header cut short, and only its first byte there.
        assert_eq!(
            udp_offset(0, &payload[..30]),
            Err(DropReason::Ipv6ExtensionHeaderTruncated)
        );
        assert_eq!(
            udp_offset(0, &payload[..25]),
            Err(DropReason::Ipv6ExtensionHeaderTruncated)
        );
        // A fragment header after a hop-by-hop one.
        let mut fragment = payload.clone();
        fragment[0] = NEXT_HEADER_FRAGMENT;
        assert_eq!(udp_offset(0, &fragment), Err(DropReason::Ipv6Fragment));

        // Exactly MAX_EXTENSION_HEADERS pass; one more is refused.
        let chain = |count: usize| {
            let mut bytes = Vec::new();
            for i in 0..count {
                let next = if i + 1 == count { 17 } else { 60 };
                bytes.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
            }
            bytes
        };
        let four = chain(MAX_EXTENSION_HEADERS);
        assert_eq!(udp_offset(60, &four), Ok((8 * MAX_EXTENSION_HEADERS, 17)));
        let five = chain(MAX_EXTENSION_HEADERS + 1);
        assert_eq!(
            udp_offset(60, &five),
            Err(DropReason::Ipv6TooManyExtensionHeaders)
        );
    }
}
