//! One pass over a received frame: from Ethernet to the UDP payload, or the reason to drop it.

use std::net::Ipv4Addr;

use super::ethernet::{EtherType, EthernetFrame, VlanHeader};
use super::ipv4::{Ipv4Packet, PROTOCOL_UDP};
use super::udp::UdpPacket;
use super::{DropReason, VlanTag};

/// Everything the relay needs from one received UDP/IPv4 frame, borrowed from the frame.
///
/// Produced by [`parse`] only after every check passed, so the rest of the data path (rule
/// lookup, [`crate::replicate::FrameTemplate::write`]) trusts its fields without re-checking.
/// The fields are plain values so that a rule lookup reads them without going through views.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// VLAN tags, outer first: an offloaded tag from the ring's frame header, then the tags in the
    /// frame. Unused slots are `None`, and a `None` is never followed by a `Some`.
    pub vlans: [Option<VlanTag>; 2],
    /// IPv4 source address.
    pub source: Ipv4Addr,
    /// IPv4 destination address: the group (or local unicast address) rules match on.
    pub destination: Ipv4Addr,
    /// UDP source port.
    pub source_port: u16,
    /// UDP destination port.
    pub destination_port: u16,
    /// IPv4 time to live as received.
    pub ttl: u8,
    /// IPv4 type-of-service byte as received (DSCP and ECN).
    pub tos: u8,
    /// IPv4 identification as received.
    pub ip_id: u16,
    /// UDP checksum as received; 0 means the sender computed none. Not verified by [`parse`]
    /// (that would cost a pass over the payload); an incremental update keeps a wrong one wrong.
    pub udp_checksum: u16,
    /// The UDP payload, exactly as long as the UDP length field says.
    pub payload: &'a [u8],
}

impl Datagram<'_> {
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
/// `TP_STATUS_VLAN_TPID_VALID` clear, the caller passes 0x8100.) Accepted: Ethernet II, then up to two 802.1Q/802.1ad tags in
/// total, then IPv4 with IHL 5–15 (options skipped), a total length between its header length and
/// the captured length (bytes after it are Ethernet padding and ignored), a valid header checksum
/// and no fragmentation, then UDP whose length equals the IPv4 payload length.
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
/// assert_eq!(datagram.destination, std::net::Ipv4Addr::new(239, 1, 1, 1));
/// assert_eq!(datagram.destination_port, 5004);
/// assert_eq!(datagram.payload, b"hi");
///
/// // The same frame cut inside the UDP header: the IPv4 total length no longer fits.
/// assert_eq!(wire::parse(&frame[..40], None).unwrap_err(), DropReason::Ipv4PacketTruncated);
/// # Ok::<(), DropReason>(())
/// ```
#[inline]
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
        return Err(DropReason::NotIpv4);
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
        source: ip.src_addr(),
        destination: ip.dst_addr(),
        source_port: udp.src_port(),
        destination_port: udp.dst_port(),
        ttl: ip.ttl(),
        tos: ip.tos(),
        ip_id: ip.ident(),
        udp_checksum: udp.checksum(),
        payload: udp.into_payload(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A frame captured from real traffic: a Linux UDP socket in a network namespace sent
    /// "fanout-relay test frame" from 192.0.2.1:40000 to 239.1.2.3:5004 (TTL 4, TOS 0xb8) out of
    /// one end of a veth pair with checksum offload off, and an AF_PACKET socket on the other end
    /// read it. Note the DF flag the kernel sets and the complete UDP checksum.
    const CAPTURED: &str = "01005e010203020000000a01080045b80033d5b740000411ed44c0000201ef010203\
                            9c40138c001f375866616e6f75742d72656c61792074657374206672616d65";

    fn captured() -> Vec<u8> {
        hex(CAPTURED)
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("test hex is valid"))
            .collect()
    }

    /// Recomputes the IPv4 header checksum of a frame whose IP header starts at `offset`.
    fn refill(frame: &mut [u8], offset: usize) {
        Ipv4Packet::new_unchecked(&mut frame[offset..]).fill_checksum();
    }

    /// The captured frame with `tags` inserted after the MAC addresses.
    fn with_tags(tags: &[(u16, u16)]) -> Vec<u8> {
        let plain = captured();
        let mut frame = plain[..12].to_vec();
        for &(tpid, tci) in tags {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&tci.to_be_bytes());
        }
        frame.extend_from_slice(&plain[12..]);
        frame
    }

    #[test]
    fn captured_frame_every_field() {
        let frame = captured();
        let datagram = parse(&frame, None).unwrap();
        assert_eq!(datagram.vlans, [None, None]);
        assert_eq!(datagram.outer_vid(), None);
        assert_eq!(datagram.source, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(datagram.destination, Ipv4Addr::new(239, 1, 2, 3));
        assert_eq!(datagram.source_port, 40000);
        assert_eq!(datagram.destination_port, 5004);
        assert_eq!(datagram.ttl, 4);
        assert_eq!(datagram.tos, 0xb8);
        assert_eq!(datagram.ip_id, 0xd5b7);
        assert_eq!(datagram.udp_checksum, 0x3758);
        assert_eq!(datagram.payload, b"fanout-relay test frame");
        assert_eq!(datagram.udp_len(), 31);
        // The captured checksum is the sender's own, so it must verify.
        let udp = UdpPacket::new_checked(&frame[34..]).unwrap();
        assert!(udp.verify_checksum(datagram.source, datagram.destination));
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        let mut frame = captured();
        frame.extend_from_slice(&[0xee; 12]);
        assert_eq!(
            parse(&frame, None).unwrap().payload,
            b"fanout-relay test frame"
        );
    }

    #[test]
    fn options_are_skipped() {
        let plain = captured();
        let mut frame = plain[..34].to_vec();
        frame.extend_from_slice(&[0x01, 0x01, 0x01, 0x00, 0x94, 0x04, 0x00, 0x00]); // NOPs, EOL, Router Alert
        frame.extend_from_slice(&plain[34..]);
        frame[14] = 0x47;
        frame[16..18].copy_from_slice(&(0x33u16 + 8).to_be_bytes());
        refill(&mut frame, 14);
        let datagram = parse(&frame, None).unwrap();
        assert_eq!(datagram.destination_port, 5004);
        assert_eq!(datagram.payload, b"fanout-relay test frame");
    }

    #[test]
    fn vlan_tags_in_frame() {
        let one = with_tags(&[(0x8100, 0x2064)]);
        let datagram = parse(&one, None).unwrap();
        assert_eq!(
            datagram.vlans,
            [
                Some(VlanTag {
                    tpid: 0x8100,
                    tci: 0x2064
                }),
                None
            ]
        );
        assert_eq!(datagram.outer_vid(), Some(100));
        assert_eq!(datagram.payload, b"fanout-relay test frame");

        let two = with_tags(&[(0x88a8, 0x0007), (0x8100, 0x00c8)]);
        let datagram = parse(&two, None).unwrap();
        assert_eq!(
            datagram.vlans,
            [
                Some(VlanTag {
                    tpid: 0x88a8,
                    tci: 7
                }),
                Some(VlanTag {
                    tpid: 0x8100,
                    tci: 200
                })
            ]
        );
        assert_eq!(datagram.destination, Ipv4Addr::new(239, 1, 2, 3));
    }

    #[test]
    fn offloaded_tag_is_the_outer_one() {
        let offloaded = VlanTag {
            tpid: 0x88a8,
            tci: 10,
        };
        let plain = captured();
        let datagram = parse(&plain, Some(offloaded)).unwrap();
        assert_eq!(datagram.vlans, [Some(offloaded), None]);

        let inner = with_tags(&[(0x8100, 20)]);
        let datagram = parse(&inner, Some(offloaded)).unwrap();
        assert_eq!(
            datagram.vlans,
            [
                Some(offloaded),
                Some(VlanTag {
                    tpid: 0x8100,
                    tci: 20
                })
            ]
        );

        let two = with_tags(&[(0x8100, 20), (0x8100, 30)]);
        assert_eq!(
            parse(&two, Some(offloaded)).unwrap_err(),
            DropReason::TooManyVlanTags
        );
    }

    /// One hand-made frame per reason; the last assertion proves no reason is left untested.
    #[test]
    fn every_drop_reason() {
        let good = captured();
        let mut seen = HashSet::new();
        let mut check = |frame: &[u8], offloaded: Option<VlanTag>, expected: DropReason| {
            assert_eq!(parse(frame, offloaded).unwrap_err(), expected);
            seen.insert(expected);
        };

        check(&good[..13], None, DropReason::EthernetTruncated);
        let tagged = with_tags(&[(0x8100, 1)]);
        check(&tagged[..16], None, DropReason::VlanTruncated);
        check(
            &with_tags(&[(0x8100, 1), (0x8100, 2), (0x8100, 3)]),
            None,
            DropReason::TooManyVlanTags,
        );

        let mut ipv6 = good.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        check(&ipv6, None, DropReason::NotIpv4);

        check(&good[..14 + 19], None, DropReason::Ipv4Truncated);
        let mut long_ihl = good.clone();
        long_ihl[14] = 0x4f; // 60-byte header in a 51-byte packet
        check(&long_ihl[..14 + 40], None, DropReason::Ipv4Truncated);

        let mut version = good.clone();
        version[14] = 0x65;
        check(&version, None, DropReason::Ipv4BadVersion);

        let mut ihl = good.clone();
        ihl[14] = 0x44;
        check(&ihl, None, DropReason::Ipv4BadIhl);

        let mut total = good.clone();
        total[16..18].copy_from_slice(&19u16.to_be_bytes());
        check(&total, None, DropReason::Ipv4BadTotalLength);

        check(
            &good[..good.len() - 1],
            None,
            DropReason::Ipv4PacketTruncated,
        );

        let mut checksum = good.clone();
        checksum[24] ^= 0x01;
        check(&checksum, None, DropReason::Ipv4BadChecksum);
        let mut ttl = good.clone();
        ttl[22] = 3; // a changed field without a new checksum
        check(&ttl, None, DropReason::Ipv4BadChecksum);

        let mut more = good.clone();
        more[20] = 0x20; // MF, offset 0
        refill(&mut more, 14);
        check(&more, None, DropReason::Ipv4Fragment);
        let mut last = good.clone();
        last[20..22].copy_from_slice(&[0x00, 0xb9]); // offset 185 * 8, no MF: the last fragment
        refill(&mut last, 14);
        check(&last, None, DropReason::Ipv4Fragment);

        let mut tcp = good.clone();
        tcp[23] = 6;
        refill(&mut tcp, 14);
        check(&tcp, None, DropReason::NotUdp);

        let mut short = good.clone();
        short[16..18].copy_from_slice(&24u16.to_be_bytes());
        refill(&mut short, 14);
        check(&short, None, DropReason::UdpTruncated);

        let mut udp_len = good.clone();
        udp_len[38..40].copy_from_slice(&30u16.to_be_bytes());
        check(&udp_len, None, DropReason::UdpBadLength);
        udp_len[38..40].copy_from_slice(&7u16.to_be_bytes());
        check(&udp_len, None, DropReason::UdpBadLength);

        // The ring's truncation is seen where the ring is read, and two tags are refused by
        // the VLAN key, not by the parser.
        let all: HashSet<DropReason> = DropReason::ALL
            .into_iter()
            .filter(|reason| {
                ![DropReason::RingTruncated, DropReason::DoubleTagged].contains(reason)
            })
            .collect();
        assert_eq!(
            seen, all,
            "a DropReason without a malformed frame in this test"
        );
    }

    #[test]
    fn empty_payload() {
        let mut frame = captured()[..42].to_vec();
        frame[16..18].copy_from_slice(&28u16.to_be_bytes());
        refill(&mut frame, 14);
        frame[38..40].copy_from_slice(&8u16.to_be_bytes());
        let datagram = parse(&frame, None).unwrap();
        assert!(datagram.payload.is_empty());
        assert_eq!(datagram.udp_len(), 8);
    }
}
