//! A model check of in-place changes: random inserts and removes over a pool of rules whose
//! names and keys overlap, compared after every step with a table built from scratch from the
//! same live rules (full tables and shard tables).

use super::*;
use crate::rule::{Input, Limits};
use crate::shard::shard;
use crate::table::checksum_of;
use crate::validate::RuleSet;
use crate::validate::tests::{interfaces, output};
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

const NAMES: usize = 6;
const INPUTS: [&str; 2] = ["eth0", "wg0"];
const GROUPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(239, 1, 1, 1),
    Ipv4Addr::new(239, 1, 1, 2),
    Ipv4Addr::new(239, 1, 1, 3),
];
const PORTS: [u16; 2] = [5000, 5001];
const SOURCES: [Option<Ipv4Addr>; 3] = [
    None,
    Some(Ipv4Addr::new(192, 168, 0, 7)),
    Some(Ipv4Addr::new(192, 168, 0, 8)),
];
const KEYS: usize = INPUTS.len() * GROUPS.len() * PORTS.len() * SOURCES.len();

/// Rule `name` on key number `key`, with one of three kinds of output.
fn pool_rule(name: usize, key: usize, kind: u8) -> Rule {
    let source = SOURCES[key % SOURCES.len()];
    let key = key / SOURCES.len();
    let port = PORTS[key % PORTS.len()];
    let key = key / PORTS.len();
    let destination = GROUPS[key % GROUPS.len()];
    let interface = INPUTS[key / GROUPS.len()];
    let out = match kind {
        0 => output("eth1", [239, 2, 2, 2], 6000),
        1 => output("eth1", [10, 1, 0, 99], 6001),
        _ => output("wg0", [239, 9, 9, 9], 6002),
    };
    Rule {
        name: format!("n{name}"),
        input: Input {
            interface: interface.into(),
            destination: destination.into(),
            port,
            source: source.map(IpAddr::from),
            vlan: None,
        },
        outputs: vec![out],
        class: None,
        inspect: None,
        rtp_clock_hz: None,
        max_pps: None,
        max_bps: None,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(prop::sample::Index),
    Remove(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => any::<prop::sample::Index>().prop_map(Op::Insert),
        2 => (0..NAMES).prop_map(Op::Remove),
    ];
    prop::collection::vec(op, 0..64)
}

fn pool() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec((0..NAMES, 0..KEYS, 0..3u8), 1..16).prop_map(|specs| {
        specs
            .into_iter()
            .map(|(name, key, kind)| pool_rule(name, key, kind))
            .collect()
    })
}

/// `None` for a full table, or `(shard, shards)`.
fn placement() -> impl Strategy<Value = Option<(u32, u32)>> {
    prop_oneof![
        Just(None),
        (1..4u32).prop_flat_map(|shards| (0..shards).prop_map(move |k| Some((k, shards)))),
    ]
}

/// The checks made after every step: `table` answers as a fresh build of `model` does, and
/// every rule kept the id it was given.
fn agrees(
    table: &RuleTable,
    model: &[Rule],
    placement: Option<(u32, u32)>,
    ids: &HashMap<String, RuleId>,
    most: usize,
) -> Result<(), TestCaseError> {
    let facts = interfaces();
    let set = RuleSet::new(model.to_vec(), facts.clone(), Limits::default())
        .map_err(|errors| TestCaseError::fail(format!("the model is invalid: {errors}")))?;
    let fresh = match placement {
        None => RuleTable::build(&set, 0),
        Some((k, shards)) => RuleTable::build_shard(&set, 0, k, shards),
    };
    prop_assert_eq!(table.len(), fresh.len());
    prop_assert_eq!(table.rules().len(), table.len());
    prop_assert_eq!(table.rules().count(), table.len());
    prop_assert_eq!(table.checksum(), fresh.checksum());
    let mine = model.iter().filter(|r| {
        placement.is_none_or(|(k, n)| shard(r.input.destination, r.input.port, n) == k)
    });
    prop_assert_eq!(table.checksum(), checksum_of(mine));
    let extra = Ipv4Addr::new(192, 168, 0, 9);
    for interface in INPUTS {
        let ifindex = facts.get(interface).map(|f| f.index).unwrap_or_default();
        for destination in GROUPS {
            for port in PORTS {
                for source in SOURCES.iter().flatten().copied().chain([extra]) {
                    let name = |t: &RuleTable| {
                        t.lookup(ifindex, destination, port, source)
                            .map(|r| r.name.clone())
                    };
                    prop_assert_eq!(
                        name(table),
                        name(&fresh),
                        "{} {}:{} from {}",
                        interface,
                        destination,
                        port,
                        source
                    );
                }
            }
        }
    }
    prop_assert_eq!(ids.len(), table.len());
    for (name, &id) in ids {
        prop_assert_eq!(table.get(id).map(|r| &r.name), Some(name), "id kept");
    }
    prop_assert_eq!(
        table.id_capacity(),
        most,
        "ids reused before new ones are made"
    );
    Ok(())
}

proptest! {
    #[test]
    fn changes_match_a_fresh_build(pool in pool(), ops in ops(), placement in placement()) {
        let facts = interfaces();
        let empty = RuleSet::empty(facts.clone(), Limits::default());
        let mut table = match placement {
            None => RuleTable::build(&empty, 0),
            Some((k, shards)) => RuleTable::build_shard(&empty, 0, k, shards),
        };
        let is_mine = |r: &Rule| {
            placement.is_none_or(|(k, n)| shard(r.input.destination, r.input.port, n) == k)
        };
        // The supervisor's set: every shard's rules, names and keys unique.
        let mut model: Vec<Rule> = Vec::new();
        let mut ids: HashMap<String, RuleId> = HashMap::new();
        let mut most = 0;
        for op in ops {
            match op {
                Op::Insert(index) => {
                    let rule = index.get(&pool);
                    let same_name = model.iter().find(|r| r.name == rule.name);
                    let same_key = model.iter().find(|r| r.input.key() == rule.input.key());
                    if is_mine(rule) && same_name.is_some_and(|r| !is_mine(r)) {
                        // Another shard's rule has the name: the supervisor refuses this
                        // change and never sends it, and this table could not know.
                        continue;
                    }
                    let outcome = table.insert(rule, &facts);
                    if !is_mine(rule) {
                        let theirs = placement.map(|(_, n)| shard(rule.input.destination, rule.input.port, n));
                        prop_assert_eq!(outcome, Ok(Insertion::OtherShard(theirs.unwrap_or(0))));
                        if same_name.is_none() && same_key.is_none() {
                            model.push(rule.clone());
                        }
                    } else if same_name.is_some() {
                        prop_assert_eq!(outcome, Err(TableError::DuplicateName { rule: rule.name.clone() }));
                    } else if let Some(other) = same_key {
                        prop_assert_eq!(outcome, Err(TableError::DuplicateKey {
                            rule: rule.name.clone(),
                            other: other.name.clone(),
                            key: rule.input.key(),
                        }));
                    } else {
                        let Ok(Insertion::Inserted(id)) = outcome else {
                            return Err(TestCaseError::fail(format!("{} refused: {outcome:?}", rule.name)));
                        };
                        ids.insert(rule.name.clone(), id);
                        model.push(rule.clone());
                    }
                }
                Op::Remove(name) => {
                    let name = format!("n{name}");
                    let removed = table.remove(&name);
                    prop_assert_eq!(removed, ids.remove(&name));
                    model.retain(|r| r.name != name);
                }
            }
            most = most.max(table.len());
            agrees(&table, &model, placement, &ids, most)?;
        }
    }
}
