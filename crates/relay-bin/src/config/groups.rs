//! `[[interface_group]]`: a named set of input interfaces that a rule's input may name.
//!
//! ```toml
//! [[interface_group]]
//! name = "uplinks"
//! interfaces = ["eth0", "eth1"]
//!
//! [[rule]]
//! name = "cam"
//! input = { interface = "uplinks", destination = "239.1.1.1", port = 5000 }
//! outputs = [ { interface = "eth2", destination = "239.2.2.2", port = 6000 } ]
//! ```
//!
//! A rule whose input names a group stands for one rule per member, named `RULE.MEMBER`
//! (`cam.eth0`, `cam.eth1`), each matching that member's frames with the same outputs: so each
//! member's frames are counted apart (`ctl stats`, the metrics), a member that does not exist
//! yet waits on its own while the others relay, and everything downstream (validation, tables,
//! fanout groups, joins, the state file) sees ordinary rules. [`expand`] makes them when the
//! file is read. A rule may also list its interfaces in place, `input.interface = ["eth0",
//! "eth1"]`, which is a group of that rule's own (module `inline`).

use relay_rules::Rule;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One `[[interface_group]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceGroup {
    /// What a rule's `input.interface` names to mean every member.
    pub name: String,
    /// The member interfaces, at least one, each once.
    pub interfaces: Vec<String>,
}

/// The rules `rules` stand for: each rule whose input names a group of `groups` becomes one
/// rule per member, named `RULE.MEMBER`, in member order; the others are kept as they are.
pub(super) fn expand(rules: &[Rule], groups: &[InterfaceGroup]) -> Vec<Rule> {
    if groups.is_empty() {
        return rules.to_vec();
    }
    let by_name: BTreeMap<&str, &InterfaceGroup> = groups
        .iter()
        .map(|group| (group.name.as_str(), group))
        .collect();
    let mut expanded = Vec::with_capacity(rules.len());
    for rule in rules {
        match by_name.get(rule.input.interface.as_str()) {
            None => expanded.push(rule.clone()),
            Some(group) => expanded.extend(member_rules(rule, &group.interfaces)),
        }
    }
    expanded
}

/// The rules `rule` stands for on each of `members`: named `RULE.MEMBER`, matching on that
/// member, in member order.
pub fn member_rules<'a>(rule: &'a Rule, members: &'a [String]) -> impl Iterator<Item = Rule> + 'a {
    members.iter().map(move |member| {
        let mut one = rule.clone();
        one.name = member_name(&rule.name, member);
        one.input.interface = member.clone();
        one
    })
}

/// The name of the rule that `rule`, on a group, stands for on its member `member`.
fn member_name(rule: &str, member: &str) -> String {
    format!("{rule}.{member}")
}

/// Whether `member` is one of the rules that a rule named `rule` on a group stands for: its
/// name is `rule.INTERFACE`, with its own input interface.
pub fn is_member_of(member: &Rule, rule: &str) -> bool {
    member
        .name
        .strip_prefix(rule)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|interface| interface == member.input.interface)
}

/// The name of the group made for rule `rule`, whose input lists its interfaces in place: it
/// starts with `:`, which no interface name can contain, so it never meets an interface.
pub fn inline_group_name(rule: &str) -> String {
    format!(":{rule}")
}

/// The rule whose list made the group `name`, if it is such a group.
pub(super) fn inline_rule_of(name: &str) -> Option<&str> {
    name.strip_prefix(':')
}

/// Every problem of `groups`, each naming the group: a name that is empty, taken twice or also
/// an interface's (`is_interface`), no member, an empty member name, a member twice, or a
/// member that is itself a group.
pub fn check_groups(groups: &[InterfaceGroup], is_interface: impl Fn(&str) -> bool) -> Vec<String> {
    let names: BTreeSet<&str> = groups.iter().map(|group| group.name.as_str()).collect();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for group in groups {
        let at = match inline_rule_of(&group.name) {
            Some(rule) => format!("rule {rule:?}: input.interface"),
            None => format!("interface_group {:?}", group.name),
        };
        if group.name.is_empty() {
            problems.push(format!("{at}: the name is empty"));
        }
        if !seen.insert(group.name.as_str()) {
            problems.push(format!("{at}: an earlier interface_group has this name"));
        }
        if is_interface(&group.name) {
            problems.push(format!(
                "{at}: an interface has this name, so a rule naming it would be ambiguous"
            ));
        }
        if group.interfaces.is_empty() {
            problems.push(format!("{at}: interfaces is empty"));
        }
        let mut members = BTreeSet::new();
        for member in &group.interfaces {
            if member.is_empty() {
                problems.push(format!("{at}: an interface name is empty"));
            }
            if !members.insert(member.as_str()) {
                problems.push(format!("{at}: {member:?} is listed twice"));
            }
            if names.contains(member.as_str()) {
                problems.push(format!(
                    "{at}: {member:?} is a group; a group lists interfaces"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_rules::{Input, Output};
    use std::net::Ipv4Addr;

    fn rule(name: &str, interface: &str) -> Rule {
        Rule {
            name: name.into(),
            input: Input {
                interface: interface.into(),
                destination: Ipv4Addr::new(239, 1, 1, 1).into(),
                port: 5000,
                source: None,
                vlan: None,
            },
            outputs: vec![Output {
                interface: "out0".into(),
                destination: Ipv4Addr::new(239, 2, 2, 2).into(),
                port: 6000,
                ttl: relay_rules::Ttl::Fixed(8),
                source: None,
                dscp: None,
                vlan: None,
            }],
            class: None,
            inspect: None,
            rtp_clock_hz: None,
            max_pps: None,
            max_bps: None,
        }
    }

    fn group(name: &str, interfaces: &[&str]) -> InterfaceGroup {
        InterfaceGroup {
            name: name.into(),
            interfaces: interfaces.iter().map(|&i| i.into()).collect(),
        }
    }

    #[test]
    fn a_rule_on_a_group_becomes_one_rule_per_member() {
        let groups = [group("uplinks", &["eth0", "eth1"])];
        let rules = [rule("cam", "uplinks"), rule("plain", "eth2")];
        let expanded = expand(&rules, &groups);
        let names: Vec<(&str, &str)> = expanded
            .iter()
            .map(|r| (r.name.as_str(), r.input.interface.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("cam.eth0", "eth0"),
                ("cam.eth1", "eth1"),
                ("plain", "eth2")
            ]
        );
        assert_eq!(expanded[0].outputs, rules[0].outputs);
        assert_eq!(expand(&rules, &[]), rules.to_vec());
        // Expanding again changes nothing: the members are interfaces, not groups.
        assert_eq!(expand(&expanded, &groups), expanded);
    }

    #[test]
    fn bad_groups_are_named() {
        let groups = [
            group("uplinks", &["eth0", "eth0"]),
            group("uplinks", &["eth1"]),
            group("eth9", &[]),
            group("nested", &["uplinks"]),
        ];
        let problems = check_groups(&groups, |name| name == "eth9");
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(
            problems[0].contains("\"eth0\" is listed twice"),
            "{problems:#?}"
        );
        assert!(
            problems[1].contains("an earlier interface_group"),
            "{problems:#?}"
        );
        assert!(
            problems[2].contains("an interface has this name"),
            "{problems:#?}"
        );
        assert!(problems[3].contains("interfaces is empty"), "{problems:#?}");
        assert!(
            problems[4].contains("\"uplinks\" is a group"),
            "{problems:#?}"
        );
        assert!(check_groups(&[group("uplinks", &["eth0", "eth1"])], |_| false).is_empty());
    }
}
