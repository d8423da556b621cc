//! The indexes of a [`RuleSet`](super::RuleSet) that check a change against the set without
//! checking the whole set again.
//!
//! Validation of a whole set asks, for each rule, three questions about the others: does an
//! earlier rule have this name, does an earlier rule have this match key, and which rule
//! receives on the endpoint this output sends to. A valid set answers "no", "no" and "none" for
//! every rule. Adding rules can only change the answers for the added rules and for the rules
//! whose outputs send to an added rule's input; removing rules can only turn answers into "no".
//! [`Index::check`] asks the questions of exactly those rules, with maps from names, keys and
//! endpoints to rules answering them, so a change costs what it adds and removes, not what the
//! set holds, and finds exactly the problems [`validate`](super::validate) of the new set finds.

use super::{Claims, Field, Problem, ValidationError, check_rule, endpoint, match_key};
use crate::interface::Interfaces;
use crate::rule::{Limits, Rule};
use crate::table::rule_checksum;
use ahash::{AHashMap, AHashSet};
use smallvec::SmallVec;
use std::collections::BTreeSet;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

/// A rule's number in the indexes, given in the order rules joined the set: ascending along
/// the set's rules, and unlike a position it does not move when an earlier rule is removed.
pub(super) type Seq = u64;

/// Interface (interned), destination, port.
type Endpoint = (u32, IpAddr, u16);
/// Interface (interned), destination, port, source, VLAN.
type Key = (u32, IpAddr, u16, Option<IpAddr>, Option<u16>);

/// Names, keys and endpoints of a valid set's rules, each pointing at its rules.
#[derive(Debug, Clone, Default)]
pub(super) struct Index {
    /// The number of each rule, in the set's order (so ascending).
    seqs: Vec<Seq>,
    /// The number the next appended rule gets.
    next: Seq,
    /// A small number per interface name any rule has used, so endpoints and keys are `Copy`.
    interned: AHashMap<String, u32>,
    names: AHashMap<String, Seq>,
    keys: AHashMap<Key, Seq>,
    /// The rules receiving on each endpoint (several, with different sources), ascending.
    receivers: AHashMap<Endpoint, SmallVec<[Seq; 1]>>,
    /// The rules with an output sending to each endpoint, ascending (once per output).
    senders: AHashMap<Endpoint, SmallVec<[Seq; 1]>>,
    /// The sum of the rules' [`rule_checksum`]s.
    checksum: u64,
}

impl Index {
    /// The index of `rules`, a valid set.
    pub(super) fn build(rules: &[Rule]) -> Self {
        let mut index = Index {
            seqs: Vec::with_capacity(rules.len()),
            names: AHashMap::with_capacity(rules.len()),
            keys: AHashMap::with_capacity(rules.len()),
            receivers: AHashMap::with_capacity(rules.len()),
            senders: AHashMap::with_capacity(rules.len()),
            ..Index::default()
        };
        for rule in rules {
            index.push(rule);
        }
        index
    }

    /// The checksum of the set ([`crate::table::checksum_of`] of its rules).
    pub(super) fn checksum(&self) -> u64 {
        self.checksum
    }

    /// The position in the set of the rule called `name`.
    pub(super) fn position_of(&self, name: &str) -> Option<usize> {
        self.names.get(name).and_then(|&seq| self.position(seq))
    }

    fn position(&self, seq: Seq) -> Option<usize> {
        self.seqs.binary_search(&seq).ok()
    }

    /// The problems of removing `remove` from `rules` (the set this indexes) and then
    /// appending `add`, in the order [`super::RuleSet::with_changes`] reports them; on success,
    /// the ascending positions of the rules to remove.
    pub(super) fn check<'r>(
        &self,
        rules: &'r [Rule],
        add: &'r [Rule],
        remove: &[String],
        interfaces: &Interfaces,
        limits: &Limits,
    ) -> Result<Vec<usize>, Vec<ValidationError>> {
        let mut errors = Vec::new();
        let mut removed: AHashSet<Seq> = AHashSet::with_capacity(remove.len());
        let mut positions = Vec::with_capacity(remove.len());
        for name in remove {
            match self.names.get(name.as_str()) {
                Some(&seq) if removed.insert(seq) => positions.push(self.expect_position(seq)),
                _ => errors.push(ValidationError {
                    rule: name.clone(),
                    field: Field::Name,
                    problem: Problem::NoSuchRule,
                }),
            }
        }
        positions.sort_unstable();
        let staying = |seq: &Seq| !removed.contains(seq);
        let name_of = |seq: Seq| rules[self.expect_position(seq)].name.as_str();

        let mut added_receivers = AHashMap::with_capacity(add.len());
        for rule in add {
            added_receivers
                .entry(endpoint(&rule.input))
                .or_insert(rule.name.as_str());
        }
        // The first rule of the new set receiving there: the set's rules come before the added.
        let receiver = |at: (&'r str, IpAddr, u16)| {
            self.endpoint(at)
                .and_then(|at| self.receivers.get(&at))
                .and_then(|seqs| seqs.iter().copied().find(staying))
                .map(name_of)
                .or_else(|| added_receivers.get(&at).copied())
        };

        // Rules of the set that now send into an added rule's input. They were valid, they
        // stay the first with their name and key (added rules come after them), and the rules
        // of the set receive nowhere they send: only a loop onto an added input is new.
        let mut looping = BTreeSet::new();
        for rule in add {
            if let Some(seqs) = self
                .endpoint(endpoint(&rule.input))
                .and_then(|at| self.senders.get(&at))
            {
                looping.extend(seqs.iter().copied().filter(staying));
            }
        }
        let unclaimed = Claims {
            first_name: true,
            key_owner: None,
        };
        for seq in looping {
            let rule = &rules[self.expect_position(seq)];
            check_rule(rule, &unclaimed, &receiver, interfaces, limits, &mut errors);
        }

        let mut added_names = AHashMap::with_capacity(add.len());
        let mut added_keys = AHashMap::with_capacity(add.len());
        for (i, rule) in add.iter().enumerate() {
            let taken = self.names.get(rule.name.as_str()).is_some_and(staying);
            let first_name = !taken && *added_names.entry(rule.name.as_str()).or_insert(i) == i;
            let key = match_key(&rule.input);
            let owner = self
                .key(key)
                .and_then(|key| self.keys.get(&key))
                .copied()
                .filter(staying)
                .map(name_of);
            let key_owner = match owner {
                Some(owner) => Some(owner),
                None => match added_keys.entry(key) {
                    Entry::Vacant(vacant) => {
                        vacant.insert(rule.name.as_str());
                        None
                    }
                    Entry::Occupied(occupied) => Some(*occupied.get()),
                },
            };
            let claims = Claims {
                first_name,
                key_owner,
            };
            check_rule(rule, &claims, &receiver, interfaces, limits, &mut errors);
        }
        if errors.is_empty() {
            Ok(positions)
        } else {
            Err(errors)
        }
    }

    /// Indexes `rule`, appended to the set.
    pub(super) fn push(&mut self, rule: &Rule) {
        let seq = self.next;
        self.next += 1;
        self.seqs.push(seq);
        self.insert(rule, seq);
    }

    /// Forgets the last rule of the set, `rule`.
    pub(super) fn pop(&mut self, rule: &Rule) {
        let seq = self
            .seqs
            .pop()
            .expect("the set and its index have the same rules");
        self.forget(rule, seq);
    }

    /// Forgets `rule`, at `position` in the set; returns its number, for [`Index::restore`].
    pub(super) fn remove(&mut self, position: usize, rule: &Rule) -> Seq {
        let seq = self.seqs.remove(position);
        self.forget(rule, seq);
        seq
    }

    /// Indexes again `rule`, put back at `position` with the number it had.
    pub(super) fn restore(&mut self, position: usize, seq: Seq, rule: &Rule) {
        self.seqs.insert(position, seq);
        self.insert(rule, seq);
    }

    /// Takes the rules' numbers out, for a pass that rebuilds the order (with
    /// [`Index::put_seqs`]).
    pub(super) fn take_seqs(&mut self) -> Vec<Seq> {
        std::mem::take(&mut self.seqs)
    }

    /// Puts back the numbers of the rules, in the set's order.
    pub(super) fn put_seqs(&mut self, seqs: Vec<Seq>) {
        debug_assert!(seqs.is_sorted(), "numbers ascend along the set");
        self.seqs = seqs;
    }

    /// Adds `rule` under `seq` to every map (not to `seqs`).
    pub(super) fn insert(&mut self, rule: &Rule, seq: Seq) {
        self.names.insert(rule.name.clone(), seq);
        let input = self.intern(&rule.input.interface);
        let key = (
            input,
            rule.input.destination,
            rule.input.port,
            rule.input.source,
            rule.input.vlan,
        );
        self.keys.insert(key, seq);
        let at = (input, rule.input.destination, rule.input.port);
        insert_sorted(self.receivers.entry(at).or_default(), seq);
        for output in &rule.outputs {
            let at = (
                self.intern(&output.interface),
                output.destination,
                output.port,
            );
            insert_sorted(self.senders.entry(at).or_default(), seq);
        }
        self.checksum = self.checksum.wrapping_add(rule_checksum(rule));
    }

    /// Removes `rule`, numbered `seq`, from every map (not from `seqs`).
    pub(super) fn forget(&mut self, rule: &Rule, seq: Seq) {
        self.names.remove(rule.name.as_str());
        let key = self.key(match_key(&rule.input));
        if let Some(key) = key {
            self.keys.remove(&key);
        }
        if let Some(at) = self.endpoint(endpoint(&rule.input)) {
            remove_from(&mut self.receivers, at, seq);
        }
        for output in &rule.outputs {
            let sent_to = (output.interface.as_str(), output.destination, output.port);
            if let Some(at) = self.endpoint(sent_to) {
                remove_from(&mut self.senders, at, seq);
            }
        }
        self.checksum = self.checksum.wrapping_sub(rule_checksum(rule));
    }

    fn expect_position(&self, seq: Seq) -> usize {
        self.position(seq)
            .expect("the maps point only at rules of the set")
    }

    fn intern(&mut self, interface: &str) -> u32 {
        if let Some(&id) = self.interned.get(interface) {
            return id;
        }
        let id = u32::try_from(self.interned.len()).expect("fewer than 2^32 interface names");
        self.interned.insert(interface.to_owned(), id);
        id
    }

    fn endpoint(&self, (interface, destination, port): (&str, IpAddr, u16)) -> Option<Endpoint> {
        Some((*self.interned.get(interface)?, destination, port))
    }

    fn key(
        &self,
        (interface, destination, port, source, vlan): super::MatchKey<'_>,
    ) -> Option<Key> {
        Some((
            *self.interned.get(interface)?,
            destination,
            port,
            source,
            vlan,
        ))
    }
}

fn insert_sorted(seqs: &mut SmallVec<[Seq; 1]>, seq: Seq) {
    let at = seqs.partition_point(|&held| held <= seq);
    seqs.insert(at, seq);
}

/// Removes every `seq` at `at` (a rule may send to one endpoint from several outputs).
fn remove_from(map: &mut AHashMap<Endpoint, SmallVec<[Seq; 1]>>, at: Endpoint, seq: Seq) {
    if let Entry::Occupied(mut entry) = map.entry(at) {
        entry.get_mut().retain(|held| *held != seq);
        if entry.get().is_empty() {
            entry.remove();
        }
    }
}

#[cfg(test)]
impl Index {
    /// What the index says, by rule name rather than number, to compare an index kept up to
    /// date through changes with one built afresh.
    pub(super) fn described(&self, rules: &[Rule]) -> Vec<String> {
        let name = |seq: &Seq| rules[self.expect_position(*seq)].name.clone();
        let interface = |id: u32| {
            self.interned
                .iter()
                .find(|(_, held)| **held == id)
                .map(|(name, _)| name.clone())
                .expect("ids come from the interned names")
        };
        assert_eq!(self.seqs.len(), rules.len(), "a number per rule");
        assert!(self.seqs.is_sorted(), "numbers ascend");
        let mut lines = vec![format!("checksum {:x}", self.checksum)];
        for (rule, seq) in &self.names {
            assert_eq!(&name(seq), rule);
            lines.push(format!("name {rule}"));
        }
        for ((i, d, p, s, v), seq) in &self.keys {
            lines.push(format!(
                "key {}:{d}:{p}:{s:?}:{v:?} {}",
                interface(*i),
                name(seq)
            ));
        }
        for (what, map) in [("receiver", &self.receivers), ("sender", &self.senders)] {
            for ((i, d, p), seqs) in map {
                assert!(!seqs.is_empty() && seqs.is_sorted());
                let names: Vec<String> = seqs.iter().map(name).collect();
                lines.push(format!("{what} {}:{d}:{p} {names:?}", interface(*i)));
            }
        }
        lines.sort();
        lines
    }
}
