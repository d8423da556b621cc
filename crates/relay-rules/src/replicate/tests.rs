//! Unit tests of the frame templates on the captured frame and hand-made variants.

use super::*;
use crate::wire::{self, DropReason, VlanTag};

/// The frame captured from real traffic that `wire`'s tests read (192.0.2.1:40000 ->
/// 239.1.2.3:5004, TTL 4, TOS 0xb8, "fanout-relay test frame", valid UDP checksum).
const CAPTURED: &str = "01005e010203020000000a01080045b80033d5b740000411ed44c0000201ef010203\
                        9c40138c001f375866616e6f75742d72656c61792074657374206672616d65";

/// The expected outputs, computed independently with a plain full checksum over the whole
/// frame (not with this crate): the first for `tagged()`, the second for `keeping()`.
const TAGGED_OUT: &str = "01005e480a14020000000c018100012c080045880033010200001011a5520a010001\
                          efc80a1417701774001f676866616e6f75742d72656c61792074657374206672616d65";
const KEEPING_OUT: &str = "01005e480a14020000000c01080045b80033010200001011a5220a010001efc80a14\
                           9c401774001fe29766616e6f75742d72656c61792074657374206672616d65";

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 200, 10, 20);

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("test hex is valid"))
        .collect()
}

/// Every field set: VLAN 300, source port 6000, DSCP AF41.
fn tagged() -> TemplateSpec {
    TemplateSpec {
        src_mac: [0x02, 0, 0, 0, 0x0c, 0x01],
        dst_mac: multicast_mac(GROUP),
        vlan: Some(300),
        source: Ipv4Addr::new(10, 1, 0, 1).into(),
        destination: GROUP.into(),
        source_port: Some(6000),
        destination_port: 6004,
        ttl: Ttl::Fixed(16),
        dscp: Some(34),
        mtu: 1500,
    }
}

/// Untagged, keeping the incoming source port and DSCP.
fn keeping() -> TemplateSpec {
    TemplateSpec {
        vlan: None,
        source_port: None,
        dscp: None,
        ..tagged()
    }
}

fn write(spec: &TemplateSpec, frame: &[u8], ip_id: u16) -> Result<Vec<u8>, RewriteError> {
    let input = wire::parse(frame, None).expect("test input frames are valid");
    let template = FrameTemplate::new(spec);
    let mut out = vec![0u8; 2048];
    let len = template.write(&input, ip_id, &mut out)?;
    out.truncate(len);
    Ok(out)
}

#[test]
fn multicast_macs() {
    assert_eq!(
        multicast_mac(Ipv4Addr::new(239, 255, 255, 255)),
        [0x01, 0x00, 0x5e, 0x7f, 0xff, 0xff]
    );
    assert_eq!(
        multicast_mac(Ipv4Addr::new(224, 128, 0, 1)),
        [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]
    );
    assert_eq!(multicast_mac(GROUP), [0x01, 0x00, 0x5e, 0x48, 0x0a, 0x14]);
}

#[test]
fn lengths() {
    let tagged = FrameTemplate::new(&tagged());
    assert_eq!(tagged.header_len(), 46);
    assert_eq!(tagged.frame_len(23), 69);
    assert_eq!(tagged.spec(), &self::tagged());
    let plain = FrameTemplate::new(&keeping());
    assert_eq!(plain.header_len(), 42);
    assert_eq!(plain.frame_len(0), 42);
}

#[test]
fn construct_every_field() {
    assert_eq!(
        write(&tagged(), &hex(CAPTURED), 0x0102).unwrap(),
        hex(TAGGED_OUT)
    );
}

#[test]
fn construct_keeping_source_port_and_dscp() {
    assert_eq!(
        write(&keeping(), &hex(CAPTURED), 0x0102).unwrap(),
        hex(KEEPING_OUT)
    );
}

#[test]
fn deconstruct_output() {
    let out = write(&tagged(), &hex(CAPTURED), 0xbeef).unwrap();
    let output = wire::parse(&out, None).unwrap();
    assert_eq!(
        output.vlans,
        [
            Some(VlanTag {
                tpid: 0x8100,
                tci: 300
            }),
            None
        ]
    );
    assert_eq!(output.source_addr(), Ipv4Addr::new(10, 1, 0, 1));
    assert_eq!(output.destination_addr(), GROUP);
    assert_eq!(output.source_port, 6000);
    assert_eq!(output.destination_port, 6004);
    assert_eq!(output.ttl, 16);
    assert_eq!(output.tos, 34 << 2);
    assert_eq!(output.ip_id, 0xbeef);
    assert_eq!(output.payload, b"fanout-relay test frame");
    assert!(!Ipv4Packet::new_checked(&out[18..]).unwrap().dont_frag());
    assert!(
        UdpPacket::new_checked(&out[38..])
            .unwrap()
            .verify_checksum(output.source_addr(), output.destination_addr())
    );
}

#[test]
fn kept_dscp_clears_ecn() {
    let mut frame = hex(CAPTURED);
    frame[15] = 0xb9; // DSCP 46, ECT(1)
    Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
    let out = write(&keeping(), &frame, 1).unwrap();
    assert_eq!(wire::parse(&out, None).unwrap().tos, 0xb8);
}

#[test]
fn no_incoming_checksum_means_none_out() {
    let mut frame = hex(CAPTURED);
    frame[40..42].fill(0);
    let out = write(&tagged(), &frame, 1).unwrap();
    assert_eq!(wire::parse(&out, None).unwrap().udp_checksum, 0);
}

/// A destination port chosen so that the output's checksum computes to 0, which must go on
/// the wire as 0xffff.
#[test]
fn computed_zero_is_sent_as_ffff() {
    let frame = hex(CAPTURED);
    let mut spec = tagged();
    spec.destination_port = 0;
    let out = write(&spec, &frame, 1).unwrap();
    let mut udp = out[38..].to_vec();
    udp[6..8].fill(0);
    let partial =
        fold(wire::pseudo_header_sum(spec.source, spec.destination, PROTOCOL_UDP, 31) + sum(&udp));
    spec.destination_port = 0xffff - partial;
    assert_ne!(spec.destination_port, 0, "the test needs a non-zero port");
    let out = write(&spec, &frame, 1).unwrap();
    let output = wire::parse(&out, None).unwrap();
    assert_eq!(output.udp_checksum, 0xffff);
    assert!(
        UdpPacket::new_checked(&out[38..])
            .unwrap()
            .verify_checksum(output.source_addr(), output.destination_addr())
    );
}

#[test]
fn refuses_what_exceeds_the_mtu() {
    let frame = hex(CAPTURED); // a 51-byte IP packet
    let spec = TemplateSpec {
        mtu: 50,
        ..tagged()
    };
    assert_eq!(
        write(&spec, &frame, 1).unwrap_err(),
        RewriteError::ExceedsMtu {
            packet: 51,
            mtu: 50
        }
    );
    assert!(
        write(
            &TemplateSpec {
                mtu: 51,
                ..tagged()
            },
            &frame,
            1
        )
        .is_ok()
    );
}

#[test]
fn refuses_a_buffer_too_small() {
    let frame = hex(CAPTURED);
    let input = wire::parse(&frame, None).unwrap();
    let template = FrameTemplate::new(&tagged());
    let needed = template.frame_len(input.payload.len());
    let mut out = vec![0u8; needed];
    assert_eq!(
        template
            .write(&input, 1, &mut out[..needed - 1])
            .unwrap_err(),
        RewriteError::BufferTooSmall {
            needed,
            available: needed - 1
        }
    );
    assert_eq!(template.write(&input, 1, &mut out), Ok(needed));
}

#[test]
fn output_of_a_short_payload_parses() {
    let mut frame = hex(CAPTURED)[..42].to_vec();
    frame[16..18].copy_from_slice(&28u16.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
    frame[38..40].copy_from_slice(&8u16.to_be_bytes());
    frame[40..42].fill(0);
    let out = write(&keeping(), &frame, 0).unwrap();
    assert_eq!(out.len(), 42);
    let output: Result<_, DropReason> = wire::parse(&out, None);
    assert!(output.unwrap().payload.is_empty());
}

#[test]
fn a_decrementing_output_writes_the_incoming_ttl_less_one_with_a_valid_checksum() {
    let spec = TemplateSpec {
        ttl: Ttl::Decrement,
        ..keeping()
    };
    assert!(FrameTemplate::new(&spec).decrements_ttl());
    assert!(!FrameTemplate::new(&keeping()).decrements_ttl());
    // The captured frame arrives with TTL 4.
    let out = write(&spec, &hex(CAPTURED), 0x0102).expect("TTL 4 passes");
    let fixed_at_3 = write(
        &TemplateSpec {
            ttl: Ttl::Fixed(3),
            ..keeping()
        },
        &hex(CAPTURED),
        0x0102,
    )
    .expect("a fixed TTL");
    assert_eq!(
        out, fixed_at_3,
        "the same bytes as a fixed TTL of 3, checksum included"
    );
    let parsed = wire::parse(&out, None).expect("the output parses, its checksum checked");
    assert_eq!(parsed.ttl, 3);

    for ttl in [1, 0] {
        let mut frame = hex(CAPTURED);
        frame[22] = ttl;
        Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
        assert_eq!(
            write(&spec, &frame, 1),
            Err(RewriteError::TtlExpired { ttl }),
            "TTL {ttl} dies here"
        );
    }
}
