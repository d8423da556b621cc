//! Tests of in-place changes: each refusal, id reuse, removal within a group, shard tables.

use super::*;
use crate::rule::{Limits, Output};
use crate::shard::shard;
use crate::table::checksum_of;
use crate::validate::tests::{interfaces, output, rule};
use crate::validate::{Field, InputField, OutputField, RuleSet};
use std::net::Ipv4Addr;

const ETH0: u32 = 2;
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const SENDER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 7);

fn empty() -> RuleTable {
    RuleTable::build(&RuleSet::empty(interfaces(), Limits::default()), 0)
}

fn on_port(name: &str, port: u16) -> Rule {
    let mut r = rule(name);
    r.input.port = port;
    r
}

fn from(name: &str, source: Ipv4Addr) -> Rule {
    let mut r = rule(name);
    r.input.source = Some(source.into());
    r
}

fn inserted(table: &mut RuleTable, rule: &Rule) -> RuleId {
    match table.insert(rule, &interfaces()) {
        Ok(Insertion::Inserted(id)) => id,
        other => panic!("{} should be inserted: {other:?}", rule.name),
    }
}

fn name_at(table: &RuleTable, port: u16, source: Ipv4Addr) -> Option<&str> {
    table
        .lookup(ETH0, GROUP, port, source)
        .map(|r| r.name.as_str())
}

/// Inserts `rule`, expects `refusal`, and checks that the table did not change.
fn refused(table: &mut RuleTable, rule: &Rule, refusal: TableError) {
    let before = (table.len(), table.checksum(), table.id_capacity());
    let names: Vec<String> = table.rules().map(|r| r.name.clone()).collect();
    assert_eq!(table.insert(rule, &interfaces()), Err(refusal));
    assert_eq!((table.len(), table.checksum(), table.id_capacity()), before);
    let after: Vec<String> = table.rules().map(|r| r.name.clone()).collect();
    assert_eq!(after, names);
}

#[test]
fn insert_compiles_as_build_does() {
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
    let set = RuleSet::new(vec![r.clone()], interfaces(), Limits::default()).expect("valid");
    let built = RuleTable::build(&set, 1);
    let mut table = empty();
    assert_eq!(inserted(&mut table, &r), RuleId(0));
    assert_eq!(
        format!("{:?}", table.get(RuleId(0))),
        format!("{:?}", built.get(RuleId(0)))
    );
    assert_eq!((table.len(), table.checksum()), (1, built.checksum()));
    assert_eq!(name_at(&table, 5000, SENDER), Some("r"));
}

#[test]
fn a_name_already_present_is_refused() {
    let mut table = empty();
    inserted(&mut table, &rule("a"));
    let refusal = TableError::DuplicateName { rule: "a".into() };
    refused(&mut table, &on_port("a", 5001), refusal);
    assert_eq!(name_at(&table, 5001, SENDER), None);
}

#[test]
fn a_key_already_present_is_refused() {
    let mut table = empty();
    inserted(&mut table, &from("ssm", SENDER));
    // Same interface, group and port, but any-source: another key.
    inserted(&mut table, &rule("any"));
    let key_of = |r: &Rule| r.input.key();
    let twin = from("twin", SENDER);
    let refusal = TableError::DuplicateKey {
        rule: "twin".into(),
        other: "ssm".into(),
        key: key_of(&twin),
    };
    refused(&mut table, &twin, refusal);
    let refusal = TableError::DuplicateKey {
        rule: "b".into(),
        other: "any".into(),
        key: key_of(&rule("b")),
    };
    assert_eq!(
        refusal.to_string(),
        r#"rule "b": rule "any" already matches eth0:239.1.1.1:5000"#
    );
    refused(&mut table, &rule("b"), refusal);
    // Another source on the same group is another key.
    inserted(&mut table, &from("other", Ipv4Addr::new(192, 168, 0, 8)));
    assert_eq!(name_at(&table, 5000, SENDER), Some("ssm"));
    assert_eq!(
        name_at(&table, 5000, Ipv4Addr::new(192, 168, 0, 8)),
        Some("other")
    );
    assert_eq!(
        name_at(&table, 5000, Ipv4Addr::new(192, 168, 0, 9)),
        Some("any")
    );
}

#[test]
fn an_interface_the_facts_do_not_know_is_refused() {
    let mut table = empty();
    let mut r = rule("in");
    r.input.interface = "eth9".into();
    let refusal = TableError::UnknownInterface {
        rule: "in".into(),
        field: Field::Input(InputField::Interface),
        interface: "eth9".into(),
    };
    refused(&mut table, &r, refusal);

    let mut r = rule("out");
    r.outputs.push(output("eth9", [239, 2, 2, 3], 6000));
    let refusal = TableError::UnknownInterface {
        rule: "out".into(),
        field: Field::Output {
            index: 1,
            field: OutputField::Interface,
        },
        interface: "eth9".into(),
    };
    assert_eq!(
        refusal.to_string(),
        r#"rule "out": outputs[1].interface: no interface named "eth9" in the facts given"#
    );
    refused(&mut table, &r, refusal);

    // Facts are the caller's, not the table's: the worker's view of its interfaces counts.
    let without_eth1: Interfaces = interfaces()
        .iter()
        .filter(|facts| facts.name != "eth1")
        .cloned()
        .collect();
    let refusal = table.insert(&rule("r"), &without_eth1);
    assert!(
        matches!(&refusal, Err(TableError::UnknownInterface { interface, .. }) if interface == "eth1"),
        "{refusal:?}"
    );
    assert!(table.is_empty());
}

#[test]
fn an_output_without_any_source_is_refused() {
    let mut table = empty();
    let mut r = rule("r");
    r.outputs = vec![output("bare", [239, 2, 2, 2], 6000)];
    let refusal = TableError::NoSourceAddress {
        rule: "r".into(),
        field: Field::Output {
            index: 0,
            field: OutputField::Source,
        },
        interface: "bare".into(),
    };
    assert_eq!(refusal.rule(), "r");
    refused(&mut table, &r, refusal);
}

#[test]
fn removed_ids_are_reused_and_the_others_stay() {
    let mut table = empty();
    let ids: Vec<RuleId> = (0..4u16)
        .map(|i| inserted(&mut table, &on_port(&format!("r{i}"), 5000 + i)))
        .collect();
    assert_eq!(ids, [RuleId(0), RuleId(1), RuleId(2), RuleId(3)]);
    assert_eq!(table.remove("r1"), Some(RuleId(1)));
    assert_eq!(table.remove("r1"), None, "already gone");
    assert_eq!(table.remove("r3"), Some(RuleId(3)));
    assert_eq!((table.len(), table.id_capacity()), (2, 4));
    assert!(table.get(RuleId(1)).is_none());
    let vacant = &table.rules[1];
    assert!(
        vacant.name.is_empty() && vacant.outputs.is_empty(),
        "a freed id keeps nothing of its rule: {vacant:?}"
    );
    assert_eq!(name_at(&table, 5001, SENDER), None);
    let id_at = |table: &RuleTable, port| table.lookup(ETH0, GROUP, port, SENDER).map(|r| r.id);
    assert_eq!(id_at(&table, 5002), Some(RuleId(2)), "r2 keeps its id");

    // Last freed, first reused; a new id only once none is free.
    assert_eq!(inserted(&mut table, &on_port("n1", 5101)), RuleId(3));
    assert_eq!(inserted(&mut table, &on_port("n2", 5102)), RuleId(1));
    assert_eq!(inserted(&mut table, &on_port("n3", 5103)), RuleId(4));
    assert_eq!((table.len(), table.id_capacity()), (5, 5));
    assert_eq!(id_at(&table, 5102), Some(RuleId(1)));
    assert_eq!(table.get(RuleId(3)).map(|r| r.name.as_str()), Some("n1"));
    let rules = table.rules();
    assert_eq!(rules.len(), 5);
    let names: Vec<&str> = rules.map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["r0", "n2", "r2", "n1", "n3"], "id order, live only");
}

#[test]
fn removing_one_source_keeps_the_rest_of_the_group() {
    let mut table = empty();
    inserted(&mut table, &rule("any"));
    inserted(&mut table, &from("ssm", SENDER));
    assert_eq!(table.remove("ssm"), Some(RuleId(1)));
    assert_eq!(name_at(&table, 5000, SENDER), Some("any"));
    assert_eq!(table.remove("any"), Some(RuleId(0)));
    assert_eq!(name_at(&table, 5000, SENDER), None);
    assert!(table.slots.is_empty(), "an emptied slot is dropped");
    assert!(table.is_empty());
    assert_eq!(table.checksum(), 0);
}

#[test]
fn checksum_and_generation_follow_changes() {
    let mut table = empty();
    table.set_generation(7);
    let (a, b) = (rule("a"), on_port("b", 5001));
    inserted(&mut table, &a);
    inserted(&mut table, &b);
    assert_eq!(table.checksum(), checksum_of([&a, &b]));
    table.remove("a");
    assert_eq!(table.checksum(), checksum_of([&b]));
    assert_eq!(
        table.generation(),
        7,
        "changes leave the generation to the caller"
    );
}

#[test]
fn a_shard_table_takes_only_its_own_rules() {
    let rules: Vec<Rule> = (0..40u16)
        .map(|i| on_port(&format!("r{i}"), 5000 + i))
        .collect();
    let set = RuleSet::empty(interfaces(), Limits::default());
    let mut table = RuleTable::build_shard(&set, 0, 1, 3);
    let mut mine = Vec::new();
    for r in &rules {
        let theirs = shard(r.input.destination, r.input.port, 3);
        let outcome = table.insert(r, &interfaces());
        if theirs == 1 {
            assert!(matches!(outcome, Ok(Insertion::Inserted(_))), "{outcome:?}");
            mine.push(r);
        } else {
            assert_eq!(outcome, Ok(Insertion::OtherShard(theirs)));
            assert_eq!(table.remove(&r.name), None);
        }
    }
    assert!(!mine.is_empty() && mine.len() < rules.len());
    assert_eq!(table.len(), mine.len());
    assert_eq!(table.checksum(), checksum_of(mine.iter().copied()));
    assert_eq!(table.shards(), Some(&crate::shard::ShardSet::one(1, 3)));
}
