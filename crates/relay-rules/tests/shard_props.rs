//! The shard function and the steering program agree, bit for bit, on random packets.
//!
//! Each proptest case draws a worker count `n` and a seed, then checks a batch of
//! [`KEYS_PER_CASE`] random (group, port, VLAN) keys, each in a random IPv4/UDP header (IHL
//! 5..=15 with random option bytes, random flags with a zero fragment offset, random payload
//! length, received or outgoing skb, untagged or with a random tag in metadata). With proptest's
//! default 256 cases that is 1,048,576 keys; set `PROPTEST_CASES` to check more (or fewer).
//!
//! For each key the data path's view is checked too: the plain pre-filter keeps the packet, and
//! the frame, parsed with the tag as the ring reports it, has the VLAN key
//! ([`relay_rules::wire::vlan_key`]) whose shard the program computed.
//!
//! IPv6 keys are checked the same way, in IPv6/UDP packets with up to
//! [`MAX_EXTENSION_HEADERS`] random hop-by-hop, routing and destination options headers before
//! UDP; a packet with one header more goes to worker 0 in the program and is refused by the
//! parser.

use proptest::prelude::*;
use relay_rules::bpf::interp::{Interpreter, Skb, VlanTag};
use relay_rules::bpf::{Program, ip_prefilter, steering_program, udp_prefilter};
use relay_rules::shard::{shard, shard_vlan};
use relay_rules::wire::{self, MAX_EXTENSION_HEADERS};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Keys checked per proptest case: 256 default cases × 4096 = 1,048,576 keys.
const KEYS_PER_CASE: usize = 4096;
/// An Ethernet header for outgoing skbs, whose data starts before the network header.
const ETHERNET: [u8; 14] = [1, 0, 0x5e, 1, 2, 3, 2, 0, 0, 0, 0, 1, 0x08, 0x00];

/// SplitMix64: a small deterministic generator, so a batch is reproducible from its seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A packet under construction, reused between keys to avoid allocating per key.
struct PacketBuilder {
    bytes: Vec<u8>,
}

impl PacketBuilder {
    /// Writes an IPv4/UDP packet for `group:port` with random IHL, options, flags and payload
    /// length, and returns its length. `protocol` and `fragment` let callers break it.
    fn write(
        &mut self,
        rng: &mut SplitMix,
        group: Ipv4Addr,
        port: u16,
        protocol: u8,
        fragment: u16,
    ) -> usize {
        let ihl = 5 + rng.below(11) as usize;
        let payload = rng.below(32) as usize;
        let len = ihl * 4 + 8 + payload;
        self.bytes.clear();
        self.bytes.resize(len, 0);
        let p = &mut self.bytes;
        p[0] = 0x40 | ihl as u8;
        p[1] = rng.next() as u8; // TOS
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[4..6].copy_from_slice(&(rng.next() as u16).to_be_bytes());
        // Random DF/MF flags (the reserved bit too: the program must ignore flags) and offset.
        let flags = (rng.next() as u16) & 0xe000;
        p[6..8].copy_from_slice(&(flags | fragment).to_be_bytes());
        p[8] = rng.next() as u8;
        p[9] = protocol;
        p[12..16].copy_from_slice(&(rng.next() as u32).to_be_bytes());
        p[16..20].copy_from_slice(&group.octets());
        for chunk in p[20..ihl * 4].chunks_mut(8) {
            let random = rng.next().to_le_bytes();
            chunk.copy_from_slice(&random[..chunk.len()]);
        }
        let udp = ihl * 4;
        p[udp..udp + 2].copy_from_slice(&(rng.next() as u16).to_be_bytes());
        p[udp + 2..udp + 4].copy_from_slice(&port.to_be_bytes());
        len
    }
}

/// Writes an IPv6/UDP packet for `[group]:port` with `headers` random extension headers (a
/// hop-by-hop one first, if any, then routing and destination options ones, each 8 to 32
/// bytes of random options) and a random payload, into `bytes`; returns the packet's length.
fn write_ipv6(
    bytes: &mut Vec<u8>,
    rng: &mut SplitMix,
    group: Ipv6Addr,
    port: u16,
    headers: usize,
) -> usize {
    bytes.clear();
    bytes.resize(40, 0);
    bytes[0] = 0x60;
    bytes[7] = rng.next() as u8; // hop limit
    bytes[8..24].copy_from_slice(&rng.next().to_be_bytes().repeat(2));
    bytes[24..40].copy_from_slice(&group.octets());
    let mut next_at = 6;
    for index in 0..headers {
        let kind = if index == 0 && rng.below(2) == 0 {
            0
        } else if rng.below(2) == 0 {
            43
        } else {
            60
        };
        bytes[next_at] = kind;
        let at = bytes.len();
        let units = rng.below(4) as usize;
        for _ in 0..=units {
            bytes.extend_from_slice(&rng.next().to_le_bytes());
        }
        bytes[at + 1] = units as u8;
        next_at = at;
    }
    bytes[next_at] = 17;
    let udp = bytes.len();
    let payload = 1 + rng.below(32) as usize;
    bytes.resize(udp + 8 + payload, 0);
    bytes[udp..udp + 2].copy_from_slice(&(rng.next() as u16).to_be_bytes());
    bytes[udp + 2..udp + 4].copy_from_slice(&port.to_be_bytes());
    bytes[udp + 4..udp + 6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    // Any non-zero checksum: UDP over IPv6 must carry one, and the parser does not verify it.
    bytes[udp + 6..udp + 8].copy_from_slice(&(rng.next() as u16 | 1).to_be_bytes());
    let len = bytes.len();
    bytes[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    len
}

/// Runs `program` on `packet`, as a received or (with an Ethernet header) an outgoing skb.
fn steer(interpreter: &Interpreter<'_>, packet: &[u8], outgoing: bool, protocol: u16) -> u32 {
    steer_tagged(interpreter, packet, outgoing, protocol, None)
}

/// [`steer`] for a packet whose VLAN tag (if any) the kernel moved into metadata.
fn steer_tagged(
    interpreter: &Interpreter<'_>,
    packet: &[u8],
    outgoing: bool,
    protocol: u16,
    vlan: Option<VlanTag>,
) -> u32 {
    let skb = if outgoing {
        Skb::outgoing(&ETHERNET, packet, protocol)
    } else {
        Skb::received(packet, protocol)
    };
    interpreter
        .run(&Skb { vlan, ..skb })
        .expect("the steering program needs no unmodelled ancillary load")
}

/// A tag or none: a third untagged, the rest with any TCI (priority bits, DEI and id 0..=4095,
/// id 0 being a priority tag) and either TPID.
fn random_tag(rng: &mut SplitMix) -> Option<VlanTag> {
    match rng.below(3) {
        0 => None,
        _ => Some(VlanTag {
            tpid: if rng.below(4) == 0 { 0x88a8 } else { 0x8100 },
            tci: rng.next() as u16,
        }),
    }
}

/// `packet` as a frame the parser accepts: an Ethernet header before it, no more-fragments
/// flag (the steering program steers first fragments too; the parser counts them), its UDP
/// length set and its IPv4 header checksum computed.
fn parseable_frame(packet: &[u8]) -> Vec<u8> {
    let mut frame = ETHERNET.to_vec();
    frame.extend_from_slice(packet);
    let ip = &mut frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let udp_len = (ip.len() - ihl) as u16;
    ip[6] &= 0xc0;
    ip[ihl + 4..ihl + 6].copy_from_slice(&udp_len.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let mut sum: u32 = ip[..ihl]
        .chunks(2)
        .map(|word| u32::from(u16::from_be_bytes([word[0], word[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    frame
}

/// Worker counts: mostly small, as deployed, sometimes any non-zero `u32`.
fn worker_count() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 1u32..=16,
        2 => 17u32..=4096,
        1 => 1u32..=u32::MAX,
    ]
}

fn program_for(n: u32) -> Program {
    let program = steering_program(n);
    relay_rules::bpf::validate_program(&program).expect("the emitter writes valid programs");
    program
}

proptest! {
    #[test]
    fn program_and_function_agree(n in worker_count(), seed in any::<u64>()) {
        let program = program_for(n);
        let interpreter = Interpreter::new(&program).expect("validated above");
        let prefilter_program = udp_prefilter();
        let prefilter = Interpreter::new(&prefilter_program).expect("a fixed valid program");
        let mut rng = SplitMix(seed);
        let mut builder = PacketBuilder { bytes: Vec::with_capacity(128) };
        for _ in 0..KEYS_PER_CASE {
            let group = Ipv4Addr::from(rng.next() as u32);
            let port = rng.next() as u16;
            let len = builder.write(&mut rng, group, port, 17, 0);
            let outgoing = rng.below(2) == 1;
            let tag = random_tag(&mut rng);
            let packet = &builder.bytes[..len];
            let got = steer_tagged(&interpreter, packet, outgoing, 0x0800, tag);
            let vlan = tag.map(|tag| tag.tci & 0x0fff).filter(|&vid| vid != 0);
            let expected = shard_vlan(group, port, vlan, n);
            prop_assert_eq!(got, expected, "group {} port {} vlan {:?} n {} packet {:02x?}", group, port, tag, n, packet);
            let skb = Skb { vlan: tag, ..Skb::received(packet, 0x0800) };
            prop_assert_eq!(prefilter.run(&skb), Ok(u32::MAX), "the pre-filter keeps it");
            // The frame as a worker reads it: the tag offloaded into the ring's frame header.
            let frame = parseable_frame(packet);
            let offloaded = tag.map(|tag| wire::VlanTag { tpid: tag.tpid, tci: tag.tci });
            let datagram = wire::parse(&frame, offloaded).expect("a valid frame");
            prop_assert_eq!(wire::vlan_key(&datagram), Ok(vlan));
            prop_assert_eq!(shard_vlan(datagram.destination_addr(), datagram.destination_port, vlan, n), got);
        }
    }

    #[test]
    fn program_and_function_agree_on_ipv6_keys(n in worker_count(), seed in any::<u64>()) {
        let program = program_for(n);
        let interpreter = Interpreter::new(&program).expect("validated above");
        let prefilter_program = ip_prefilter(true);
        let prefilter = Interpreter::new(&prefilter_program).expect("a fixed valid program");
        let mut rng = SplitMix(seed);
        let mut bytes = Vec::with_capacity(256);
        let mut frame = Vec::with_capacity(256);
        for _ in 0..KEYS_PER_CASE / 8 {
            let group = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
            let port = rng.next() as u16;
            let headers = rng.below(MAX_EXTENSION_HEADERS as u64 + 1) as usize;
            let len = write_ipv6(&mut bytes, &mut rng, group, port, headers);
            let outgoing = rng.below(2) == 1;
            let tag = random_tag(&mut rng);
            let packet = &bytes[..len];
            let got = steer_tagged(&interpreter, packet, outgoing, 0x86dd, tag);
            let vlan = tag.map(|tag| tag.tci & 0x0fff).filter(|&vid| vid != 0);
            prop_assert_eq!(got, shard_vlan(group, port, vlan, n), "[{}]:{} {} headers, vlan {:?}, n {}, packet {:02x?}", group, port, headers, tag, n, packet);
            let skb = Skb { vlan: tag, ..Skb::received(packet, 0x86dd) };
            prop_assert_eq!(prefilter.run(&skb), Ok(u32::MAX), "the pre-filter keeps it");
            frame.clear();
            frame.extend_from_slice(&ETHERNET[..12]);
            frame.extend_from_slice(&[0x86, 0xdd]);
            frame.extend_from_slice(packet);
            let offloaded = tag.map(|tag| wire::VlanTag { tpid: tag.tpid, tci: tag.tci });
            let datagram = wire::parse(&frame, offloaded).expect("a valid frame");
            prop_assert_eq!(datagram.destination_addr(), std::net::IpAddr::V6(group));
            prop_assert_eq!(wire::vlan_key(&datagram), Ok(vlan));
            prop_assert_eq!(shard_vlan(datagram.destination_addr(), datagram.destination_port, vlan, n), got);

            // One header more than the walk follows: worker 0, and the parser refuses it.
            let len = write_ipv6(&mut bytes, &mut rng, group, port, MAX_EXTENSION_HEADERS + 1);
            prop_assert_eq!(steer(&interpreter, &bytes[..len], false, 0x86dd), 0);
            frame.truncate(14);
            frame.extend_from_slice(&bytes[..len]);
            prop_assert!(wire::parse(&frame, None).is_err());
        }
    }

    #[test]
    fn other_protocols_and_later_fragments_go_to_zero(
        n in 2u32..=64,
        seed in any::<u64>(),
        protocol in any::<u8>().prop_filter("not UDP", |&p| p != 17),
        fragment in 1u16..=0x1fff,
        ethertype in any::<u16>().prop_filter("not IPv4", |&e| e != 0x0800),
    ) {
        let program = program_for(n);
        let interpreter = Interpreter::new(&program).expect("validated above");
        let mut rng = SplitMix(seed);
        let mut builder = PacketBuilder { bytes: Vec::with_capacity(128) };
        for _ in 0..64 {
            let group = Ipv4Addr::from(rng.next() as u32);
            let port = rng.next() as u16;
            let len = builder.write(&mut rng, group, port, protocol, 0);
            prop_assert_eq!(steer(&interpreter, &builder.bytes[..len], false, 0x0800), 0, "protocol {}", protocol);
            let len = builder.write(&mut rng, group, port, 17, fragment);
            prop_assert_eq!(steer(&interpreter, &builder.bytes[..len], false, 0x0800), 0, "fragment {}", fragment);
            let len = builder.write(&mut rng, group, port, 17, 0);
            prop_assert_eq!(steer(&interpreter, &builder.bytes[..len], true, ethertype), 0, "ethertype {:#x}", ethertype);
        }
    }

    #[test]
    fn truncated_packets_never_fail(n in 1u32..=64, seed in any::<u64>(), cut in 0usize..=80) {
        let program = program_for(n);
        let interpreter = Interpreter::new(&program).expect("validated above");
        let mut rng = SplitMix(seed);
        let mut builder = PacketBuilder { bytes: Vec::with_capacity(128) };
        let group = Ipv4Addr::from(rng.next() as u32);
        let port = rng.next() as u16;
        let len = builder.write(&mut rng, group, port, 17, 0);
        let ihl = usize::from(builder.bytes[0] & 0xf) * 4;
        let kept = cut.min(len);
        let got = steer(&interpreter, &builder.bytes[..kept], false, 0x0800);
        // With the UDP destination port present the shard is computed; without it, 0.
        let expected = if kept >= ihl + 4 { shard(group, port, n) } else { 0 };
        prop_assert_eq!(got, expected, "kept {} of {} bytes, IHL {}", kept, len, ihl);
    }
}
