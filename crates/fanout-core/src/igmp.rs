//! Multicast group membership by interface index, so the host reports it with IGMP (IPv4) or
//! MLD (IPv6).
//!
//! A packet socket sees every frame that reaches the interface, but a switch with IGMP or MLD
//! snooping forwards a group's frames only to ports whose host asked for the group.
//! [`Memberships`] asks: it joins groups (any source, or one source for source-specific
//! multicast) on an interface given by index, which works on interfaces without an address of
//! the group's family, and leaves them when asked or dropped.
//!
//! One [`GroupMembership`] type serves both families: [`Membership`] for IPv4,
//! [`Membership6`] for IPv6 and [`IpMembership`] for callers that hold an [`IpAddr`]; each is
//! routed to sockets of its own family. Every join and leave uses the protocol-independent
//! `MCAST_JOIN_GROUP` / `MCAST_JOIN_SOURCE_GROUP` options (RFC 3678), at level `IPPROTO_IP` on
//! `AF_INET` sockets and `IPPROTO_IPV6` on `AF_INET6` sockets, so the kernel sends IGMPv3 or
//! MLDv2 reports (or the older versions a querier on the link asks for).
//!
//! The kernel caps the groups one IPv4 socket may join (`net.ipv4.igmp_max_memberships`, 20 by
//! default) and the sources per group (`net.ipv4.igmp_max_msf`, 10; `net.ipv6.mld_max_msf`, 64,
//! for IPv6). IPv6 has no cap on groups per socket, but each membership is charged to the
//! socket's option memory (`net.core.optmem_max`), so IPv6 sockets take
//! [`IPV6_GROUPS_PER_SOCKET`] groups each. The memberships are spread over as many UDP sockets
//! as needed, each never receiving anything (they are not bound).
//!
//! An IPv6 join first checks that the interface exists and has IPv6 (not
//! `disable_ipv6`, an MTU of at least 1280): the kernel accepts a join on an interface whose
//! IPv6 is disabled and then sends no report, so the switch would never forward the group.
//!
//! The only unsafe code, the `setsockopt` calls, is in the submodule `sockopt`.
//!
//! ```no_run
//! use std::net::{Ipv4Addr, Ipv6Addr};
//! use fanout_core::iface;
//! use fanout_core::igmp::{Membership, Membership6, Memberships};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ifindex = iface::index_of("eth0")?;
//! let mut joined = Memberships::new();
//! // Any source of 239.1.1.1, reported with IGMP.
//! joined.join(Membership { ifindex, group: Ipv4Addr::new(239, 1, 1, 1), source: None })?;
//! // 2001:db8::5's stream to ff3e::1234 only (SSM), reported with MLDv2.
//! joined.join(Membership6 {
//!     ifindex,
//!     group: "ff3e::1234".parse::<Ipv6Addr>()?,
//!     source: Some("2001:db8::5".parse()?),
//! })?;
//! // Both show in /proc/net/igmp and /proc/net/igmp6 until left, or until `joined` is dropped.
//! # Ok(()) }
//! ```

mod pool;
mod sockopt;

use crate::iface::{self, IfaceError, Ipv6State};
use pool::Pool;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The default of `net.ipv4.igmp_max_memberships`, used when the sysctl cannot be read.
const DEFAULT_MAX_MEMBERSHIPS: usize = 20;
/// The default of `net.ipv4.igmp_max_msf`, used when the sysctl cannot be read.
const DEFAULT_MAX_SOURCES: usize = 10;
/// The default of `net.ipv6.mld_max_msf`, used when the sysctl cannot be read.
const DEFAULT_MAX_SOURCES_V6: usize = 64;
/// Groups per IPv6 socket: the kernel sets no limit, and 20 memberships of about 64 bytes each
/// stay far below the smallest `net.core.optmem_max` a kernel ships (10 KiB).
pub const IPV6_GROUPS_PER_SOCKET: usize = 20;

/// One membership: a group on an interface, from any source or from one.
///
/// `A` is the address type: [`Ipv4Addr`] ([`Membership`]), [`Ipv6Addr`] ([`Membership6`]) or
/// [`IpAddr`] ([`IpMembership`], whose group and source must then be of one family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupMembership<A> {
    /// Kernel index of the interface to join on.
    pub ifindex: u32,
    /// The multicast group.
    pub group: A,
    /// `Some` for a source-specific join (IGMPv3 / MLDv2 INCLUDE), `None` for any source.
    pub source: Option<A>,
}

/// An IPv4 membership, reported with IGMP.
pub type Membership = GroupMembership<Ipv4Addr>;
/// An IPv6 membership, reported with MLD.
pub type Membership6 = GroupMembership<Ipv6Addr>;
/// A membership of either family.
pub type IpMembership = GroupMembership<IpAddr>;

impl<A: Into<IpAddr>> GroupMembership<A> {
    /// The same membership with [`IpAddr`] addresses.
    pub fn to_ip(self) -> IpMembership {
        GroupMembership {
            ifindex: self.ifindex,
            group: self.group.into(),
            source: self.source.map(Into::into),
        }
    }
}

impl From<Membership> for IpMembership {
    fn from(membership: Membership) -> Self {
        membership.to_ip()
    }
}

impl From<Membership6> for IpMembership {
    fn from(membership: Membership6) -> Self {
        membership.to_ip()
    }
}

impl<A: Into<IpAddr> + Copy> From<&GroupMembership<A>> for IpMembership {
    fn from(membership: &GroupMembership<A>) -> Self {
        (*membership).to_ip()
    }
}

impl<A: fmt::Display> fmt::Display for GroupMembership<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {}", self.group)?;
        if let Some(source) = &self.source {
            write!(f, " from {source}")?;
        }
        write!(f, " on interface #{}", self.ifindex)
    }
}

/// A membership split by family.
enum Family {
    V4(Membership),
    V6(Membership6),
}

impl Family {
    fn of(membership: IpMembership) -> Result<Family, IgmpError> {
        let GroupMembership {
            ifindex,
            group,
            source,
        } = membership;
        match (group, source) {
            (IpAddr::V4(group), None) => Ok(Family::V4(GroupMembership {
                ifindex,
                group,
                source: None,
            })),
            (IpAddr::V4(group), Some(IpAddr::V4(source))) => Ok(Family::V4(GroupMembership {
                ifindex,
                group,
                source: Some(source),
            })),
            (IpAddr::V6(group), None) => Ok(Family::V6(GroupMembership {
                ifindex,
                group,
                source: None,
            })),
            (IpAddr::V6(group), Some(IpAddr::V6(source))) => Ok(Family::V6(GroupMembership {
                ifindex,
                group,
                source: Some(source),
            })),
            (group, Some(sender)) => Err(IgmpError::MixedFamilies { group, sender }),
        }
    }
}

/// A join or leave refused, by these checks or by the kernel.
///
/// Variants hold the membership boxed, which keeps the error as small as the IPv4-only one was
/// for callers that carry it inside their own errors.
#[derive(Debug, thiserror::Error)]
pub enum IgmpError {
    /// The group is not a multicast address.
    #[error("{group} is not a multicast group")]
    NotMulticast {
        /// The address given.
        group: IpAddr,
    },
    /// The group and the source are of different families.
    #[error("group {group} and source {sender} are of different address families")]
    MixedFamilies {
        /// The group.
        group: IpAddr,
        /// The source.
        sender: IpAddr,
    },
    /// The membership is already held by this set.
    #[error("{membership} is already joined")]
    AlreadyJoined {
        /// The membership asked for again.
        membership: Box<IpMembership>,
    },
    /// No interface has the index (checked before IPv6 joins; an IPv4 join on a missing
    /// interface is refused by the kernel with `ENODEV`).
    #[error("{membership}: no interface has index {} in this network namespace", membership.ifindex)]
    NoInterface {
        /// The membership asked for.
        membership: Box<IpMembership>,
    },
    /// The interface has no IPv6, so no MLD report would leave it.
    #[error("{membership}: interface {interface} has no IPv6 ({state})")]
    NoIpv6 {
        /// The membership asked for.
        membership: Box<IpMembership>,
        /// The interface's name.
        interface: String,
        /// Why it has none.
        state: Ipv6State,
    },
    /// The interface's facts could not be read.
    #[error("{membership}: {source}")]
    Interface {
        /// The membership asked for.
        membership: Box<IpMembership>,
        /// What failed.
        source: Box<IfaceError>,
    },
    /// A socket to hold memberships could not be opened.
    #[error("socket({domain}, SOCK_DGRAM) for multicast memberships: {source}")]
    Socket {
        /// `AF_INET` or `AF_INET6`.
        domain: &'static str,
        /// The errno.
        source: io::Error,
    },
    /// `setsockopt` failed.
    #[error("setsockopt({option}) for {membership}: {source}")]
    Setsockopt {
        /// The option: MCAST_JOIN_GROUP, MCAST_LEAVE_SOURCE_GROUP, ...
        option: &'static str,
        /// What was being joined or left.
        membership: Box<IpMembership>,
        /// The errno.
        source: io::Error,
    },
}

/// The set of multicast memberships a process holds, of both families; every one is left on
/// drop.
///
/// Finding the socket that holds a membership, or one with room for a new one, costs O(1)
/// whatever the number of groups: a relay that joins one group per rule joins thousands, one
/// control request at a time, and a scan over every socket per join made each request slower
/// than the last.
#[derive(Debug)]
pub struct Memberships {
    v4: Pool<Ipv4Addr>,
    v6: Pool<Ipv6Addr>,
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
            v4: Pool::with_limits(
                read_sysctl("/proc/sys/net/ipv4/igmp_max_memberships")
                    .unwrap_or(DEFAULT_MAX_MEMBERSHIPS),
                read_sysctl("/proc/sys/net/ipv4/igmp_max_msf").unwrap_or(DEFAULT_MAX_SOURCES),
            ),
            v6: Pool::with_limits(
                IPV6_GROUPS_PER_SOCKET,
                read_sysctl("/proc/sys/net/ipv6/mld_max_msf").unwrap_or(DEFAULT_MAX_SOURCES_V6),
            ),
        }
    }

    /// An empty set whose sockets of either family take `max_groups` groups and `max_sources`
    /// sources per group.
    #[cfg(test)]
    fn with_limits(max_groups: usize, max_sources: usize) -> Self {
        Memberships {
            v4: Pool::with_limits(max_groups, max_sources),
            v6: Pool::with_limits(max_groups, max_sources),
        }
    }

    /// Whether `membership` is held (one of mixed families never is).
    pub fn contains(&self, membership: impl Into<IpMembership>) -> bool {
        match Family::of(membership.into()) {
            Ok(Family::V4(membership)) => self.v4.contains(&membership),
            Ok(Family::V6(membership)) => self.v6.contains(&membership),
            Err(_) => false,
        }
    }

    /// Every membership held, sorted (IPv4 first).
    pub fn list(&self) -> Vec<IpMembership> {
        let mut all = Vec::new();
        self.v4.list_into(&mut all);
        self.v6.list_into(&mut all);
        all.sort_unstable();
        all
    }

    /// Joins `membership`. Refused with [`IgmpError::AlreadyJoined`] when held already (the
    /// kernel would refuse the second join on one socket with `EADDRINUSE`; on another socket it
    /// would count it twice, and one leave would not undo it), [`IgmpError::NotMulticast`] for a
    /// unicast group, and for IPv6 with [`IgmpError::NoInterface`] or [`IgmpError::NoIpv6`]
    /// when the interface cannot send MLD reports.
    pub fn join(&mut self, membership: impl Into<IpMembership>) -> Result<(), IgmpError> {
        let membership = membership.into();
        if !membership.group.is_multicast() {
            return Err(IgmpError::NotMulticast {
                group: membership.group,
            });
        }
        if self.contains(membership) {
            return Err(IgmpError::AlreadyJoined {
                membership: Box::new(membership),
            });
        }
        match Family::of(membership)? {
            Family::V4(v4) => self.v4.join(v4),
            Family::V6(v6) => {
                check_ipv6(membership)?;
                self.v6.join(v6)
            }
        }
    }

    /// Leaves `membership`; leaving one not held does nothing.
    pub fn leave(&mut self, membership: impl Into<IpMembership>) -> Result<(), IgmpError> {
        match Family::of(membership.into()) {
            Ok(Family::V4(membership)) => self.v4.leave(membership),
            Ok(Family::V6(membership)) => self.v6.leave(membership),
            // Never joined, so nothing to leave.
            Err(_) => Ok(()),
        }
    }
}

/// Refuses an IPv6 join on an interface that is missing or has no IPv6.
fn check_ipv6(membership: IpMembership) -> Result<(), IgmpError> {
    let membership_box = || Box::new(membership);
    let interface = match iface::name_of(membership.ifindex) {
        Ok(name) => name,
        Err(IfaceError::IndexNotFound { .. }) => {
            return Err(IgmpError::NoInterface {
                membership: membership_box(),
            });
        }
        Err(source) => {
            return Err(IgmpError::Interface {
                membership: membership_box(),
                source: Box::new(source),
            });
        }
    };
    match iface::ipv6_state(&interface) {
        Ok(Ipv6State::Enabled) => Ok(()),
        Ok(state) => Err(IgmpError::NoIpv6 {
            membership: membership_box(),
            interface,
            state,
        }),
        Err(source) => Err(IgmpError::Interface {
            membership: membership_box(),
            source: Box::new(source),
        }),
    }
}

fn read_sysctl(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests;
