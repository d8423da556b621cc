//! What the supervisor holds for the rules' inputs, kept in step with the running rule set:
//! receive rings per worker class and input interface, IGMP memberships, and sinks for unicast
//! inputs.
//!
//! Each class (the default one, then every `[[class]]`) has its own fanout group on each input
//! interface its rules use. With named classes, each group's socket filter keeps only its
//! class's traffic: a named class's rings take the (group, port) keys of its rules on that
//! interface, the default class's take every UDP frame but those, so no worker spends time on
//! another class's packets. Without named classes every ring has the plain UDP pre-filter.

use crate::config::{FanoutSetting, RingSection};
use crate::rings;
use fanout_core::FanoutGroupId;
use fanout_core::bpf::{self, BpfProgram};
use fanout_core::handoff::RingHandle;
use fanout_core::igmp::{IgmpError, IpMembership, Memberships};
use fanout_core::{BpfError, HandoffError};
use relay_rules::RuleSet;
use relay_rules::bpf::KeySense;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsFd;

/// A (destination, port) key: where a unicast input's socket is bound.
pub(super) type Key = (IpAddr, u16);

/// A (destination, port, VLAN) key, as the class filters match it.
pub(super) type ClassKey = (IpAddr, u16, Option<u16>);

/// Why what a rule's input needs could not be held.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The kernel refused a multicast join (the error names the option, the membership with its
    /// interface index, and the errno).
    #[error("joining {group} on {interface}: {source}")]
    Join {
        /// The multicast group.
        group: IpAddr,
        /// The input interface.
        interface: String,
        /// The refused join.
        source: IgmpError,
    },
    /// A unicast input's address and port could not be bound.
    #[error("binding unicast input {}: {source}", std::net::SocketAddr::from((*.address, *.port)))]
    Bind {
        /// The input's address.
        address: IpAddr,
        /// The input's port.
        port: u16,
        /// The errno of `bind`.
        source: std::io::Error,
    },
    /// A unicast input's socket could not be given its drop-everything filter.
    #[error("filtering unicast input {}: {source}", std::net::SocketAddr::from((*.address, *.port)))]
    SinkFilter {
        /// The input's address.
        address: IpAddr,
        /// The input's port.
        port: u16,
        /// The refused filter.
        source: BpfError,
    },
    /// A class's receive rings could not be opened on an interface.
    #[error("receive rings of class {class} on {interface}: {source}")]
    Rings {
        /// The class's name.
        class: String,
        /// The input interface.
        interface: String,
        /// What failed, with the member, syscall and errno.
        source: rings::FanoutMembersError,
    },
    /// A duplicate of a ring's socket, kept to refilter it, could not be made.
    #[error("keeping a ring's socket on {interface}: {source}")]
    KeepSocket {
        /// The input interface.
        interface: String,
        /// The refused `dup`.
        source: HandoffError,
    },
}

/// The supervisor's input-side resources.
#[derive(Debug)]
pub(super) struct Inputs {
    fanout: FanoutSetting,
    ring: RingSection,
    /// The classes by index: the default one (`None`), then the named ones in file order.
    classes: Vec<Option<String>>,
    /// Fanout members per input interface, by class; every interface has the same count, so
    /// member k of each is served by the same worker (and under `steer`, is shard k).
    members: Vec<u32>,
    /// The fanout group of each class on each input interface its rules use.
    groups: BTreeMap<(usize, String), Group>,
    memberships: Memberships,
    sinks: BTreeMap<Key, UdpSocket>,
    /// What each rule wants, by name, and how many rules want each membership or sink, so that
    /// a change touches only what its own rules want ([`Inputs::sync_change`]).
    wants: HashMap<String, RuleInput>,
    refs: HashMap<Want, u32>,
    /// With named classes: the keys of each class's rules per input interface, with how many
    /// rules have each, from which the groups' filters are made.
    keys: BTreeMap<(String, usize), BTreeMap<ClassKey, u32>>,
    /// How many rules have an IPv6 input, per input interface: the rings of an interface with
    /// none keep IPv6 out in their filter, as the pre-filter always did.
    ipv6_inputs: BTreeMap<String, u32>,
}

/// One class's fanout group on one interface.
#[derive(Debug)]
struct Group {
    id: FanoutGroupId,
    /// Duplicates of the members' sockets (the rings themselves move between workers), to give
    /// them a new filter when the class's keys change.
    sockets: Vec<RingHandle>,
}

/// What one rule's input needs held open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Want {
    /// A multicast group joined on the input interface (IGMP for IPv4, MLD for IPv6).
    Group(IpMembership),
    /// A socket bound to a unicast input's address and port.
    Sink(Key),
}

/// Where one rule's input comes from, and what it holds open.
#[derive(Debug, Clone)]
struct RuleInput {
    interface: String,
    class: usize,
    key: ClassKey,
    want: Want,
}

/// New receive rings, each with its class and fanout member index.
pub(super) type NewRings = Vec<(usize, u32, RingHandle)>;

impl Inputs {
    /// Nothing held yet; on each input interface class c will get `members[c]` fanout members.
    /// `classes` are the class names by index, the default class (`None`) first.
    pub(super) fn new(
        fanout: FanoutSetting,
        ring: RingSection,
        classes: Vec<Option<String>>,
        members: Vec<u32>,
    ) -> Self {
        Inputs {
            fanout,
            ring,
            classes,
            members,
            groups: BTreeMap::new(),
            memberships: Memberships::new(),
            sinks: BTreeMap::new(),
            wants: HashMap::new(),
            refs: HashMap::new(),
            keys: BTreeMap::new(),
            ipv6_inputs: BTreeMap::new(),
        }
    }

    /// The index of the class `rule` names (the default class for none, or an unknown one,
    /// which validation refuses before a rule gets here).
    pub(super) fn class_of(&self, rule: &relay_rules::Rule) -> usize {
        rule.class
            .as_deref()
            .and_then(|name| {
                self.classes
                    .iter()
                    .position(|class| class.as_deref() == Some(name))
            })
            .unwrap_or(0)
    }

    /// What `rule` needs, or `None` if `set` has no facts for its input interface.
    fn input_of(&self, set: &RuleSet, rule: &relay_rules::Rule) -> Option<RuleInput> {
        let facts = set.interfaces().get(&rule.input.interface)?;
        let key = (rule.input.destination, rule.input.port, rule.input.vlan);
        let want = if rule.input.destination.is_multicast() {
            Want::Group(IpMembership {
                ifindex: facts.index,
                group: rule.input.destination,
                source: rule.input.source,
            })
        } else {
            Want::Sink((rule.input.destination, rule.input.port))
        };
        Some(RuleInput {
            interface: facts.name.clone(),
            class: self.class_of(rule),
            key,
            want,
        })
    }

    /// Makes the held resources follow a change that added `added` and removed `removed` (by
    /// name) from the set that is now `set`, in time proportional to the change: only the
    /// memberships and sinks that no rule wanted before are joined or bound, only those no rule
    /// wants any more are left or closed, and only the filters of interfaces whose class keys
    /// changed are replaced. Rings are opened for a class on an interface it had none on
    /// (returned, for the slots that must serve them). On error, what this call joined, bound,
    /// opened or counted is undone.
    pub(super) fn sync_change(
        &mut self,
        set: &RuleSet,
        added: &[relay_rules::Rule],
        removed: &[String],
    ) -> Result<NewRings, InputError> {
        let inputs: Vec<(String, RuleInput)> = added
            .iter()
            .filter_map(|rule| Some((rule.name.clone(), self.input_of(set, rule)?)))
            .collect();
        let mut touched = BTreeSet::new();
        // Keys first, so that rings opened below start with filters that take them.
        for (_, input) in &inputs {
            let new_key = self.count_key(input);
            if self.count_ipv6(input) || new_key {
                touched.insert(input.interface.clone());
            }
        }
        let mut counted: Vec<Want> = Vec::new();
        let mut opened: Vec<(Want, &str)> = Vec::new();
        let mut new_rings = Vec::new();
        let mut new_groups: Vec<((usize, String), Group)> = Vec::new();
        let outcome = inputs.iter().try_for_each(|(_, input)| {
            let place = (input.class, input.interface.clone());
            if !self.groups.contains_key(&place) && !new_groups.iter().any(|(at, _)| *at == place) {
                let members = 0..self.members[input.class];
                let (group, rings) =
                    self.open_rings(input.class, &input.interface, None, members)?;
                new_groups.push((place, group));
                new_rings.extend(rings);
            }
            let count = self.refs.entry(input.want).or_insert(0);
            *count += 1;
            counted.push(input.want);
            if *count == 1 {
                self.hold(input.want, &input.interface)?;
                opened.push((input.want, &input.interface));
            }
            Ok::<(), InputError>(())
        });
        if let Err(error) = outcome {
            for (want, interface) in opened {
                self.release(want, interface);
            }
            for want in counted {
                self.forget(want);
            }
            for (_, input) in &inputs {
                self.uncount_key(input);
                self.uncount_ipv6(input);
            }
            return Err(error);
        }
        // A rule changed in place is removed and added under one name: its old input goes
        // before its new one is recorded, and is let go only now that the new one is counted,
        // so a membership both want is never left and joined again.
        let gone: Vec<RuleInput> = removed
            .iter()
            .filter_map(|name| self.wants.remove(name))
            .collect();
        for (name, input) in inputs {
            self.wants.insert(name, input);
        }
        for input in gone {
            if self.forget(input.want) {
                self.release(input.want, &input.interface);
            }
            let gone_key = self.uncount_key(&input);
            if self.uncount_ipv6(&input) || gone_key {
                touched.insert(input.interface.clone());
            }
        }
        self.groups.extend(new_groups);
        for interface in touched {
            self.refilter(&interface);
        }
        Ok(new_rings)
    }

    /// Counts `input` among its interface's IPv6 inputs if it is one; true when it is the
    /// interface's first, whose rings must now take IPv6.
    fn count_ipv6(&mut self, input: &RuleInput) -> bool {
        if !input.key.0.is_ipv6() {
            return false;
        }
        let count = self.ipv6_inputs.entry(input.interface.clone()).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Takes back [`Inputs::count_ipv6`]; true when the interface has no IPv6 input any more.
    fn uncount_ipv6(&mut self, input: &RuleInput) -> bool {
        if !input.key.0.is_ipv6() {
            return false;
        }
        match self.ipv6_inputs.get_mut(&input.interface) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.ipv6_inputs.remove(&input.interface);
                true
            }
            None => false,
        }
    }

    /// Counts `input`'s key for its class; true when the class had no rule with it. Without
    /// named classes nothing is counted: every ring takes all UDP.
    fn count_key(&mut self, input: &RuleInput) -> bool {
        if self.classes.len() == 1 {
            return false;
        }
        let count = self
            .keys
            .entry((input.interface.clone(), input.class))
            .or_default()
            .entry(input.key)
            .or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Takes back one count of `input`'s key; true when no rule of its class has it any more.
    fn uncount_key(&mut self, input: &RuleInput) -> bool {
        let place = (input.interface.clone(), input.class);
        let Some(keys) = self.keys.get_mut(&place) else {
            return false;
        };
        let vanished = match keys.get_mut(&input.key) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                keys.remove(&input.key);
                true
            }
            None => false,
        };
        if keys.is_empty() {
            self.keys.remove(&place);
        }
        vanished
    }

    /// The keys that decide what class `class`'s rings on `interface` take: a named class's
    /// own keys (`Listed`); for the default class, every named class's keys (`Unlisted`).
    /// Validation keeps each key in one class, so no default rule has one of those.
    fn filter_keys(&self, class: usize, interface: &str) -> (Vec<ClassKey>, KeySense) {
        let keys_of = |class: usize| {
            self.keys
                .get(&(interface.to_owned(), class))
                .into_iter()
                .flat_map(|keys| keys.keys().copied())
        };
        if class == 0 {
            let named = (1..self.classes.len()).flat_map(keys_of).collect();
            (named, KeySense::Unlisted)
        } else {
            (keys_of(class).collect(), KeySense::Listed)
        }
    }

    /// The socket filter of class `class`'s rings on `interface`, from the keys counted now.
    fn filter(&self, class: usize, interface: &str) -> BpfProgram {
        let ipv6 = self.ipv6_inputs.contains_key(interface);
        if self.classes.len() == 1 {
            return rings::prefilter(ipv6);
        }
        let (keys, sense) = self.filter_keys(class, interface);
        match rings::key_filter(keys, sense, ipv6) {
            Ok(program) => program,
            Err(error) => {
                // Still correct (a worker drops what its class has no rule for), only not
                // isolated: every class's rings on this interface take all of its UDP.
                log::warn!(
                    "class {} on {interface}: {error}; its rings take every UDP frame instead",
                    self.class_name(class)
                );
                rings::prefilter(ipv6)
            }
        }
    }

    /// Gives every class's rings on `interface` the filter of the keys counted now.
    fn refilter(&self, interface: &str) {
        for ((class, _), group) in self
            .groups
            .iter()
            .filter(|((_, name), _)| name == interface)
        {
            let program = self.filter(*class, interface);
            for socket in &group.sockets {
                if let Err(error) = bpf::attach_filter(socket.as_fd(), &program) {
                    log::error!(
                        "class {} on {interface}: cannot replace a ring's filter, which keeps \
                         its previous keys: {error}",
                        self.class_name(*class)
                    );
                }
            }
        }
    }

    /// How many rules of class `class` have `key` on `interface` (counted only with named
    /// classes).
    pub(super) fn key_count(&self, interface: &str, class: usize, key: ClassKey) -> u32 {
        self.keys
            .get(&(interface.to_owned(), class))
            .and_then(|keys| keys.get(&key))
            .copied()
            .unwrap_or(0)
    }

    /// The number of classes, the default one included.
    pub(super) fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// A class's name for messages.
    pub(super) fn class_name(&self, class: usize) -> &str {
        self.classes
            .get(class)
            .and_then(|name| name.as_deref())
            .unwrap_or("default")
    }

    /// Joins (on `interface`) or binds what `want` needs.
    fn hold(&mut self, want: Want, interface: &str) -> Result<(), InputError> {
        match want {
            Want::Group(membership) => {
                self.memberships
                    .join(membership)
                    .map_err(|source| InputError::Join {
                        group: membership.group,
                        interface: interface.to_owned(),
                        source,
                    })
            }
            Want::Sink(key) => {
                let socket = unicast_sink(key)?;
                self.sinks.insert(key, socket);
                Ok(())
            }
        }
    }

    /// Leaves (on `interface`) or closes what `want` held.
    fn release(&mut self, want: Want, interface: &str) {
        match want {
            Want::Group(membership) => {
                // The relay no longer reads the group, so a failed leave costs only traffic the
                // host keeps receiving (and dropping) until the relay exits: worth a warning;
                // unless the interface is gone, and its memberships with it.
                if let Err(error) = self.memberships.leave(membership)
                    && rings::interface_facts(interface).is_some()
                {
                    log::warn!(
                        "leaving {} on {interface}: {error}; the host stays a member until the \
                         relay exits",
                        membership.group,
                    );
                }
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

    /// Forgets every class's fanout group on `interface`, which was deleted: the kernel unbound
    /// their sockets from it, and an interface created later under the name gets new rings
    /// when a rule wants it again.
    pub(super) fn drop_interface(&mut self, interface: &str) {
        self.groups.retain(|(_, name), _| name != interface);
    }

    /// Fanout members per input interface of class `class`.
    pub(super) fn members(&self, class: usize) -> u32 {
        self.members.get(class).copied().unwrap_or(0)
    }

    /// Adds members to every input's fanout group of class `class` until each has `members`,
    /// for more workers than members. All or nothing: on error the members added here are
    /// closed again.
    pub(super) fn grow(&mut self, class: usize, members: u32) -> Result<NewRings, InputError> {
        let mut added = Vec::new();
        let mut sockets = Vec::new();
        let have = self.members(class);
        for ((_, interface), group) in self.groups.iter().filter(|((c, _), _)| *c == class) {
            let (opened, rings) =
                self.open_rings(class, interface, Some(group.id), have..members)?;
            sockets.push(((class, interface.clone()), opened.sockets));
            added.extend(rings);
        }
        for (place, mut more) in sockets {
            if let Some(group) = self.groups.get_mut(&place) {
                group.sockets.append(&mut more);
            }
        }
        self.members[class] = have.max(members);
        Ok(added)
    }

    fn open_rings(
        &self,
        class: usize,
        interface: &str,
        group: Option<FanoutGroupId>,
        members: std::ops::Range<u32>,
    ) -> Result<(Group, NewRings), InputError> {
        let first = members.start;
        let opened = rings::open_fanout_members(
            interface,
            group,
            members.len(),
            self.fanout,
            &self.ring,
            &self.filter(class, interface),
        )
        .map_err(|source| InputError::Rings {
            class: self.class_name(class).to_owned(),
            interface: interface.to_owned(),
            source,
        })?;
        let sockets = opened
            .rings
            .iter()
            .map(|ring| {
                ring.try_clone().map_err(|source| InputError::KeepSocket {
                    interface: interface.to_owned(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        let rings = (first..)
            .zip(opened.rings)
            .map(|(member, ring)| (class, member, ring))
            .collect();
        Ok((
            Group {
                id: opened.group,
                sockets,
            },
            rings,
        ))
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
fn unicast_sink((address, port): Key) -> Result<UdpSocket, InputError> {
    let socket = UdpSocket::bind((address, port)).map_err(|source| InputError::Bind {
        address,
        port,
        source,
    })?;
    bpf::attach_filter(socket.as_fd(), &BpfProgram::reject_all()).map_err(|source| {
        InputError::SinkFilter {
            address,
            port,
            source,
        }
    })?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn input(class: usize, port: u16) -> RuleInput {
        let group = IpAddr::from(Ipv4Addr::new(239, 1, 1, 1));
        RuleInput {
            interface: "in0".into(),
            class,
            key: (group, port, None),
            want: Want::Group(IpMembership {
                ifindex: 1,
                group,
                source: None,
            }),
        }
    }

    #[test]
    fn an_interface_takes_ipv6_from_its_first_ipv6_input_to_its_last() {
        let mut inputs = Inputs::new(
            FanoutSetting::default(),
            RingSection::default(),
            vec![None],
            vec![1],
        );
        let group: IpAddr = "ff3e::8000:1".parse().expect("literal");
        let six = |port| RuleInput {
            key: (group, port, None),
            ..input(0, port)
        };
        assert!(!inputs.count_ipv6(&input(0, 5000)), "an IPv4 input");
        assert!(inputs.count_ipv6(&six(5000)), "the first IPv6 input");
        assert!(!inputs.count_ipv6(&six(5001)), "a second one");
        assert!(inputs.ipv6_inputs.contains_key("in0"));
        assert!(!inputs.uncount_ipv6(&six(5000)));
        assert!(inputs.uncount_ipv6(&six(5001)), "the last one went");
        assert!(!inputs.ipv6_inputs.contains_key("in0"));
        assert!(!inputs.uncount_ipv6(&input(0, 5000)));
    }

    #[test]
    fn class_filters_split_keys_between_classes() {
        let names = vec![None, Some("video".to_owned()), Some("bulk".to_owned())];
        let mut inputs = Inputs::new(
            FanoutSetting::Cpu,
            RingSection::default(),
            names,
            vec![1, 1, 1],
        );
        let key = |port| (IpAddr::from(Ipv4Addr::new(239, 1, 1, 1)), port, None);
        assert!(inputs.count_key(&input(1, 5000)), "a new video key");
        assert!(!inputs.count_key(&input(1, 5000)), "a second rule of it");
        assert!(inputs.count_key(&input(2, 5001)));
        // The default class's own keys are counted (for the one-class-per-key check) but are
        // not the named classes': its rings take them, as every key no named class has.
        assert!(inputs.count_key(&input(0, 5002)));
        assert_eq!(inputs.key_count("in0", 0, key(5002)), 1);
        assert_eq!(
            inputs.filter_keys(1, "in0"),
            (vec![key(5000)], KeySense::Listed)
        );
        assert_eq!(
            inputs.filter_keys(2, "in0"),
            (vec![key(5001)], KeySense::Listed)
        );
        assert_eq!(
            inputs.filter_keys(0, "in0"),
            (vec![key(5000), key(5001)], KeySense::Unlisted)
        );
        assert!(!inputs.uncount_key(&input(1, 5000)), "one video rule left");
        assert!(inputs.uncount_key(&input(1, 5000)));
        assert_eq!(inputs.filter_keys(1, "in0"), (vec![], KeySense::Listed));
        assert_eq!(
            inputs.filter_keys(0, "in0"),
            (vec![key(5001)], KeySense::Unlisted)
        );
        assert_eq!(inputs.filter_keys(1, "in1"), (vec![], KeySense::Listed));
        // Without named classes nothing is counted.
        let mut plain = Inputs::new(
            FanoutSetting::Cpu,
            RingSection::default(),
            vec![None],
            vec![1],
        );
        assert!(!plain.count_key(&input(0, 5000)));
        assert!(plain.keys.is_empty());
    }

    #[test]
    fn members_follow_the_fanout_mode() {
        assert_eq!(initial_members(FanoutSetting::Cpu, &[0, 1], 2), 2);
        assert_eq!(initial_members(FanoutSetting::Cpu, &[1, 3], 4), 4);
        assert_eq!(initial_members(FanoutSetting::Hash, &[1, 3], 4), 2);
        assert_eq!(initial_members(FanoutSetting::Steer, &[0], 2), 2);
        assert_eq!(initial_members(FanoutSetting::Lb, &[], 2), 1);
    }
}
