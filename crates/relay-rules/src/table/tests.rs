//! Tests of table compilation, lookup, checksums and shards.

use super::*;
use crate::interface::Interfaces;
use crate::replicate::multicast_mac;
use crate::rule::{Input, Limits, Output, Ttl};
use crate::shard::shard;
use crate::validate::tests::{interfaces, output, rule};
use crate::wire::IpBits;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

const ETH0: u32 = 2;
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const SENDER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 7);

fn set(rules: Vec<Rule>) -> RuleSet {
    RuleSet::new(rules, interfaces(), Limits::default()).expect("fixture rules are valid")
}

fn with_source(name: &str, source: Ipv4Addr) -> Rule {
    let mut r = rule(name);
    r.input.source = Some(source.into());
    r.outputs[0].port = 6001;
    r
}

#[test]
fn lookup_prefers_the_source_specific_rule() {
    let table = RuleTable::build(&set(vec![rule("any"), with_source("ssm", SENDER)]), 1);
    let name = |source| {
        table
            .lookup(ETH0, GROUP, 5000, source)
            .map(|r| r.name.as_str())
    };
    assert_eq!(name(SENDER), Some("ssm"));
    assert_eq!(name(Ipv4Addr::new(192, 168, 0, 8)), Some("any"));
    assert!(
        table.lookup(ETH0, GROUP, 5001, SENDER).is_none(),
        "other port"
    );
    assert!(
        table.lookup(3, GROUP, 5000, SENDER).is_none(),
        "other interface"
    );
    assert!(
        table
            .lookup(ETH0, Ipv4Addr::new(239, 1, 1, 2), 5000, SENDER)
            .is_none()
    );

    // A parsed datagram finds the same rule.
    let datagram = Datagram {
        vlans: [None, None],
        source: IpBits::from(SENDER),
        destination: IpBits::from(GROUP),
        ipv6: false,
        source_port: 4000,
        destination_port: 5000,
        ttl: 4,
        tos: 0,
        ip_id: 0,
        udp_checksum: 0,
        payload: b"payload",
    };
    assert_eq!(
        table
            .lookup_datagram(ETH0, &datagram)
            .map(|r| r.name.as_str()),
        Some("ssm")
    );
    assert!(table.lookup_datagram(3, &datagram).is_none());

    let only_ssm = RuleTable::build(&set(vec![with_source("ssm", SENDER)]), 1);
    assert_eq!(
        only_ssm.lookup(ETH0, GROUP, 5000, SENDER).map(|r| r.id),
        Some(RuleId(0))
    );
    assert!(
        only_ssm
            .lookup(ETH0, GROUP, 5000, Ipv4Addr::new(192, 168, 0, 8))
            .is_none()
    );
}

#[test]
fn outputs_compile_to_ring_or_socket() {
    let mut r = rule("r");
    r.outputs = vec![
        Output {
            vlan: Some(7),
            dscp: Some(34),
            ..output("eth1", [239, 2, 2, 2], 6000)
        },
        output("eth1", [10, 1, 0, 99], 6001),
        output("wg0", [239, 9, 9, 9], 6002),
        Output {
            source: Some(Ipv4Addr::new(10, 0, 0, 2).into()),
            ..output("eth0", [239, 3, 3, 3], 6003)
        },
    ];
    let table = RuleTable::build(&set(vec![r]), 9);
    let compiled = table.lookup(ETH0, GROUP, 5000, SENDER).expect("rule r");
    assert_eq!(compiled.ifindex, ETH0);
    assert_eq!(compiled.outputs.len(), 4);

    let CompiledOutput::Ring { ifindex, template } = &compiled.outputs[0] else {
        panic!(
            "a group on eth1 is a ring output: {:?}",
            compiled.outputs[0]
        );
    };
    assert_eq!(*ifindex, 3);
    let spec = template.spec();
    assert_eq!(spec.src_mac, [2, 0, 0, 0, 0, 3]);
    assert_eq!(spec.dst_mac, multicast_mac(Ipv4Addr::new(239, 2, 2, 2)));
    assert_eq!(
        spec.source,
        Ipv4Addr::new(10, 1, 0, 1),
        "the interface's first address"
    );
    assert_eq!((spec.destination_port, spec.source_port), (6000, None));
    assert_eq!(
        (spec.vlan, spec.dscp, spec.ttl, spec.mtu),
        (Some(7), Some(34), Ttl::Fixed(16), 1500)
    );

    let expect_socket =
        |index: usize, ifindex: u32, source: [u8; 4], destination: [u8; 4], port| match &compiled
            .outputs[index]
        {
            CompiledOutput::Socket {
                ifindex: i,
                source: s,
                destination: d,
                ttl,
                dscp,
            } => {
                assert_eq!(
                    (*i, *s, *d),
                    (
                        ifindex,
                        source.into(),
                        SocketAddr::from(SocketAddrV4::new(destination.into(), port))
                    )
                );
                assert_eq!((*ttl, *dscp), (16, None));
            }
            other => panic!("output {index} should be a socket output: {other:?}"),
        };
    expect_socket(1, 3, [10, 1, 0, 1], [10, 1, 0, 99], 6001);
    expect_socket(2, 4, [10, 2, 0, 1], [239, 9, 9, 9], 6002);
    let CompiledOutput::Ring { template, .. } = &compiled.outputs[3] else {
        panic!("a group on eth0 is a ring output");
    };
    assert_eq!(
        template.spec().source,
        Ipv4Addr::new(10, 0, 0, 2),
        "explicit source"
    );
    assert_eq!(compiled.outputs[3].ifindex(), ETH0);
}

#[test]
fn ids_generation_and_checksum() {
    let rules: Vec<Rule> = (0..10u16)
        .map(|i| {
            let mut r = rule(&format!("r{i}"));
            r.input.port = 5000 + i;
            r
        })
        .collect();
    let forward = set(rules.clone());
    let table = RuleTable::build(&forward, 42);
    assert_eq!(
        (table.generation(), table.len(), table.shards()),
        (42, 10, None)
    );
    let ids: Vec<u32> = table.rules().map(|r| r.id.0).collect();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
    assert_eq!(table.get(RuleId(3)).map(|r| r.name.as_str()), Some("r3"));
    assert_eq!(table.checksum(), forward.checksum());
    assert_ne!(table.checksum(), 0);

    let mut reversed_rules = rules;
    reversed_rules.reverse();
    let reversed = RuleTable::build(&set(reversed_rules), 43);
    assert_eq!(reversed.checksum(), table.checksum(), "order-independent");
    let fewer = RuleTable::build(&forward.without("r4").expect("r4 exists"), 44);
    assert_ne!(fewer.checksum(), table.checksum());
    assert!(RuleTable::build(&RuleSet::empty(Interfaces::new(), Limits::default()), 0).is_empty());
}

/// `count` valid rules on distinct groups and ports, inputs on eth0, outputs on eth1.
fn many_rules(count: u32) -> Vec<Rule> {
    let base = u32::from(Ipv4Addr::new(239, 0, 0, 0));
    (0..count)
        .map(|i| Rule {
            name: format!("rule-{i}"),
            input: Input {
                interface: "eth0".into(),
                destination: Ipv4Addr::from(base + i / 4).into(),
                port: 5000 + (i % 4) as u16,
                source: None,
                vlan: None,
            },
            outputs: vec![output("eth1", (base + i).to_be_bytes(), 6000)],
            class: None,
            inspect: None,
            rtp_clock_hz: None,
            max_pps: None,
            max_bps: None,
        })
        .collect()
}

#[test]
fn a_table_of_several_shards_holds_their_union() {
    let rules = set(many_rules(2_000));
    let two = ShardSet::new(3, [2, 0]).expect("shards 0 and 2 of 3");
    let table = RuleTable::build_shards(&rules, 9, &two);
    let alone: Vec<RuleTable> = [0, 2]
        .into_iter()
        .map(|k| RuleTable::build_shard(&rules, 9, k, 3))
        .collect();
    assert_eq!(table.len(), alone[0].len() + alone[1].len());
    assert_eq!(
        table.checksum(),
        alone[0].checksum().wrapping_add(alone[1].checksum())
    );
    for compiled in table.rules() {
        assert_ne!(shard(compiled.key.destination, compiled.key.port, 3), 1);
    }
}

#[test]
fn shards_partition_the_rules() {
    let rules = set(many_rules(2_000));
    let full = RuleTable::build(&rules, 5);
    let shards: Vec<RuleTable> = (0..3)
        .map(|k| RuleTable::build_shard(&rules, 5, k, 3))
        .collect();
    assert_eq!(shards.iter().map(RuleTable::len).sum::<usize>(), full.len());
    let sum = shards
        .iter()
        .map(RuleTable::checksum)
        .fold(0u64, u64::wrapping_add);
    assert_eq!(sum, full.checksum(), "shard checksums add up to the whole");
    for (k, table) in shards.iter().enumerate() {
        assert_eq!(table.shards(), Some(&ShardSet::one(k as u32, 3)));
        assert!(
            table.len() > 500,
            "shard {k} has only {} of 2000 rules",
            table.len()
        );
        for compiled in table.rules() {
            let key = &compiled.key;
            assert_eq!(shard(key.destination, key.port, 3), k as u32);
            let found = table.lookup(compiled.ifindex, key.destination, key.port, SENDER);
            assert_eq!(
                found.map(|r| r.id),
                Some(compiled.id),
                "ids are dense within the shard"
            );
        }
    }
}

#[test]
fn builds_and_finds_100k_rules() {
    let rules = many_rules(100_000);
    let started = std::time::Instant::now();
    let set = set(rules);
    let validated = started.elapsed();
    let table = RuleTable::build(&set, 1);
    let built = started.elapsed() - validated;
    // Printed for the record (cargo test -- --nocapture); no assertion on time.
    println!("100k rules: validated in {validated:?}, table built in {built:?}");
    assert_eq!(table.len(), 100_000);
    for rule in set.rules().iter().step_by(97) {
        let found = table.lookup(ETH0, rule.input.destination, rule.input.port, SENDER);
        assert_eq!(found.map(|r| r.name.as_str()), Some(rule.name.as_str()));
    }
}

#[test]
fn ipv6_keys_beside_ipv4_ones_with_source_specific_rules() {
    use std::net::{IpAddr, Ipv6Addr};
    let group: Ipv6Addr = "ff3e::8000:1".parse().unwrap();
    let sender: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let mut any6 = rule("any6");
    any6.input.destination = group.into();
    let mut ssm6 = with_source("ssm6", Ipv4Addr::UNSPECIFIED);
    ssm6.input.destination = group.into();
    ssm6.input.source = Some(sender.into());
    // The IPv4-mapped form of GROUP is never a key of the IPv4 rule's.
    let table = RuleTable::build(&set(vec![rule("any4"), any6, ssm6]), 1);
    let name = |destination: IpAddr, source: IpAddr| {
        table
            .lookup(ETH0, destination, 5000, source)
            .map(|r| r.name.as_str())
    };
    assert_eq!(name(group.into(), sender.into()), Some("ssm6"));
    assert_eq!(
        name(
            group.into(),
            "2001:db8::8".parse::<Ipv6Addr>().unwrap().into()
        ),
        Some("any6")
    );
    assert_eq!(name(GROUP.into(), SENDER.into()), Some("any4"));
    assert_eq!(name(GROUP.to_ipv6_mapped().into(), SENDER.into()), None);
    assert_eq!(
        name(
            "ff3e::8000:2".parse::<Ipv6Addr>().unwrap().into(),
            sender.into()
        ),
        None
    );
    // An IPv4 source never matches an IPv6 rule's source, even one whose mapped form would.
    assert_eq!(name(group.into(), SENDER.into()), Some("any6"));
}
