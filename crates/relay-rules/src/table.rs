//! The compiled rule table a worker looks packets up in.
//!
//! Built from a [`RuleSet`] ([`RuleTable::build`], or [`RuleTable::build_shard`] for one
//! worker's share), then kept in step with the supervisor's set one rule at a time
//! ([`RuleTable::insert`], [`RuleTable::remove`]; see [Changes](#changes)). Each table
//! carries the generation number of the set it matches and an order-independent content
//! checksum ([`checksum_of`]) kept up to date by every change, which workers report so that
//! drift can be detected.
//!
//! Lookup costs one hash probe: rules are grouped by (input interface index, destination,
//! port), and a group holds its any-source rule and its (usually zero or one) source-specific
//! rules side by side, as ids into the rule list.
//!
//! # Changes
//! Rebuilding costs time proportional to the whole table (about 100 ms at 100,000 rules),
//! long enough for a worker's receive ring to overflow; an insert or a remove costs one rule.
//! The worker changes its table between two blocks, from the thread that looks packets up, so
//! the data path never sees a half-applied change. A batch validated as one
//! ([`RuleSet::with_changes`]) is applied removes first, then inserts, as it was validated: a
//! batch that removes `cam1` and adds a new `cam1` replaces the rule.
//!
//! A rule keeps its [`RuleId`] for as long as it stays, so a worker's counter array indexed by
//! [`RuleId::index`] stays valid across changes. An id freed by `remove` goes to a later
//! `insert` (last freed, first reused), so ids stay below the most rules the table ever held,
//! and an id `insert` returns may have counted packets of a removed rule: the caller resets
//! that id's counters (and reads a removed rule's final counts when `remove` returns its id).
//! [`RuleTable::id_capacity`] sizes counter arrays.
//!
//! The rule list and the maps grow by doubling: an insert is O(1) amortized, and the one that
//! crosses a capacity moves every entry once. [`RuleTable::reserve`] lets the caller pay that
//! when it chooses, before a large batch rather than in the middle of it.

mod change;
mod checksum;
mod compiled;
mod error;

pub use change::Insertion;
pub use checksum::{checksum_of, rule_checksum};
pub use compiled::{CompiledOutput, CompiledRule, RuleId, compile_outputs};
pub use error::TableError;

use crate::rule::Rule;
use crate::shard::ShardSet;
use crate::validate::RuleSet;
use crate::wire::Datagram;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

/// Where packets with one (interface, VLAN, destination, port) look for their rule.
///
/// One map serves both families: an address is keyed as 128 bits ([`addr_key`]), and the
/// family as a bit of its own, so that an IPv6 datagram to the IPv4-mapped form of an IPv4
/// rule's group (`::ffff:a.b.c.d`, which no IPv6 rule can name) does not match that rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotKey {
    destination: u128,
    /// The interface index, the port, the family and the VLAN id (0 for untagged frames,
    /// which is never a rule's VLAN) as one word:
    /// `ifindex << 32 | port << 16 | ipv6 << 15 | vlan` (a VLAN id has 12 bits).
    rest: u64,
}

impl SlotKey {
    #[inline]
    fn new(ifindex: u32, destination: IpAddr, port: u16, vlan: u16) -> Self {
        SlotKey::of_bits(
            ifindex,
            addr_key(destination),
            destination.is_ipv6(),
            port,
            vlan,
        )
    }

    /// The key of an address already as [`addr_key`] gives it (as a [`Datagram`] holds it).
    #[inline(always)]
    fn of_bits(ifindex: u32, destination: u128, ipv6: bool, port: u16, vlan: u16) -> Self {
        SlotKey {
            destination,
            rest: u64::from(ifindex) << 32
                | u64::from(port) << 16
                | u64::from(ipv6) << 15
                | u64::from(vlan & 0x0fff),
        }
    }
}

impl std::hash::Hash for SlotKey {
    /// Two words, not four fields: the hasher's cost is per write.
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.destination);
        state.write_u64(self.rest);
    }
}

/// An address as 128 bits: IPv6 as it is, IPv4 in its IPv4-mapped form (as a [`Datagram`]
/// holds it).
#[inline]
fn addr_key(address: IpAddr) -> u128 {
    Datagram::address_bits(address)
}

/// The ids of the rules of one [`SlotKey`].
#[derive(Debug, Clone, Default)]
struct Slot {
    any_source: Option<u32>,
    /// Sources as [`addr_key`]s.
    by_source: SmallVec<[(u128, u32); 1]>,
}

impl Slot {
    /// The id of the rule for exactly `source` (`None`: the any-source rule).
    fn get(&self, source: Option<IpAddr>) -> Option<u32> {
        let source = source.map(addr_key);
        match source {
            None => self.any_source,
            Some(source) => self
                .by_source
                .iter()
                .find(|(from, _)| *from == source)
                .map(|&(_, id)| id),
        }
    }

    /// Makes `id` the rule for `source`, which must have none.
    fn set(&mut self, source: Option<IpAddr>, id: u32) {
        match source {
            None => self.any_source = Some(id),
            Some(source) => self.by_source.push((addr_key(source), id)),
        }
    }

    /// Forgets the rule for `source`.
    fn clear(&mut self, source: Option<IpAddr>) {
        match source.map(addr_key) {
            None => self.any_source = None,
            Some(source) => self.by_source.retain(|(from, _)| *from != source),
        }
    }

    fn is_empty(&self) -> bool {
        self.any_source.is_none() && self.by_source.is_empty()
    }
}

/// The slot a compiled rule lives in.
fn slot_key(rule: &CompiledRule) -> SlotKey {
    SlotKey::new(
        rule.ifindex,
        rule.key.destination,
        rule.key.port,
        rule.key.vlan.unwrap_or(0),
    )
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

/// A compiled set of rules with O(1) lookup, changed in place one rule at a time.
#[derive(Debug, Clone)]
pub struct RuleTable {
    generation: u64,
    checksum: u64,
    shard: Option<ShardSet>,
    /// Indexed by id. A freed id holds a vacant rule that owns no memory and that no slot
    /// refers to, so that lookups read this list exactly as they did before ids could be freed.
    rules: Vec<CompiledRule>,
    /// Indexed by id: each live rule's [`rule_checksum`], for `remove` to subtract; `None` marks
    /// a freed id (which is then in `free`).
    checksums: Vec<Option<u64>>,
    slots: HashMap<SlotKey, Slot, ahash::RandomState>,
    names: HashMap<String, RuleId, ahash::RandomState>,
    /// Freed ids, reused last freed first.
    free: Vec<u32>,
    /// Number of live rules.
    live: usize,
}

impl RuleTable {
    /// Compiles every rule of `set`, tagged with `generation`. Ids follow the set's order.
    pub fn build(set: &RuleSet, generation: u64) -> Self {
        Self::compile(set, generation, set.rules().iter(), None)
    }

    /// Compiles only the rules of `set` that belong to shard `shard` of `shards`, that is whose
    /// input satisfies `shard_vlan(destination, port, vlan, shards) == shard`
    /// ([`crate::shard::shard_vlan`]):
    /// the table of one worker under `shard` placement. `shards == 0` puts every rule in
    /// shard 0, as the shard function does. [`RuleTable::insert`] keeps to the same shard.
    pub fn build_shard(set: &RuleSet, generation: u64, shard_index: u32, shards: u32) -> Self {
        Self::build_shards(set, generation, &ShardSet::one(shard_index, shards))
    }

    /// Compiles only the rules of `set` in the shards of `shards`: the table of a worker that
    /// serves several fanout members under `shard` placement. [`RuleTable::insert`] keeps to
    /// the same shards.
    pub fn build_shards(set: &RuleSet, generation: u64, shards: &ShardSet) -> Self {
        let mine = set.rules().iter().filter(|rule| {
            shards.holds_vlan(rule.input.destination, rule.input.port, rule.input.vlan)
        });
        Self::compile(set, generation, mine, Some(shards.clone()))
    }

    fn compile<'a>(
        set: &RuleSet,
        generation: u64,
        selected: impl Iterator<Item = &'a Rule>,
        shard: Option<ShardSet>,
    ) -> Self {
        let selected: Vec<&Rule> = selected.collect();
        let count = selected.len();
        let mut table = RuleTable {
            generation,
            checksum: 0,
            shard,
            rules: Vec::with_capacity(count),
            checksums: Vec::with_capacity(count),
            slots: HashMap::with_capacity_and_hasher(count, hasher()),
            names: HashMap::with_capacity_and_hasher(count, hasher()),
            free: Vec::new(),
            live: 0,
        };
        let interfaces = set.interfaces();
        for rule in selected {
            let compiled = compiled::compile(table.vacant_id(), rule, interfaces).expect(
                "a RuleSet's rules compile against its own facts: validation checked every \
                 interface and source",
            );
            table
                .place(compiled, rule_checksum(rule))
                .expect("a RuleSet's names and keys are unique");
        }
        table
    }

    /// The id the next [`RuleTable::place`] gives.
    fn vacant_id(&self) -> RuleId {
        match self.free.last() {
            Some(&id) => RuleId(id),
            None => RuleId(
                u32::try_from(self.rules.len()).expect("fewer than 2^32 rules fit in memory"),
            ),
        }
    }

    /// Adds a compiled rule under [`RuleTable::vacant_id`], unless its name or key is taken.
    /// One probe of each map: this is most of the cost of a build after compilation.
    fn place(&mut self, mut compiled: CompiledRule, checksum: u64) -> Result<RuleId, TableError> {
        let id = self.vacant_id();
        let Entry::Vacant(name) = self.names.entry(compiled.name.clone()) else {
            return Err(TableError::DuplicateName {
                rule: compiled.name,
            });
        };
        let source = compiled.key.source;
        // Creates the slot only when there is none, and then nothing conflicts.
        let slot = self.slots.entry(slot_key(&compiled)).or_default();
        if let Some(other) = slot.get(source) {
            return Err(TableError::DuplicateKey {
                rule: compiled.name,
                other: self.rules[other as usize].name.clone(),
                key: compiled.key,
            });
        }
        slot.set(source, id.0);
        name.insert(id);
        compiled.id = id;
        match self.free.pop() {
            Some(_) => {
                self.rules[id.index()] = compiled;
                self.checksums[id.index()] = Some(checksum);
            }
            None => {
                self.rules.push(compiled);
                self.checksums.push(Some(checksum));
            }
        }
        self.checksum = self.checksum.wrapping_add(checksum);
        self.live += 1;
        Ok(id)
    }

    /// The rule for an untagged datagram to `destination:port` from `source` on `ifindex`:
    /// a source-specific rule for `source` if there is one, else the any-source rule.
    #[inline]
    pub fn lookup(
        &self,
        ifindex: u32,
        destination: impl Into<IpAddr>,
        port: u16,
        source: impl Into<IpAddr>,
    ) -> Option<&CompiledRule> {
        self.lookup_vlan(ifindex, None, destination, port, source)
    }

    /// [`RuleTable::lookup`] for a datagram of VLAN `vlan` (`None`: untagged): only rules whose
    /// input names that VLAN (or, for `None`, none) match.
    // Always inlined, as it was while it took IPv4 addresses only: the worker's loop calls it
    // per frame.
    #[inline(always)]
    pub fn lookup_vlan(
        &self,
        ifindex: u32,
        vlan: Option<u16>,
        destination: impl Into<IpAddr>,
        port: u16,
        source: impl Into<IpAddr>,
    ) -> Option<&CompiledRule> {
        let destination = destination.into();
        self.lookup_bits(
            SlotKey::new(ifindex, destination, port, vlan.unwrap_or(0)),
            addr_key(source.into()),
        )
    }

    /// The rule for `datagram`, parsed from a frame that arrived on interface `ifindex`: the
    /// same as [`RuleTable::lookup_vlan`] with the datagram's VLAN ([`crate::wire::vlan_key`]),
    /// destination, port and source; `None` for a double-tagged frame.
    #[inline]
    pub fn lookup_datagram(&self, ifindex: u32, datagram: &Datagram<'_>) -> Option<&CompiledRule> {
        let vlan = crate::wire::vlan_key(datagram).ok()?;
        self.lookup_datagram_vlan(ifindex, vlan, datagram)
    }

    /// [`RuleTable::lookup_datagram`] with the VLAN already taken from the datagram by
    /// [`crate::wire::vlan_key`] (the data path counts a double-tagged frame itself). The
    /// worker's loop calls it per frame: always inlined, and its addresses stay the integers
    /// the datagram holds.
    #[inline(always)]
    pub fn lookup_datagram_vlan(
        &self,
        ifindex: u32,
        vlan: Option<u16>,
        datagram: &Datagram<'_>,
    ) -> Option<&CompiledRule> {
        let key = SlotKey::of_bits(
            ifindex,
            datagram.destination.0,
            datagram.ipv6,
            datagram.destination_port,
            vlan.unwrap_or(0),
        );
        self.lookup_bits(key, datagram.source.0)
    }

    /// The rule in the slot `key` for the source `source` (as [`addr_key`] gives it).
    #[inline(always)]
    fn lookup_bits(&self, key: SlotKey, source: u128) -> Option<&CompiledRule> {
        let slot = self.slots.get(&key)?;
        let index = slot
            .by_source
            .iter()
            .find(|(from, _)| *from == source)
            .map(|&(_, index)| index)
            .or(slot.any_source)?;
        self.rules.get(index as usize)
    }

    /// The rule with id `id`, `None` if the id is free or out of range.
    pub fn get(&self, id: RuleId) -> Option<&CompiledRule> {
        self.checksums.get(id.index())?.as_ref()?;
        self.rules.get(id.index())
    }

    /// The rule called `name`.
    pub fn by_name(&self, name: &str) -> Option<&CompiledRule> {
        self.get(*self.names.get(name)?)
    }

    /// The generation of the rule set this table matches: the one it was built from, or the
    /// last one given to [`RuleTable::set_generation`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The content checksum of the rules in this table ([`checksum_of`] of their source
    /// rules, kept up to date by every change): equal to [`RuleSet::checksum`] for a full
    /// table, and to the checksum of the shard's rules for a shard table.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// The shards of a table built with [`RuleTable::build_shard`] or
    /// [`RuleTable::build_shards`], `None` for a full one.
    pub fn shards(&self) -> Option<&ShardSet> {
        self.shard.as_ref()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the table has no rule.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// One more than the highest id the table has given, live or free: every [`RuleId`] of
    /// this table indexes an array of this length. It never shrinks, and grows only when an
    /// insert finds no free id (so it is the most rules the table has held at once).
    pub fn id_capacity(&self) -> usize {
        self.rules.len()
    }

    /// The rules, in id order.
    pub fn rules(&self) -> impl ExactSizeIterator<Item = &CompiledRule> {
        Rules {
            inner: self.rules.iter().zip(&self.checksums),
            remaining: self.live,
        }
    }
}

/// The live rules of a table, skipping freed ids.
struct Rules<'a> {
    inner: std::iter::Zip<std::slice::Iter<'a, CompiledRule>, std::slice::Iter<'a, Option<u64>>>,
    remaining: usize,
}

impl<'a> Iterator for Rules<'a> {
    type Item = &'a CompiledRule;

    fn next(&mut self) -> Option<Self::Item> {
        let (rule, _) = self.inner.find(|(_, checksum)| checksum.is_some())?;
        self.remaining -= 1;
        Some(rule)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Rules<'_> {}

#[cfg(test)]
mod tests;
