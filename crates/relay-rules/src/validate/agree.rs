//! Incremental checking agrees with validating the whole new set: random sets and changes over
//! a small world where names, keys, endpoints and bad fields collide often, compared step by
//! step with the whole-set algorithm (remove, append, [`validate`] everything).

use super::tests::interfaces;
use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const NAMES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "bad name"];
const INTERFACES: [&str; 5] = ["eth0", "eth1", "wg0", "bare", "nope"];
const ADDRESSES: [[u8; 4]; 5] = [
    [239, 1, 1, 1],
    [239, 1, 1, 2],
    [10, 0, 0, 1],
    [10, 9, 9, 9],
    [224, 0, 0, 5],
];
/// IPv6 addresses: a group, a local address of eth0, a link-local group, an IPv4-mapped one.
const ADDRESSES6: [[u16; 8]; 4] = [
    [0xff3e, 0, 0, 0, 0, 0, 0x8000, 1],
    [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1],
    [0xff02, 0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 0xffff, 0xef01, 0x0101],
];
const PORTS: [u16; 3] = [5000, 5001, 0];
const SOURCES: [Option<[u8; 4]>; 3] = [None, Some([192, 0, 2, 1]), Some([192, 0, 2, 2])];

fn endpoint_parts() -> impl Strategy<Value = (String, IpAddr, u16)> {
    // Mostly valid parts, so that sets grow and changes collide with them.
    let v4 = |octets: [u8; 4]| IpAddr::from(Ipv4Addr::from(octets));
    let v6 = |words: [u16; 8]| IpAddr::from(Ipv6Addr::from(words));
    (
        prop::sample::select(&INTERFACES[..3]).prop_union(prop::sample::select(&INTERFACES[..])),
        prop::sample::select(&ADDRESSES[..2])
            .prop_map(v4)
            .prop_union(prop::sample::select(&ADDRESSES[..]).prop_map(v4))
            .boxed()
            .prop_union(prop::sample::select(&ADDRESSES6[..]).prop_map(v6).boxed()),
        prop::sample::select(&PORTS[..2]).prop_union(prop::sample::select(&PORTS[..])),
    )
        .prop_map(|(interface, address, port)| (interface.to_owned(), address, port))
}

fn rule() -> impl Strategy<Value = Rule> {
    let output = (
        endpoint_parts(),
        prop::sample::select(&[16u8, 16, 16, 0][..]),
    )
        .prop_map(|((interface, destination, port), ttl)| Output {
            interface,
            destination,
            port,
            ttl: Ttl::Fixed(ttl),
            source: None,
            dscp: None,
            vlan: None,
        });
    (
        prop::sample::select(&NAMES[..]),
        endpoint_parts(),
        prop::sample::select(&SOURCES[..]),
        prop::collection::vec(output, 0..=2),
    )
        .prop_map(
            |(name, (interface, destination, port), source, outputs)| Rule {
                name: name.to_owned(),
                input: Input {
                    interface,
                    destination,
                    port,
                    source: source.map(|octets| Ipv4Addr::from(octets).into()),
                    vlan: None,
                },
                outputs,
                class: None,
                inspect: None,
                rtp_clock_hz: None,
                max_pps: None,
                max_bps: None,
            },
        )
}

#[derive(Debug, Clone)]
struct Step {
    add: Vec<Rule>,
    remove: Vec<String>,
    revert: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(rule(), 0..=3),
        prop::collection::vec(prop::sample::select(&NAMES[..]), 0..=3),
        any::<bool>(),
    )
        .prop_map(|(add, remove, revert)| Step {
            add,
            remove: remove.into_iter().map(str::to_owned).collect(),
            revert,
        })
}

/// The whole-set algorithm: the rules after the change, or its problems.
fn whole(
    rules: &[Rule],
    add: &[Rule],
    remove: &[String],
) -> Result<Vec<Rule>, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mut removed = vec![false; rules.len()];
    for name in remove {
        match rules.iter().position(|rule| rule.name == *name) {
            Some(position) if !removed[position] => removed[position] = true,
            _ => errors.push(ValidationError {
                rule: name.clone(),
                field: Field::Name,
                problem: Problem::NoSuchRule,
            }),
        }
    }
    let mut new: Vec<Rule> = rules
        .iter()
        .zip(&removed)
        .filter(|&(_, &gone)| !gone)
        .map(|(rule, _)| rule.clone())
        .collect();
    new.extend(add.iter().cloned());
    if let Err(invalid) = validate(&new, &interfaces(), &Limits::default()) {
        errors.extend(invalid.into_errors());
    }
    if errors.is_empty() {
        Ok(new)
    } else {
        Err(errors)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn incremental_checks_agree_with_whole_set_validation(
        start in prop::collection::vec(rule(), 0..10),
        steps in prop::collection::vec(step(), 1..8),
    ) {
        // A valid start: the rules that keep the set valid, in order.
        let mut rules: Vec<Rule> = Vec::new();
        for rule in start {
            if let Ok(grown) = whole(&rules, std::slice::from_ref(&rule), &[]) {
                rules = grown;
            }
        }
        let mut set = RuleSet::new(rules.clone(), interfaces(), Limits::default())
            .expect("built from valid rules");
        for step in steps {
            let expected = whole(&rules, &step.add, &step.remove);
            let copied = set.with_changes(step.add.clone(), &step.remove);
            let applied = set.apply(step.add.clone(), &step.remove);
            match (expected, applied) {
                (Ok(new), Ok(applied)) => {
                    prop_assert_eq!(set.rules(), new.as_slice());
                    let copied = copied.expect("accepted too");
                    prop_assert_eq!(copied.rules(), new.as_slice());
                    set.assert_index_fresh();
                    for rule in &new {
                        prop_assert_eq!(set.get(&rule.name), Some(rule));
                    }
                    let removed: Vec<&str> = applied.removed().map(|r| r.name.as_str()).collect();
                    prop_assert_eq!(removed.len(), step.remove.len());
                    if step.revert {
                        set.revert(applied);
                        prop_assert_eq!(set.rules(), rules.as_slice());
                        set.assert_index_fresh();
                    } else {
                        rules = new;
                    }
                }
                (Err(problems), Err(refused)) => {
                    prop_assert_eq!(refused.errors(), problems.as_slice());
                    let copied = copied.expect_err("refused too");
                    prop_assert_eq!(copied.errors(), problems.as_slice());
                    prop_assert_eq!(set.rules(), rules.as_slice(), "a refused change changes nothing");
                    set.assert_index_fresh();
                }
                (expected, applied) => {
                    prop_assert!(false, "whole: {:?}\nincremental: {:?}", expected, applied);
                }
            }
        }
    }
}
