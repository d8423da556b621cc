//! Tests of rule validation: one refusal per test, and the set's change operations.

use super::*;
use std::net::{IpAddr, Ipv4Addr};

pub(crate) fn interfaces() -> Interfaces {
    let facts = |name: &str, index, mac: Option<[u8; 6]>, ipv4: &[Ipv4Addr]| InterfaceFacts {
        name: name.to_owned(),
        index,
        mac,
        mtu: 1500,
        ipv4: ipv4.to_vec(),
        ipv6: Vec::new(),
    };
    [
        facts(
            "eth0",
            2,
            Some([2, 0, 0, 0, 0, 2]),
            &[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
        ),
        facts(
            "eth1",
            3,
            Some([2, 0, 0, 0, 0, 3]),
            &[Ipv4Addr::new(10, 1, 0, 1)],
        ),
        facts("wg0", 4, None, &[Ipv4Addr::new(10, 2, 0, 1)]),
        facts("bare", 5, Some([2, 0, 0, 0, 0, 5]), &[]),
    ]
    .into_iter()
    .collect()
}

pub(crate) fn output(interface: &str, destination: [u8; 4], port: u16) -> Output {
    Output {
        interface: interface.to_owned(),
        destination: destination.into(),
        port,
        ttl: Ttl::Fixed(16),
        source: None,
        dscp: None,
        vlan: None,
    }
}

/// A valid rule: eth0 239.1.1.1:5000 → eth1 239.2.2.2:6000.
pub(crate) fn rule(name: &str) -> Rule {
    Rule {
        name: name.to_owned(),
        input: Input {
            interface: "eth0".to_owned(),
            destination: Ipv4Addr::new(239, 1, 1, 1).into(),
            port: 5000,
            source: None,
            vlan: None,
        },
        outputs: vec![output("eth1", [239, 2, 2, 2], 6000)],
        class: None,
        inspect: None,
        rtp_clock_hz: None,
        max_pps: None,
        max_bps: None,
    }
}

/// The single error `rules` produce, as (rule, field, problem).
fn only_error(rules: &[Rule]) -> (String, Field, Problem) {
    let errors = validate(rules, &interfaces(), &Limits::default()).expect_err("must be refused");
    assert_eq!(errors.len(), 1, "expected one error, got: {errors}");
    let error = errors.into_errors().remove(0);
    (error.rule, error.field, error.problem)
}

fn refused(change: impl FnOnce(&mut Rule)) -> (Field, Problem) {
    let mut r = rule("r");
    change(&mut r);
    let expected_name = r.name.clone();
    let (name, field, problem) = only_error(&[r]);
    assert_eq!(name, expected_name, "the error names the rule as given");
    (field, problem)
}

const fn out(index: usize, field: OutputField) -> Field {
    Field::Output { index, field }
}

#[test]
fn a_valid_rule_passes() {
    let mut r = rule("cam-1.main_feed");
    r.input.source = Some(Ipv4Addr::new(192, 168, 1, 50).into());
    r.outputs.push(Output {
        vlan: Some(100),
        dscp: Some(46),
        ..output("eth1", [239, 3, 3, 3], 6000)
    });
    r.outputs.push(Output {
        source: Some(Ipv4Addr::new(10, 2, 0, 1).into()),
        ..output("wg0", [10, 9, 9, 9], 7000)
    });
    assert_eq!(validate(&[r], &interfaces(), &Limits::default()), Ok(()));
}

#[test]
fn error_message_names_rule_field_and_problem() {
    let mut r = rule("cam1");
    r.outputs.push(Output {
        ttl: Ttl::Fixed(0),
        ..output("eth1", [239, 2, 2, 3], 6000)
    });
    let errors = validate(&[r], &interfaces(), &Limits::default()).expect_err("TTL 0");
    assert_eq!(
        errors.to_string(),
        r#"rule "cam1": outputs[1].ttl: TTL 0 would never leave the host"#
    );
}

#[test]
fn names_must_be_short_and_plain() {
    assert_eq!(
        refused(|r| r.name.clear()),
        (Field::Name, Problem::EmptyName)
    );
    assert_eq!(
        refused(|r| r.name = "a".repeat(65)),
        (Field::Name, Problem::NameTooLong(65))
    );
    assert_eq!(
        refused(|r| r.name = "cam 1".into()),
        (Field::Name, Problem::NameCharacter(' '))
    );
    assert_eq!(
        refused(|r| r.name = "cam\"1".into()),
        (Field::Name, Problem::NameCharacter('"'))
    );
    let long_ok = rule(&"a".repeat(64));
    assert_eq!(
        validate(&[long_ok], &interfaces(), &Limits::default()),
        Ok(())
    );
}

#[test]
fn input_checks() {
    let unknown = refused(|r| r.input.interface = "eth9".into());
    assert_eq!(
        unknown,
        (
            Field::Input(InputField::Interface),
            Problem::UnknownInterface("eth9".into())
        )
    );
    let foreign = refused(|r| r.input.destination = Ipv4Addr::new(10, 1, 0, 1).into());
    assert_eq!(
        foreign,
        (
            Field::Input(InputField::Destination),
            Problem::NotMulticastOrLocal {
                address: Ipv4Addr::new(10, 1, 0, 1).into(),
                interface: "eth0".into()
            }
        )
    );
    let local = |r: &mut Rule| r.input.destination = Ipv4Addr::new(10, 0, 0, 2).into();
    let mut r = rule("r");
    local(&mut r);
    assert_eq!(
        validate(&[r], &interfaces(), &Limits::default()),
        Ok(()),
        "unicast to multicast"
    );
    let dest = Field::Input(InputField::Destination);
    let link_local: IpAddr = Ipv4Addr::new(224, 0, 0, 251).into();
    assert_eq!(
        refused(|r| r.input.destination = link_local),
        (dest, Problem::LinkLocalGroup(link_local))
    );
    assert_eq!(
        refused(|r| r.input.destination = Ipv4Addr::BROADCAST.into()),
        (dest, Problem::Broadcast)
    );
    assert_eq!(
        refused(|r| r.input.destination = Ipv4Addr::UNSPECIFIED.into()),
        (dest, Problem::Unspecified)
    );
    assert_eq!(
        refused(|r| r.input.port = 0),
        (Field::Input(InputField::Port), Problem::PortZero)
    );
    let group_source: IpAddr = Ipv4Addr::new(239, 0, 0, 1).into();
    assert_eq!(
        refused(|r| r.input.source = Some(group_source)),
        (
            Field::Input(InputField::Source),
            Problem::SourceNotUnicast(group_source)
        )
    );
    // 224.0.1.0 is the first routable group.
    let mut r = rule("r");
    r.input.destination = Ipv4Addr::new(224, 0, 1, 0).into();
    assert_eq!(validate(&[r], &interfaces(), &Limits::default()), Ok(()));
}

#[test]
fn output_checks() {
    use OutputField as O;
    let unknown = refused(|r| r.outputs[0].interface = "eth9".into());
    assert_eq!(
        unknown,
        (
            out(0, O::Interface),
            Problem::UnknownInterface("eth9".into())
        )
    );
    let link_local: IpAddr = Ipv4Addr::new(224, 0, 0, 1).into();
    let dest = out(0, O::Destination);
    assert_eq!(
        refused(|r| r.outputs[0].destination = link_local),
        (dest, Problem::LinkLocalGroup(link_local))
    );
    assert_eq!(
        refused(|r| r.outputs[0].destination = Ipv4Addr::BROADCAST.into()),
        (dest, Problem::Broadcast)
    );
    assert_eq!(
        refused(|r| r.outputs[0].destination = Ipv4Addr::UNSPECIFIED.into()),
        (dest, Problem::Unspecified)
    );
    assert_eq!(
        refused(|r| r.outputs[0].port = 0),
        (out(0, O::Port), Problem::PortZero)
    );
    assert_eq!(
        refused(|r| r.outputs[0].ttl = Ttl::Fixed(0)),
        (out(0, O::Ttl), Problem::TtlZero)
    );
    assert_eq!(
        refused(|r| r.outputs[0].dscp = Some(64)),
        (out(0, O::Dscp), Problem::DscpOutOfRange(64))
    );
    assert_eq!(
        refused(|r| r.outputs[0].vlan = Some(0)),
        (out(0, O::Vlan), Problem::VlanOutOfRange(0))
    );
    assert_eq!(
        refused(|r| r.outputs[0].vlan = Some(4095)),
        (out(0, O::Vlan), Problem::VlanOutOfRange(4095))
    );
    let unicast_tagged = |r: &mut Rule| {
        r.outputs[0].destination = Ipv4Addr::new(10, 1, 0, 9).into();
        r.outputs[0].vlan = Some(10);
    };
    assert_eq!(
        refused(unicast_tagged),
        (out(0, O::Vlan), Problem::VlanOnSocketOutput)
    );
    let unicast_decrement = |r: &mut Rule| {
        r.outputs[0].destination = Ipv4Addr::new(10, 1, 0, 9).into();
        r.outputs[0].ttl = Ttl::Decrement;
    };
    assert_eq!(
        refused(unicast_decrement),
        (out(0, O::Ttl), Problem::DecrementOnSocketOutput)
    );
    let mut decrementing = rule("r");
    decrementing.outputs[0].ttl = Ttl::Decrement;
    assert_eq!(
        validate(&[decrementing], &interfaces(), &Limits::default()),
        Ok(()),
        "a multicast output on Ethernet may decrement"
    );
    let tun_tagged = |r: &mut Rule| {
        r.outputs[0].interface = "wg0".into();
        r.outputs[0].vlan = Some(10);
    };
    assert_eq!(
        refused(tun_tagged),
        (out(0, O::Vlan), Problem::VlanOnSocketOutput)
    );
    let foreign = Ipv4Addr::new(10, 0, 0, 1).into();
    assert_eq!(
        refused(|r| r.outputs[0].source = Some(foreign)),
        (
            out(0, O::Source),
            Problem::SourceNotLocal {
                address: foreign,
                interface: "eth1".into()
            }
        )
    );
    assert_eq!(
        refused(|r| r.outputs[0].interface = "bare".into()),
        (
            out(0, O::Source),
            Problem::NoSourceAddress {
                interface: "bare".into(),
                family: "IPv4",
            }
        )
    );
}

#[test]
fn output_count_is_bounded() {
    assert_eq!(
        refused(|r| r.outputs.clear()),
        (Field::Outputs, Problem::NoOutputs)
    );
    let mut r = rule("r");
    r.outputs = (0..3)
        .map(|i| output("eth1", [239, 2, 2, i], 6000))
        .collect();
    let limits = Limits { max_outputs: 2 };
    let errors = validate(&[r], &interfaces(), &limits).expect_err("3 > 2");
    assert_eq!(
        errors.errors()[0].problem,
        Problem::TooManyOutputs { count: 3, max: 2 }
    );
}

#[test]
fn names_and_keys_are_unique() {
    let mut second = rule("a");
    second.input.port = 5001;
    let (name, field, problem) = only_error(&[rule("a"), second]);
    assert_eq!(
        (name.as_str(), field, problem),
        ("a", Field::Name, Problem::DuplicateName)
    );

    let (name, field, problem) = only_error(&[rule("a"), rule("b")]);
    assert_eq!(name, "b");
    assert_eq!(field, Field::Input(InputField::Destination));
    assert_eq!(
        problem,
        Problem::DuplicateKey {
            other: "a".into(),
            key: "eth0:239.1.1.1:5000".into()
        }
    );

    // The same group and port with a source is another key, and so is another interface.
    let mut ssm = rule("ssm");
    ssm.input.source = Some(Ipv4Addr::new(192, 168, 0, 1).into());
    let mut other_if = rule("other-if");
    other_if.input.interface = "eth1".into();
    other_if.outputs[0].interface = "eth0".into();
    assert_eq!(
        validate(
            &[rule("a"), ssm, other_if],
            &interfaces(),
            &Limits::default()
        ),
        Ok(())
    );
}

#[test]
fn outputs_must_not_feed_any_input() {
    // Onto its own input.
    let (field, problem) = refused(|r| r.outputs[0] = output("eth0", [239, 1, 1, 1], 5000));
    assert_eq!(field, out(0, OutputField::Destination));
    assert_eq!(
        problem,
        Problem::LoopsBack {
            rule: "r".into(),
            interface: "eth0".into(),
            destination: Ipv4Addr::new(239, 1, 1, 1).into(),
            port: 5000
        }
    );
    // Onto another rule's input, even a source-specific one.
    let mut b = rule("b");
    b.input = Input {
        interface: "eth1".into(),
        destination: Ipv4Addr::new(239, 2, 2, 2).into(),
        port: 6000,
        source: Some(Ipv4Addr::new(192, 168, 0, 1).into()),
        vlan: None,
    };
    b.outputs[0] = output("eth0", [239, 5, 5, 5], 5000);
    let (name, field, problem) = only_error(&[rule("a"), b]);
    assert_eq!(
        (name.as_str(), field),
        ("a", out(0, OutputField::Destination))
    );
    assert!(matches!(problem, Problem::LoopsBack { rule, .. } if rule == "b"));
    // Same group, other port or other interface: no loop.
    let ok = |o: Output| {
        let mut r = rule("r");
        r.outputs[0] = o;
        validate(&[r], &interfaces(), &Limits::default())
    };
    assert_eq!(ok(output("eth0", [239, 1, 1, 1], 5001)), Ok(()));
    assert_eq!(ok(output("eth1", [239, 1, 1, 1], 5000)), Ok(()));
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut r = rule("bad name");
    r.input.port = 0;
    r.outputs[0].ttl = Ttl::Fixed(0);
    r.outputs[0].dscp = Some(99);
    let errors = validate(&[r, rule("")], &interfaces(), &Limits::default()).expect_err("many");
    let fields: Vec<String> = errors
        .errors()
        .iter()
        .map(|e| format!("{}/{}", e.rule, e.field))
        .collect();
    assert_eq!(
        fields,
        [
            "bad name/name",
            "bad name/input.port",
            "bad name/outputs[0].ttl",
            "bad name/outputs[0].dscp",
            "/name"
        ]
    );
}

#[test]
fn set_changes_leave_the_old_set_untouched() {
    let set = RuleSet::new(vec![rule("a")], interfaces(), Limits::default()).expect("valid");
    let mut b = rule("b");
    b.input.port = 5001;
    let bigger = set.with(b).expect("b is valid");
    assert_eq!((set.len(), bigger.len()), (1, 2));
    assert_eq!(bigger.get("b").map(|r| r.input.port), Some(5001));

    let refused = bigger.with(rule("c")).expect_err("same key as a");
    assert_eq!(refused.errors()[0].rule, "c");
    assert_eq!(bigger.len(), 2);

    let smaller = bigger.without("a").expect("a exists");
    assert_eq!(
        smaller
            .rules()
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert!(smaller.get("a").is_none());
    assert_eq!(bigger.len(), 2);
    assert!(bigger.without("zz").is_none());
    // With "a" gone, its key is free again.
    assert!(smaller.with(rule("c")).is_ok());
}

#[test]
fn a_batch_of_changes_is_validated_as_a_whole() {
    let mut b = rule("b");
    b.input.port = 5001;
    let set = RuleSet::new(vec![rule("a"), b], interfaces(), Limits::default()).expect("valid");
    let names =
        |set: &RuleSet| -> Vec<String> { set.rules().iter().map(|r| r.name.clone()).collect() };

    // Removes apply first: "a" is replaced, and "c" may take the key "a" had before.
    let mut new_a = rule("a");
    new_a.input.port = 5002;
    let mut c = rule("c");
    c.outputs[0].port = 6001;
    let changed = set
        .with_changes(vec![new_a.clone(), c], &["a".into()])
        .expect("a replaced, c on a's old key");
    assert_eq!(names(&changed), ["b", "a", "c"]);
    assert_eq!(changed.get("a"), Some(&new_a));

    // Every problem at once, unknown and repeated removes named; nothing changes.
    let errors = set
        .with_changes(vec![rule("dup")], &["zz".into(), "b".into(), "b".into()])
        .expect_err("zz is unknown, b is removed twice, dup has a's key");
    let found: Vec<(String, Field, Problem)> = errors
        .into_errors()
        .into_iter()
        .map(|e| (e.rule, e.field, e.problem))
        .collect();
    let no_such = |name: &str| (name.to_owned(), Field::Name, Problem::NoSuchRule);
    let duplicate = (
        "dup".to_owned(),
        Field::Input(InputField::Destination),
        Problem::DuplicateKey {
            other: "a".into(),
            key: "eth0:239.1.1.1:5000".into(),
        },
    );
    assert_eq!(found, [no_such("zz"), no_such("b"), duplicate]);
    assert_eq!(names(&set), ["a", "b"]);
    let error = set
        .with_changes(Vec::new(), &["zz".into()])
        .expect_err("unknown");
    assert_eq!(
        error.to_string(),
        r#"rule "zz": name: there is no rule with this name to remove"#
    );

    // An empty change is the same set; `with` is a batch of one.
    assert_eq!(
        names(&set.with_changes(Vec::new(), &[]).expect("no change")),
        ["a", "b"]
    );
    assert!(set.with(rule("dup")).is_err());
}

#[test]
fn new_interface_facts_are_checked_again() {
    let set = RuleSet::new(vec![rule("a")], interfaces(), Limits::default()).expect("valid");
    let mut fewer = interfaces();
    let mut eth1 = fewer.get("eth1").expect("fixture has eth1").clone();
    eth1.ipv4.clear();
    fewer.insert(eth1);
    let errors = set
        .with_interfaces(fewer)
        .expect_err("eth1 lost its address");
    assert_eq!(errors.errors()[0].field, out(0, OutputField::Source));
    assert!(RuleSet::empty(interfaces(), Limits::default()).is_empty());
}

#[test]
fn ipv6_families_scopes_and_sources() {
    use OutputField as O;
    let v6 = |text: &str| -> IpAddr { text.parse().unwrap() };
    let group = v6("ff3e::8000:1");
    // An IPv6 input with an IPv4 output is a translation, and valid.
    let mut r = rule("r");
    r.input.destination = group;
    assert_eq!(validate(&[r], &interfaces(), &Limits::default()), Ok(()));
    assert_eq!(
        refused(|r| {
            r.input.destination = group;
            r.input.source = Some(Ipv4Addr::new(192, 0, 2, 1).into());
        }),
        (
            Field::Input(InputField::Source),
            Problem::MixedFamilies {
                destination: group,
                source_addr: Ipv4Addr::new(192, 0, 2, 1).into(),
            }
        )
    );
    assert!(matches!(
        refused(|r| r.input.destination = v6("ff02::1:3")),
        (_, Problem::MulticastScope { scope: 2, .. })
    ));
    assert!(matches!(
        refused(|r| r.input.destination = v6("2001:db8::99")),
        (_, Problem::NotMulticastOrLocal { .. })
    ));
    // An IPv6 output needs an IPv6 source: the test interfaces have none.
    assert_eq!(
        refused(|r| r.outputs[0].destination = group),
        (
            out(0, O::Source),
            Problem::NoSourceAddress {
                interface: "eth1".into(),
                family: "IPv6",
            }
        )
    );
    assert!(matches!(
        refused(|r| {
            r.outputs[0].destination = group;
            r.outputs[0].source = Some(Ipv4Addr::new(10, 1, 0, 1).into());
        }),
        (_, Problem::MixedFamilies { .. })
    ));
}
