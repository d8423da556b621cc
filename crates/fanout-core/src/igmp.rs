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
//! # Safety
//!
//! `setsockopt(MCAST_JOIN_GROUP …)` takes `group_req` / `group_source_req` structures by pointer;
//! the only unsafe code passes a pointer to a local, initialised structure with its exact size.

#![allow(
    unsafe_code,
    reason = "setsockopt with the group_req structures that nix does not wrap"
)]

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

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

/// A socket and the memberships it holds.
#[derive(Debug)]
struct Holder {
    socket: UdpSocket,
    /// Per (ifindex, group): `None` for an any-source join, else the joined sources.
    groups: HashMap<(u32, Ipv4Addr), Option<Vec<Ipv4Addr>>>,
}

/// The set of multicast memberships a process holds; every one is left on drop.
#[derive(Debug)]
pub struct Memberships {
    holders: Vec<Holder>,
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
        Memberships {
            holders: Vec::new(),
            max_groups: read_sysctl("/proc/sys/net/ipv4/igmp_max_memberships")
                .unwrap_or(DEFAULT_MAX_MEMBERSHIPS),
            max_sources: read_sysctl("/proc/sys/net/ipv4/igmp_max_msf")
                .unwrap_or(DEFAULT_MAX_SOURCES),
        }
    }

    /// Whether `membership` is held.
    pub fn contains(&self, membership: &Membership) -> bool {
        self.holders.iter().any(|holder| holder.holds(membership))
    }

    /// Every membership held, sorted.
    pub fn list(&self) -> Vec<Membership> {
        let mut all: Vec<Membership> = self
            .holders
            .iter()
            .flat_map(|holder| {
                holder
                    .groups
                    .iter()
                    .flat_map(|(&(ifindex, group), sources)| {
                        let sources: Vec<Option<Ipv4Addr>> = match sources {
                            None => vec![None],
                            Some(list) => list.iter().copied().map(Some).collect(),
                        };
                        sources.into_iter().map(move |source| Membership {
                            ifindex,
                            group,
                            source,
                        })
                    })
            })
            .collect();
        all.sort();
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
        let (max_groups, max_sources) = (self.max_groups, self.max_sources);
        // An any-source and a source-specific join of one group cannot share a socket, and each
        // socket holds a bounded number of groups and of sources per group.
        let slot = self.holders.iter().position(|holder| {
            match (holder.groups.get(&key), membership.source) {
                (Some(Some(sources)), Some(_)) => sources.len() < max_sources,
                (Some(_), _) => false,
                (None, _) => holder.groups.len() < max_groups,
            }
        });
        let index = match slot {
            Some(index) => index,
            None => {
                let socket =
                    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(IgmpError::Socket)?;
                self.holders.push(Holder {
                    socket,
                    groups: HashMap::new(),
                });
                self.holders.len() - 1
            }
        };
        let holder = &mut self.holders[index];
        setsockopt_membership(&holder.socket, membership, true)?;
        match membership.source {
            None => {
                holder.groups.insert(key, None);
            }
            Some(source) => holder
                .groups
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(source),
        }
        Ok(())
    }

    /// Leaves `membership`; leaving one not held does nothing.
    pub fn leave(&mut self, membership: Membership) -> Result<(), IgmpError> {
        let key = (membership.ifindex, membership.group);
        let Some(holder) = self
            .holders
            .iter_mut()
            .find(|holder| holder.holds(&membership))
        else {
            return Ok(());
        };
        setsockopt_membership(&holder.socket, membership, false)?;
        let now_empty = match (holder.groups.get_mut(&key), membership.source) {
            (Some(Some(sources)), Some(source)) => {
                sources.retain(|&held| held != source);
                sources.is_empty()
            }
            _ => true,
        };
        if now_empty {
            holder.groups.remove(&key);
        }
        self.holders.retain(|holder| !holder.groups.is_empty());
        Ok(())
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

fn sockaddr_in(address: Ipv4Addr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data for which all-zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_storage is larger than and at least as aligned as sockaddr_in, so the
    // write stays inside `storage`.
    unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
    storage
}

fn setsockopt_membership(
    socket: &UdpSocket,
    membership: Membership,
    join: bool,
) -> Result<(), IgmpError> {
    let fd = socket.as_raw_fd();
    let (name, result) = match membership.source {
        None => {
            let request = libc::group_req {
                gr_interface: membership.ifindex,
                gr_group: sockaddr_in(membership.group),
            };
            let (option, name) = if join {
                (libc::MCAST_JOIN_GROUP, "MCAST_JOIN_GROUP")
            } else {
                (libc::MCAST_LEAVE_GROUP, "MCAST_LEAVE_GROUP")
            };
            // SAFETY: `fd` is an open socket borrowed from `socket` for this call; the pointer and
            // length describe `request`, a live, initialised group_req.
            let result = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    option,
                    (&raw const request).cast(),
                    size_of::<libc::group_req>() as libc::socklen_t,
                )
            };
            (name, result)
        }
        Some(source) => {
            let request = libc::group_source_req {
                gsr_interface: membership.ifindex,
                gsr_group: sockaddr_in(membership.group),
                gsr_source: sockaddr_in(source),
            };
            let (option, name) = if join {
                (libc::MCAST_JOIN_SOURCE_GROUP, "MCAST_JOIN_SOURCE_GROUP")
            } else {
                (libc::MCAST_LEAVE_SOURCE_GROUP, "MCAST_LEAVE_SOURCE_GROUP")
            };
            // SAFETY: as above, with a live, initialised group_source_req.
            let result = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    option,
                    (&raw const request).cast(),
                    size_of::<libc::group_source_req>() as libc::socklen_t,
                )
            };
            (name, result)
        }
    };
    if result == 0 {
        Ok(())
    } else {
        Err(IgmpError::Setsockopt {
            option: name,
            membership,
            source: io::Error::last_os_error(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_index() -> u32 {
        nix::net::if_::if_nametoindex("lo").expect("every Linux host has lo")
    }

    #[test]
    fn refuses_unicast_groups() {
        let mut set = Memberships::new();
        let error = set
            .join(Membership {
                ifindex: 1,
                group: Ipv4Addr::new(10, 0, 0, 1),
                source: None,
            })
            .expect_err("10.0.0.1 is unicast");
        assert!(matches!(error, IgmpError::NotMulticast { .. }));
    }

    #[test]
    fn joins_spread_over_sockets_and_leave() {
        let ifindex = loopback_index();
        let mut set = Memberships::new();
        set.max_groups = 3;
        let joins: Vec<Membership> = (1..=7)
            .map(|n| Membership {
                ifindex,
                group: Ipv4Addr::new(239, 77, 0, n),
                source: None,
            })
            .chain((1..=2).map(|n| Membership {
                ifindex,
                group: Ipv4Addr::new(232, 77, 0, 1),
                source: Some(Ipv4Addr::new(192, 0, 2, n)),
            }))
            .collect();
        for &membership in &joins {
            set.join(membership).expect("join on lo");
            set.join(membership)
                .expect("a second join of the same is a no-op");
        }
        let mut expected = joins.clone();
        expected.sort();
        assert_eq!(set.list(), expected);
        assert_eq!(
            set.holders.len(),
            3,
            "7 any-source groups + 1 SSM group over 3 per socket"
        );
        let igmp = std::fs::read_to_string("/proc/net/igmp").unwrap_or_default();
        if !igmp.is_empty() {
            // /proc/net/igmp lists groups as little-endian hex on x86; 239.77.0.7 is 07004DEF.
            assert!(igmp.contains("07004DEF"), "{igmp}");
        }
        for &membership in &joins {
            set.leave(membership).expect("leave");
            assert!(!set.contains(&membership));
        }
        assert!(set.holders.is_empty());
    }
}
