//! The parser on captured and hand-made frames of both families.

use super::*;
use crate::test_frames::{Extension, Ipv6Udp, ipv6_frame};
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

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
    assert_eq!(datagram.source_addr(), Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(datagram.destination_addr(), Ipv4Addr::new(239, 1, 2, 3));
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
    assert!(udp.verify_checksum(datagram.source_addr(), datagram.destination_addr()));
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
    assert_eq!(datagram.destination_addr(), Ipv4Addr::new(239, 1, 2, 3));
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

    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    check(&arp, None, DropReason::NotIp);
    let mut ipv4_as_ipv6 = good.clone();
    ipv4_as_ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    check(&ipv4_as_ipv6, None, DropReason::Ipv6BadVersion);

    let v6 = ipv6_frame(&Ipv6Udp::default(), None);
    check(&v6[..14 + 39], None, DropReason::Ipv6Truncated);
    check(&v6[..v6.len() - 1], None, DropReason::Ipv6PacketTruncated);
    let mut jumbo = v6.clone();
    jumbo[18..20].fill(0);
    check(&jumbo, None, DropReason::Ipv6Jumbogram);
    let options = [Extension { kind: 60, len: 16 }];
    let mut long_option = ipv6_frame(
        &Ipv6Udp {
            extensions: &options,
            ..Default::default()
        },
        None,
    );
    long_option[14 + 41] = 4; // 40 bytes claimed where 16 and the UDP datagram follow
    check(&long_option, None, DropReason::Ipv6ExtensionHeaderTruncated);
    let five = [Extension { kind: 60, len: 8 }; 5];
    check(
        &ipv6_frame(
            &Ipv6Udp {
                extensions: &five,
                ..Default::default()
            },
            None,
        ),
        None,
        DropReason::Ipv6TooManyExtensionHeaders,
    );
    let fragment = [
        Extension { kind: 0, len: 8 },
        Extension { kind: 44, len: 8 },
    ];
    check(
        &ipv6_frame(
            &Ipv6Udp {
                extensions: &fragment,
                ..Default::default()
            },
            None,
        ),
        None,
        DropReason::Ipv6Fragment,
    );
    let mut no_checksum = v6.clone();
    no_checksum[14 + 46..14 + 48].fill(0);
    check(&no_checksum, None, DropReason::Ipv6UdpChecksumZero);
    let mut icmp = v6.clone();
    icmp[14 + 6] = 58;
    check(&icmp, None, DropReason::NotUdp);
    let mut v6_udp_len = v6.clone();
    v6_udp_len[14 + 44..14 + 46].copy_from_slice(&9u16.to_be_bytes());
    check(&v6_udp_len, None, DropReason::UdpBadLength);

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
        .filter(|reason| ![DropReason::RingTruncated, DropReason::DoubleTagged].contains(reason))
        .collect();
    assert_eq!(
        seen, all,
        "a DropReason without a malformed frame in this test"
    );
}

#[test]
fn ipv6_every_field_through_extension_headers_and_tags() {
    let extensions = [
        Extension { kind: 0, len: 8 },
        Extension { kind: 43, len: 24 },
        Extension { kind: 60, len: 16 },
    ];
    let spec = Ipv6Udp {
        source: "2001:db8::7".parse().unwrap(),
        destination: "ff3e::8000:5".parse().unwrap(),
        source_port: 40000,
        destination_port: 5006,
        hop_limit: 3,
        traffic_class: 0xb9,
        extensions: &extensions,
        payload: b"over six",
    };
    for vlan in [None, Some(100)] {
        let mut frame = ipv6_frame(&spec, vlan);
        frame.extend_from_slice(&[0xee; 6]); // padding, ignored
        let datagram = parse(&frame, None).unwrap();
        assert!(datagram.is_ipv6());
        assert_eq!(datagram.outer_vid(), vlan);
        assert_eq!(datagram.source_addr(), spec.source);
        assert_eq!(datagram.destination_addr(), spec.destination);
        assert_eq!(datagram.source_port, 40000);
        assert_eq!(datagram.destination_port, 5006);
        assert_eq!(datagram.ttl, 3);
        assert_eq!(datagram.tos, 0xb9);
        assert_eq!(datagram.ip_id, 0);
        assert_ne!(datagram.udp_checksum, 0);
        assert_eq!(datagram.payload, b"over six");
        let udp_at = frame.len() - 6 - 16;
        let udp = UdpPacket::new_checked(&frame[udp_at..frame.len() - 6]).unwrap();
        assert!(udp.verify_checksum(spec.source, spec.destination));
    }
    // An offloaded tag and one in the frame, as for IPv4.
    let tag = VlanTag {
        tpid: 0x8100,
        tci: 7,
    };
    let frame = ipv6_frame(&spec, Some(20));
    let datagram = parse(&frame, Some(tag)).unwrap();
    assert_eq!(datagram.vlans[0], Some(tag));
    assert_eq!(datagram.vlans[1].map(VlanTag::vid), Some(20));
    assert_eq!(
        datagram.destination_addr(),
        "ff3e::8000:5".parse::<Ipv6Addr>().unwrap()
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
