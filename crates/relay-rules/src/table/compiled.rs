//! A rule as the data path uses it: interfaces resolved to indices, outputs to frame templates
//! or socket destinations.

use crate::interface::{InterfaceFacts, Interfaces};
use crate::replicate::{FrameTemplate, TemplateSpec, multicast_mac};
use crate::rule::{Output, Rule, RuleKey};
use crate::validate::is_ring_output;
use smallvec::SmallVec;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Dense index of a rule in one [`super::RuleTable`] (`0..len`), for indexing per-rule counter
/// arrays without hashing.
///
/// Ids follow the order of the rule set and are only meaningful within one table: a rule keeps
/// its name across tables, not necessarily its id (a shard table numbers its own rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u32);

impl RuleId {
    /// The id as an index into a per-rule array.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A rule compiled for the data path.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Dense index of the rule in its table.
    pub id: RuleId,
    /// The rule's name, for counters and the control protocol.
    pub name: String,
    /// What the rule matches (interface by name).
    pub key: RuleKey,
    /// Kernel index of the input interface, as received frames carry it.
    pub ifindex: u32,
    /// The outputs, in the rule's order. Most rules have one, kept inline.
    pub outputs: SmallVec<[CompiledOutput; 1]>,
}

/// How one output is sent.
#[derive(Debug, Clone)]
pub enum CompiledOutput {
    /// A multicast destination on an Ethernet interface: the relay writes the whole frame from
    /// `template` into the interface's TX ring, with no route lookup and no syscall per packet.
    Ring {
        /// Kernel index of the output interface.
        ifindex: u32,
        /// Headers of the output frame.
        template: FrameTemplate,
    },
    /// A unicast destination, or an interface without Ethernet headers: the payload goes
    /// through a UDP socket bound to `source`, so the kernel resolves routes and neighbours.
    Socket {
        /// Kernel index of the output interface.
        ifindex: u32,
        /// Address the socket is bound to.
        source: Ipv4Addr,
        /// Where the payload is sent.
        destination: SocketAddrV4,
        /// IP time to live to set on the socket.
        ttl: u8,
        /// DSCP to set on the socket; `None` leaves the socket's default.
        dscp: Option<u8>,
    },
}

impl CompiledOutput {
    /// Kernel index of the output interface.
    pub fn ifindex(&self) -> u32 {
        match self {
            CompiledOutput::Ring { ifindex, .. } | CompiledOutput::Socket { ifindex, .. } => {
                *ifindex
            }
        }
    }
}

/// The facts of `name`, which validation guaranteed exist.
fn facts<'a>(interfaces: &'a Interfaces, name: &str) -> &'a InterfaceFacts {
    interfaces
        .get(name)
        .expect("a RuleSet only holds rules whose interfaces are in its own facts")
}

fn compile_output(output: &Output, interfaces: &Interfaces) -> CompiledOutput {
    let facts = facts(interfaces, &output.interface);
    let source = output
        .source
        .or_else(|| facts.ipv4.first().copied())
        .expect("validation refuses an output without a source on an interface without an address");
    match facts.mac {
        Some(src_mac) if is_ring_output(output, facts) => {
            let spec = TemplateSpec {
                src_mac,
                dst_mac: multicast_mac(output.destination),
                vlan: output.vlan,
                source,
                destination: output.destination,
                source_port: None,
                destination_port: output.port,
                ttl: output.ttl,
                dscp: output.dscp,
                mtu: facts.mtu,
            };
            CompiledOutput::Ring {
                ifindex: facts.index,
                template: FrameTemplate::new(&spec),
            }
        }
        _ => CompiledOutput::Socket {
            ifindex: facts.index,
            source,
            destination: SocketAddrV4::new(output.destination, output.port),
            ttl: output.ttl,
            dscp: output.dscp,
        },
    }
}

/// Compiles a rule of a validated set.
pub(super) fn compile(id: RuleId, rule: &Rule, interfaces: &Interfaces) -> CompiledRule {
    CompiledRule {
        id,
        name: rule.name.clone(),
        key: rule.input.key(),
        ifindex: facts(interfaces, &rule.input.interface).index,
        outputs: rule
            .outputs
            .iter()
            .map(|output| compile_output(output, interfaces))
            .collect(),
    }
}
