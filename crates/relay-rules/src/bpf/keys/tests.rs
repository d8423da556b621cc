use super::*;
use crate::bpf::interp::{Interpreter, Skb};
use crate::bpf::udp_prefilter;
use crate::bpf::validate_program;
use proptest::prelude::*;
use std::collections::BTreeSet;

type Key = (Ipv4Addr, u16);

/// An IPv4/UDP packet (from the network header on) to `key`, with `options` words of IP options.
fn udp_packet((destination, port): Key, options: usize) -> Vec<u8> {
    crate::bpf::test_packets::udp_packet(destination, port, options)
}

fn verdict(program: &Program, network: &[u8], protocol: u16) -> u32 {
    let interpreter = Interpreter::new(program).expect("generated programs pass the checks");
    interpreter
        .run(&Skb::received(network, protocol))
        .expect("the filter uses no unmodelled load")
}

fn filter(keys: &[Key], sense: KeySense) -> Program {
    let program = key_filter(keys.iter().copied(), sense).expect("the keys fit");
    assert_eq!(validate_program(&program), Ok(()), "{} keys", keys.len());
    program
}

/// `n` keys, each with an address of its own: the most instructions per key.
fn distinct_addresses(n: usize) -> Vec<Key> {
    (0..n as u32)
        .map(|i| (Ipv4Addr::from(0xEF00_0000 + 3 * i), 5000 + i as u16))
        .collect()
}

/// `n` keys on one address.
fn one_address(n: usize) -> Vec<Key> {
    (0..n as u16)
        .map(|i| (Ipv4Addr::new(239, 1, 1, 1), 1 + 7 * i))
        .collect()
}

/// What the filter must return, written from its documentation.
fn expected(keys: &BTreeSet<Key>, sense: KeySense, network: &[u8], protocol: u16) -> u32 {
    let tagged = protocol == 0x8100 || protocol == 0x88a8;
    let udp = protocol == 0x0800 && network.get(9) == Some(&17);
    let prefilter = if tagged || udp { ACCEPT } else { REJECT };
    // None: no key. Some(None): a key's place, past the end of the packet.
    let key = || -> Option<Option<Key>> {
        if !udp || !(0x45..=0x4f).contains(&network[0]) {
            return None;
        }
        if u16::from_be_bytes([network[6], network[7]]) & 0x1fff != 0 {
            return None;
        }
        let port_at = usize::from(network[0] & 0xf) * 4 + 2;
        let Some(port) = network.get(port_at..port_at + 2) else {
            return Some(None);
        };
        let address: [u8; 4] = network[16..20].try_into().expect("four bytes");
        Some(Some((
            address.into(),
            u16::from_be_bytes([port[0], port[1]]),
        )))
    };
    match sense {
        KeySense::Listed => match key() {
            Some(Some(key)) if keys.contains(&key) => ACCEPT,
            _ => REJECT,
        },
        KeySense::Unlisted if keys.is_empty() => prefilter,
        KeySense::Unlisted => match key() {
            None => prefilter,
            Some(None) => REJECT,
            Some(Some(key)) if keys.contains(&key) => REJECT,
            Some(Some(_)) => ACCEPT,
        },
    }
}

/// Most instructions any packet can run through: the longest path of the (forward-only)
/// control flow graph, in instructions, the final return included.
fn longest_path(program: &Program) -> usize {
    let instructions = program.instructions();
    let mut longest = vec![0usize; instructions.len()];
    for (at, insn) in instructions.iter().enumerate().rev() {
        let after = |offset: usize| longest[at + 1 + offset];
        longest[at] = 1 + match insn.class() {
            BPF_RET => 0,
            BPF_JMP if insn.code == BPF_JMP | BPF_JA => after(insn.k as usize),
            BPF_JMP => after(usize::from(insn.jt)).max(after(usize::from(insn.jf))),
            _ => after(0),
        };
    }
    longest[0]
}

fn ceil_log2(n: usize) -> usize {
    n.next_power_of_two().trailing_zeros() as usize
}

#[test]
fn every_program_passes_the_kernel_checks() {
    let sets = [
        Vec::new(),
        vec![(Ipv4Addr::new(239, 1, 2, 3), 5000)],
        distinct_addresses(100),
        one_address(100),
        distinct_addresses(KEY_FILTER_MAX_KEYS),
        one_address(KEY_FILTER_MAX_KEYS),
        one_address(2000),
    ];
    for keys in &sets {
        for sense in [KeySense::Listed, KeySense::Unlisted] {
            let program = key_filter(keys.iter().copied(), sense).expect("fits");
            assert_eq!(validate_program(&program), Ok(()), "{} keys", keys.len());
        }
    }
}

#[test]
fn empty_sets() {
    let listed = filter(&[], KeySense::Listed);
    let unlisted = filter(&[], KeySense::Unlisted);
    assert_eq!(unlisted, udp_prefilter());
    let packet = udp_packet((Ipv4Addr::new(239, 1, 2, 3), 5000), 0);
    assert_eq!(verdict(&listed, &packet, 0x0800), REJECT);
    assert_eq!(verdict(&listed, &[0; 4], 0x8100), REJECT);
    assert_eq!(verdict(&unlisted, &packet, 0x0800), ACCEPT);
}

#[test]
fn keys_are_compared_as_the_kernel_loads_them() {
    let key = (Ipv4Addr::new(239, 1, 2, 3), 5000);
    // Byte-swapped neighbours that a host-order comparison would confuse with the key.
    let swapped = (Ipv4Addr::new(3, 2, 1, 239), 5000u16.swap_bytes());
    let listed = filter(&[key], KeySense::Listed);
    let unlisted = filter(&[key], KeySense::Unlisted);
    for options in [0, 1, 10] {
        for (probe, member) in [(key, true), (swapped, false), ((key.0, swapped.1), false)] {
            let packet = udp_packet(probe, options);
            let (keep, drop) = if member {
                (ACCEPT, REJECT)
            } else {
                (REJECT, ACCEPT)
            };
            assert_eq!(verdict(&listed, &packet, 0x0800), keep, "{probe:?}");
            assert_eq!(verdict(&unlisted, &packet, 0x0800), drop, "{probe:?}");
        }
    }
}

#[test]
fn frames_without_a_key() {
    let key = (Ipv4Addr::new(239, 1, 2, 3), 5000);
    let keys = [key, (Ipv4Addr::new(239, 1, 2, 4), 5000)];
    let good = udp_packet(key, 0);
    let with = |at: usize, byte: u8| {
        let mut packet = good.clone();
        packet[at] = byte;
        packet
    };
    // (what, network bytes, EtherType, Listed verdict, Unlisted verdict)
    let cases: Vec<(&str, Vec<u8>, u16, u32, u32)> = vec![
        ("the key itself", good.clone(), 0x0800, ACCEPT, REJECT),
        ("first fragment", with(6, 0x20), 0x0800, ACCEPT, REJECT),
        ("ARP", good.clone(), 0x0806, REJECT, REJECT),
        ("IPv6", vec![0x60; 48], 0x86dd, REJECT, REJECT),
        ("802.1Q tag left", good.clone(), 0x8100, REJECT, ACCEPT),
        ("802.1ad tag left", vec![0; 4], 0x88a8, REJECT, ACCEPT),
        ("TCP", with(9, 6), 0x0800, REJECT, REJECT),
        ("IGMP", with(9, 2), 0x0800, REJECT, REJECT),
        ("version 6", with(0, 0x65), 0x0800, REJECT, ACCEPT),
        ("IHL 4", with(0, 0x44), 0x0800, REJECT, ACCEPT),
        ("later fragment", with(7, 1), 0x0800, REJECT, ACCEPT),
        (
            "fragment offset high bits",
            with(6, 0x1f),
            0x0800,
            REJECT,
            ACCEPT,
        ),
        (
            "too short for the protocol",
            good[..9].to_vec(),
            0x0800,
            REJECT,
            REJECT,
        ),
        (
            "too short for the address",
            good[..18].to_vec(),
            0x0800,
            REJECT,
            REJECT,
        ),
        (
            "too short for the port",
            good[..23].to_vec(),
            0x0800,
            REJECT,
            REJECT,
        ),
        ("empty", Vec::new(), 0x0800, REJECT, REJECT),
    ];
    let listed = filter(&keys, KeySense::Listed);
    let unlisted = filter(&keys, KeySense::Unlisted);
    let set: BTreeSet<Key> = keys.into_iter().collect();
    for (what, packet, protocol, keep, drop) in cases {
        assert_eq!(verdict(&listed, &packet, protocol), keep, "Listed: {what}");
        assert_eq!(
            verdict(&unlisted, &packet, protocol),
            drop,
            "Unlisted: {what}"
        );
        // The model the property tests use agrees with every hand-written case.
        assert_eq!(
            expected(&set, KeySense::Listed, &packet, protocol),
            keep,
            "{what}"
        );
        assert_eq!(
            expected(&set, KeySense::Unlisted, &packet, protocol),
            drop,
            "{what}"
        );
    }
}

/// `skb` with the VLAN tag `tci` in metadata.
fn tagged<'a>(network: &'a [u8], tci: u16) -> Skb<'a> {
    Skb {
        vlan: Some(crate::bpf::interp::VlanTag { tpid: 0x8100, tci }),
        ..Skb::received(network, 0x0800)
    }
}

#[test]
fn a_key_matches_only_its_vlan() {
    let group = Ipv4Addr::new(239, 1, 2, 3);
    let keys = [
        FilterKey::from((group, 5000, Some(100))),
        FilterKey::from((group, 5001)),
    ];
    let packet = |port| udp_packet((group, port), 0);
    for sense in [KeySense::Listed, KeySense::Unlisted] {
        let program = key_filter(keys, sense).expect("fits");
        assert_eq!(validate_program(&program), Ok(()));
        let interpreter = Interpreter::new(&program).expect("valid");
        let (member, other) = match sense {
            KeySense::Listed => (ACCEPT, REJECT),
            KeySense::Unlisted => (REJECT, ACCEPT),
        };
        // (what, port, the tag's TCI or none, a member?)
        let cases = [
            ("VLAN 100", 5000, Some(100), true),
            ("VLAN 100 with priority 5", 5000, Some(0xa000 | 100), true),
            ("untagged, VLAN 100's port", 5000, None, false),
            ("VLAN 101", 5000, Some(101), false),
            ("untagged key, untagged", 5001, None, true),
            ("untagged key, priority tag", 5001, Some(0xe000), true),
            ("untagged key, VLAN 100", 5001, Some(100), false),
        ];
        for (what, port, tci, is_member) in cases {
            let network = packet(port);
            let skb = match tci {
                Some(tci) => tagged(&network, tci),
                None => Skb::received(&network, 0x0800),
            };
            let want = if is_member { member } else { other };
            assert_eq!(interpreter.run(&skb), Ok(want), "{sense:?}: {what}");
        }
    }
}

#[test]
fn the_limit_fits_and_more_does_not() {
    for keys in [
        distinct_addresses(KEY_FILTER_MAX_KEYS),
        one_address(KEY_FILTER_MAX_KEYS),
    ] {
        for sense in [KeySense::Listed, KeySense::Unlisted] {
            let program = filter(&keys, sense);
            let interpreter = Interpreter::new(&program).expect("valid");
            let set: BTreeSet<Key> = keys.iter().copied().collect();
            // Every key and its neighbours, so that every leaf and far branch runs.
            for &(address, port) in &keys {
                let bits = u32::from(address);
                for probe in [
                    (address, port),
                    (Ipv4Addr::from(bits.wrapping_sub(1)), port),
                    (Ipv4Addr::from(bits.wrapping_add(1)), port),
                    (address, port.wrapping_sub(1)),
                    (address, port.wrapping_add(1)),
                ] {
                    let packet = udp_packet(probe, 0);
                    let got = interpreter.run(&Skb::received(&packet, 0x0800));
                    assert_eq!(got, Ok(expected(&set, sense, &packet, 0x0800)), "{probe:?}");
                }
            }
        }
    }
    let over = distinct_addresses(KEY_FILTER_MAX_KEYS + 100);
    let error = key_filter(over, KeySense::Listed).expect_err("4 instructions a key is too many");
    assert_eq!(
        error,
        KeyFilterError::TooManyKeys {
            keys: KEY_FILTER_MAX_KEYS + 100,
            limit: KEY_FILTER_MAX_KEYS
        }
    );
    let message = error.to_string();
    assert!(
        message.contains("1100") && message.contains("1000"),
        "{message}"
    );
    assert!(message.contains("BPF_MAXINSNS"), "{message}");
    let refused = key_filter(one_address(4000), KeySense::Unlisted);
    assert!(matches!(
        refused,
        Err(KeyFilterError::TooManyKeys { keys: 4000, .. })
    ));
}

#[test]
fn limit_has_room_to_spare() {
    // The largest set of the worst kind that still fits: the documented limit stays below it.
    let largest = (KEY_FILTER_MAX_KEYS..2 * KEY_FILTER_MAX_KEYS)
        .take_while(|&n| {
            [KeySense::Listed, KeySense::Unlisted]
                .into_iter()
                .all(|sense| key_filter(distinct_addresses(n), sense).is_ok())
        })
        .last()
        .expect("the limit itself fits");
    println!("distinct addresses: at most {largest} keys fit");
    assert!(largest >= KEY_FILTER_MAX_KEYS);
}

#[test]
fn duplicates_and_order_do_not_matter() {
    let keys = distinct_addresses(50);
    let mut shuffled: Vec<Key> = keys.iter().rev().copied().collect();
    shuffled.extend_from_slice(&keys[..20]);
    for sense in [KeySense::Listed, KeySense::Unlisted] {
        assert_eq!(filter(&keys, sense), filter(&shuffled, sense));
    }
}

#[test]
fn size_is_linear_and_search_depth_logarithmic() {
    for n in [1usize, 10, 100, 1000] {
        for (shape, keys, addresses, ports) in [
            ("distinct addresses", distinct_addresses(n), n, 1),
            ("one address", one_address(n), 1, n),
        ] {
            for (sense, prologue) in [(KeySense::Listed, 22), (KeySense::Unlisted, 24)] {
                let program = filter(&keys, sense);
                let depth = longest_path(&program);
                let is = |code: u16| move |insn: &&Instruction| insn.code == code;
                let instructions = program.instructions();
                let jas = instructions.iter().filter(is(BPF_JMP | BPF_JA)).count();
                let rets = instructions.iter().filter(is(BPF_RET | BPF_K)).count();
                let stand_ins = jas + rets - 2;
                println!(
                    "{sense:?}, {n} keys, {shape}: {} instructions ({stand_ins} stand-ins), \
                     at most {depth} run",
                    program.len()
                );
                // One node per address and per key, one equality and one txa per address, and
                // the final two returns.
                let tree = 2 * (addresses + n) - 1;
                assert_eq!(program.len(), prologue + tree + 2 + stand_ins, "{shape}");
                assert!(stand_ins <= 2 + program.len() / 64, "{stand_ins} stand-ins");
                // The prologue, a comparison per level, the leaf equalities and txa, the return;
                // a ja or copied ret may follow each comparison.
                let levels = ceil_log2(addresses) + ceil_log2(ports);
                assert!(depth <= 22 + 2 * (levels + 3) + 1, "{depth} for {n} keys");
            }
        }
    }
}

/// A key set mixing addresses with many ports and addresses with one, some of them neighbours.
fn key_set(max_addresses: usize) -> impl Strategy<Value = Vec<Key>> {
    let address = prop_oneof![
        any::<u32>(),
        0xEF00_0000u32..0xEF00_0010,
        Just(0u32),
        Just(u32::MAX)
    ];
    let port = prop_oneof![any::<u16>(), 5000u16..5010, Just(0u16), Just(u16::MAX)];
    prop::collection::vec(
        (address, prop::collection::vec(port, 1..8)),
        1..max_addresses,
    )
    .prop_map(|groups| {
        groups
            .into_iter()
            .flat_map(|(address, ports)| {
                ports
                    .into_iter()
                    .map(move |port| (Ipv4Addr::from(address), port))
            })
            .collect()
    })
}

/// Probes around `keys`: each key, its neighbours and the same address on another port.
fn probes(keys: &[Key], other_port: u16) -> Vec<Key> {
    keys.iter()
        .flat_map(|&(address, port)| {
            let bits = u32::from(address);
            [
                (address, port),
                (Ipv4Addr::from(bits.wrapping_sub(1)), port),
                (Ipv4Addr::from(bits.wrapping_add(1)), port),
                (address, port.wrapping_sub(1)),
                (address, port.wrapping_add(1)),
                (address, other_port),
            ]
        })
        .collect()
}

/// A packet near a keyed UDP frame, with any of the fields the filter reads changed.
fn packet_near(key: Key) -> impl Strategy<Value = (Vec<u8>, u16)> {
    let protocol = prop_oneof![
        4 => Just(0x0800u16),
        1 => Just(0x8100u16),
        1 => Just(0x88a8u16),
        1 => any::<u16>()
    ];
    let first = prop_oneof![4 => 0x45u8..=0x4f, 1 => any::<u8>()];
    let ip_protocol = prop_oneof![4 => Just(17u8), 1 => any::<u8>()];
    let fragment = prop_oneof![2 => Just(0u16), 1 => Just(0x2000u16), 1 => any::<u16>()];
    let cut = prop_oneof![4 => Just(usize::MAX), 1 => 0usize..80];
    (protocol, first, ip_protocol, fragment, cut).prop_map(
        move |(protocol, first, ip_protocol, fragment, cut)| {
            let options = usize::from(first & 0xf).saturating_sub(5);
            let mut packet = udp_packet(key, options);
            packet[0] = first;
            packet[9] = ip_protocol;
            packet[6..8].copy_from_slice(&fragment.to_be_bytes());
            packet.truncate(cut);
            (packet, protocol)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn verdict_is_set_membership(
        keys in key_set(150),
        other_port in any::<u16>(),
        options in 0usize..=10,
        first_fragment in any::<bool>(),
    ) {
        let set: BTreeSet<Key> = keys.iter().copied().collect();
        let listed = filter(&keys, KeySense::Listed);
        let unlisted = filter(&keys, KeySense::Unlisted);
        let listed = Interpreter::new(&listed).expect("valid");
        let unlisted = Interpreter::new(&unlisted).expect("valid");
        for probe in probes(&keys, other_port) {
            let mut packet = udp_packet(probe, options);
            if first_fragment {
                packet[6] = 0x20;
            }
            let skb = Skb::received(&packet, 0x0800);
            let member = set.contains(&probe);
            prop_assert_eq!(listed.run(&skb), Ok(if member { ACCEPT } else { REJECT }));
            prop_assert_eq!(unlisted.run(&skb), Ok(if member { REJECT } else { ACCEPT }));
        }
    }

    #[test]
    fn verdict_follows_the_documented_rules(
        (keys, (packet, protocol)) in key_set(40).prop_flat_map(|keys| {
            let key = prop_oneof![
                prop::sample::select(keys.clone()),
                (any::<u32>(), any::<u16>()).prop_map(|(a, p)| (Ipv4Addr::from(a), p)),
            ];
            (Just(keys), key.prop_flat_map(packet_near))
        }),
    ) {
        let set: BTreeSet<Key> = keys.iter().copied().collect();
        for sense in [KeySense::Listed, KeySense::Unlisted] {
            let got = verdict(&filter(&keys, sense), &packet, protocol);
            prop_assert_eq!(got, expected(&set, sense, &packet, protocol), "{:?}", sense);
        }
    }

    #[test]
    fn unlisted_empty_is_the_prefilter(
        network in prop::collection::vec(any::<u8>(), 0..64),
        udp in any::<bool>(),
        protocol in prop_oneof![
            Just(0x0800u16), Just(0x8100u16), Just(0x88a8u16), Just(0x86ddu16), any::<u16>()
        ],
    ) {
        let mut network = network;
        if udp && network.len() > 9 {
            network[9] = 17;
        }
        let program = filter(&[], KeySense::Unlisted);
        prop_assert_eq!(
            verdict(&program, &network, protocol),
            verdict(&udp_prefilter(), &network, protocol)
        );
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn tagged_frames_match_by_port_and_vlan(
        keys in prop::collection::vec(
            (0xEF00_0000u32..0xEF00_0004, 5000u16..5004, prop::option::of(1u16..6)),
            1..40,
        ),
        probes in prop::collection::vec(
            (0xEF00_0000u32..0xEF00_0004, 5000u16..5004, prop::option::of(any::<u16>())),
            1..40,
        ),
    ) {
        let keys: Vec<FilterKey> = keys
            .into_iter()
            .map(|(address, port, vlan)| FilterKey::from((Ipv4Addr::from(address), port, vlan)))
            .collect();
        let set: BTreeSet<FilterKey> = keys.iter().copied().collect();
        for sense in [KeySense::Listed, KeySense::Unlisted] {
            let program = key_filter(keys.iter().copied(), sense).expect("fits");
            let interpreter = Interpreter::new(&program).expect("valid");
            for &(address, port, tci) in &probes {
                let network = udp_packet((Ipv4Addr::from(address), port), 0);
                let skb = match tci {
                    Some(tci) => tagged(&network, tci),
                    None => Skb::received(&network, 0x0800),
                };
                // The key as the data path forms it (crate::wire::vlan_key).
                let vlan = tci.map(|tci| tci & 0x0fff).filter(|&vid| vid != 0);
                let probe = FilterKey::from((Ipv4Addr::from(address), port, vlan));
                let member = set.contains(&probe);
                let want = match (sense, member) {
                    (KeySense::Listed, true) | (KeySense::Unlisted, false) => ACCEPT,
                    _ => REJECT,
                };
                prop_assert_eq!(interpreter.run(&skb), Ok(want), "{:?} {:?}", sense, probe);
            }
        }
    }
}

proptest! {
    // Each case builds two programs at the limit.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn the_limit_always_fits(
        keys in key_set(KEY_FILTER_MAX_KEYS).prop_map(|mut keys| {
            keys.truncate(KEY_FILTER_MAX_KEYS);
            keys
        }),
    ) {
        for sense in [KeySense::Listed, KeySense::Unlisted] {
            let program = key_filter(keys.iter().copied(), sense);
            prop_assert!(program.is_ok(), "{} keys", keys.len());
            let program = program.expect("checked just above");
            prop_assert_eq!(validate_program(&program), Ok(()));
        }
    }
}

/// IPv6 keys, mixed with IPv4 ones: every listed key and its neighbours (one bit off in each
/// address word, another port, another VLAN), through extension headers, against the set.
#[test]
fn ipv6_keys_match_exactly_in_both_senses() {
    use crate::test_frames::{Extension, Ipv6Udp, ipv6_packet};
    use std::net::{IpAddr, Ipv6Addr};
    let groups: Vec<Ipv6Addr> = [
        "ff3e::8000:1",
        "ff3e::8000:2",
        "ff3e:0:0:1::8000:1",
        "ff05::7",
    ]
    .iter()
    .map(|text| text.parse().unwrap())
    .collect();
    let mut keys: Vec<FilterKey> = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        keys.push(FilterKey::from((IpAddr::V6(*group), 5000 + i as u16, None)));
        keys.push(FilterKey::from((IpAddr::V6(*group), 6000, Some(100))));
    }
    keys.push(FilterKey::from((Ipv4Addr::new(239, 1, 1, 1), 5000)));
    let listed = key_filter(keys.iter().copied(), KeySense::Listed).expect("fits");
    let unlisted = key_filter(keys.iter().copied(), KeySense::Unlisted).expect("fits");
    validate_program(&listed).expect("the kernel's checks pass");
    validate_program(&unlisted).expect("the kernel's checks pass");
    let set: BTreeSet<FilterKey> = keys.iter().copied().collect();

    let mut probes: Vec<FilterKey> = keys.clone();
    for key in &keys {
        let IpAddr::V6(address) = key.destination else {
            continue;
        };
        for bit in [0u32, 31, 32, 63, 64, 95, 96, 127] {
            let flipped = Ipv6Addr::from(u128::from(address) ^ (1u128 << bit));
            probes.push(FilterKey {
                destination: flipped.into(),
                ..*key
            });
        }
        probes.push(FilterKey {
            port: key.port + 1,
            ..*key
        });
        probes.push(FilterKey {
            vlan: Some(7),
            ..*key
        });
        probes.push(FilterKey { vlan: None, ..*key });
    }
    let e = |kind, len| Extension { kind, len };
    for probe in probes {
        let IpAddr::V6(destination) = probe.destination else {
            continue;
        };
        for extensions in [&[][..], &[e(0, 8), e(60, 16)]] {
            let packet = ipv6_packet(&Ipv6Udp {
                destination,
                destination_port: probe.port,
                extensions,
                ..Default::default()
            });
            let skb = Skb {
                vlan: probe.vlan.map(|vid| crate::bpf::interp::VlanTag {
                    tpid: 0x8100,
                    tci: vid,
                }),
                ..Skb::received(&packet, 0x86dd)
            };
            let run = |program: &Program| Interpreter::new(program).unwrap().run(&skb).unwrap();
            let member = set.contains(&probe);
            assert_eq!(run(&listed) == ACCEPT, member, "listed {probe:?}");
            assert_eq!(run(&unlisted) == ACCEPT, !member, "unlisted {probe:?}");
        }
    }
    // IPv4 keys still match as before, and a fragment is keyless: the default class keeps it.
    let v4 = udp_packet((Ipv4Addr::new(239, 1, 1, 1), 5000), 0);
    assert_eq!(verdict(&listed, &v4, 0x0800), ACCEPT);
    let fragment = ipv6_packet(&Ipv6Udp {
        extensions: &[e(44, 8)],
        ..Default::default()
    });
    assert_eq!(verdict(&listed, &fragment, 0x86dd), REJECT);
    assert_eq!(verdict(&unlisted, &fragment, 0x86dd), ACCEPT);
    // Without IPv6 rules, the default class keeps IPv6 out, as the pre-filter does.
    let only_v4 = key_filter([(Ipv4Addr::new(239, 1, 1, 1), 5000)], KeySense::Unlisted).unwrap();
    assert_eq!(
        verdict(&only_v4, &ipv6_packet(&Ipv6Udp::default()), 0x86dd),
        REJECT
    );
    let with_rules = key_filter_with(
        [(Ipv4Addr::new(239, 1, 1, 1), 5000)],
        KeySense::Unlisted,
        true,
    )
    .unwrap();
    assert_eq!(
        verdict(&with_rules, &ipv6_packet(&Ipv6Udp::default()), 0x86dd),
        ACCEPT
    );
}
