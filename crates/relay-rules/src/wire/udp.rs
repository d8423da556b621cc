//! UDP headers (RFC 768).

use std::net::IpAddr;
#[cfg(test)]
use std::net::Ipv4Addr;

use super::DropReason;
use super::checksum;
use super::ipv4::PROTOCOL_UDP;

mod field {
    use std::ops::Range;

    pub(super) const SOURCE_PORT: Range<usize> = 0..2;
    pub(super) const DESTINATION_PORT: Range<usize> = 2..4;
    pub(super) const LENGTH: Range<usize> = 4..6;
    pub(super) const CHECKSUM: Range<usize> = 6..8;
    pub(super) const PAYLOAD: usize = 8;
}

/// A view of a UDP datagram: the buffer is the IPv4 payload.
///
/// [`Self::check_len`] requires the UDP length to equal the buffer length. The kernel accepts a
/// UDP length shorter than the IP payload and trims the rest; the relay refuses it instead,
/// because no sender produces it on purpose and the bytes it would hide are not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Length of the header.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps a buffer without checking it; accessors may panic until [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>, DropReason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensures the header fits and the length field matches the buffer, so that no accessor
    /// panics afterwards.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < Self::HEADER_LEN {
            return Err(DropReason::UdpTruncated);
        }
        if usize::from(self.len()) != len {
            return Err(DropReason::UdpBadLength);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SOURCE_PORT])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DESTINATION_PORT])
    }

    /// Length of header and payload, as stored.
    pub fn len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Whether the datagram carries no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= Self::HEADER_LEN
    }

    /// The checksum as stored; 0 means the sender computed none.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The payload (after [`Self::check_len`], exactly `len() - 8` bytes).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }

    /// Whether the checksum verifies over the pseudo-header, header and payload; a zero checksum
    /// (none computed) verifies (over IPv6, where 0 is not allowed, [`super::parse`] refuses it
    /// first). The addresses are the pseudo-header's, of either family. A full pass over the
    /// payload: tests and diagnostics only, the data path never pays for it.
    pub fn verify_checksum(
        &self,
        source: impl Into<IpAddr>,
        destination: impl Into<IpAddr>,
    ) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_sum(source, destination, PROTOCOL_UDP, self.len());
        checksum::fold(pseudo + checksum::sum(data)) == 0xffff
    }
}

impl<'a> UdpPacket<&'a [u8]> {
    /// The payload, borrowed for as long as the datagram is.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SOURCE_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DESTINATION_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Stores a checksum value as is.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Computes the checksum over the pseudo-header, header and payload (a full pass) and stores
    /// it, writing 0xffff for a computed 0 because 0 means "no checksum". The addresses are the
    /// pseudo-header's, of either family.
    pub fn fill_checksum(&mut self, source: impl Into<IpAddr>, destination: impl Into<IpAddr>) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_sum(source, destination, PROTOCOL_UDP, self.len());
        let sum = pseudo + checksum::sum(self.buffer.as_ref());
        self.set_checksum(match !checksum::fold(sum) {
            0 => 0xffff,
            other => other,
        });
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DESTINATION: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);

    /// Port 40000 -> 5004, 3-byte payload "abc". Checksum by hand: pseudo-header words
    /// c0a8 010a ef01 0101 0011 000b, header 9c40 138c 000b, payload 6162 6300 sum to 0x3_2609,
    /// fold to 0x260c, complement 0xd9f3.
    static DATAGRAM: [u8; 11] = [
        0x9c, 0x40, 0x13, 0x8c, // ports
        0x00, 0x0b, 0xd9, 0xf3, // length 11, checksum
        b'a', b'b', b'c',
    ];

    #[test]
    fn deconstruct() {
        let udp = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(udp.src_port(), 40000);
        assert_eq!(udp.dst_port(), 5004);
        assert_eq!(udp.len(), 11);
        assert!(!udp.is_empty());
        assert_eq!(udp.checksum(), 0xd9f3);
        assert_eq!(udp.payload(), b"abc");
        assert!(udp.verify_checksum(SOURCE, DESTINATION));
        assert!(!udp.verify_checksum(SOURCE, Ipv4Addr::new(239, 1, 1, 2)));
    }

    #[test]
    fn construct() {
        let mut bytes = [0u8; 11];
        let mut udp = UdpPacket::new_unchecked(&mut bytes[..]);
        udp.set_src_port(40000);
        udp.set_dst_port(5004);
        udp.set_len(11);
        udp.payload_mut().copy_from_slice(b"abc");
        udp.fill_checksum(SOURCE, DESTINATION);
        assert_eq!(bytes, DATAGRAM);
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut bytes = DATAGRAM;
        bytes[6..8].fill(0);
        let udp = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(udp.checksum(), 0);
        assert!(udp.verify_checksum(SOURCE, DESTINATION));
    }

    #[test]
    fn length_checks() {
        assert_eq!(
            UdpPacket::new_checked(&DATAGRAM[..7]).unwrap_err(),
            DropReason::UdpTruncated
        );
        // Length field 11 but 10 bytes, and 12 bytes.
        assert_eq!(
            UdpPacket::new_checked(&DATAGRAM[..10]).unwrap_err(),
            DropReason::UdpBadLength
        );
        let mut longer = [0u8; 12];
        longer[..11].copy_from_slice(&DATAGRAM);
        assert_eq!(
            UdpPacket::new_checked(&longer[..]).unwrap_err(),
            DropReason::UdpBadLength
        );
        let mut short_len = DATAGRAM;
        short_len[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&short_len[..]).unwrap_err(),
            DropReason::UdpBadLength
        );
    }
}
