//! Facts about the host's interfaces, supplied by the caller.
//!
//! This crate performs no I/O: whoever builds a rule table (the relay asks the kernel through
//! `fanout-core`; tests write the facts by hand) says which interfaces exist and what they are.

use ahash::AHashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the rules need to know about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct InterfaceFacts {
    /// Interface name, as rules refer to it.
    pub name: String,
    /// Kernel interface index, as frames are tagged with on receive.
    pub index: u32,
    /// Hardware address; `None` for an interface without Ethernet headers (tun, WireGuard),
    /// whose outputs go through a socket.
    pub mac: Option<[u8; 6]>,
    /// MTU in bytes: the largest IP packet the interface sends.
    pub mtu: u32,
    /// IPv4 addresses of the interface, the first being the default source of IPv4 outputs.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses of the interface, the first being the default source of IPv6 outputs
    /// (the caller lists a global address before a link-local one). Left out of a file or
    /// message, it is empty.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub ipv6: Vec<Ipv6Addr>,
}

impl InterfaceFacts {
    /// Whether `address` is one of the interface's own, of either family.
    pub fn has_address(&self, address: IpAddr) -> bool {
        match address {
            IpAddr::V4(address) => self.ipv4.contains(&address),
            IpAddr::V6(address) => self.ipv6.contains(&address),
        }
    }

    /// The default source of an output to `destination`: the interface's first address of
    /// the destination's family.
    pub fn first_address(&self, destination: IpAddr) -> Option<IpAddr> {
        match destination {
            IpAddr::V4(_) => self.ipv4.first().copied().map(IpAddr::V4),
            IpAddr::V6(_) => self.ipv6.first().copied().map(IpAddr::V6),
        }
    }

    /// Whether frames on this interface carry Ethernet headers the relay can write itself.
    pub fn has_ethernet(&self) -> bool {
        self.mac.is_some()
    }
}

/// The set of interfaces a rule set is checked and compiled against.
#[derive(Debug, Clone, Default)]
pub struct Interfaces {
    by_name: AHashMap<String, InterfaceFacts>,
}

impl Interfaces {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the facts of one interface (by name).
    pub fn insert(&mut self, facts: InterfaceFacts) {
        self.by_name.insert(facts.name.clone(), facts);
    }

    /// The facts of the interface called `name`.
    pub fn get(&self, name: &str) -> Option<&InterfaceFacts> {
        self.by_name.get(name)
    }

    /// The facts of the interface with kernel index `index`.
    pub fn by_index(&self, index: u32) -> Option<&InterfaceFacts> {
        self.by_name.values().find(|facts| facts.index == index)
    }

    /// Every interface, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &InterfaceFacts> {
        self.by_name.values()
    }
}

impl FromIterator<InterfaceFacts> for Interfaces {
    fn from_iter<I: IntoIterator<Item = InterfaceFacts>>(iter: I) -> Self {
        let mut set = Interfaces::new();
        for facts in iter {
            set.insert(facts);
        }
        set
    }
}
