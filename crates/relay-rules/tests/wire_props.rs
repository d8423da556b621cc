//! Properties of frame parsing and output rewriting over generated frames.
//!
//! Frames are built with the crate's own views from generated fields, so every property holds
//! for frames the parser has never seen as literals; the checksums the outputs are compared
//! with come from a plain full computation written here, independent of the crate.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use relay_rules::replicate::{FrameTemplate, RewriteError, TemplateSpec};
use relay_rules::wire::{
    self, EtherType, EthernetFrame, Ipv4Packet, PROTOCOL_UDP, UdpPacket, VlanHeader, VlanTag,
};

/// The fields of a valid input frame.
#[derive(Debug, Clone)]
struct InputFrame {
    offloaded: Option<VlanTag>,
    tags: Vec<VlanTag>,
    source: Ipv4Addr,
    destination: Ipv4Addr,
    source_port: u16,
    destination_port: u16,
    ttl: u8,
    tos: u8,
    ip_id: u16,
    dont_frag: bool,
    /// IPv4 option words (4 bytes each), 0..=10.
    options: Vec<[u8; 4]>,
    with_checksum: bool,
    payload: Vec<u8>,
    /// Bytes after the IP packet (Ethernet padding or capture slack).
    padding: usize,
}

fn vlan_tag() -> impl Strategy<Value = VlanTag> {
    (prop_oneof![Just(0x8100u16), Just(0x88a8u16)], any::<u16>())
        .prop_map(|(tpid, tci)| VlanTag { tpid, tci })
}

fn input_frame() -> impl Strategy<Value = InputFrame> {
    (
        (
            prop::option::of(vlan_tag()),
            prop::collection::vec(vlan_tag(), 0..=2),
        ),
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>(),
        ),
        (any::<u8>(), any::<u8>(), any::<u16>(), any::<bool>()),
        prop::collection::vec(any::<[u8; 4]>(), 0..=10),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..300),
        0usize..20,
    )
        .prop_map(
            |(
                (offloaded, mut tags),
                (src, dst, sport, dport),
                (ttl, tos, ip_id, df),
                options,
                csum,
                payload,
                padding,
            )| {
                if offloaded.is_some() {
                    tags.truncate(1);
                }
                InputFrame {
                    offloaded,
                    tags,
                    source: Ipv4Addr::from(src),
                    destination: Ipv4Addr::from(dst),
                    source_port: sport,
                    destination_port: dport,
                    ttl,
                    tos,
                    ip_id,
                    dont_frag: df,
                    options,
                    with_checksum: csum,
                    payload,
                    padding,
                }
            },
        )
}

/// Builds the frame bytes of `input` with the crate's setters.
fn build(input: &InputFrame) -> Vec<u8> {
    let ip_offset = 14 + 4 * input.tags.len();
    let header_len = 20 + 4 * input.options.len();
    let udp_len = 8 + input.payload.len();
    let total_len = header_len + udp_len;
    let mut frame = vec![0u8; ip_offset + total_len + input.padding];

    let mut ethernet = EthernetFrame::new_unchecked(&mut frame[..]);
    ethernet.set_dst_addr([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]);
    ethernet.set_src_addr([0x02, 0, 0, 0, 0, 0x01]);
    let mut offset = 12;
    for tag in &input.tags {
        frame[offset..offset + 2].copy_from_slice(&tag.tpid.to_be_bytes());
        VlanHeader::new_unchecked(&mut frame[offset + 2..]).set_tci(tag.tci);
        offset += 4;
    }
    frame[offset..offset + 2].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());

    let mut ip = Ipv4Packet::new_unchecked(&mut frame[ip_offset..]);
    ip.set_version_and_header_len(header_len);
    ip.set_tos(input.tos);
    ip.set_total_len(total_len as u16);
    ip.set_ident(input.ip_id);
    ip.set_flags_and_offset(input.dont_frag, false, 0);
    ip.set_ttl(input.ttl);
    ip.set_protocol(PROTOCOL_UDP);
    ip.set_src_addr(input.source);
    ip.set_dst_addr(input.destination);
    for (i, option) in input.options.iter().enumerate() {
        let at = ip_offset + 20 + 4 * i;
        frame[at..at + 4].copy_from_slice(option);
    }
    Ipv4Packet::new_unchecked(&mut frame[ip_offset..]).fill_checksum();

    let udp_offset = ip_offset + header_len;
    let mut udp = UdpPacket::new_unchecked(&mut frame[udp_offset..udp_offset + udp_len]);
    udp.set_src_port(input.source_port);
    udp.set_dst_port(input.destination_port);
    udp.set_len(udp_len as u16);
    udp.payload_mut().copy_from_slice(&input.payload);
    if input.with_checksum {
        udp.fill_checksum(input.source, input.destination);
    }
    frame
}

fn template_spec() -> impl Strategy<Value = TemplateSpec> {
    (
        (
            any::<[u8; 6]>(),
            any::<[u8; 6]>(),
            prop::option::of(1u16..4095),
        ),
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            prop::option::of(any::<u16>()),
            any::<u16>(),
        ),
        (
            1u8..=255,
            prop::option::of(0u8..64),
            prop_oneof![68u32..400, Just(1500u32), Just(9000u32)],
        ),
    )
        .prop_map(
            |((src_mac, dst_mac, vlan), (src, dst, sport, dport), (ttl, dscp, mtu))| TemplateSpec {
                src_mac,
                dst_mac,
                vlan,
                source: Ipv4Addr::from(src).into(),
                destination: Ipv4Addr::from(dst).into(),
                source_port: sport,
                destination_port: dport,
                ttl: relay_rules::Ttl::Fixed(ttl),
                dscp,
                mtu,
            },
        )
}

/// The Internet checksum of `data` computed the plain way: sum all words, fold, complement.
fn full_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        sum += u64::from(pair[0]) << 8 | u64::from(*pair.get(1).unwrap_or(&0));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The UDP checksum a sender computing it in full would put on `udp` (checksum field ignored).
fn full_udp_checksum(source: IpAddr, destination: IpAddr, udp: &[u8]) -> u16 {
    let octets = |address: IpAddr| match address {
        IpAddr::V4(address) => address.octets().to_vec(),
        IpAddr::V6(address) => address.octets().to_vec(),
    };
    let mut header = udp[..8].to_vec();
    header[6..8].fill(0);
    let len = (udp.len() as u16).to_be_bytes();
    let pseudo = [
        &octets(source)[..],
        &octets(destination)[..],
        &[0, PROTOCOL_UDP],
        &len[..],
    ]
    .concat();
    match full_checksum(&[&pseudo, &header, &udp[8..]]) {
        0 => 0xffff,
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..128),
        offloaded in prop::option::of(vlan_tag()),
    ) {
        let _ = wire::parse(&bytes, offloaded);
    }

    /// Bytes after an IPv6 Ethernet header, with a version 6 first nibble and, where the next
    /// headers are, extension header types the walk follows: every path of the IPv6 parser,
    /// extension headers of any length (running past the packet, or past its end), fragments and
    /// truncated UDP included.
    #[test]
    fn parse_never_panics_on_arbitrary_ipv6_packets(
        mut packet in prop::collection::vec(any::<u8>(), 0..160),
        chain in prop::collection::vec(prop_oneof![Just(0u8), Just(43), Just(44), Just(60), Just(17), any::<u8>()], 0..6),
        offloaded in prop::option::of(vlan_tag()),
    ) {
        if let Some(first) = packet.first_mut() {
            *first = 0x60 | (*first & 0x0f);
        }
        if let (Some(&kind), Some(next)) = (chain.first(), packet.get_mut(6)) {
            *next = kind;
        }
        // The later types go where the headers would be if each were eight bytes long.
        for (index, &kind) in chain.iter().enumerate().skip(1) {
            if let Some(next) = packet.get_mut(40 + 8 * (index - 1)) {
                *next = kind;
            }
        }
        let mut frame = vec![0x33, 0x33, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        frame.extend_from_slice(&packet);
        if let Ok(datagram) = wire::parse(&frame, offloaded) {
            prop_assert_eq!(datagram.udp_len(), 8 + datagram.payload.len());
            prop_assert!(datagram.destination_addr().is_ipv6());
        }
    }

    /// Random bytes rarely get past the Ethernet type; a valid frame with a few bytes changed
    /// and its end cut reaches every later check.
    #[test]
    fn parse_never_panics_on_damaged_frames(
        input in input_frame(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut frame = build(&input);
        for (index, byte) in damage {
            let at = index.index(frame.len());
            frame[at] = byte;
        }
        let len = cut.index(frame.len() + 1);
        if let Ok(datagram) = wire::parse(&frame[..len], input.offloaded) {
            prop_assert_eq!(datagram.udp_len(), 8 + datagram.payload.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_reads_what_was_built(input in input_frame()) {
        let frame = build(&input);
        let datagram = wire::parse(&frame, input.offloaded).expect("a built frame is valid");
        let vlans: Vec<VlanTag> = input.offloaded.iter().chain(&input.tags).copied().collect();
        prop_assert_eq!(datagram.vlans, [vlans.first().copied(), vlans.get(1).copied()]);
        prop_assert_eq!(datagram.source_addr(), input.source);
        prop_assert_eq!(datagram.destination_addr(), input.destination);
        prop_assert_eq!(datagram.source_port, input.source_port);
        prop_assert_eq!(datagram.destination_port, input.destination_port);
        prop_assert_eq!(datagram.ttl, input.ttl);
        prop_assert_eq!(datagram.tos, input.tos);
        prop_assert_eq!(datagram.ip_id, input.ip_id);
        prop_assert_eq!(datagram.udp_checksum == 0, !input.with_checksum);
        prop_assert_eq!(datagram.payload, &input.payload[..]);
    }

    /// Rewrite, then parse the output: it carries the output's key and the same payload, and
    /// its checksums verify; the UDP checksum updated incrementally equals a full computation.
    #[test]
    fn rewrite_then_parse_round_trips(input in input_frame(), spec in template_spec(), ip_id in any::<u16>()) {
        let frame = build(&input);
        let datagram = wire::parse(&frame, input.offloaded).expect("a built frame is valid");
        let template = FrameTemplate::new(&spec);
        let mut out = vec![0u8; 512];
        let packet = 28 + input.payload.len();
        let len = match template.write(&datagram, ip_id, &mut out) {
            Ok(len) => len,
            Err(error) => {
                prop_assert!(packet > spec.mtu as usize);
                prop_assert_eq!(error, RewriteError::ExceedsMtu { packet, mtu: spec.mtu });
                return Ok(());
            }
        };
        prop_assert!(packet <= spec.mtu as usize);
        prop_assert_eq!(len, template.frame_len(input.payload.len()));
        let out = &out[..len];

        let output = wire::parse(out, None).expect("an output frame is valid (its IPv4 checksum verifies)");
        prop_assert_eq!(output.destination_addr(), spec.destination);
        prop_assert_eq!(output.destination_port, spec.destination_port);
        prop_assert_eq!(output.source_addr(), spec.source);
        prop_assert_eq!(output.source_port, spec.source_port.unwrap_or(input.source_port));
        prop_assert_eq!(output.payload, &input.payload[..]);
        prop_assert_eq!(relay_rules::Ttl::Fixed(output.ttl), spec.ttl);
        prop_assert_eq!(output.ip_id, ip_id);
        prop_assert_eq!(output.tos >> 2, spec.dscp.unwrap_or(input.tos >> 2));
        prop_assert_eq!(output.tos & 0x03, 0);
        prop_assert_eq!(output.vlans[0].map(VlanTag::vid), spec.vlan);
        prop_assert_eq!(&out[..6], &spec.dst_mac[..]);
        prop_assert_eq!(&out[6..12], &spec.src_mac[..]);

        let ip_offset = template.header_len() - 28;
        prop_assert_eq!(full_checksum(&[&out[ip_offset..ip_offset + 20]]), 0);
        let udp = &out[ip_offset + 20..];
        if input.with_checksum {
            prop_assert_eq!(output.udp_checksum, full_udp_checksum(spec.source, spec.destination, udp));
            prop_assert!(UdpPacket::new_checked(udp).expect("parsed").verify_checksum(spec.source, spec.destination));
        } else {
            prop_assert_eq!(output.udp_checksum, 0);
        }
    }
}
