//! A rule as the data path uses it: interfaces resolved to indices, outputs to frame templates
//! or socket destinations.

use super::error::TableError;
use crate::interface::{InterfaceFacts, Interfaces};
use crate::replicate::{FrameTemplate, TemplateSpec, multicast_mac};
use crate::rule::{Output, Rule, RuleKey, Ttl};
use crate::stream::StreamOptions;
use crate::validate::{Field, InputField, OutputField, is_ring_output};
use smallvec::SmallVec;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Index of a rule in one [`super::RuleTable`], below [`super::RuleTable::id_capacity`], for
/// indexing per-rule counter arrays without hashing.
///
/// A rule keeps its id for as long as it stays in its table; an id freed by
/// [`super::RuleTable::remove`] is given to a later insert, whose rule then owns it (the
/// caller resets the counters at that index). Ids are only meaningful within one table: a rule
/// keeps its name across tables, not necessarily its id (a shard table numbers its own rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u32);

impl RuleId {
    /// The id as an index into a per-rule array.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// [`Output::DEFAULT_TTL`] as a number.
const DEFAULT_FIXED_TTL: u8 = match Output::DEFAULT_TTL {
    Ttl::Fixed(ttl) => ttl,
    Ttl::Decrement => 16,
};

/// A rule compiled for the data path.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Index of the rule in its table, stable while the rule stays.
    pub id: RuleId,
    /// The rule's name, for counters and the control protocol.
    pub name: String,
    /// What the rule matches (interface by name).
    pub key: RuleKey,
    /// Kernel index of the input interface, as received frames carry it.
    pub ifindex: u32,
    /// The outputs, in the rule's order. Most rules have one, kept inline.
    pub outputs: SmallVec<[CompiledOutput; 1]>,
    /// Inspection and storm guard; `None` for the rules that ask for neither, which the data
    /// path then forwards without looking further.
    pub stream: Option<StreamOptions>,
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
        /// Address the socket is bound to, of the destination's family.
        source: IpAddr,
        /// Where the payload is sent: an IPv4 or IPv6 address and port.
        destination: SocketAddr,
        /// IP time to live (IPv6 unicast hop limit) to set on the socket.
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

/// The facts of interface `name`, which `rule` names at `field`.
fn facts<'a>(
    interfaces: &'a Interfaces,
    rule: &Rule,
    name: &str,
    field: Field,
) -> Result<&'a InterfaceFacts, TableError> {
    interfaces
        .get(name)
        .ok_or_else(|| TableError::UnknownInterface {
            rule: rule.name.clone(),
            field,
            interface: name.to_owned(),
        })
}

fn compile_output(
    rule: &Rule,
    index: usize,
    interfaces: &Interfaces,
) -> Result<CompiledOutput, TableError> {
    let output = &rule.outputs[index];
    let at = |field| Field::Output { index, field };
    let facts = facts(
        interfaces,
        rule,
        &output.interface,
        at(OutputField::Interface),
    )?;
    let Some(source) = output
        .source
        .or_else(|| facts.first_address(output.destination))
    else {
        return Err(TableError::NoSourceAddress {
            rule: rule.name.clone(),
            field: at(OutputField::Source),
            interface: facts.name.clone(),
        });
    };
    Ok(match facts.mac {
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
            destination: SocketAddr::new(output.destination, output.port),
            // A socket's TTL is set once; validation refuses `decrement` on a socket output,
            // so the default stands in only for a rule that skipped validation.
            ttl: match output.ttl {
                Ttl::Fixed(ttl) => ttl,
                Ttl::Decrement => DEFAULT_FIXED_TTL,
            },
            dscp: output.dscp,
        },
    })
}

/// Compiles `rule` against `interfaces` under id `id`, or says which interface it names that
/// the facts lack (or lack an address of). A rule of a [`crate::RuleSet`] compiled against the
/// set's own facts always compiles: validation checked the same things.
pub(super) fn compile(
    id: RuleId,
    rule: &Rule,
    interfaces: &Interfaces,
) -> Result<CompiledRule, TableError> {
    let input = facts(
        interfaces,
        rule,
        &rule.input.interface,
        Field::Input(InputField::Interface),
    )?;
    let outputs = compile_outputs(rule, interfaces)?;
    Ok(CompiledRule {
        id,
        name: rule.name.clone(),
        key: rule.input.key(),
        ifindex: input.index,
        outputs,
        stream: StreamOptions::of(rule),
    })
}

/// How `rule`'s outputs are sent, in its order, given `interfaces`: what [`super::RuleTable`]
/// compiles them to, for a process that prepares the outputs' sockets without building a table
/// (one that opens them for another process to send through).
pub fn compile_outputs(
    rule: &Rule,
    interfaces: &Interfaces,
) -> Result<SmallVec<[CompiledOutput; 1]>, TableError> {
    (0..rule.outputs.len())
        .map(|index| compile_output(rule, index, interfaces))
        .collect()
}

/// What a freed id holds until an insert reuses it: no name, no outputs, no heap memory.
pub(super) fn vacant(id: RuleId) -> CompiledRule {
    CompiledRule {
        id,
        name: String::new(),
        key: RuleKey {
            interface: String::new(),
            destination: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            source: None,
            vlan: None,
        },
        ifindex: 0,
        outputs: SmallVec::new(),
        stream: None,
    }
}
