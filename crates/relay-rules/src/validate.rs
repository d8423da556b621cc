//! Checking rules against the interfaces they will run on, before anything uses them.
//!
//! A [`RuleSet`] can only be built validated, and changing it ([`RuleSet::with`],
//! [`RuleSet::without`], [`RuleSet::with_changes`] for a batch) returns a new set, so a refused
//! change leaves the running set exactly as it was. Every problem found is reported at once ([`ValidationErrors`]), each naming the rule
//! and the field: `rule "cam1": outputs[1].ttl: TTL 0 would never leave the host`.

mod error;

pub use error::{Field, InputField, OutputField, Problem, ValidationError, ValidationErrors};

use crate::interface::{InterfaceFacts, Interfaces};
use crate::rule::{Input, Limits, Output, Rule};
use ahash::AHashMap;
use std::net::Ipv4Addr;

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
    let mut inputs: AHashMap<(&str, Ipv4Addr, u16), &str> = AHashMap::with_capacity(rules.len());
    for rule in rules {
        let input = &rule.input;
        inputs
            .entry((input.interface.as_str(), input.destination, input.port))
            .or_insert(&rule.name);
    }
    for (position, rule) in rules.iter().enumerate() {
        let mut report = |field: Field, problem: Problem| {
            errors.push(ValidationError {
                rule: rule.name.clone(),
                field,
                problem,
            });
        };
        check_name(&rule.name, &mut report);
        if *names.entry(&rule.name).or_insert(position) != position {
            report(Field::Name, Problem::DuplicateName);
        }
        let input = &rule.input;
        let key = (
            input.interface.as_str(),
            input.destination,
            input.port,
            input.source,
        );
        if let Some(other) = keys.insert(key, rule.name.as_str()) {
            // Keep the first holder of the key as the one later duplicates are reported against.
            keys.insert(key, other);
            let key = input.key().to_string();
            report(
                Field::Input(InputField::Destination),
                Problem::DuplicateKey {
                    other: other.to_owned(),
                    key,
                },
            );
        }
        check_input(input, interfaces, &mut report);
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
            let endpoint = (output.interface.as_str(), output.destination, output.port);
            if let Some(&target) = inputs.get(&endpoint) {
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
    ValidationErrors::from_vec(errors).map_or(Ok(()), Err)
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

/// Problems of an address that is neither sendable to nor receivable on, or `None`.
fn unusable_address(address: Ipv4Addr) -> Option<Problem> {
    if address.is_unspecified() {
        Some(Problem::Unspecified)
    } else if address.is_broadcast() {
        Some(Problem::Broadcast)
    } else if address.is_multicast() && address.octets()[..3] == [224, 0, 0] {
        Some(Problem::LinkLocalGroup(address))
    } else {
        None
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
    if let Some(problem) = unusable_address(input.destination) {
        report(at(InputField::Destination), problem);
    } else if let Some(facts) = facts
        && !input.destination.is_multicast()
        && !facts.ipv4.contains(&input.destination)
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
    if let Some(source) = input.source
        && (source.is_unspecified() || source.is_broadcast() || source.is_multicast())
    {
        report(at(InputField::Source), Problem::SourceNotUnicast(source));
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
    if let Some(problem) = unusable_address(output.destination) {
        report(OutputField::Destination, problem);
    }
    if output.port == 0 {
        report(OutputField::Port, Problem::PortZero);
    }
    if output.ttl == 0 {
        report(OutputField::Ttl, Problem::TtlZero);
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
            Some(source) if !facts.ipv4.contains(&source) => {
                let problem = Problem::SourceNotLocal {
                    address: source,
                    interface: facts.name.clone(),
                };
                report(OutputField::Source, problem);
            }
            None if facts.ipv4.is_empty() => {
                report(
                    OutputField::Source,
                    Problem::NoSourceAddress {
                        interface: facts.name.clone(),
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

/// A set of rules that passed [`validate`] against the interfaces and limits it keeps.
///
/// The only ways to get one check it, so code holding a `RuleSet` (the rule table compiler,
/// the supervisor) never meets an invalid rule. It keeps the [`Interfaces`] it was checked
/// against, so that the table compiled from it uses exactly those facts.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    by_name: AHashMap<String, usize>,
    interfaces: Interfaces,
    limits: Limits,
}

impl RuleSet {
    /// A set without rules, ready for [`RuleSet::with`].
    pub fn empty(interfaces: Interfaces, limits: Limits) -> Self {
        RuleSet {
            rules: Vec::new(),
            by_name: AHashMap::new(),
            interfaces,
            limits,
        }
    }

    /// Validates `rules` and keeps them, in order (the order gives [`crate::table::RuleId`]s).
    pub fn new(
        rules: Vec<Rule>,
        interfaces: Interfaces,
        limits: Limits,
    ) -> Result<Self, ValidationErrors> {
        validate(&rules, &interfaces, &limits)?;
        Ok(RuleSet::from_valid(rules, interfaces, limits))
    }

    /// Keeps `rules`, which passed [`validate`] against `interfaces` and `limits`.
    fn from_valid(rules: Vec<Rule>, interfaces: Interfaces, limits: Limits) -> Self {
        let by_name = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| (rule.name.clone(), i))
            .collect();
        RuleSet {
            rules,
            by_name,
            interfaces,
            limits,
        }
    }

    /// This set plus `rule` (appended), or why it cannot be added; `self` is unchanged either
    /// way. Costs a validation of the whole new set (O(rules)), so that interactions with every
    /// existing rule (names, keys, loops) are checked exactly as a fresh set would be; for
    /// several rules, [`RuleSet::with_changes`] validates once for all of them.
    pub fn with(&self, rule: Rule) -> Result<Self, ValidationErrors> {
        self.with_changes(vec![rule], &[])
    }

    /// This set without the rules named in `remove`, then with `add` appended, or every
    /// problem of the change; `self` is unchanged either way.
    ///
    /// The change is validated once, as a whole, so a batch costs one validation (O(rules))
    /// instead of one per rule, and is accepted or refused entirely. Removes apply first,
    /// which is also the order a worker applies the change to its table in: a batch that
    /// removes `cam1` and adds a new `cam1` replaces the rule, and a key or name freed by a
    /// remove is free for the adds. A name in `remove` that the set does not have, or that
    /// `remove` lists a second time, is refused ([`Problem::NoSuchRule`], on the name): a
    /// remove that silently did nothing would hide a mistyped name.
    pub fn with_changes(
        &self,
        add: Vec<Rule>,
        remove: &[String],
    ) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        let mut removed = vec![false; self.rules.len()];
        for name in remove {
            match self.by_name.get(name.as_str()) {
                Some(&position) if !removed[position] => removed[position] = true,
                _ => errors.push(ValidationError {
                    rule: name.clone(),
                    field: Field::Name,
                    problem: Problem::NoSuchRule,
                }),
            }
        }
        let mut rules = Vec::with_capacity(self.rules.len() + add.len());
        rules.extend(
            self.rules
                .iter()
                .zip(&removed)
                .filter(|&(_, &gone)| !gone)
                .map(|(rule, _)| rule.clone()),
        );
        rules.extend(add);
        if let Err(invalid) = validate(&rules, &self.interfaces, &self.limits) {
            errors.extend(invalid.into_errors());
        }
        match ValidationErrors::from_vec(errors) {
            Some(errors) => Err(errors),
            None => Ok(RuleSet::from_valid(
                rules,
                self.interfaces.clone(),
                self.limits,
            )),
        }
    }

    /// This set without the rule called `name`, or `None` if there is no such rule. Removing
    /// a rule cannot make the others invalid, so no check is needed.
    pub fn without(&self, name: &str) -> Option<Self> {
        let position = *self.by_name.get(name)?;
        let mut rules = self.rules.clone();
        rules.remove(position);
        Some(RuleSet::from_valid(
            rules,
            self.interfaces.clone(),
            self.limits,
        ))
    }

    /// The same rules checked against new interface facts (an address or interface changed),
    /// or every rule the change breaks.
    pub fn with_interfaces(&self, interfaces: Interfaces) -> Result<Self, ValidationErrors> {
        RuleSet::new(self.rules.clone(), interfaces, self.limits)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule called `name`.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.by_name.get(name).map(|&i| &self.rules[i])
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the set has no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The interface facts the set was checked against.
    pub fn interfaces(&self) -> &Interfaces {
        &self.interfaces
    }

    /// The limits the set was checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The order-independent content checksum of the rules ([`crate::table::checksum_of`]),
    /// equal to that of a [`crate::table::RuleTable`] built from the whole set.
    pub fn checksum(&self) -> u64 {
        crate::table::checksum_of(&self.rules)
    }
}

/// Fixtures shared with the table's tests.
#[cfg(test)]
pub(crate) mod tests;
