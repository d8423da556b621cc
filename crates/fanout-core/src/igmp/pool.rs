//! The sockets of one address family and which memberships each holds.

use super::sockopt::{Address, setsockopt_membership};
use super::{GroupMembership, IgmpError, IpMembership};
use std::collections::{BTreeSet, HashMap};
use std::net::UdpSocket;

/// Any-source (`None`) or the joined sources of one group on one socket.
type Sources<A> = Option<Vec<A>>;

/// A group on an interface: (ifindex, group).
type GroupKey<A> = (u32, A);

/// A socket and the memberships it holds.
#[derive(Debug)]
struct Holder<A> {
    socket: UdpSocket,
    /// Per (ifindex, group): `None` for an any-source join, else the joined sources.
    groups: HashMap<GroupKey<A>, Sources<A>>,
}

/// The memberships of one family, spread over sockets that each hold a bounded number of
/// groups and of sources per group.
#[derive(Debug)]
pub(super) struct Pool<A> {
    /// Sockets by slot; `None` is a free slot (its socket was closed when it emptied).
    holders: Vec<Option<Holder<A>>>,
    /// Free slots of `holders`, reused before the vector grows.
    free: Vec<usize>,
    /// The slots holding each group (one for an any-source join, one per batch of up to
    /// `max_sources` sources for source-specific joins).
    by_group: HashMap<GroupKey<A>, Vec<usize>>,
    /// Slots whose socket can take another group, lowest first so that sockets fill up.
    with_room: BTreeSet<usize>,
    max_groups: usize,
    max_sources: usize,
}

impl<A: Address> Pool<A> {
    pub(super) fn with_limits(max_groups: usize, max_sources: usize) -> Self {
        Pool {
            holders: Vec::new(),
            free: Vec::new(),
            by_group: HashMap::new(),
            with_room: BTreeSet::new(),
            // A limit of 0 (a sysctl set to nothing useful) would make every join open a socket
            // that then refuses it; 1 at least lets the kernel say why.
            max_groups: max_groups.max(1),
            max_sources: max_sources.max(1),
        }
    }

    /// Whether `membership` is held.
    pub(super) fn contains(&self, membership: &GroupMembership<A>) -> bool {
        self.holder_of(membership).is_some()
    }

    /// Appends every membership held to `all`.
    pub(super) fn list_into(&self, all: &mut Vec<IpMembership>) {
        for holder in self.holders.iter().flatten() {
            for (&(ifindex, group), sources) in &holder.groups {
                let membership = |source: Option<A>| {
                    GroupMembership {
                        ifindex,
                        group,
                        source,
                    }
                    .to_ip()
                };
                match sources {
                    None => all.push(membership(None)),
                    Some(list) => all.extend(list.iter().map(|&source| membership(Some(source)))),
                }
            }
        }
    }

    /// Joins `membership`, which the caller checked is a multicast group not held yet.
    pub(super) fn join(&mut self, membership: GroupMembership<A>) -> Result<(), IgmpError> {
        let key = (membership.ifindex, membership.group);
        let index = match self.slot_for(membership) {
            Some(index) => index,
            None => self.open_holder()?,
        };
        let holder = self.holders[index]
            .as_mut()
            .expect("slot_for and open_holder name live slots");
        if let Err(error) = setsockopt_membership(&holder.socket, membership, true) {
            if holder.groups.is_empty() {
                self.close_holder(index);
            }
            return Err(error);
        }
        let new_group = match membership.source {
            None => holder.groups.insert(key, None).is_none(),
            Some(source) => {
                let new_group = !holder.groups.contains_key(&key);
                holder
                    .groups
                    .entry(key)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(source);
                new_group
            }
        };
        let full = holder.groups.len() >= self.max_groups;
        if new_group {
            self.by_group.entry(key).or_default().push(index);
        }
        if full {
            self.with_room.remove(&index);
        }
        Ok(())
    }

    /// Leaves `membership`; leaving one not held does nothing.
    pub(super) fn leave(&mut self, membership: GroupMembership<A>) -> Result<(), IgmpError> {
        let key = (membership.ifindex, membership.group);
        let Some(index) = self.holder_of(&membership) else {
            return Ok(());
        };
        let holder = self.holders[index]
            .as_mut()
            .expect("holder_of names live slots");
        setsockopt_membership(&holder.socket, membership, false)?;
        let group_gone = match (holder.groups.get_mut(&key), membership.source) {
            (Some(Some(sources)), Some(source)) => {
                sources.retain(|&held| held != source);
                sources.is_empty()
            }
            _ => true,
        };
        if !group_gone {
            return Ok(());
        }
        holder.groups.remove(&key);
        let now_empty = holder.groups.is_empty();
        if let Some(slots) = self.by_group.get_mut(&key) {
            slots.retain(|&slot| slot != index);
            if slots.is_empty() {
                self.by_group.remove(&key);
            }
        }
        if now_empty {
            self.close_holder(index);
        } else {
            self.with_room.insert(index);
        }
        Ok(())
    }

    /// The slot whose socket holds `membership`.
    fn holder_of(&self, membership: &GroupMembership<A>) -> Option<usize> {
        let slots = self.by_group.get(&(membership.ifindex, membership.group))?;
        slots.iter().copied().find(|&slot| {
            self.holders[slot]
                .as_ref()
                .is_some_and(|holder| holder.holds(membership))
        })
    }

    /// A live slot that can take `membership` (not held yet), if any. An any-source and a
    /// source-specific join of one group cannot share a socket, and each socket holds a bounded
    /// number of groups and of sources per group.
    fn slot_for(&self, membership: GroupMembership<A>) -> Option<usize> {
        let key = (membership.ifindex, membership.group);
        let holding: &[usize] = self.by_group.get(&key).map_or(&[], Vec::as_slice);
        if membership.source.is_some() {
            let with_source_room = holding.iter().copied().find(|&slot| {
                matches!(
                    self.holders[slot].as_ref().and_then(|h| h.groups.get(&key)),
                    Some(Some(sources)) if sources.len() < self.max_sources
                )
            });
            if with_source_room.is_some() {
                return with_source_room;
            }
        }
        // A socket that has room and does not hold the group yet; those that hold it are few
        // (one per batch of sources), so this looks at a handful of slots at most.
        self.with_room
            .iter()
            .copied()
            .find(|slot| !holding.contains(slot))
    }

    /// Opens a socket for memberships in a free slot and returns the slot.
    fn open_holder(&mut self) -> Result<usize, IgmpError> {
        let socket = UdpSocket::bind((A::ANY, 0)).map_err(|source| IgmpError::Socket {
            domain: A::DOMAIN,
            source,
        })?;
        let holder = Holder {
            socket,
            groups: HashMap::new(),
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.holders[index] = Some(holder);
                index
            }
            None => {
                self.holders.push(Some(holder));
                self.holders.len() - 1
            }
        };
        self.with_room.insert(index);
        Ok(index)
    }

    /// Closes the (empty) socket of slot `index`.
    fn close_holder(&mut self, index: usize) {
        self.holders[index] = None;
        self.with_room.remove(&index);
        self.free.push(index);
    }
}

impl<A: Address> Holder<A> {
    fn holds(&self, membership: &GroupMembership<A>) -> bool {
        match (
            self.groups.get(&(membership.ifindex, membership.group)),
            membership.source,
        ) {
            (Some(None), None) => true,
            (Some(Some(sources)), Some(source)) => sources.contains(&source),
            _ => false,
        }
    }
}

#[cfg(test)]
impl<A: Address> Pool<A> {
    /// Sockets open.
    pub(super) fn sockets(&self) -> usize {
        self.holders.iter().flatten().count()
    }

    /// Whether nothing is indexed any more.
    pub(super) fn index_is_empty(&self) -> bool {
        self.by_group.is_empty() && self.with_room.is_empty()
    }

    /// Panics unless the group index and the free and with-room slots agree with what
    /// each socket holds.
    pub(super) fn check_index(&self) {
        let mut indexed = 0;
        for (key, slots) in &self.by_group {
            assert!(!slots.is_empty(), "{key:?}: an empty entry is removed");
            for (i, &slot) in slots.iter().enumerate() {
                assert!(!slots[..i].contains(&slot), "{key:?}: slot {slot} twice");
                let holder = self.holders[slot].as_ref().expect("indexed slots are live");
                assert!(
                    holder.groups.contains_key(key),
                    "{key:?} not in slot {slot}"
                );
                indexed += 1;
            }
        }
        let mut held = 0;
        for (slot, holder) in self.holders.iter().enumerate() {
            let Some(holder) = holder else {
                assert!(self.free.contains(&slot), "slot {slot} is free");
                assert!(
                    !self.with_room.contains(&slot),
                    "free slot {slot} has no room"
                );
                continue;
            };
            assert!(!holder.groups.is_empty(), "an empty socket is closed");
            assert!(holder.groups.len() <= self.max_groups);
            assert_eq!(
                self.with_room.contains(&slot),
                holder.groups.len() < self.max_groups,
                "slot {slot}: room"
            );
            for (key, sources) in &holder.groups {
                assert!(self.by_group[key].contains(&slot));
                if let Some(sources) = sources {
                    assert!(!sources.is_empty() && sources.len() <= self.max_sources);
                }
            }
            held += holder.groups.len();
        }
        assert_eq!(indexed, held, "every (socket, group) is indexed once");
    }
}
