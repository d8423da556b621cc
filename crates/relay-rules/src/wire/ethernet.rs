//! Ethernet II headers and the VLAN tags (802.1Q, 802.1ad) that may follow them.

use super::DropReason;

/// An Ethernet II type field value.
///
/// A newtype rather than an enum: every 16-bit value can appear on the wire, and the relay only
/// needs to recognise a few of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// IPv6.
    pub const IPV6: EtherType = EtherType(0x86dd);
    /// An 802.1Q VLAN tag (customer tag).
    pub const VLAN: EtherType = EtherType(0x8100);
    /// An 802.1ad VLAN tag (service tag, the outer tag of Q-in-Q).
    pub const QINQ: EtherType = EtherType(0x88a8);

    /// Whether this type announces a VLAN tag the parser steps over.
    pub const fn is_vlan(self) -> bool {
        self.0 == Self::VLAN.0 || self.0 == Self::QINQ.0
    }
}

mod field {
    use std::ops::Range;

    pub(super) const DESTINATION: Range<usize> = 0..6;
    pub(super) const SOURCE: Range<usize> = 6..12;
    pub(super) const ETHERTYPE: Range<usize> = 12..14;
    pub(super) const PAYLOAD: usize = 14;

    /// Tag control information, first in a VLAN tag (its TPID is the enclosing ethertype).
    pub(super) const TCI: Range<usize> = 0..2;
    /// The type of what follows the tag.
    pub(super) const INNER_ETHERTYPE: Range<usize> = 2..4;
    pub(super) const TAG_PAYLOAD: usize = 4;
}

/// A view of an Ethernet II frame (without the frame check sequence, as AF_PACKET delivers it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Length of the header: two addresses and the type.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps a buffer without checking it; accessors may panic until [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, DropReason> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Ensures the header fits, so that no accessor panics afterwards.
    pub fn check_len(&self) -> Result<(), DropReason> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(DropReason::EthernetTruncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> [u8; 6] {
        mac(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> [u8; 6] {
        mac(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The type of the payload (or the TPID of a VLAN tag).
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<'a> EthernetFrame<&'a [u8]> {
    /// Everything after the header, borrowed for as long as the frame is.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr);
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr);
    }

    /// Sets the type field.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
    }

    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A view of the 4 bytes a VLAN tag adds after a VLAN ethertype: the TCI and the inner type.
///
/// The tag's TPID is the ethertype of the enclosing header, so it is not part of this view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanHeader<T> {
    /// Length of the tag after its TPID.
    pub const HEADER_LEN: usize = field::TAG_PAYLOAD;

    /// Wraps a buffer without checking it; accessors may panic until [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> VlanHeader<T> {
        VlanHeader { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<VlanHeader<T>, DropReason> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Ensures the tag fits, so that no accessor panics afterwards.
    pub fn check_len(&self) -> Result<(), DropReason> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(DropReason::VlanTruncated);
        }
        Ok(())
    }

    /// Tag control information (priority, drop eligible, VLAN id).
    pub fn tci(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::TCI])
    }

    /// The type of what follows the tag.
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(&self.buffer.as_ref()[field::INNER_ETHERTYPE]))
    }

    /// Everything after the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::TAG_PAYLOAD..]
    }
}

impl<'a> VlanHeader<&'a [u8]> {
    /// Everything after the tag, borrowed for as long as the frame is.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer[field::TAG_PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanHeader<T> {
    /// Sets the tag control information.
    pub fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the type of what follows the tag.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::INNER_ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
    }
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn mac(bytes: &[u8]) -> [u8; 6] {
    [bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 01:00:5e:01:02:03 <- 02:00:00:00:00:01, 802.1Q tag PCP 3 VID 100, then IPv4.
    static TAGGED: [u8; 22] = [
        0x01, 0x00, 0x5e, 0x01, 0x02, 0x03, // destination
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
        0x81, 0x00, // TPID 802.1Q
        0x60, 0x64, // TCI: PCP 3, DEI 0, VID 100
        0x08, 0x00, // inner type IPv4
        0xaa, 0xbb, 0xcc, 0xdd, // payload
    ];

    #[test]
    fn deconstruct() {
        let frame = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(frame.dst_addr(), [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]);
        assert_eq!(frame.src_addr(), [0x02, 0, 0, 0, 0, 0x01]);
        assert_eq!(frame.ethertype(), EtherType::VLAN);
        assert!(frame.ethertype().is_vlan());
        let tag = VlanHeader::new_checked(frame.payload()).unwrap();
        assert_eq!(tag.tci(), 0x6064);
        assert_eq!(tag.tci() & 0x0fff, 100);
        assert_eq!(tag.ethertype(), EtherType::IPV4);
        assert!(!tag.ethertype().is_vlan());
        assert_eq!(tag.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0u8; 22];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]);
        frame.set_src_addr([0x02, 0, 0, 0, 0, 0x01]);
        frame.set_ethertype(EtherType::VLAN);
        let mut tag = VlanHeader::new_unchecked(frame.payload_mut());
        tag.set_tci(0x6064);
        tag.set_ethertype(EtherType::IPV4);
        bytes[18..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(bytes, TAGGED);
    }

    #[test]
    fn qinq_is_a_vlan_type() {
        assert!(EtherType(0x88a8).is_vlan());
        assert!(!EtherType(0x9100).is_vlan());
    }

    #[test]
    fn short_buffers_are_refused() {
        assert_eq!(
            EthernetFrame::new_checked(&TAGGED[..13]).unwrap_err(),
            DropReason::EthernetTruncated
        );
        assert!(EthernetFrame::new_checked(&TAGGED[..14]).is_ok());
        assert_eq!(
            VlanHeader::new_checked(&TAGGED[14..17]).unwrap_err(),
            DropReason::VlanTruncated
        );
        assert!(VlanHeader::new_checked(&TAGGED[14..18]).is_ok());
    }
}
