//! Changing a table in place, one rule at a time: the costs, the order of a batch and what
//! happens to ids are described under "Changes" in the module documentation of
//! [`crate::table`].

use super::error::TableError;
use super::{RuleId, RuleTable, compiled, rule_checksum};
use crate::interface::Interfaces;
use crate::rule::Rule;
use crate::shard::shard_vlan;

/// What [`RuleTable::insert`] did with a rule it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an inserted rule's id may be reused: its counters need resetting"]
pub enum Insertion {
    /// The rule is in the table, with this id (possibly one a removed rule had).
    Inserted(RuleId),
    /// The table is one shard's and the rule belongs to shard `.0`: nothing was changed. Under
    /// `shard` placement the supervisor may send a change to every worker; each keeps its own.
    OtherShard(u32),
}

impl Insertion {
    /// The id of the inserted rule, `None` for a rule of another shard.
    pub fn id(self) -> Option<RuleId> {
        match self {
            Insertion::Inserted(id) => Some(id),
            Insertion::OtherShard(_) => None,
        }
    }
}

impl RuleTable {
    /// Compiles `rule` against `interfaces` exactly as [`RuleTable::build`] does and adds it,
    /// or says why it cannot (and changes nothing).
    ///
    /// The rule is expected to be validated already, against the whole rule set (the
    /// supervisor's [`crate::RuleSet::with_changes`]); this only refuses what would break the
    /// table itself or could not be compiled: a name or a match key the table already has, an
    /// interface `interfaces` does not know, an output without a source on an interface
    /// without an address. For a shard table ([`RuleTable::build_shard`]), a rule of another
    /// shard is not inserted ([`Insertion::OtherShard`]), before any other check: it is not
    /// this table's business. Does not change the generation (see
    /// [`RuleTable::set_generation`]).
    pub fn insert(
        &mut self,
        rule: &Rule,
        interfaces: &Interfaces,
    ) -> Result<Insertion, TableError> {
        if let Some(shards) = &self.shard {
            let input = &rule.input;
            let theirs = shard_vlan(input.destination, input.port, input.vlan, shards.count());
            if !shards.owns(theirs) {
                return Ok(Insertion::OtherShard(theirs));
            }
        }
        let compiled = compiled::compile(self.vacant_id(), rule, interfaces)?;
        self.place(compiled, rule_checksum(rule))
            .map(Insertion::Inserted)
    }

    /// Removes the rule called `name` and returns the id it had, which a later
    /// [`RuleTable::insert`] may give to another rule; `None` if the table has no such rule
    /// (for a shard table, also when the rule is another shard's). O(1).
    pub fn remove(&mut self, name: &str) -> Option<RuleId> {
        let id = self.names.remove(name)?;
        let compiled = std::mem::replace(&mut self.rules[id.index()], compiled::vacant(id));
        let key = super::slot_key(&compiled);
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.clear(compiled.key.source);
            if slot.is_empty() {
                self.slots.remove(&key);
            }
        }
        let checksum = self.checksums[id.index()]
            .take()
            .expect("the name map holds only ids of live rules");
        self.checksum = self.checksum.wrapping_sub(checksum);
        self.free.push(id.0);
        self.live -= 1;
        Some(id)
    }

    /// Tags the table with the generation of the rule set it now matches, once a change is
    /// applied, so that the worker reports the generation it has actually reached.
    pub fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// Makes room for `additional` more rules without growing during the next that many
    /// inserts: growing moves every entry once, and the caller may prefer to pay that before a
    /// batch rather than in the middle of it.
    pub fn reserve(&mut self, additional: usize) {
        let new_ids = additional.saturating_sub(self.free.len());
        self.rules.reserve(new_ids);
        self.checksums.reserve(new_ids);
        self.slots.reserve(additional);
        self.names.reserve(additional);
    }
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
