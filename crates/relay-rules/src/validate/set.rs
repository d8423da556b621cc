//! [`RuleSet`]: rules that passed [`validate`], and the changes that keep them valid.

use super::index::{Index, Seq};
use super::{ValidationErrors, validate};
use crate::interface::Interfaces;
use crate::rule::{Limits, Rule};

/// A set of rules that passed [`validate`] against the interfaces and limits it keeps.
///
/// The only ways to get one check it, so code holding a `RuleSet` (the rule table compiler,
/// the supervisor) never meets an invalid rule. It keeps the [`Interfaces`] it was checked
/// against, so that the table compiled from it uses exactly those facts.
///
/// A change is checked against indexes of the set (see the module `index`), so adding or
/// removing a rule costs the same in a set of ten rules and in one of a hundred thousand:
/// [`RuleSet::apply`] changes the set in place, [`RuleSet::with_changes`] returns a changed copy
/// (and so costs a copy of the set).
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    index: Index,
    interfaces: Interfaces,
    limits: Limits,
}

/// A change [`RuleSet::apply`] made, with what [`RuleSet::revert`] needs to undo it.
#[derive(Debug)]
#[must_use = "without it the change cannot be reverted"]
pub struct AppliedChange {
    /// The removed rules: (position they had, number in the index, rule), ascending.
    removed: Vec<(usize, Seq, Rule)>,
    /// How many rules were appended.
    added: usize,
    /// The set's length after the change, to catch a revert of another change.
    len_after: usize,
}

impl AppliedChange {
    /// The rules the change removed, in the order they had in the set.
    pub fn removed(&self) -> impl Iterator<Item = &Rule> {
        self.removed.iter().map(|(_, _, rule)| rule)
    }

    /// The removed rule called `name`.
    pub fn removed_rule(&self, name: &str) -> Option<&Rule> {
        self.removed().find(|rule| rule.name == name)
    }
}

impl RuleSet {
    /// A set without rules, ready for [`RuleSet::with`].
    pub fn empty(interfaces: Interfaces, limits: Limits) -> Self {
        RuleSet {
            rules: Vec::new(),
            index: Index::default(),
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
        Ok(RuleSet {
            index: Index::build(&rules),
            rules,
            interfaces,
            limits,
        })
    }

    /// This set plus `rule` (appended), or why it cannot be added; `self` is unchanged either
    /// way. Costs a copy of the set; [`RuleSet::apply`] changes a set in place.
    pub fn with(&self, rule: Rule) -> Result<Self, ValidationErrors> {
        self.with_changes(vec![rule], &[])
    }

    /// This set without the rules named in `remove`, then with `add` appended, or every
    /// problem of the change; `self` is unchanged either way. Costs a copy of the set, and
    /// otherwise what [`RuleSet::apply`] costs.
    pub fn with_changes(
        &self,
        add: Vec<Rule>,
        remove: &[String],
    ) -> Result<Self, ValidationErrors> {
        let positions = self.check_change(&add, remove)?;
        let mut changed = self.clone();
        let _applied = changed.apply_checked(add, &positions);
        Ok(changed)
    }

    /// Removes the rules named in `remove`, then appends `add`, or refuses the change with
    /// every problem it has and leaves the set exactly as it was.
    ///
    /// The change is validated as a whole, so it is accepted or refused entirely, and it finds
    /// exactly what [`validate`] of the resulting rules would find, plus the unknown removes.
    /// Removes apply first, which is also the order a worker applies the change to its table
    /// in: a batch that removes `cam1` and adds a new `cam1` replaces the rule, and a key or name
    /// freed by a remove is free for the adds. A name in `remove` that the set does not have,
    /// or that `remove` lists a second time, is refused ([`super::Problem::NoSuchRule`], on the
    /// name): a remove that silently did nothing would hide a mistyped name.
    ///
    /// Cost: O(1) per added rule (and per rule whose outputs send into an added input), and
    /// for removes one move of the rules after the first removed one; never a validation of
    /// the rules that stay. The returned [`AppliedChange`] undoes it ([`RuleSet::revert`]).
    pub fn apply(
        &mut self,
        add: Vec<Rule>,
        remove: &[String],
    ) -> Result<AppliedChange, ValidationErrors> {
        let positions = self.check_change(&add, remove)?;
        Ok(self.apply_checked(add, &positions))
    }

    /// Undoes `change`, the latest change [`RuleSet::apply`] made to this set: the set is
    /// again exactly what it was before it, rules and order included.
    ///
    /// # Panics
    ///
    /// If the set changed since `change` (another apply, or a revert of it already).
    pub fn revert(&mut self, change: AppliedChange) {
        assert_eq!(
            self.rules.len(),
            change.len_after,
            "revert takes the latest change applied to this set"
        );
        for _ in 0..change.added {
            let rule = self
                .rules
                .pop()
                .expect("the added rules are at the end of the set");
            self.index.pop(&rule);
        }
        match change.removed.len() {
            0 => {}
            1 => {
                let (position, seq, rule) =
                    change.removed.into_iter().next().expect("one removed rule");
                self.index.restore(position, seq, &rule);
                self.rules.insert(position, rule);
            }
            _ => self.merge_back(change.removed),
        }
    }

    /// Checks a change without making it: the ascending positions of the rules it removes,
    /// or its problems in the order [`RuleSet::apply`] gives.
    fn check_change(
        &self,
        add: &[Rule],
        remove: &[String],
    ) -> Result<Vec<usize>, ValidationErrors> {
        match self
            .index
            .check(&self.rules, add, remove, &self.interfaces, &self.limits)
        {
            Ok(positions) => Ok(positions),
            Err(errors) => Err(ValidationErrors::from_vec(errors)
                .expect("check reports at least one problem when it refuses")),
        }
    }

    /// Makes a change [`RuleSet::check_change`] accepted, which removes the rules at
    /// `positions` (ascending).
    fn apply_checked(&mut self, add: Vec<Rule>, positions: &[usize]) -> AppliedChange {
        let removed = match positions {
            [] => Vec::new(),
            &[position] => {
                let rule = self.rules.remove(position);
                let seq = self.index.remove(position, &rule);
                vec![(position, seq, rule)]
            }
            _ => self.remove_many(positions),
        };
        let added = add.len();
        self.rules.reserve(added);
        for rule in add {
            self.index.push(&rule);
            self.rules.push(rule);
        }
        AppliedChange {
            removed,
            added,
            len_after: self.rules.len(),
        }
    }

    /// Takes out the rules at `positions` (ascending) in one pass over the set.
    fn remove_many(&mut self, positions: &[usize]) -> Vec<(usize, Seq, Rule)> {
        let rules = std::mem::take(&mut self.rules);
        let seqs = self.index.take_seqs();
        let mut kept_seqs = Vec::with_capacity(seqs.len() - positions.len());
        self.rules = Vec::with_capacity(rules.len() - positions.len());
        let mut removed = Vec::with_capacity(positions.len());
        let mut next = positions.iter().copied().peekable();
        for (position, (rule, seq)) in rules.into_iter().zip(seqs).enumerate() {
            if next.next_if_eq(&position).is_some() {
                self.index.forget(&rule, seq);
                removed.push((position, seq, rule));
            } else {
                self.rules.push(rule);
                kept_seqs.push(seq);
            }
        }
        self.index.put_seqs(kept_seqs);
        removed
    }

    /// Puts `removed` (ascending by former position) back where they were, in one pass.
    fn merge_back(&mut self, removed: Vec<(usize, Seq, Rule)>) {
        let rules = std::mem::take(&mut self.rules);
        let seqs = self.index.take_seqs();
        let total = rules.len() + removed.len();
        let mut merged = Vec::with_capacity(total);
        let mut merged_seqs = Vec::with_capacity(total);
        let mut staying = rules.into_iter().zip(seqs);
        let mut returning = removed.into_iter().peekable();
        while merged.len() < total {
            let back = returning.next_if(|(position, _, _)| *position == merged.len());
            let (rule, seq) = match back {
                Some((_, seq, rule)) => {
                    self.index.insert(&rule, seq);
                    (rule, seq)
                }
                None => staying
                    .next()
                    .expect("every position is a staying or a returning rule"),
            };
            merged.push(rule);
            merged_seqs.push(seq);
        }
        self.rules = merged;
        self.index.put_seqs(merged_seqs);
    }

    /// This set without the rule called `name`, or `None` if there is no such rule. Removing
    /// a rule cannot make the others invalid, so no check is needed.
    pub fn without(&self, name: &str) -> Option<Self> {
        self.index.position_of(name)?;
        self.with_changes(Vec::new(), &[name.to_owned()]).ok()
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
        self.index.position_of(name).map(|i| &self.rules[i])
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
    /// equal to that of a [`crate::table::RuleTable`] built from the whole set. Kept up to
    /// date by every change, so reading it costs nothing.
    pub fn checksum(&self) -> u64 {
        self.index.checksum()
    }
}

#[cfg(test)]
impl RuleSet {
    /// Panics unless the index kept up to date through changes says what one built afresh
    /// from the rules says.
    pub(crate) fn assert_index_fresh(&self) {
        assert_eq!(
            self.index.described(&self.rules),
            Index::build(&self.rules).described(&self.rules),
            "the index kept through changes matches a fresh one"
        );
        assert_eq!(self.checksum(), crate::table::checksum_of(&self.rules));
    }
}
