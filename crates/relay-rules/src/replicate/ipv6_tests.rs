//! Output frames of IPv6 and of both translations, checked against an independent checksum
//! computation over the written frame.

use super::*;
use crate::test_frames::{Extension, Ipv6Udp, ipv6_frame, udp_verifies};
use crate::wire::{self, UdpPacket};
use std::net::{Ipv4Addr, Ipv6Addr};

const GROUP6: &str = "ff3e::8000:42";
const SOURCE6: &str = "2001:db8:1::1";

fn spec(
    destination: IpAddr,
    source: IpAddr,
    vlan: Option<u16>,
    ttl: Ttl,
    dscp: Option<u8>,
) -> TemplateSpec {
    TemplateSpec {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: multicast_mac(destination),
        vlan,
        source,
        destination,
        source_port: None,
        destination_port: 6000,
        ttl,
        dscp,
        mtu: 1500,
    }
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

/// An IPv4 input frame from 192.0.2.9:4000 to 239.1.1.1:5004 with TTL 9 and TOS 0xb9, with or
/// without a UDP checksum.
fn ipv4_input(checksum: bool) -> Vec<u8> {
    let payload = b"from four, to six";
    let mut frame = vec![0x01, 0x00, 0x5e, 1, 1, 1, 2, 0, 0, 0, 0, 9, 0x08, 0x00];
    let total = (20 + 8 + payload.len()) as u16;
    frame.extend_from_slice(&[0x45, 0xb9]);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&[0, 7, 0, 0, 9, 17, 0, 0, 192, 0, 2, 9, 239, 1, 1, 1]);
    frame.extend_from_slice(&[0x0f, 0xa0, 0x13, 0x8c]);
    frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
    if checksum {
        UdpPacket::new_unchecked(&mut frame[34..])
            .fill_checksum(Ipv4Addr::new(192, 0, 2, 9), Ipv4Addr::new(239, 1, 1, 1));
    }
    frame
}

/// Writes `input` through a template of `spec` and returns the output frame.
fn relay(spec: &TemplateSpec, input: &[u8]) -> Vec<u8> {
    let datagram = wire::parse(input, None).expect("the input parses");
    let template = FrameTemplate::new(spec);
    let mut slot = [0u8; 2048];
    let len = template.write(&datagram, 0x1234, &mut slot).expect("fits");
    slot[..len].to_vec()
}

#[test]
fn ipv6_to_ipv6_byte_exact_with_a_verified_checksum() {
    let extensions = [Extension { kind: 0, len: 8 }];
    let input = ipv6_frame(
        &Ipv6Udp {
            traffic_class: 0xb9,
            hop_limit: 9,
            extensions: &extensions,
            payload: b"six to six",
            ..Default::default()
        },
        None,
    );
    let spec = spec(
        v6(GROUP6).into(),
        v6(SOURCE6).into(),
        Some(100),
        Ttl::Decrement,
        None,
    );
    let out = relay(&spec, &input);
    let mut expected = vec![
        0x33, 0x33, 0x80, 0, 0, 0x42, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0, 100,
    ];
    expected.extend_from_slice(&[0x86, 0xdd]);
    // Version 6, traffic class 0xb8 (DSCP kept, ECN cleared), flow label 0.
    expected.extend_from_slice(&[0x6b, 0x80, 0, 0, 0, 18, 17, 8]);
    expected.extend_from_slice(&v6(SOURCE6).octets());
    expected.extend_from_slice(&v6(GROUP6).octets());
    expected.extend_from_slice(&[0x0f, 0xa0, 0x17, 0x70, 0, 18]);
    let checksum_at = expected.len();
    expected.extend_from_slice(&out[checksum_at..checksum_at + 2]);
    expected.extend_from_slice(b"six to six");
    assert_eq!(out, expected);
    assert!(udp_verifies(v6(SOURCE6), v6(GROUP6), &out[18 + 40..]));
    let parsed = wire::parse(&out, None).expect("the output parses");
    assert_eq!(parsed.ttl, 8);
    assert_eq!(parsed.outer_vid(), Some(100));
}

#[test]
fn ipv4_to_ipv6_updates_or_computes_the_checksum() {
    for with_checksum in [true, false] {
        let input = ipv4_input(with_checksum);
        let spec = spec(
            v6(GROUP6).into(),
            v6(SOURCE6).into(),
            None,
            Ttl::Fixed(5),
            Some(10),
        );
        let out = relay(&spec, &input);
        let parsed = wire::parse(&out, None).expect("the output parses");
        assert_eq!(parsed.destination_addr(), v6(GROUP6));
        assert_eq!(parsed.source_addr(), v6(SOURCE6));
        assert_eq!((parsed.ttl, parsed.tos), (5, 10 << 2));
        assert_eq!(parsed.payload, b"from four, to six");
        assert_ne!(parsed.udp_checksum, 0);
        assert!(
            udp_verifies(v6(SOURCE6), v6(GROUP6), &out[14 + 40..]),
            "checksum {with_checksum}"
        );
    }
    // A wrong checksum on input stays wrong on output: updated, not recomputed.
    let mut corrupt = ipv4_input(true);
    corrupt[14 + 28] ^= 0x01;
    let spec = spec(
        v6(GROUP6).into(),
        v6(SOURCE6).into(),
        None,
        Ttl::Fixed(5),
        None,
    );
    let out = relay(&spec, &corrupt);
    assert!(!udp_verifies(v6(SOURCE6), v6(GROUP6), &out[14 + 40..]));
}

#[test]
fn ipv6_to_ipv4_with_a_verified_checksum() {
    let input = ipv6_frame(
        &Ipv6Udp {
            traffic_class: 0x2a,
            hop_limit: 3,
            ..Default::default()
        },
        None,
    );
    let (group, source) = (Ipv4Addr::new(239, 2, 2, 2), Ipv4Addr::new(10, 0, 0, 1));
    let spec = spec(group.into(), source.into(), None, Ttl::Decrement, None);
    let out = relay(&spec, &input);
    let parsed = wire::parse(&out, None).expect("the output parses, header checksum included");
    assert_eq!(
        (parsed.destination_addr(), parsed.source_addr()),
        (group.into(), source.into())
    );
    assert_eq!((parsed.ttl, parsed.tos, parsed.ip_id), (2, 0x28, 0x1234));
    assert_eq!(&out[..6], &[0x01, 0x00, 0x5e, 2, 2, 2]);
    let udp = UdpPacket::new_checked(&out[34..]).unwrap();
    assert_ne!(udp.checksum(), 0);
    assert!(udp.verify_checksum(source, group));
}

#[test]
fn ipv6_limits_and_expiry() {
    let input = ipv6_frame(
        &Ipv6Udp {
            hop_limit: 1,
            ..Default::default()
        },
        None,
    );
    let datagram = wire::parse(&input, None).unwrap();
    let mut slot = [0u8; 2048];
    let decrement = FrameTemplate::new(&spec(
        v6(GROUP6).into(),
        v6(SOURCE6).into(),
        None,
        Ttl::Decrement,
        None,
    ));
    assert!(decrement.is_ipv6());
    assert_eq!(decrement.header_len(), 14 + 40 + 8);
    assert_eq!(
        decrement.write(&datagram, 0, &mut slot),
        Err(RewriteError::TtlExpired { ttl: 1 })
    );
    let mut small = spec(
        v6(GROUP6).into(),
        v6(SOURCE6).into(),
        None,
        Ttl::Fixed(4),
        None,
    );
    small.mtu = 40 + 8 + 1;
    assert!(matches!(
        FrameTemplate::new(&small).write(&datagram, 0, &mut slot),
        Err(RewriteError::ExceedsMtu {
            packet: 50,
            mtu: 49
        })
    ));
    let fixed = FrameTemplate::new(&spec(
        v6(GROUP6).into(),
        v6(SOURCE6).into(),
        None,
        Ttl::Fixed(4),
        None,
    ));
    assert!(matches!(
        fixed.write(&datagram, 0, &mut slot[..20]),
        Err(RewriteError::BufferTooSmall { .. })
    ));
}

#[test]
fn ipv6_segmented_frame_headers_cover_every_datagram() {
    let input = ipv6_frame(
        &Ipv6Udp {
            payload: b"abcd",
            ..Default::default()
        },
        None,
    );
    let datagram = wire::parse(&input, None).unwrap();
    let template = FrameTemplate::new(&spec(
        v6(GROUP6).into(),
        v6(SOURCE6).into(),
        None,
        Ttl::Fixed(4),
        None,
    ));
    let mut slot = [0u8; 4096];
    let len = template.write(&datagram, 0, &mut slot).unwrap();
    let mut segments = template.segments(&datagram, len);
    assert!(template.append_segment(&mut segments, &datagram, &mut slot));
    assert!(template.append_segment(&mut segments, &datagram, &mut slot));
    let split = segments.finish(&mut slot).expect("three datagrams");
    assert_eq!((split.udp_offset, split.segment_size), (14 + 40, 4));
    let frame = &slot[..segments.len()];
    assert_eq!(frame.len(), 14 + 40 + 8 + 12);
    let udp_len = 8 + 12u16;
    assert_eq!(
        &frame[14 + 4..14 + 6],
        &udp_len.to_be_bytes(),
        "payload length"
    );
    assert_eq!(&frame[54 + 4..54 + 6], &udp_len.to_be_bytes(), "UDP length");
    // The partial checksum: the folded IPv6 pseudo-header sum, computed here word by word.
    let words =
        |address: Ipv6Addr| -> u64 { address.segments().iter().map(|&w| u64::from(w)).sum() };
    let mut pseudo = words(v6(SOURCE6)) + words(v6(GROUP6)) + 17 + u64::from(udp_len);
    while pseudo > 0xffff {
        pseudo = (pseudo & 0xffff) + (pseudo >> 16);
    }
    assert_eq!(&frame[54 + 6..54 + 8], &(pseudo as u16).to_be_bytes());
    assert_eq!(&frame[62..], b"abcdabcdabcd");
}
