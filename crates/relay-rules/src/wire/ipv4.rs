//! IPv4 headers (RFC 791): options are skipped, never interpreted.

use std::net::Ipv4Addr;

use super::DropReason;
use super::checksum;

/// The IPv4 protocol number of UDP.
pub const PROTOCOL_UDP: u8 = 17;

mod field {
    use std::ops::Range;

    pub(super) const VER_IHL: usize = 0;
    pub(super) const TOS: usize = 1;
    pub(super) const TOTAL_LEN: Range<usize> = 2..4;
    pub(super) const IDENT: Range<usize> = 4..6;
    pub(super) const FLAGS_FRAG: Range<usize> = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Range<usize> = 10..12;
    pub(super) const SOURCE: Range<usize> = 12..16;
    pub(super) const DESTINATION: Range<usize> = 16..20;
}

const FLAG_DONT_FRAGMENT: u16 = 0x4000;
const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
///
/// After [`Self::check_len`] the header (including options) and the `total_len` bytes it
/// announces are known to be in the buffer; bytes after them (Ethernet padding of short frames)
/// are not part of the packet and [`Self::payload`] leaves them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = 20;

    /// Wraps a buffer without checking it; accessors may panic until [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, DropReason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensures the header and the packet it announces fit in the buffer, so that no accessor
    /// panics afterwards.
    ///
    /// Checks lengths only: the version, checksum, fragment and protocol checks are the caller's
    /// (see [`super::parse`]), as with smoltcp, so a view can also be used to build a packet.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < Self::MIN_HEADER_LEN {
            return Err(DropReason::Ipv4Truncated);
        }
        let header_len = self.header_len();
        if header_len < Self::MIN_HEADER_LEN {
            return Err(DropReason::Ipv4BadIhl);
        }
        if len < header_len {
            return Err(DropReason::Ipv4Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(DropReason::Ipv4BadTotalLength);
        }
        if len < total_len {
            return Err(DropReason::Ipv4PacketTruncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version nibble (4 for IPv4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The type-of-service byte: DSCP in the top 6 bits, ECN in the low 2.
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Length of the whole packet, header included.
    pub fn total_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::TOTAL_LEN])
    }

    /// Identification, used for reassembly.
    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }

    /// Whether the don't-fragment flag is set.
    pub fn dont_frag(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLAGS_FRAG]) & FLAG_DONT_FRAGMENT != 0
    }

    /// Whether the more-fragments flag is set.
    pub fn more_frags(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLAGS_FRAG]) & FLAG_MORE_FRAGMENTS != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(&self.buffer.as_ref()[field::FLAGS_FRAG]) & FRAGMENT_OFFSET_MASK) * 8
    }

    /// Whether this packet is a fragment of a larger datagram (more fragments, or not the first).
    pub fn is_fragment(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLAGS_FRAG])
            & (FLAG_MORE_FRAGMENTS | FRAGMENT_OFFSET_MASK)
            != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum as stored.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        addr(&self.buffer.as_ref()[field::SOURCE])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        addr(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Whether the header checksum verifies: one pass over the 20–60 header bytes.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let header = &self.buffer.as_ref()[..self.header_len()];
        checksum::fold(checksum::sum(header)) == 0xffff
    }

    /// The payload: from the end of the options to `total_len`, padding excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// The payload (padding excluded), borrowed for as long as the packet is.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &self.buffer[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length (a multiple of 4 from 20 to 60 bytes).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        debug_assert!(
            header_len.is_multiple_of(4) && (20..=60).contains(&header_len),
            "IPv4 header length {header_len}"
        );
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets the type-of-service byte.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::TOTAL_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    /// Sets the flags and fragment offset (offset in bytes, a multiple of 8).
    pub fn set_flags_and_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut word = (offset / 8) & FRAGMENT_OFFSET_MASK;
        if dont_frag {
            word |= FLAG_DONT_FRAGMENT;
        }
        if more_frags {
            word |= FLAG_MORE_FRAGMENTS;
        }
        self.buffer.as_mut()[field::FLAGS_FRAG].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the payload protocol.
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Stores a checksum value as is.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum over the header as it is now and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::sum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(!checksum::fold(sum));
    }

    /// The payload (up to `total_len`), writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn addr(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 192.168.1.10 -> 239.1.1.1, UDP, TTL 16, DSCP AF41 (0x88), ID 0x1c46, DF, 4-byte payload
    /// behind one 4-byte option (NOP NOP NOP EOL) and followed by 2 bytes of padding.
    static PACKET: [u8; 30] = [
        0x46, 0x88, 0x00, 0x1c, // version 4, IHL 6, TOS, total length 28
        0x1c, 0x46, 0x40, 0x00, // ID, DF, offset 0
        0x10, 0x11, 0x00, 0x00, // TTL 16, UDP, checksum (filled in by the test helper)
        0xc0, 0xa8, 0x01, 0x0a, // source
        0xef, 0x01, 0x01, 0x01, // destination
        0x01, 0x01, 0x01, 0x00, // options: NOP NOP NOP EOL
        0xde, 0xad, 0xbe, 0xef, // payload
        0x00, 0x00, // Ethernet padding, not part of the packet
    ];

    /// The header checksum of `PACKET`, computed by hand: the words 4688 001c 1c46 4000 1011
    /// c0a8 010a ef01 0101 0101 0100 sum to 0x2_66b0, fold to 0x66b2, complement 0x994d.
    const PACKET_CHECKSUM: u16 = 0x994d;

    fn packet_bytes() -> [u8; 30] {
        let mut bytes = PACKET;
        bytes[10..12].copy_from_slice(&PACKET_CHECKSUM.to_be_bytes());
        bytes
    }

    #[test]
    fn deconstruct() {
        let bytes = packet_bytes();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.tos(), 0x88);
        assert_eq!(packet.total_len(), 28);
        assert_eq!(packet.ident(), 0x1c46);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 16);
        assert_eq!(packet.protocol(), PROTOCOL_UDP);
        assert_eq!(packet.checksum(), PACKET_CHECKSUM);
        assert!(packet.verify_checksum());
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(239, 1, 1, 1));
        assert_eq!(packet.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0u8; 30];
        bytes[20..24].copy_from_slice(&[0x01, 0x01, 0x01, 0x00]);
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_version_and_header_len(24);
        packet.set_tos(0x88);
        packet.set_total_len(28);
        packet.set_ident(0x1c46);
        packet.set_flags_and_offset(true, false, 0);
        packet.set_ttl(16);
        packet.set_protocol(PROTOCOL_UDP);
        packet.set_src_addr(Ipv4Addr::new(192, 168, 1, 10));
        packet.set_dst_addr(Ipv4Addr::new(239, 1, 1, 1));
        packet
            .payload_mut()
            .copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        packet.fill_checksum();
        assert_eq!(bytes, packet_bytes());
    }

    #[test]
    fn fragment_fields() {
        let mut bytes = packet_bytes();
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_flags_and_offset(false, true, 0);
        assert!(packet.more_frags() && packet.is_fragment() && !packet.dont_frag());
        packet.set_flags_and_offset(false, false, 1480);
        assert_eq!(packet.frag_offset(), 1480);
        assert!(packet.is_fragment());
        packet.set_flags_and_offset(true, false, 0);
        assert!(!packet.is_fragment());
    }

    #[test]
    fn length_checks() {
        let bytes = packet_bytes();
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..19]).unwrap_err(),
            DropReason::Ipv4Truncated
        );
        // IHL 6 needs 24 bytes of header.
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..22]).unwrap_err(),
            DropReason::Ipv4Truncated
        );
        // Total length 28 needs 28 bytes.
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..27]).unwrap_err(),
            DropReason::Ipv4PacketTruncated
        );
        assert!(Ipv4Packet::new_checked(&bytes[..28]).is_ok());

        let mut bad = bytes;
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            DropReason::Ipv4BadIhl
        );
        let mut bad = bytes;
        bad[2..4].copy_from_slice(&23u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            DropReason::Ipv4BadTotalLength
        );
    }

    #[test]
    fn corrupted_header_fails_checksum() {
        let mut bytes = packet_bytes();
        bytes[8] = 15; // TTL changed without updating the checksum
        assert!(
            !Ipv4Packet::new_checked(&bytes[..])
                .unwrap()
                .verify_checksum()
        );
    }
}
