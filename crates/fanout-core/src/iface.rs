//! Interface facts: index ↔ name, link type and MAC, MTU, IPv4 addresses, flags, whether IPv6
//! is on.
//!
//! A relay must know, before it opens a ring, whether an interface exists, whether it carries
//! Ethernet headers (ring output) or not (socket output), its MTU and the source addresses it
//! may send from. Every query here is answered for the **network namespace of the calling
//! thread**: names and indexes through `if_nametoindex(3)` and `SIOCGIFNAME`, the rest through
//! `getifaddrs(3)` (a netlink dump from a socket the call opens) and `SIOCGIFMTU` on a socket the
//! call opens. sysfs (`/sys/class/net`) is avoided because it shows the namespace of whoever
//! mounted it; [`operstate_in`] is the one exception and takes the sysfs root explicitly.
//! [`ipv6_state`] reads `/proc/sys/net/ipv6`, which answers for the reading thread's namespace.

mod ioctl;
mod ipv6;

pub(crate) use ioctl::{IfName, IfSocket};
pub use ipv6::{Ipv6State, ipv6_state};

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::net::if_::InterfaceFlags;

/// Why an interface query failed.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// No interface of that name in the calling thread's network namespace.
    #[error("interface {name:?} does not exist in this network namespace")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// No interface with that index in the calling thread's network namespace.
    #[error("no interface has index {index} in this network namespace")]
    IndexNotFound {
        /// The index asked for.
        index: u32,
    },
    /// A name no interface can have (empty, 16 bytes or more, `/`, `:`, whitespace, NUL).
    #[error("{name:?} is not a valid interface name")]
    InvalidName {
        /// The refused name.
        name: String,
    },
    /// A syscall failed for another reason than a missing interface.
    #[error("{syscall} for interface {name:?} failed: {errno}")]
    Syscall {
        /// `if_nametoindex`, `getifaddrs`, `socket`, `ioctl(SIOCGIFMTU)` ...
        syscall: &'static str,
        /// The interface concerned (empty for whole-system calls such as `getifaddrs`).
        name: String,
        /// The error the kernel or libc returned.
        errno: Errno,
    },
    /// A sysfs file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the read returned.
        source: std::io::Error,
    },
}

/// An IPv4 address of an interface with the length of its network prefix (`10.0.0.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    /// The local address, usable as a source address.
    pub addr: Ipv4Addr,
    /// Leading one bits of the netmask (0–32).
    pub prefix_len: u8,
}

impl std::fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// The interface flags a relay decides on (a subset of `IFF_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFlags {
    /// Administratively up (`IFF_UP`): `ip link set X up`.
    pub up: bool,
    /// Operationally up (`IFF_RUNNING`): up and the carrier is present; a ring on an interface
    /// that is up but not running receives nothing.
    pub running: bool,
    /// Carrier present at layer 1 (`IFF_LOWER_UP`).
    pub lower_up: bool,
    /// Accepts multicast (`IFF_MULTICAST`); without it group joins are pointless.
    pub multicast: bool,
    /// Receives every frame on the wire (`IFF_PROMISC`).
    pub promiscuous: bool,
    /// The loopback device (`IFF_LOOPBACK`), which shows every sent frame twice to packet sockets.
    pub loopback: bool,
}

impl From<InterfaceFlags> for LinkFlags {
    fn from(f: InterfaceFlags) -> LinkFlags {
        LinkFlags {
            up: f.contains(InterfaceFlags::IFF_UP),
            running: f.contains(InterfaceFlags::IFF_RUNNING),
            lower_up: f.contains(InterfaceFlags::IFF_LOWER_UP),
            multicast: f.contains(InterfaceFlags::IFF_MULTICAST),
            promiscuous: f.contains(InterfaceFlags::IFF_PROMISC),
            loopback: f.contains(InterfaceFlags::IFF_LOOPBACK),
        }
    }
}

/// `ARPHRD_ETHER`: the link type of Ethernet, veth, bridges, VLAN and macvlan devices.
pub const ARPHRD_ETHER: u16 = libc::ARPHRD_ETHER;

/// What the kernel says about one interface, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Kernel interface index; frames on packet sockets carry it.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link type (`ARPHRD_*`, see `include/uapi/linux/if_arp.h`): [`ARPHRD_ETHER`] = 1 for
    /// Ethernet, 772 loopback, 65534 (`ARPHRD_NONE`) for tun and WireGuard.
    pub link_type: u16,
    /// Hardware address when the link type is Ethernet; `None` for links without Ethernet
    /// headers, whose outputs must go through a UDP socket rather than a TX ring.
    pub mac: Option<[u8; 6]>,
    /// MTU: the largest IP packet the interface sends.
    pub mtu: u32,
    /// IPv4 addresses with prefix lengths, in the kernel's order (the primary address first).
    /// Includes addresses carrying a label (`eth0:1`).
    pub ipv4: Vec<Ipv4Prefix>,
    /// IPv6 addresses, the global ones (in the kernel's order) before the link-local ones, so
    /// that the first is the better default source.
    pub ipv6: Vec<Ipv6Addr>,
    /// Up, running, multicast, promiscuous.
    pub flags: LinkFlags,
}

impl InterfaceInfo {
    /// The facts of interface `name` in the calling thread's network namespace.
    ///
    /// Returns [`IfaceError::NotFound`] naming `name` when it does not exist.
    pub fn lookup(name: &str) -> Result<InterfaceInfo, IfaceError> {
        let index = index_of(name)?;
        let mut all = collect(Some(name))?;
        let pos =
            all.iter()
                .position(|i| i.index == index)
                .ok_or_else(|| IfaceError::NotFound {
                    name: name.to_owned(),
                })?;
        Ok(all.swap_remove(pos))
    }

    /// The facts of every interface in the calling thread's network namespace, by index.
    pub fn list() -> Result<Vec<InterfaceInfo>, IfaceError> {
        collect(None)
    }

    /// Whether frames on this interface carry Ethernet headers the relay can write itself.
    pub fn has_ethernet(&self) -> bool {
        self.mac.is_some()
    }
}

/// The index of interface `name` (`if_nametoindex`).
pub fn index_of(name: &str) -> Result<u32, IfaceError> {
    IfName::new(name).ok_or_else(|| IfaceError::InvalidName {
        name: name.to_owned(),
    })?;
    match nix::net::if_::if_nametoindex(name) {
        Ok(index) => Ok(index),
        Err(Errno::ENODEV | Errno::ENXIO) => Err(IfaceError::NotFound {
            name: name.to_owned(),
        }),
        Err(errno) => Err(IfaceError::Syscall {
            syscall: "if_nametoindex",
            name: name.to_owned(),
            errno,
        }),
    }
}

/// The name of the interface with `index` (`SIOCGIFNAME`, what `if_indextoname` does).
pub fn name_of(index: u32) -> Result<String, IfaceError> {
    let sock = IfSocket::open().map_err(|errno| IfaceError::Syscall {
        syscall: "socket(AF_INET)",
        name: format!("#{index}"),
        errno,
    })?;
    match sock.name_of(index) {
        Ok(name) => Ok(name),
        Err(Errno::ENODEV | Errno::ENXIO) => Err(IfaceError::IndexNotFound { index }),
        Err(errno) => Err(IfaceError::Syscall {
            syscall: "ioctl(SIOCGIFNAME)",
            name: format!("#{index}"),
            errno,
        }),
    }
}

/// Gathers every interface (or only `only`) from one `getifaddrs` snapshot.
fn collect(only: Option<&str>) -> Result<Vec<InterfaceInfo>, IfaceError> {
    let syscall_err = |syscall, name: &str, errno| IfaceError::Syscall {
        syscall,
        name: name.to_owned(),
        errno,
    };
    let addrs: Vec<_> = nix::ifaddrs::getifaddrs()
        .map_err(|e| syscall_err("getifaddrs", only.unwrap_or(""), e))?
        .collect();
    let sock = IfSocket::open().map_err(|e| syscall_err("socket(AF_INET)", "", e))?;

    // getifaddrs gives one entry per link (AF_PACKET, from RTM_GETLINK, with the flags; its
    // address is missing for links without one, such as tun) and one AF_INET entry per
    // address, named by the address label. Link type and MAC come from SIOCGIFHWADDR, which
    // answers for every link.
    let mut out: Vec<InterfaceInfo> = Vec::new();
    for link in &addrs {
        let is_link = link
            .address
            .as_ref()
            .is_none_or(|a| a.as_link_addr().is_some());
        let name = &link.interface_name;
        if !is_link || only.is_some_and(|o| o != name) || out.iter().any(|i| i.name == *name) {
            continue;
        }
        let ifname =
            IfName::new(name).ok_or_else(|| IfaceError::InvalidName { name: name.clone() })?;
        let LinkFacts {
            index,
            mtu,
            link_type,
            hwaddr,
        } = match link_facts(&sock, name, ifname) {
            Ok(facts) => facts,
            // Deleted since the dump: skip it in a list, report it to a lookup.
            Err((_, Errno::ENODEV | Errno::ENXIO)) if only.is_none() => continue,
            Err((_, Errno::ENODEV | Errno::ENXIO)) => {
                return Err(IfaceError::NotFound { name: name.clone() });
            }
            Err((syscall, errno)) => return Err(syscall_err(syscall, name, errno)),
        };
        let ipv4 = addrs
            .iter()
            .filter(|a| a.interface_name == *name || is_label_of(&a.interface_name, name))
            .filter_map(|a| {
                let addr = a.address.as_ref()?.as_sockaddr_in()?.ip();
                let mask = a.netmask.as_ref()?.as_sockaddr_in()?.ip();
                let prefix_len = u32::from(mask).leading_ones() as u8;
                Some(Ipv4Prefix { addr, prefix_len })
            })
            .collect();
        let mut ipv6: Vec<Ipv6Addr> = addrs
            .iter()
            .filter(|a| a.interface_name == *name)
            .filter_map(|a| Some(a.address.as_ref()?.as_sockaddr_in6()?.ip()))
            .collect();
        // Stable: the kernel's order within each kind stays.
        ipv6.sort_by_key(|addr| addr.is_unicast_link_local());
        out.push(InterfaceInfo {
            index,
            name: name.clone(),
            link_type,
            mac: (link_type == ARPHRD_ETHER).then_some(hwaddr),
            mtu,
            ipv4,
            ipv6,
            flags: link.flags.into(),
        });
    }
    out.sort_by_key(|i| i.index);
    Ok(out)
}

/// The per-link facts that need a syscall each.
struct LinkFacts {
    index: u32,
    mtu: u32,
    link_type: u16,
    hwaddr: [u8; 6],
}

/// Index, MTU, link type and hardware address of one link, or the syscall that failed.
fn link_facts(
    sock: &IfSocket,
    name: &str,
    ifname: IfName,
) -> Result<LinkFacts, (&'static str, Errno)> {
    let index = nix::net::if_::if_nametoindex(name).map_err(|e| ("if_nametoindex", e))?;
    let mtu = sock.mtu(ifname).map_err(|e| ("ioctl(SIOCGIFMTU)", e))?;
    let (link_type, hwaddr) = sock
        .hwaddr(ifname)
        .map_err(|e| ("ioctl(SIOCGIFHWADDR)", e))?;
    Ok(LinkFacts {
        index,
        mtu,
        link_type,
        hwaddr,
    })
}

/// Whether `label` is an address label of `name` (`eth0:1` of `eth0`).
fn is_label_of(label: &str, name: &str) -> bool {
    label
        .strip_prefix(name)
        .is_some_and(|rest| rest.starts_with(':'))
}

/// The RFC 2863 operational state (`IF_OPER_*`), as sysfs prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    /// `unknown`: the driver does not track it (loopback, tun); treat as up if running.
    Unknown,
    /// `notpresent`.
    NotPresent,
    /// `down`.
    Down,
    /// `lowerlayerdown`: e.g. a VLAN whose parent is down, a veth whose peer is down.
    LowerLayerDown,
    /// `testing`.
    Testing,
    /// `dormant`.
    Dormant,
    /// `up`.
    Up,
}

/// The operational state of `name` from `<sysfs>/class/net/<name>/operstate`.
///
/// sysfs shows the network namespace of the process that mounted it, not the caller's: pass
/// `/sys` for the namespace `/sys` was mounted in, or the root of a sysfs mounted inside the
/// wanted namespace. [`LinkFlags::running`] is the namespace-correct summary (set exactly when
/// the state is `up` or `unknown`).
pub fn operstate_in(sysfs: &Path, name: &str) -> Result<OperState, IfaceError> {
    IfName::new(name).ok_or_else(|| IfaceError::InvalidName {
        name: name.to_owned(),
    })?;
    let path = sysfs.join("class/net").join(name).join("operstate");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(IfaceError::NotFound {
                name: name.to_owned(),
            });
        }
        Err(source) => return Err(IfaceError::Read { path, source }),
    };
    Ok(match text.trim() {
        "notpresent" => OperState::NotPresent,
        "down" => OperState::Down,
        "lowerlayerdown" => OperState::LowerLayerDown,
        "testing" => OperState::Testing,
        "dormant" => OperState::Dormant,
        "up" => OperState::Up,
        _ => OperState::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_facts() {
        let lo = InterfaceInfo::lookup("lo").expect("every namespace has lo");
        assert_eq!(lo.index, index_of("lo").unwrap());
        assert_eq!(name_of(lo.index).unwrap(), "lo");
        assert_eq!(lo.link_type, libc::ARPHRD_LOOPBACK);
        assert_eq!(lo.mac, None);
        assert!(lo.flags.loopback);
        assert!(lo.mtu >= 1500);
    }

    #[test]
    fn missing_and_invalid_names_are_typed() {
        match InterfaceInfo::lookup("frnosuch0") {
            Err(IfaceError::NotFound { name }) => assert_eq!(name, "frnosuch0"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(matches!(
            index_of("much-too-long-name"),
            Err(IfaceError::InvalidName { .. })
        ));
        let r = name_of(u32::MAX);
        assert!(
            matches!(r, Err(IfaceError::IndexNotFound { index: u32::MAX })),
            "{r:?}"
        );
    }

    #[test]
    fn labels_belong_to_their_interface() {
        assert!(is_label_of("eth0:1", "eth0"));
        assert!(!is_label_of("eth01", "eth0"));
        assert!(!is_label_of("eth0", "eth0"));
    }

    #[test]
    fn list_includes_loopback_once() {
        let all = InterfaceInfo::list().expect("getifaddrs");
        assert_eq!(all.iter().filter(|i| i.name == "lo").count(), 1);
        assert!(all.windows(2).all(|w| w[0].index < w[1].index));
    }
}
