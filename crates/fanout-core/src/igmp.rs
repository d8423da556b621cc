//! IPv4 multicast group membership by interface index, so the host reports it with IGMP.
//!
//! A packet socket sees every frame that reaches the interface, but a switch with IGMP snooping
//! forwards a group's frames only to ports whose host asked for the group. [`Memberships`] asks:
//! it joins groups (any source, or one source for source-specific multicast) on an interface given
//! by index, which works on interfaces without an IPv4 address, and leaves them when asked or
//! dropped.
//!
//! The kernel caps the groups one socket may join (`net.ipv4.igmp_max_memberships`, 20 by
//! default) and the sources per group (`net.ipv4.igmp_max_msf`, 10), so the memberships are
//! spread over as many UDP sockets as needed, each never receiving anything (they are not bound).
//!
//! The only unsafe code, the `setsockopt` calls, is in the submodule `sockopt`.

mod sockopt;

use sockopt::setsockopt_membership;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{Ipv4Addr, UdpSocket};

/// The default of `net.ipv4.igmp_max_memberships`, used when the sysctl cannot be read.
const DEFAULT_MAX_MEMBERSHIPS: usize = 20;
/// The default of `net.ipv4.igmp_max_msf`, used when the sysctl cannot be read.
const DEFAULT_MAX_SOURCES: usize = 10;

/// One membership: a group on an interface, from any source or from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Membership {
    /// Kernel index of the interface to join on.
    pub ifindex: u32,
    /// The multicast group.
    pub group: Ipv4Addr,
    /// `Some` for a source-specific join (IGMPv3 INCLUDE), `None` for any source.
    pub source: Option<Ipv4Addr>,
}

/// A join or leave the kernel refused.
#[derive(Debug, thiserror::Error)]
pub enum IgmpError {
    /// The group is not an IPv4 multicast address.
    #[error("{group} is not a multicast group")]
    NotMulticast {
        /// The address given.
        group: Ipv4Addr,
    },
    /// A socket to hold memberships could not be opened.
    #[error("socket(AF_INET, SOCK_DGRAM) for multicast memberships: {0}")]
    Socket(#[source] io::Error),
    /// `setsockopt` failed.
    #[error("setsockopt({option}) for {membership:?}: {source}")]
    Setsockopt {
        /// The option: MCAST_JOIN_GROUP, MCAST_LEAVE_SOURCE_GROUP, ...
        option: &'static str,
        /// What was being joined or left.
        membership: Membership,
        /// The errno.
        source: io::Error,
    },
}

/// Any-source (`None`) or the joined sources of one group on one socket.
type Sources = Option<Vec<Ipv4Addr>>;

/// A group on an interface: (ifindex, group).
type GroupKey = (u32, Ipv4Addr);

/// A socket and the memberships it holds.
#[derive(Debug)]
struct Holder {
    socket: UdpSocket,
    /// Per (ifindex, group): `None` for an any-source join, else the joined sources.
    groups: HashMap<GroupKey, Sources>,
}

/// The set of multicast memberships a process holds; every one is left on drop.
///
/// Finding the socket that holds a membership, or one with room for a new one, costs O(1)
/// whatever the number of groups: a relay that joins one group per rule joins thousands, one
/// control request at a time, and a scan over every socket per join made each request slower
/// than the last.
#[derive(Debug)]
pub struct Memberships {
    /// Sockets by slot; `None` is a free slot (its socket was closed when it emptied).
    holders: Vec<Option<Holder>>,
    /// Free slots of `holders`, reused before the vector grows.
    free: Vec<usize>,
    /// The slots holding each group (one for an any-source join, one per batch of up to
    /// `max_sources` sources for source-specific joins).
    by_group: HashMap<GroupKey, Vec<usize>>,
    /// Slots whose socket can take another group, lowest first so that sockets fill up.
    with_room: BTreeSet<usize>,
    max_groups: usize,
    max_sources: usize,
}

impl Default for Memberships {
    fn default() -> Self {
        Self::new()
    }
}

impl Memberships {
    /// An empty set, sized by the kernel's per-socket limits.
    pub fn new() -> Self {
        Memberships::with_limits(
            read_sysctl("/proc/sys/net/ipv4/igmp_max_memberships")
                .unwrap_or(DEFAULT_MAX_MEMBERSHIPS),
            read_sysctl("/proc/sys/net/ipv4/igmp_max_msf").unwrap_or(DEFAULT_MAX_SOURCES),
        )
    }

    fn with_limits(max_groups: usize, max_sources: usize) -> Self {
        Memberships {
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
    pub fn contains(&self, membership: &Membership) -> bool {
        self.holder_of(membership).is_some()
    }

    /// Every membership held, sorted.
    pub fn list(&self) -> Vec<Membership> {
        let mut all = Vec::with_capacity(self.by_group.len());
        for holder in self.holders.iter().flatten() {
            for (&(ifindex, group), sources) in &holder.groups {
                let membership = |source| Membership {
                    ifindex,
                    group,
                    source,
                };
                match sources {
                    None => all.push(membership(None)),
                    Some(list) => all.extend(list.iter().map(|&source| membership(Some(source)))),
                }
            }
        }
        all.sort_unstable();
        all
    }

    /// Joins `membership`; joining one already held does nothing.
    pub fn join(&mut self, membership: Membership) -> Result<(), IgmpError> {
        if !membership.group.is_multicast() {
            return Err(IgmpError::NotMulticast {
                group: membership.group,
            });
        }
        if self.contains(&membership) {
            return Ok(());
        }
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
    pub fn leave(&mut self, membership: Membership) -> Result<(), IgmpError> {
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
    fn holder_of(&self, membership: &Membership) -> Option<usize> {
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
    fn slot_for(&self, membership: Membership) -> Option<usize> {
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
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(IgmpError::Socket)?;
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

impl Holder {
    fn holds(&self, membership: &Membership) -> bool {
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

fn read_sysctl(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests;
