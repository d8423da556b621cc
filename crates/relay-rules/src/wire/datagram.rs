//! One pass over a received frame: from Ethernet to the UDP payload, or the reason to drop it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ethernet::{EtherType, EthernetFrame, VlanHeader};
use super::ipv4::{Ipv4Packet, PROTOCOL_UDP};
use super::ipv6::{self, Ipv6Packet};
use super::udp::UdpPacket;
use super::{DropReason, VlanTag};

/// The high bits of an IPv4-mapped IPv6 address (RFC 4291 section 2.5.5.2).
const MAPPED: u128 = 0xffff_0000_0000;

/// An IP address as a [`Datagram`] holds it: 128 bits, an IPv6 address as it is, an IPv4
/// address in its IPv4-mapped form (`::ffff:a.b.c.d`), so that the low 32 bits are the IPv4
/// address. The family is not in the bits ([`Datagram::ipv6`] holds it): an IPv4 address and
/// its IPv4-mapped IPv6 form convert to equal `IpBits`.
///
/// ```
/// use relay_rules::wire::IpBits;
/// use std::net::Ipv4Addr;
///
/// assert_eq!(IpBits::from(Ipv4Addr::new(239, 1, 2, 3)), IpBits(0xffff_ef01_0203));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpBits(pub u128);

impl From<IpAddr> for IpBits {
    #[inline]
    fn from(address: IpAddr) -> Self {
        IpBits(Datagram::address_bits(address))
    }
}

impl From<Ipv4Addr> for IpBits {
    #[inline]
    fn from(address: Ipv4Addr) -> Self {
        IpBits(MAPPED | u128::from(address.to_bits()))
    }
}

impl From<Ipv6Addr> for IpBits {
    #[inline]
    fn from(address: Ipv6Addr) -> Self {
        IpBits(address.to_bits())
    }
}

/// Everything the relay needs from one received UDP frame over IPv4 or IPv6, borrowed from the
/// frame.
///
/// Produced by [`parse`] only after every check passed, so the rest of the data path (rule
/// lookup, [`crate::replicate::FrameTemplate::write`]) trusts its fields without re-checking.
/// The fields are plain values so that a rule lookup reads them without going through views.
///
/// The addresses are integers ([`IpBits`]) with the family beside them, not
/// [`IpAddr`]s: an `IpAddr` is a tag byte and 16 bytes aligned to 1, which the compiler built
/// piece by piece in memory and read back with wider loads (which the processor cannot
/// forward from the narrower stores), and a match on its tag at every use. As integers an IPv4
/// address stays in registers from [`parse`] to the rule lookup (whose keys are these same
/// integers) and the checksum update. [`Datagram::source_addr`] and
/// [`Datagram::destination_addr`] give them as `IpAddr`.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// VLAN tags, outer first: an offloaded tag from the ring's frame header, then the tags in the
    /// frame. Unused slots are `None`, and a `None` is never followed by a `Some`.
    pub vlans: [Option<VlanTag>; 2],
    /// IP source address. Both addresses are of the
    /// family [`Datagram::ipv6`] says.
    pub source: IpBits,
    /// IP destination address: the group (or local
    /// unicast address) rules match on.
    pub destination: IpBits,
    /// Whether the frame was IPv6 (else IPv4). Kept apart from the addresses because an IPv6
    /// frame may carry an IPv4-mapped address, which is not the IPv4 address it maps.
    pub ipv6: bool,
    /// UDP source port.
    pub source_port: u16,
    /// UDP destination port.
    pub destination_port: u16,
    /// IPv4 time to live or IPv6 hop limit, as received.
    pub ttl: u8,
    /// IPv4 type-of-service byte or IPv6 traffic class, as received (DSCP and ECN).
    pub tos: u8,
    /// IPv4 identification as received; 0 for IPv6, which has none outside a fragment header.
    pub ip_id: u16,
    /// UDP checksum as received; 0 means the sender computed none (IPv4 only: [`parse`] refuses
    /// it over IPv6). Not verified by [`parse`] (that would cost a pass over the payload); an
    /// incremental update keeps a wrong one wrong.
    pub udp_checksum: u16,
    /// The UDP payload, exactly as long as the UDP length field says.
    pub payload: &'a [u8],
}

impl Datagram<'_> {
    /// An address as the 128-bit integer a [`Datagram`] holds ([`IpBits`]): an IPv6 address
    /// as it is, an IPv4 address in its IPv4-mapped form (`::ffff:a.b.c.d`), so that the low
    /// 32 bits are the IPv4 address.
    ///
    /// ```
    /// use relay_rules::Datagram;
    /// use std::net::Ipv4Addr;
    ///
    /// let bits = Datagram::address_bits(Ipv4Addr::new(239, 1, 2, 3).into());
    /// assert_eq!(bits, 0xffff_ef01_0203);
    /// ```
    #[inline]
    pub const fn address_bits(address: IpAddr) -> u128 {
        match address {
            IpAddr::V4(v4) => MAPPED | v4.to_bits() as u128,
            IpAddr::V6(v6) => v6.to_bits(),
        }
    }

    /// The address [`Datagram::address_bits`] gave `bits`, of the family `ipv6` says.
    #[inline]
    pub const fn address_of(bits: u128, ipv6: bool) -> IpAddr {
        if ipv6 {
            IpAddr::V6(Ipv6Addr::from_bits(bits))
        } else {
            // The low 32 bits are the IPv4 address.
            IpAddr::V4(Ipv4Addr::from_bits(bits as u32))
        }
    }

    /// Whether the datagram came over IPv6.
    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.ipv6
    }

    /// The IP source address.
    #[inline]
    pub fn source_addr(&self) -> IpAddr {
        Datagram::address_of(self.source.0, self.ipv6)
    }

    /// The IP destination address.
    #[inline]
    pub fn destination_addr(&self) -> IpAddr {
        Datagram::address_of(self.destination.0, self.ipv6)
    }

    /// The VLAN id of the outer tag, if the frame had any tag.
    pub fn outer_vid(&self) -> Option<u16> {
        self.vlans[0].map(VlanTag::vid)
    }

    /// Length of the UDP datagram (header and payload), as it appears in the pseudo-header.
    pub fn udp_len(&self) -> usize {
        UdpPacket::<&[u8]>::HEADER_LEN + self.payload.len()
    }
}

/// Checks a received frame once and returns the fields the relay needs, or why it is refused.
///
/// `offloaded_vlan` is the tag the kernel took out of the frame and reported in the ring's
/// frame header (`tp_vlan_tci` with `TP_STATUS_VLAN_VALID`); it counts as the outer tag, so at
/// most one more may be in the frame. (When the ring does not report the TPID,
/// `TP_STATUS_VLAN_TPID_VALID` clear, the caller passes 0x8100.) Accepted: Ethernet II, then up
/// to two 802.1Q/802.1ad tags in total, then either
/// - IPv4 with IHL 5–15 (options skipped), a total length between its header length and the
///   captured length (bytes after it are Ethernet padding and ignored), a valid header checksum
///   and no fragmentation, or
/// - IPv6 with a payload length between 1 and the captured length (padding ignored), then at
///   most [`super::MAX_EXTENSION_HEADERS`] hop-by-hop, routing or destination options headers
///   (skipped) and no fragment header,
///
/// then UDP whose length equals the rest of the IP payload (and, over IPv6, whose checksum is
/// not 0).
///
/// Never allocates, copies the payload, or panics, whatever the bytes.
///
/// ```
/// use relay_rules::wire::{self, DropReason};
///
/// // Ethernet II to 01:00:5e:01:01:01, IPv4 10.0.0.1 -> 239.1.1.1, UDP 1234 -> 5004, "hi".
/// let frame = [
///     0x01, 0x00, 0x5e, 0x01, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
///     0x45, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x11, 0xbf, 0xcc,
///     0x0a, 0x00, 0x00, 0x01, 0xef, 0x01, 0x01, 0x01,
///     0x04, 0xd2, 0x13, 0x8c, 0x00, 0x0a, 0x00, 0x00, b'h', b'i',
/// ];
/// let datagram = wire::parse(&frame, None)?;
/// assert_eq!(datagram.destination_addr(), std::net::Ipv4Addr::new(239, 1, 1, 1));
/// assert_eq!(datagram.destination_port, 5004);
/// assert_eq!(datagram.payload, b"hi");
///
/// // The same frame cut inside the UDP header: the IPv4 total length no longer fits.
/// assert_eq!(wire::parse(&frame[..40], None).unwrap_err(), DropReason::Ipv4PacketTruncated);
/// # Ok::<(), DropReason>(())
/// ```
// Always inlined, as it was before the IPv6 half existed: the worker's loop reads a few fields
// of the result, and a call would write the whole Datagram through memory.
#[inline(always)]
pub fn parse(frame: &[u8], offloaded_vlan: Option<VlanTag>) -> Result<Datagram<'_>, DropReason> {
    let ethernet = EthernetFrame::new_checked(frame)?;
    let mut ethertype = ethernet.ethertype();
    let mut rest = ethernet.into_payload();

    let mut vlans = [offloaded_vlan, None];
    let mut tags = usize::from(offloaded_vlan.is_some());
    while ethertype.is_vlan() {
        let slot = vlans.get_mut(tags).ok_or(DropReason::TooManyVlanTags)?;
        let tag = VlanHeader::new_checked(rest)?;
        *slot = Some(VlanTag {
            tpid: ethertype.0,
            tci: tag.tci(),
        });
        tags += 1;
        ethertype = tag.ethertype();
        rest = tag.into_payload();
    }
    if ethertype != EtherType::IPV4 {
        return match ethertype {
            EtherType::IPV6 => parse_ipv6(rest, vlans),
            _ => Err(DropReason::NotIp),
        };
    }

    // The version is checked before the lengths: in a packet that is not IPv4 the IHL nibble
    // means nothing, and "not version 4" is the more useful count.
    if rest.len() < Ipv4Packet::<&[u8]>::MIN_HEADER_LEN {
        return Err(DropReason::Ipv4Truncated);
    }
    let ip = Ipv4Packet::new_unchecked(rest);
    if ip.version() != 4 {
        return Err(DropReason::Ipv4BadVersion);
    }
    ip.check_len()?;
    // The checksum first: until it verifies, the flags and protocol cannot be trusted.
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    if ip.is_fragment() {
        return Err(DropReason::Ipv4Fragment);
    }
    if ip.protocol() != PROTOCOL_UDP {
        return Err(DropReason::NotUdp);
    }
    let udp = UdpPacket::new_checked(ip.into_payload())?;

    Ok(Datagram {
        vlans,
        source: IpBits::from(ip.src_addr()),
        destination: IpBits::from(ip.dst_addr()),
        ipv6: false,
        source_port: udp.src_port(),
        destination_port: udp.dst_port(),
        ttl: ip.ttl(),
        tos: ip.tos(),
        ip_id: ip.ident(),
        udp_checksum: udp.checksum(),
        payload: udp.into_payload(),
    })
}

/// The IPv6 half of [`parse`], from the fixed header on.
// Inlined into `parse` like the IPv4 half: out of line, it returned its Datagram through
// memory, and the two halves then met in that memory, so that the IPv4 half stored its
// Datagram too and the caller read it back (with loads wider than the stores, which do not
// forward): about a quarter of the IPv4 data path's time.
#[inline(always)]
fn parse_ipv6(rest: &[u8], vlans: [Option<VlanTag>; 2]) -> Result<Datagram<'_>, DropReason> {
    // The version first, as for IPv4: the more useful count for what is not IPv6 at all.
    if rest.len() < Ipv6Packet::<&[u8]>::HEADER_LEN {
        return Err(DropReason::Ipv6Truncated);
    }
    let ip = Ipv6Packet::new_unchecked(rest);
    if ip.version() != 6 {
        return Err(DropReason::Ipv6BadVersion);
    }
    ip.check_len()?;
    let (source, destination) = (ip.src_addr(), ip.dst_addr());
    let (ttl, tos, first) = (ip.hop_limit(), ip.traffic_class(), ip.next_header());
    let payload = ip.into_payload();
    let (offset, next) = ipv6::udp_offset(first, payload)?;
    if next != PROTOCOL_UDP {
        return Err(DropReason::NotUdp);
    }
    // `udp_offset` keeps the offset within the payload.
    let udp = UdpPacket::new_checked(&payload[offset..])?;
    if udp.checksum() == 0 {
        return Err(DropReason::Ipv6UdpChecksumZero);
    }
    Ok(Datagram {
        vlans,
        source: IpBits::from(source),
        destination: IpBits::from(destination),
        ipv6: true,
        source_port: udp.src_port(),
        destination_port: udp.dst_port(),
        ttl,
        tos,
        ip_id: 0,
        udp_checksum: udp.checksum(),
        payload: udp.into_payload(),
    })
}

#[cfg(test)]
mod tests;
