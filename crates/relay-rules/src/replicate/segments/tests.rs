//! Segmented frames against a model of the kernel's splitter (`__udp_gso_segment()` and
//! `inet_gso_segment()`): every datagram split off must be byte for byte the plain frame
//! [`FrameTemplate::write`] makes for it.

use super::*;
use crate::replicate::{TemplateSpec, multicast_mac};
use crate::rule::Ttl;
use crate::wire::{self, pseudo_header_sum, sum};
use proptest::prelude::*;
use std::net::Ipv4Addr;

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 200, 10, 20);
const SOURCE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const INPUT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);

fn spec(vlan: Option<u16>, source_port: Option<u16>, dscp: Option<u8>) -> TemplateSpec {
    TemplateSpec {
        src_mac: [0x02, 0, 0, 0, 0x0c, 0x01],
        dst_mac: multicast_mac(GROUP),
        vlan,
        source: Ipv4Addr::new(10, 1, 0, 1).into(),
        destination: GROUP.into(),
        source_port,
        destination_port: 6004,
        ttl: Ttl::Fixed(16),
        dscp,
        mtu: 9000,
    }
}

/// An untagged input frame with a correct UDP checksum (or none when `checksum` is false).
fn input_frame(payload: &[u8], source_port: u16, tos: u8, checksum: bool) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut frame = vec![0u8; 14 + 20 + udp_len];
    frame[..6].copy_from_slice(&multicast_mac(INPUT_GROUP));
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x09]);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut frame[14..34];
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip[8] = 4;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&SOURCE.octets());
    ip[16..20].copy_from_slice(&INPUT_GROUP.octets());
    let ip_sum = !fold(sum(ip));
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let udp = &mut frame[34..];
    udp[..2].copy_from_slice(&source_port.to_be_bytes());
    udp[2..4].copy_from_slice(&5004u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[8..].copy_from_slice(payload);
    if checksum {
        let total = pseudo_header_sum(SOURCE, INPUT_GROUP, 17, udp_len as u16) + sum(udp);
        let value = match !fold(total) {
            0 => 0xffff,
            other => other,
        };
        udp[6..8].copy_from_slice(&value.to_be_bytes());
    }
    frame
}

/// What the kernel makes of a segmented frame: the headers copied in front of every
/// `segment_size` bytes of payload, each with its own lengths, identification `first + i`, and
/// IPv4 and UDP checksums computed in full.
fn kernel_split(frame: &[u8], split: Split) -> Vec<Vec<u8>> {
    let udp_offset = usize::from(split.udp_offset);
    let ip_offset = udp_offset - 20;
    let headers = &frame[..udp_offset + 8];
    let first_id = u16::from_be_bytes([frame[ip_offset + 4], frame[ip_offset + 5]]);
    let source =
        Ipv4Addr::from(<[u8; 4]>::try_from(&frame[ip_offset + 12..ip_offset + 16]).unwrap());
    let destination =
        Ipv4Addr::from(<[u8; 4]>::try_from(&frame[ip_offset + 16..ip_offset + 20]).unwrap());
    frame[udp_offset + 8..]
        .chunks(usize::from(split.segment_size))
        .enumerate()
        .map(|(i, chunk)| {
            let mut datagram = headers.to_vec();
            datagram.extend_from_slice(chunk);
            let udp_len = (8 + chunk.len()) as u16;
            let ip = &mut datagram[ip_offset..udp_offset];
            ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
            ip[4..6].copy_from_slice(&first_id.wrapping_add(i as u16).to_be_bytes());
            ip[10..12].fill(0);
            let ip_sum = !fold(sum(ip));
            ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            let udp = &mut datagram[udp_offset..];
            udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
            udp[6..8].fill(0);
            let total = pseudo_header_sum(source, destination, 17, udp_len) + sum(udp);
            let value = match !fold(total) {
                0 => 0xffff,
                other => other,
            };
            udp[6..8].copy_from_slice(&value.to_be_bytes());
            datagram
        })
        .collect()
}

/// Plain frames for each input, written with identifications counted up from `first_id`.
fn plain_frames(template: &FrameTemplate, inputs: &[Vec<u8>], first_id: u16) -> Vec<Vec<u8>> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let input = wire::parse(frame, None).unwrap();
            let mut out = vec![0u8; 9100];
            let len = template
                .write(&input, first_id.wrapping_add(i as u16), &mut out)
                .unwrap();
            out.truncate(len);
            out
        })
        .collect()
}

/// Writes the first input and appends the rest while they are accepted; returns the frame, its
/// split, and how many inputs it took.
fn segmented(
    template: &FrameTemplate,
    inputs: &[Vec<u8>],
    first_id: u16,
    room: usize,
) -> (Vec<u8>, Option<Split>, usize) {
    let mut out = vec![0u8; room];
    let first = wire::parse(&inputs[0], None).unwrap();
    let len = template.write(&first, first_id, &mut out).unwrap();
    let mut segments = template.segments(&first, len);
    let mut taken = 1;
    for frame in &inputs[1..] {
        let input = wire::parse(frame, None).unwrap();
        if !template.append_segment(&mut segments, &input, &mut out) {
            break;
        }
        taken += 1;
    }
    assert_eq!(usize::from(segments.count()), taken);
    let split = segments.finish(&mut out);
    out.truncate(segments.len());
    (out, split, taken)
}

#[test]
fn three_equal_datagrams_split_into_their_plain_frames() {
    let template = FrameTemplate::new(&spec(Some(300), None, None));
    let inputs: Vec<_> = (0..3u8)
        .map(|i| input_frame(&[i; 100], 40000, 0xb8, true))
        .collect();
    let (frame, split, taken) = segmented(&template, &inputs, 0xfffe, 4096);
    assert_eq!(taken, 3);
    let split = split.expect("three datagrams");
    assert_eq!(
        split,
        Split {
            udp_offset: 18 + 20,
            segment_size: 100
        }
    );
    assert_eq!(
        kernel_split(&frame, split),
        plain_frames(&template, &inputs, 0xfffe)
    );
}

#[test]
fn one_datagram_stays_the_plain_frame() {
    let template = FrameTemplate::new(&spec(None, Some(6000), Some(34)));
    let inputs = vec![input_frame(b"only", 1234, 0, true)];
    let (frame, split, _) = segmented(&template, &inputs, 9, 2048);
    assert_eq!(split, None);
    assert_eq!(vec![frame], plain_frames(&template, &inputs, 9));
}

#[test]
fn a_shorter_datagram_ends_the_frame() {
    let template = FrameTemplate::new(&spec(None, None, None));
    let inputs: Vec<_> = [64usize, 64, 10, 64]
        .iter()
        .map(|&len| input_frame(&vec![7; len], 1, 0, true))
        .collect();
    let (frame, split, taken) = segmented(&template, &inputs, 1, 4096);
    assert_eq!(taken, 3, "nothing may follow the short one");
    assert_eq!(
        kernel_split(&frame, split.unwrap()),
        plain_frames(&template, &inputs[..3], 1)
    );
}

#[test]
fn datagrams_without_a_checksum_get_one_when_split() {
    let template = FrameTemplate::new(&spec(None, None, None));
    let without: Vec<_> = (0..2u8)
        .map(|i| input_frame(&[i; 30], 1, 0, false))
        .collect();
    let with: Vec<_> = (0..2u8)
        .map(|i| input_frame(&[i; 30], 1, 0, true))
        .collect();
    let (frame, split, _) = segmented(&template, &without, 1, 4096);
    assert_eq!(
        kernel_split(&frame, split.unwrap()),
        plain_frames(&template, &with, 1)
    );
}

#[test]
fn longer_or_empty_datagrams_and_other_flows_are_refused() {
    let keeping = FrameTemplate::new(&spec(None, None, None));
    let first = input_frame(&[1; 50], 1000, 0x20, true);
    let refused = [
        input_frame(&[1; 51], 1000, 0x20, true),
        input_frame(&[], 1000, 0x20, true),
        input_frame(&[1; 50], 1001, 0x20, true),
        input_frame(&[1; 50], 1000, 0x28, true),
    ];
    for other in &refused {
        let (_, split, taken) = segmented(&keeping, &[first.clone(), other.clone()], 0, 4096);
        assert_eq!((split, taken), (None, 1), "{other:02x?}");
    }
    // A template that writes its own port and DSCP makes those the same flow; ECN never counts.
    let rewriting = FrameTemplate::new(&spec(None, Some(6000), Some(10)));
    let inputs = [
        first.clone(),
        input_frame(&[1; 50], 1001, 0x28, true),
        input_frame(&[1; 50], 1000, 0x21, true),
    ];
    let (frame, split, taken) = segmented(&rewriting, &inputs, 0, 4096);
    assert_eq!(taken, 3);
    assert_eq!(
        kernel_split(&frame, split.unwrap()),
        plain_frames(&rewriting, &inputs, 0)
    );
    let ecn_only = [first.clone(), input_frame(&[1; 50], 1000, 0x23, true)];
    assert_eq!(segmented(&keeping, &ecn_only, 0, 4096).2, 2);
}

#[test]
fn room_segments_and_ipv4_length_bound_a_frame() {
    let template = FrameTemplate::new(&spec(None, None, None));
    let small: Vec<_> = (0..100).map(|_| input_frame(&[3; 8], 5, 0, true)).collect();
    assert_eq!(
        segmented(&template, &small, 0, 65536).2,
        usize::from(MAX_SEGMENTS)
    );
    let header = 14 + 20 + 8;
    assert_eq!(segmented(&template, &small, 0, header + 8 * 5 + 7).2, 5);
    let big: Vec<_> = (0..10)
        .map(|_| input_frame(&[3; 8000], 5, 0, true))
        .collect();
    // 8 payloads of 8,000 bytes and the headers are 64,028 bytes of IPv4; a ninth would pass 65,535.
    assert_eq!(segmented(&template, &big, 0, 200_000).2, 8);
}

#[test]
fn may_segment_only_what_needs_no_carried_checksum() {
    let with = input_frame(b"x", 1, 0, true);
    let without = input_frame(b"x", 1, 0, false);
    let with = wire::parse(&with, None).unwrap();
    let without = wire::parse(&without, None).unwrap();
    assert!(!may_segment(&with, false));
    assert!(may_segment(&with, true));
    assert!(may_segment(&without, false));
}

proptest! {
    /// Any run of payload lengths: the frame takes a prefix of the inputs that the rules allow,
    /// and splitting it gives their plain frames.
    #[test]
    fn split_frames_equal_plain_frames(
        lengths in prop::collection::vec(1usize..1400, 1..80),
        same in any::<bool>(),
        first_id in any::<u16>(),
        vlan in any::<bool>(),
    ) {
        let template = FrameTemplate::new(&spec(vlan.then_some(7), None, None));
        let lengths: Vec<usize> = if same { vec![lengths[0]; lengths.len()] } else { lengths };
        let inputs: Vec<_> = lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| input_frame(&vec![i as u8; len], 777, 0, true))
            .collect();
        let (frame, split, taken) = segmented(&template, &inputs, first_id, ROOM);
        // The prefix the rules allow: equal to the first, then at most one shorter, within the
        // bounds.
        const ROOM: usize = 65536;
        let ethernet = if vlan { 18 } else { 14 };
        let mut expected = 1;
        let mut bytes = 20 + 8 + lengths[0];
        while expected < lengths.len()
            && expected < usize::from(MAX_SEGMENTS)
            && lengths[expected] <= lengths[0]
            && lengths[expected - 1] == lengths[0]
            && bytes + lengths[expected] <= 65535
            && ethernet + bytes + lengths[expected] <= ROOM
        {
            bytes += lengths[expected];
            expected += 1;
        }
        prop_assert_eq!(taken, expected);
        let plain = plain_frames(&template, &inputs[..taken], first_id);
        match split {
            None => prop_assert_eq!(vec![frame], plain),
            Some(split) => prop_assert_eq!(kernel_split(&frame, split), plain),
        }
    }
}
