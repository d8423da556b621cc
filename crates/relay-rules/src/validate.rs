//! Checking rules against the interfaces they will run on, before anything uses them.
//!
//! A [`RuleSet`] can only be built validated, and changing it ([`RuleSet::with`],
//! [`RuleSet::without`], [`RuleSet::with_changes`] for a batch, [`RuleSet::apply`] in place)
//! either succeeds or leaves the set exactly as it was. Every problem found is reported at once
//! ([`ValidationErrors`]), each naming the rule and the field:
//! `rule "cam1": outputs[1].ttl: TTL 0 would never leave the host`.
//!
//! A change to a set is checked incrementally (module `index`): only the rules it adds, and
//! the rules whose outputs would now send into an added rule's input, are checked, with the
//! set's indexes answering the questions that need the other rules (is this name or key taken,
//! who receives on this endpoint). That finds exactly what [`validate`] on the whole new set
//! finds, in the same order, at a cost that does not grow with the set.

mod address;
mod error;
mod index;
mod set;

pub use error::{Field, InputField, OutputField, Problem, ValidationError, ValidationErrors};
pub use set::{AppliedChange, RuleSet};

use crate::interface::{InterfaceFacts, Interfaces};
use crate::rule::{Input, Limits, Output, Rule, Ttl};
use ahash::AHashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

/// Longest rule name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Checks `rules` against `interfaces` and `limits`, reporting every problem found.
///
/// Each rule must have a usable name (1..=64 of `[A-Za-z0-9_.-]`), an input on a known
/// interface whose destination is a forwardable group or a unicast address of that interface,
/// 1..=`limits.max_outputs` outputs that each name a known interface, a usable destination and
/// port, a TTL above 0, a DSCP and VLAN in range, and a source the interface has. Across rules,
/// names and match keys are unique, and no output sends to any rule's input (interface,
/// destination and port), which would relay the same packet forever.
pub fn validate(
    rules: &[Rule],
    interfaces: &Interfaces,
    limits: &Limits,
) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    let mut names: AHashMap<&str, usize> = AHashMap::with_capacity(rules.len());
    let mut keys = AHashMap::with_capacity(rules.len());
    let mut inputs: AHashMap<(&str, IpAddr, u16), &str> = AHashMap::with_capacity(rules.len());
    for rule in rules {
        inputs
            .entry(endpoint(&rule.input))
            .or_insert(rule.name.as_str());
    }
    for (position, rule) in rules.iter().enumerate() {
        let first_name = *names.entry(&rule.name).or_insert(position) == position;
        // The first holder of a key is the one later duplicates are reported against.
        let key_owner = match keys.entry(match_key(&rule.input)) {
            Entry::Vacant(vacant) => {
                vacant.insert(rule.name.as_str());
                None
            }
            Entry::Occupied(occupied) => Some(*occupied.get()),
        };
        let claims = Claims {
            first_name,
            key_owner,
        };
        let receiver = |at| inputs.get(&at).copied();
        check_rule(rule, &claims, &receiver, interfaces, limits, &mut errors);
    }
    ValidationErrors::from_vec(errors).map_or(Ok(()), Err)
}

/// Where a rule receives: (interface, destination, port). An output that sends there loops.
pub(crate) fn endpoint(input: &Input) -> (&str, IpAddr, u16) {
    (input.interface.as_str(), input.destination, input.port)
}

/// A rule's match key as a tuple: (interface, destination, port, source, VLAN).
pub(crate) type MatchKey<'a> = (&'a str, IpAddr, u16, Option<IpAddr>, Option<u16>);

/// A rule's match key as a tuple: (interface, destination, port, source, VLAN).
pub(crate) fn match_key(input: &Input) -> MatchKey<'_> {
    (
        input.interface.as_str(),
        input.destination,
        input.port,
        input.source,
        input.vlan,
    )
}

/// What a whole-set validation knows about one rule from the rules before it.
struct Claims<'a> {
    /// Whether no earlier rule has this rule's name.
    first_name: bool,
    /// The name of the first earlier rule with this rule's match key, if there is one.
    key_owner: Option<&'a str>,
}

/// Every problem of `rule` within its set, in the order [`validate`] reports them: `claims`
/// says what earlier rules claimed, `receiver` names the first rule of the set that receives
/// on an endpoint (interface, destination, port).
fn check_rule<'a>(
    rule: &'a Rule,
    claims: &Claims<'a>,
    receiver: &dyn Fn((&'a str, IpAddr, u16)) -> Option<&'a str>,
    interfaces: &Interfaces,
    limits: &Limits,
    errors: &mut Vec<ValidationError>,
) {
    let mut report = |field: Field, problem: Problem| {
        errors.push(ValidationError {
            rule: rule.name.clone(),
            field,
            problem,
        });
    };
    check_name(&rule.name, &mut report);
    if !claims.first_name {
        report(Field::Name, Problem::DuplicateName);
    }
    let input = &rule.input;
    if let Some(other) = claims.key_owner {
        report(
            Field::Input(InputField::Destination),
            Problem::DuplicateKey {
                other: other.to_owned(),
                key: input.key().to_string(),
            },
        );
    }
    check_input(input, interfaces, &mut report);
    stream::check(rule, &mut report);
    if rule.outputs.is_empty() {
        report(Field::Outputs, Problem::NoOutputs);
    } else if rule.outputs.len() > limits.max_outputs {
        let problem = Problem::TooManyOutputs {
            count: rule.outputs.len(),
            max: limits.max_outputs,
        };
        report(Field::Outputs, problem);
    }
    for (index, output) in rule.outputs.iter().enumerate() {
        let at = |field| Field::Output { index, field };
        check_output(output, interfaces, &mut |field, problem| {
            report(at(field), problem)
        });
        if let Some(target) = receiver((output.interface.as_str(), output.destination, output.port))
        {
            let problem = Problem::LoopsBack {
                rule: target.to_owned(),
                interface: output.interface.clone(),
                destination: output.destination,
                port: output.port,
            };
            report(at(OutputField::Destination), problem);
        }
    }
}

fn check_name(name: &str, report: &mut impl FnMut(Field, Problem)) {
    if name.is_empty() {
        report(Field::Name, Problem::EmptyName);
        return;
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        report(Field::Name, Problem::NameTooLong(len));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        report(Field::Name, Problem::NameCharacter(bad));
    }
}

fn check_input(input: &Input, interfaces: &Interfaces, report: &mut impl FnMut(Field, Problem)) {
    let at = Field::Input;
    let facts = interfaces.get(&input.interface);
    if facts.is_none() {
        report(
            at(InputField::Interface),
            Problem::UnknownInterface(input.interface.clone()),
        );
    }
    if let Some(problem) = address::unusable(input.destination) {
        report(at(InputField::Destination), problem);
    } else if let Some(facts) = facts
        && !input.destination.is_multicast()
        && !facts.has_address(input.destination)
    {
        let problem = Problem::NotMulticastOrLocal {
            address: input.destination,
            interface: facts.name.clone(),
        };
        report(at(InputField::Destination), problem);
    }
    if input.port == 0 {
        report(at(InputField::Port), Problem::PortZero);
    }
    if let Some(source) = input.source {
        if !address::is_unicast_source(source) {
            report(at(InputField::Source), Problem::SourceNotUnicast(source));
        } else if !address::same_family(source, input.destination) {
            let problem = Problem::MixedFamilies {
                destination: input.destination,
                source_addr: source,
            };
            report(at(InputField::Source), problem);
        }
    }
    if let Some(vlan) = input.vlan
        && !(1..=4094).contains(&vlan)
    {
        report(at(InputField::Vlan), Problem::VlanOutOfRange(vlan));
    }
}

fn check_output(
    output: &Output,
    interfaces: &Interfaces,
    report: &mut impl FnMut(OutputField, Problem),
) {
    let facts = interfaces.get(&output.interface);
    if facts.is_none() {
        report(
            OutputField::Interface,
            Problem::UnknownInterface(output.interface.clone()),
        );
    }
    if let Some(problem) = address::unusable(output.destination) {
        report(OutputField::Destination, problem);
    }
    if output.port == 0 {
        report(OutputField::Port, Problem::PortZero);
    }
    if output.ttl == Ttl::Fixed(0) {
        report(OutputField::Ttl, Problem::TtlZero);
    }
    if output.ttl == Ttl::Decrement && facts.is_some_and(|facts| !is_ring_output(output, facts)) {
        report(OutputField::Ttl, Problem::DecrementOnSocketOutput);
    }
    if let Some(dscp) = output.dscp.filter(|&dscp| dscp > 63) {
        report(OutputField::Dscp, Problem::DscpOutOfRange(dscp));
    }
    if let Some(vlan) = output.vlan {
        if !(1..=4094).contains(&vlan) {
            report(OutputField::Vlan, Problem::VlanOutOfRange(vlan));
        } else if facts.is_some_and(|facts| !is_ring_output(output, facts)) {
            report(OutputField::Vlan, Problem::VlanOnSocketOutput);
        }
    }
    if let Some(facts) = facts {
        match output.source {
            Some(source) if !address::same_family(source, output.destination) => {
                let problem = Problem::MixedFamilies {
                    destination: output.destination,
                    source_addr: source,
                };
                report(OutputField::Source, problem);
            }
            Some(source) if !facts.has_address(source) => {
                let problem = Problem::SourceNotLocal {
                    address: source,
                    interface: facts.name.clone(),
                };
                report(OutputField::Source, problem);
            }
            None if facts.first_address(output.destination).is_none() => {
                report(
                    OutputField::Source,
                    Problem::NoSourceAddress {
                        interface: facts.name.clone(),
                        family: if output.destination.is_ipv6() {
                            "IPv6"
                        } else {
                            "IPv4"
                        },
                    },
                );
            }
            _ => {}
        }
    }
}

/// Whether the relay writes this output as whole frames into a TX ring (a group on an
/// interface with Ethernet headers) rather than sending its payload through a UDP socket.
pub(crate) fn is_ring_output(output: &Output, facts: &InterfaceFacts) -> bool {
    output.destination.is_multicast() && facts.has_ethernet()
}

mod stream;

/// Fixtures shared with the table's tests.
#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod agree;
