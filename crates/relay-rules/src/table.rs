//! The compiled rule table a worker looks packets up in.
//!
//! Built once from a [`RuleSet`] and never changed: a new rule set gives a new table, which the
//! worker swaps in whole, so the data path never sees a half-applied change. Each table carries
//! the generation number the supervisor gave its set and an order-independent content
//! checksum ([`checksum_of`]), which workers report so that drift can be detected.
//!
//! Lookup costs one hash probe: rules are grouped by (input interface index, destination,
//! port), and a group holds its any-source rule and its (usually zero or one) source-specific
//! rules side by side.

mod checksum;
mod compiled;

pub use checksum::{checksum_of, rule_checksum};
pub use compiled::{CompiledOutput, CompiledRule, RuleId};

use crate::rule::Rule;
use crate::shard::shard;
use crate::validate::RuleSet;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Where packets with one (interface, destination, port) look for their rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SlotKey {
    ifindex: u32,
    destination: u32,
    port: u16,
}

/// The rules of one [`SlotKey`], as indices into the table's rule list.
#[derive(Debug, Clone, Default)]
struct Slot {
    any_source: Option<u32>,
    by_source: SmallVec<[(Ipv4Addr, u32); 1]>,
}

/// Fixed seeds: the map's contents come from configuration, not from packets, and lookups of
/// packet keys never insert, so there is nothing for a flood of crafted keys to degrade; fixed
/// seeds keep iteration and memory layout reproducible between runs.
fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    )
}

/// An immutable, compiled set of rules with O(1) lookup.
#[derive(Debug, Clone)]
pub struct RuleTable {
    generation: u64,
    checksum: u64,
    shard: Option<(u32, u32)>,
    rules: Vec<CompiledRule>,
    slots: HashMap<SlotKey, Slot, ahash::RandomState>,
}

impl RuleTable {
    /// Compiles every rule of `set`, tagged with `generation`.
    pub fn build(set: &RuleSet, generation: u64) -> Self {
        Self::compile(set, generation, set.rules().iter(), None)
    }

    /// Compiles only the rules of `set` that belong to shard `shard` of `shards`, that is whose
    /// input satisfies `shard(destination, port, shards) == shard` ([`crate::shard::shard`]):
    /// the table of one worker under `shard` placement. `shards == 0` puts every rule in
    /// shard 0, as the shard function does.
    pub fn build_shard(set: &RuleSet, generation: u64, shard_index: u32, shards: u32) -> Self {
        let mine = set
            .rules()
            .iter()
            .filter(|rule| shard(rule.input.destination, rule.input.port, shards) == shard_index);
        Self::compile(set, generation, mine, Some((shard_index, shards)))
    }

    fn compile<'a>(
        set: &RuleSet,
        generation: u64,
        selected: impl Iterator<Item = &'a Rule>,
        shard: Option<(u32, u32)>,
    ) -> Self {
        let interfaces = set.interfaces();
        let mut rules = Vec::with_capacity(set.len());
        let mut slots = HashMap::with_capacity_and_hasher(set.len(), hasher());
        let mut checksum = 0u64;
        for rule in selected {
            let id = u32::try_from(rules.len()).expect("fewer than 2^32 rules fit in memory");
            let compiled = compiled::compile(RuleId(id), rule, interfaces);
            checksum = checksum.wrapping_add(rule_checksum(rule));
            let key = SlotKey {
                ifindex: compiled.ifindex,
                destination: u32::from(rule.input.destination),
                port: rule.input.port,
            };
            let slot: &mut Slot = slots.entry(key).or_default();
            match rule.input.source {
                None => slot.any_source = Some(id),
                Some(source) => slot.by_source.push((source, id)),
            }
            rules.push(compiled);
        }
        rules.shrink_to_fit();
        RuleTable {
            generation,
            checksum,
            shard,
            rules,
            slots,
        }
    }

    /// The rule for a datagram that arrived on interface `ifindex` for `destination:port`
    /// from `source`: the source-specific rule for `source` if there is one, else the
    /// any-source rule, else `None`.
    #[inline]
    pub fn lookup(
        &self,
        ifindex: u32,
        destination: Ipv4Addr,
        port: u16,
        source: Ipv4Addr,
    ) -> Option<&CompiledRule> {
        let key = SlotKey {
            ifindex,
            destination: u32::from(destination),
            port,
        };
        let slot = self.slots.get(&key)?;
        let index = slot
            .by_source
            .iter()
            .find(|(from, _)| *from == source)
            .map(|&(_, index)| index)
            .or(slot.any_source)?;
        self.rules.get(index as usize)
    }

    /// The rule with id `id`.
    pub fn get(&self, id: RuleId) -> Option<&CompiledRule> {
        self.rules.get(id.index())
    }

    /// The generation of the rule set this table was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The content checksum of the rules in this table ([`checksum_of`] of their source
    /// rules): equal to [`RuleSet::checksum`] for a full table, and to the checksum of the
    /// shard's rules for a shard table.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// `(shard, shards)` for a table built with [`RuleTable::build_shard`], `None` for a full one.
    pub fn shard(&self) -> Option<(u32, u32)> {
        self.shard
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the table has no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in id order.
    pub fn rules(&self) -> impl ExactSizeIterator<Item = &CompiledRule> {
        self.rules.iter()
    }
}

#[cfg(test)]
mod tests;
