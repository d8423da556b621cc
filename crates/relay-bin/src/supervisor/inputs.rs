//! What the supervisor holds for the rules' inputs, kept in step with the running rule set:
//! receive rings per input interface, IGMP memberships, and sinks for unicast inputs.

use crate::config::{FanoutSetting, RingSection};
use crate::rings;
use fanout_core::bpf::{self, BpfProgram};
use fanout_core::handoff::RingHandle;
use fanout_core::igmp::{Membership, Memberships};
use relay_rules::RuleSet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;

/// The supervisor's input-side resources.
#[derive(Debug)]
pub(super) struct Inputs {
    fanout: FanoutSetting,
    ring: RingSection,
    cpus: Vec<u32>,
    with_rings: BTreeSet<String>,
    memberships: Memberships,
    sinks: BTreeMap<(Ipv4Addr, u16), UdpSocket>,
}

/// New receive rings, each with the worker slot that must serve it.
pub(super) type NewRings = Vec<(usize, RingHandle)>;

impl Inputs {
    /// Nothing held yet, for workers on `cpus`.
    pub(super) fn new(fanout: FanoutSetting, ring: RingSection, cpus: Vec<u32>) -> Self {
        Inputs {
            fanout,
            ring,
            cpus,
            with_rings: BTreeSet::new(),
            memberships: Memberships::new(),
            sinks: BTreeMap::new(),
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
        for interface in wanted_rings.difference(&self.with_rings) {
            match self.open_rings(interface) {
                Ok(rings) => new_rings.extend(rings),
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
        self.with_rings.extend(wanted_rings);
        Ok(new_rings)
    }

    fn open_rings(&self, interface: &str) -> Result<NewRings, String> {
        let members = member_cpus(self.fanout, &self.cpus);
        let handles = rings::open_fanout_members(interface, members.len(), self.fanout, &self.ring)
            .map_err(|error| format!("receive rings on {interface}: {error}"))?;
        Ok(handles
            .into_iter()
            .enumerate()
            .map(|(member, handle)| (serving_slot(member, &members, &self.cpus), handle))
            .collect())
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

/// The CPU whose packets each fanout member receives, in join order. With fanout `cpu` the kernel
/// picks member `cpu % members`, so there is one member per CPU number up to the highest chosen
/// CPU: member k then receives exactly CPU k's packets. Other modes need one member per worker.
fn member_cpus(fanout: FanoutSetting, cpus: &[u32]) -> Vec<u32> {
    match fanout {
        FanoutSetting::Cpu => (0..=cpus.iter().copied().max().unwrap_or(0)).collect(),
        _ => cpus.to_vec(),
    }
}

/// The worker slot that serves member `member`: the worker on that member's CPU when there is
/// one, otherwise (a CPU without a worker, under fanout `cpu`) one chosen round robin.
fn serving_slot(member: usize, members: &[u32], cpus: &[u32]) -> usize {
    let cpu = members[member];
    cpus.iter()
        .position(|&chosen| chosen == cpu)
        .unwrap_or(member % cpus.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fanout_has_a_member_per_cpu_number() {
        assert_eq!(member_cpus(FanoutSetting::Cpu, &[0, 1]), vec![0, 1]);
        assert_eq!(member_cpus(FanoutSetting::Cpu, &[1, 3]), vec![0, 1, 2, 3]);
        assert_eq!(member_cpus(FanoutSetting::Hash, &[1, 3]), vec![1, 3]);
        let members = member_cpus(FanoutSetting::Cpu, &[1, 3]);
        let served: Vec<usize> = (0..members.len())
            .map(|member| serving_slot(member, &members, &[1, 3]))
            .collect();
        // CPU 1's member goes to the worker on CPU 1 (slot 0), CPU 3's to slot 1, and the CPUs
        // without workers are spread over both.
        assert_eq!(served, vec![0, 0, 0, 1]);
    }
}
