//! What the supervisor holds for the rules' inputs, kept in step with the running rule set:
//! receive rings per input interface, IGMP memberships, and sinks for unicast inputs.

use crate::config::{FanoutSetting, RingSection};
use crate::rings;
use fanout_core::FanoutGroupId;
use fanout_core::bpf::{self, BpfProgram};
use fanout_core::handoff::RingHandle;
use fanout_core::igmp::{Membership, Memberships};
use relay_rules::RuleSet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;

/// The supervisor's input-side resources.
#[derive(Debug)]
pub(super) struct Inputs {
    fanout: FanoutSetting,
    ring: RingSection,
    /// Fanout members per input interface; every interface has the same count, so member k of
    /// each is served by the same worker (and under `steer`, is shard k).
    members: u32,
    /// The fanout group of each input interface that has rings.
    groups: BTreeMap<String, FanoutGroupId>,
    memberships: Memberships,
    sinks: BTreeMap<(Ipv4Addr, u16), UdpSocket>,
    /// What each rule wants, by name, and how many rules want each membership or sink, so that
    /// a change touches only what its own rules want ([`Inputs::sync_change`]).
    wants: HashMap<String, Want>,
    refs: HashMap<Want, u32>,
}

/// What one rule's input needs held open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Want {
    /// A multicast group joined on the input interface.
    Group(Membership),
    /// A socket bound to a unicast input's address and port.
    Sink((Ipv4Addr, u16)),
}

impl Want {
    /// What `rule` wants, with its input interface's name; `None` if `set` has no facts for it.
    fn of(set: &RuleSet, rule: &relay_rules::Rule) -> Option<(String, Want)> {
        let facts = set.interfaces().get(&rule.input.interface)?;
        let want = if rule.input.destination.is_multicast() {
            Want::Group(Membership {
                ifindex: facts.index,
                group: rule.input.destination,
                source: rule.input.source,
            })
        } else {
            Want::Sink((rule.input.destination, rule.input.port))
        };
        Some((facts.name.clone(), want))
    }
}

/// New receive rings, each with its fanout member index.
pub(super) type NewRings = Vec<(u32, RingHandle)>;

impl Inputs {
    /// Nothing held yet; each input interface will get `members` fanout members.
    pub(super) fn new(fanout: FanoutSetting, ring: RingSection, members: u32) -> Self {
        Inputs {
            fanout,
            ring,
            members,
            groups: BTreeMap::new(),
            memberships: Memberships::new(),
            sinks: BTreeMap::new(),
            wants: HashMap::new(),
            refs: HashMap::new(),
        }
    }

    /// Like [`Inputs::sync`] after a change that added `added` and removed `removed` (by name)
    /// from the set that is now `set`, in time proportional to the change: only the memberships
    /// and sinks that no rule wanted before are joined or bound, only those no rule wants any
    /// more are left or closed. On error, what this call joined, bound or counted is undone.
    pub(super) fn sync_change(
        &mut self,
        set: &RuleSet,
        added: &[relay_rules::Rule],
        removed: &[String],
    ) -> Result<NewRings, String> {
        let mut counted: Vec<(String, Want)> = Vec::new();
        let mut opened: Vec<Want> = Vec::new();
        let mut new_rings = Vec::new();
        let mut new_groups = Vec::new();
        let outcome = added.iter().try_for_each(|rule| {
            let Some((interface, want)) = Want::of(set, rule) else {
                return Ok(());
            };
            if !self.groups.contains_key(&interface)
                && !new_groups.iter().any(|(name, _)| *name == interface)
            {
                let (group, rings) = self.open_rings(&interface, None, 0..self.members)?;
                new_groups.push((interface.clone(), group));
                new_rings.extend(rings);
            }
            let count = self.refs.entry(want).or_insert(0);
            *count += 1;
            counted.push((rule.name.clone(), want));
            if *count == 1 {
                self.hold(want)?;
                opened.push(want);
            }
            Ok::<(), String>(())
        });
        if let Err(error) = outcome {
            for want in opened {
                self.release(want);
            }
            for (_, want) in counted {
                self.forget(want);
            }
            return Err(error);
        }
        // A rule changed in place is removed and added under one name: its old want goes
        // before its new one is recorded, and is let go only now that the new one is counted,
        // so a membership both want is never left and joined again.
        let gone: Vec<Want> = removed
            .iter()
            .filter_map(|name| self.wants.remove(name))
            .collect();
        for (name, want) in counted {
            self.wants.insert(name, want);
        }
        for want in gone {
            if self.forget(want) {
                self.release(want);
            }
        }
        self.groups.extend(new_groups);
        Ok(new_rings)
    }

    /// Joins or binds what `want` needs.
    fn hold(&mut self, want: Want) -> Result<(), String> {
        match want {
            Want::Group(membership) => self
                .memberships
                .join(membership)
                .map_err(|error| error.to_string()),
            Want::Sink(key) => {
                let socket = unicast_sink(key)?;
                self.sinks.insert(key, socket);
                Ok(())
            }
        }
    }

    /// Leaves or closes what `want` held.
    fn release(&mut self, want: Want) {
        match want {
            Want::Group(membership) => {
                let _ = self.memberships.leave(membership);
            }
            Want::Sink(key) => {
                self.sinks.remove(&key);
            }
        }
    }

    /// One rule fewer wants `want`; true when none does any more.
    fn forget(&mut self, want: Want) -> bool {
        match self.refs.get_mut(&want) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.refs.remove(&want);
                true
            }
            None => false,
        }
    }

    /// Makes the held resources match `set`: joins and binds what it needs, leaves and closes
    /// what it no longer needs, and opens rings on input interfaces that have none yet (returned,
    /// for the slots that must serve them). On error, what this call joined or bound is undone.
    pub(super) fn sync(&mut self, set: &RuleSet) -> Result<NewRings, String> {
        let mut wanted_groups = BTreeSet::new();
        let mut wanted_sinks = BTreeSet::new();
        let mut wanted_rings = BTreeSet::new();
        for rule in set.rules() {
            let Some(facts) = set.interfaces().get(&rule.input.interface) else {
                continue;
            };
            wanted_rings.insert(facts.name.clone());
            if rule.input.destination.is_multicast() {
                wanted_groups.insert(Membership {
                    ifindex: facts.index,
                    group: rule.input.destination,
                    source: rule.input.source,
                });
            } else {
                wanted_sinks.insert((rule.input.destination, rule.input.port));
            }
        }
        let mut joined = Vec::new();
        let mut bound = Vec::new();
        let undo = |inputs: &mut Inputs, joined: &[Membership], bound: &[(Ipv4Addr, u16)]| {
            for membership in joined {
                let _ = inputs.memberships.leave(*membership);
            }
            for key in bound {
                inputs.sinks.remove(key);
            }
        };
        for &membership in &wanted_groups {
            if self.memberships.contains(&membership) {
                continue;
            }
            if let Err(error) = self.memberships.join(membership) {
                undo(self, &joined, &bound);
                return Err(error.to_string());
            }
            joined.push(membership);
        }
        for &key in &wanted_sinks {
            if self.sinks.contains_key(&key) {
                continue;
            }
            match unicast_sink(key) {
                Ok(socket) => {
                    self.sinks.insert(key, socket);
                    bound.push(key);
                }
                Err(error) => {
                    undo(self, &joined, &bound);
                    return Err(error);
                }
            }
        }
        let mut new_rings = Vec::new();
        let mut new_groups = Vec::new();
        for interface in wanted_rings
            .iter()
            .filter(|name| !self.groups.contains_key(*name))
        {
            match self.open_rings(interface, None, 0..self.members) {
                Ok((group, rings)) => {
                    new_groups.push((interface.clone(), group));
                    new_rings.extend(rings);
                }
                Err(error) => {
                    undo(self, &joined, &bound);
                    return Err(error);
                }
            }
        }
        // Only now that nothing can fail: drop what is no longer wanted. Rings stay (a group
        // cannot lose members without reshuffling the others); frames for removed rules are
        // counted as matching no rule.
        for membership in self.memberships.list() {
            if !wanted_groups.contains(&membership) {
                let _ = self.memberships.leave(membership);
            }
        }
        self.sinks.retain(|key, _| wanted_sinks.contains(key));
        self.groups.extend(new_groups);
        self.wants.clear();
        self.refs.clear();
        for rule in set.rules() {
            if let Some((_, want)) = Want::of(set, rule) {
                *self.refs.entry(want).or_insert(0) += 1;
                self.wants.insert(rule.name.clone(), want);
            }
        }
        Ok(new_rings)
    }

    /// Fanout members per input interface.
    pub(super) fn members(&self) -> u32 {
        self.members
    }

    /// Adds members to every input's fanout group until each has `members`, for more workers
    /// than members. All or nothing: on error the members added here are closed again.
    pub(super) fn grow(&mut self, members: u32) -> Result<NewRings, String> {
        let mut added = Vec::new();
        for (interface, &group) in &self.groups {
            added.extend(
                self.open_rings(interface, Some(group), self.members..members)?
                    .1,
            );
        }
        self.members = self.members.max(members);
        Ok(added)
    }

    fn open_rings(
        &self,
        interface: &str,
        group: Option<FanoutGroupId>,
        members: std::ops::Range<u32>,
    ) -> Result<(FanoutGroupId, NewRings), String> {
        let first = members.start;
        let opened =
            rings::open_fanout_members(interface, group, members.len(), self.fanout, &self.ring)
                .map_err(|error| format!("receive rings on {interface}: {error}"))?;
        let rings = (first..).zip(opened.rings).collect();
        Ok((opened.group, rings))
    }
}

/// How many fanout members each input gets when the relay starts with workers on `cpus`
/// (ascending), out of `online` CPUs. Under `cpu` the kernel picks member `cpu % members`, so
/// there is one member per CPU number up to the highest chosen CPU: member k then receives
/// exactly CPU k's packets. Under `steer` the members are the shards, fixed for the relay's
/// life, so there is one per online CPU and any worker count up to that serves them without
/// moving the program. Otherwise one member per worker.
pub(super) fn initial_members(fanout: FanoutSetting, cpus: &[u32], online: usize) -> u32 {
    match fanout {
        FanoutSetting::Cpu => cpus.iter().copied().max().map_or(1, |max| max + 1),
        FanoutSetting::Steer => online.max(cpus.len()).max(1) as u32,
        _ => cpus.len().max(1) as u32,
    }
}

/// A socket bound to a unicast input's address and port that takes nothing: with it the kernel
/// finds a listener and does not answer the datagrams the relay takes with ICMP port-unreachable;
/// its filter drops every datagram before it is queued.
fn unicast_sink((address, port): (Ipv4Addr, u16)) -> Result<UdpSocket, String> {
    let what = || format!("binding unicast input {address}:{port}");
    let socket =
        UdpSocket::bind((address, port)).map_err(|error| format!("{}: {error}", what()))?;
    bpf::attach_filter(socket.as_fd(), &BpfProgram::reject_all())
        .map_err(|error| format!("{}: {error}", what()))?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_follow_the_fanout_mode() {
        assert_eq!(initial_members(FanoutSetting::Cpu, &[0, 1], 2), 2);
        assert_eq!(initial_members(FanoutSetting::Cpu, &[1, 3], 4), 4);
        assert_eq!(initial_members(FanoutSetting::Hash, &[1, 3], 4), 2);
        assert_eq!(initial_members(FanoutSetting::Steer, &[0], 2), 2);
        assert_eq!(initial_members(FanoutSetting::Lb, &[], 2), 1);
    }
}
