//! What validation refuses, and where: the rule, the field, and the problem.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use thiserror::Error;

/// A field of a rule, as an operator would point at it in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The rule's name.
    Name,
    /// A field of the rule's input.
    Input(InputField),
    /// The list of outputs as a whole (its length).
    Outputs,
    /// A field of output number `index` (from 0, in the order the rule lists them).
    Output {
        /// Position of the output in the rule.
        index: usize,
        /// The field of that output.
        field: OutputField,
    },
    /// `rtp_clock_hz`.
    RtpClockHz,
    /// `max_pps`.
    MaxPps,
    /// `max_bps`.
    MaxBps,
}

/// A field of [`crate::Input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputField {
    /// `input.interface`.
    Interface,
    /// `input.destination`.
    Destination,
    /// `input.port`.
    Port,
    /// `input.source`.
    Source,
    /// `input.vlan`.
    Vlan,
}

/// A field of [`crate::Output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputField {
    /// `interface`.
    Interface,
    /// `destination`.
    Destination,
    /// `port`.
    Port,
    /// `ttl`.
    Ttl,
    /// `source`.
    Source,
    /// `dscp`.
    Dscp,
    /// `vlan`.
    Vlan,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Name => f.write_str("name"),
            Field::Input(field) => {
                let name = match field {
                    InputField::Interface => "interface",
                    InputField::Destination => "destination",
                    InputField::Port => "port",
                    InputField::Source => "source",
                    InputField::Vlan => "vlan",
                };
                write!(f, "input.{name}")
            }
            Field::Outputs => f.write_str("outputs"),
            Field::Output { index, field } => {
                let name = match field {
                    OutputField::Interface => "interface",
                    OutputField::Destination => "destination",
                    OutputField::Port => "port",
                    OutputField::Ttl => "ttl",
                    OutputField::Source => "source",
                    OutputField::Dscp => "dscp",
                    OutputField::Vlan => "vlan",
                };
                write!(f, "outputs[{index}].{name}")
            }
            Field::RtpClockHz => f.write_str("rtp_clock_hz"),
            Field::MaxPps => f.write_str("max_pps"),
            Field::MaxBps => f.write_str("max_bps"),
        }
    }
}

/// Why a field is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    /// Names identify rules in counters, metrics and the control protocol.
    #[error("the name is empty")]
    EmptyName,
    /// Names longer than 64 characters do not fit metric labels and tables.
    #[error("the name is {0} characters long; at most 64 are allowed")]
    NameTooLong(usize),
    /// Only `[A-Za-z0-9_.-]` pass unquoted through metrics and the command line.
    #[error("the name contains {0:?}; only letters, digits, '_', '.' and '-' are allowed")]
    NameCharacter(char),
    /// Two rules with one name could not be told apart.
    #[error("an earlier rule already has this name")]
    DuplicateName,
    /// Two rules with one match key would compete for the same packets.
    #[error("rule {other:?} already matches {key}")]
    DuplicateKey {
        /// The rule that has the key already.
        other: String,
        /// The key, as `interface:destination:port[ vlan id][ from source]`.
        key: String,
    },
    /// The interface is not among the facts the set was checked against.
    #[error("no interface named {0:?}")]
    UnknownInterface(String),
    /// An input must be a group, or a unicast address the input interface receives for itself.
    #[error("{address} is neither a multicast group nor an address of {interface}")]
    NotMulticastOrLocal {
        /// The address refused.
        address: IpAddr,
        /// The input interface.
        interface: String,
    },
    /// Groups in 224.0.0.0/24 (IGMP, OSPF, mDNS, ...) are link-local and never forwarded.
    #[error("{0} is in 224.0.0.0/24, whose groups are link-local and never forwarded")]
    LinkLocalGroup(IpAddr),
    /// IPv6 groups of scope 1 (interface-local) and 2 (link-local) are never forwarded, and
    /// scopes 0 and 15 are reserved.
    #[error(
        "{address} has multicast scope {scope:x}, which is never forwarded or reserved; scopes 3 to e are relayed"
    )]
    MulticastScope {
        /// The group refused.
        address: Ipv6Addr,
        /// Its scope nibble.
        scope: u8,
    },
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) never appears on the wire; the IPv4
    /// address itself is what a rule names.
    #[error("{0} is an IPv4-mapped address; write the IPv4 address itself")]
    Ipv4Mapped(Ipv6Addr),
    /// A rule's input destination and source, or an output's, are of different families.
    #[error("source {source_addr} and destination {destination} are not of one IP family")]
    MixedFamilies {
        /// The destination of the input or output.
        destination: IpAddr,
        /// Its source.
        source_addr: IpAddr,
    },
    /// The limited broadcast address is neither a group nor a host.
    #[error("255.255.255.255 is the broadcast address")]
    Broadcast,
    /// 0.0.0.0 (or `::`) names no host.
    #[error("the unspecified address (0.0.0.0 or ::) names no host")]
    Unspecified,
    /// A source-specific input needs the sender's unicast address.
    #[error("{0} is not a unicast source address")]
    SourceNotUnicast(IpAddr),
    /// UDP port 0 is reserved and cannot be sent to.
    #[error("port 0 is not a usable UDP port")]
    PortZero,
    /// A datagram with TTL 0 is dropped before it leaves the host.
    #[error("TTL 0 would never leave the host")]
    TtlZero,
    /// The DSCP is six bits.
    #[error("DSCP {0} is out of range 0..=63")]
    DscpOutOfRange(u8),
    /// 0 and 4095 are reserved VLAN ids.
    #[error("VLAN id {0} is outside 1..=4094")]
    VlanOutOfRange(u16),
    /// Only outputs the relay writes as whole frames (a group on an Ethernet interface) can
    /// carry a tag; the others go through a socket, where the kernel writes the link header.
    #[error(
        "a VLAN tag needs a multicast destination on an Ethernet interface; this output is sent through a socket"
    )]
    VlanOnSocketOutput,
    /// A socket output's TTL is set on the socket, once, not per datagram.
    #[error(
        "\"decrement\" needs a multicast destination on an Ethernet interface; this output is sent through a socket, whose TTL is fixed"
    )]
    DecrementOnSocketOutput,
    /// The relay can only send from addresses the output interface has.
    #[error("{address} is not an address of {interface}")]
    SourceNotLocal {
        /// The address refused.
        address: IpAddr,
        /// The output interface.
        interface: String,
    },
    /// Without a source, the output takes the interface's first address, and there is none.
    #[error("{interface} has no {family} address to send from; give the output a source")]
    NoSourceAddress {
        /// The output interface.
        interface: String,
        /// The family of the output's destination: "IPv4" or "IPv6".
        family: &'static str,
    },
    /// The output is some rule's input: the relay would receive its own packet and send it
    /// again, forever.
    #[error(
        "{interface} {destination}:{port} is the input of rule {rule:?}; the packet would be received again and relayed forever"
    )]
    LoopsBack {
        /// The rule whose input the output feeds.
        rule: String,
        /// The output interface.
        interface: String,
        /// The output destination.
        destination: IpAddr,
        /// The output port.
        port: u16,
    },
    /// A change removes a rule the set does not have (or removes one rule twice): refused
    /// rather than ignored, so that a mistyped name is noticed.
    #[error("there is no rule with this name to remove")]
    NoSuchRule,
    /// A storm guard limit of 0 would drop every packet.
    #[error("a limit of 0 would drop every packet; leave it out for no limit")]
    LimitZero,
    /// Jitter is measured in ticks of the RTP clock, which must run.
    #[error("an RTP clock of 0 Hz cannot measure jitter")]
    ClockZero,
    /// The clock rate is read only from RTP timestamps.
    #[error("a clock rate needs `inspect` to be \"rtp\" or \"rtp+mpegts\"")]
    ClockWithoutRtp,
    /// A rule without outputs would drop what it matches.
    #[error("the rule has no output")]
    NoOutputs,
    /// More outputs than the configured limit.
    #[error("{count} outputs, more than the limit of {max}")]
    TooManyOutputs {
        /// Outputs the rule has.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// One refused field of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("rule {rule:?}: {field}: {problem}")]
pub struct ValidationError {
    /// Name of the rule, as given (even when the name itself is the problem).
    pub rule: String,
    /// The field refused.
    pub field: Field,
    /// Why.
    pub problem: Problem,
}

/// Every refusal found in a rule set (never empty): all are reported at once, so an operator
/// fixes a config file in one pass instead of one error per reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(Vec<ValidationError>);

impl ValidationErrors {
    /// Wraps a non-empty list; `None` when there is nothing to report.
    pub(crate) fn from_vec(errors: Vec<ValidationError>) -> Option<Self> {
        (!errors.is_empty()).then_some(ValidationErrors(errors))
    }

    /// The refusals, in rule order, each rule's in field order.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }

    /// The refusals, by value.
    pub fn into_errors(self) -> Vec<ValidationError> {
        self.0
    }

    /// How many refusals there are (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a `ValidationErrors` holds at least one error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a ValidationError;
    type IntoIter = std::slice::Iter<'a, ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
