//! The rule model: what a rule matches and where it sends what it matched.
//!
//! These are plain values as an operator writes them (interfaces by name, optional fields left
//! out). [`crate::validate`] checks a set of them against the interfaces it will run on, and
//! [`crate::table`] compiles the checked set into the table the data path looks packets up in.

use crate::inspect::Inspect;

mod ttl;
use std::fmt;
use std::net::IpAddr;
pub use ttl::{BadTtl, Ttl};

/// A forwarding rule: frames matching `input` are re-sent to every one of `outputs`.
///
/// With the `serde` feature it reads and writes as an operator writes it (in TOML,
/// `[[rule]]` with `name`, `input = { interface, destination, port, source }`, `outputs = [...]`
/// and `class`): optional fields may be left out, unknown ones are refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Rule {
    /// Unique name, used in errors, counters and the control protocol.
    pub name: String,
    /// What the rule matches.
    pub input: Input,
    /// Where matched packets go: at least one, at most [`Limits::max_outputs`].
    pub outputs: Vec<Output>,
    /// The worker class that serves the rule, by name; `None` for the default workers. The
    /// library keeps it with the rule (moving a rule to another class changes the rule) and
    /// leaves its meaning to the application that places rules on workers.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub class: Option<String>,
    /// Stream inspection ([`crate::inspect`]): the payload of every datagram matched is read
    /// as RTP, MPEG-TS or MPEG-TS in RTP and its health counted; `None` reads nothing.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub inspect: Option<Inspect>,
    /// The RTP clock rate, in Hz, that the jitter of an inspected RTP stream is measured at;
    /// `None` for [`crate::inspect::DEFAULT_RTP_CLOCK_HZ`].
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub rtp_clock_hz: Option<u32>,
    /// Storm guard: the most datagrams per second the rule forwards, over all the workers that
    /// serve it ([`crate::guard`]); the excess is dropped and counted. `None`: no limit.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub max_pps: Option<u64>,
    /// Storm guard: the most UDP payload bits per second the rule forwards, like `max_pps`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub max_bps: Option<u64>,
}

/// What a rule matches: UDP datagrams arriving on an interface for an address and port.
///
/// The addresses are IPv4 or IPv6; a rule's destination and source are of one family
/// (validation refuses a mix), and a file or message writes them as text either way, so files
/// written when the relay knew only IPv4 read unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Input {
    /// Name of the interface the frames arrive on.
    pub interface: String,
    /// Destination address: a multicast group, or a unicast address of `interface`
    /// (unicast to multicast), IPv4 or IPv6.
    pub destination: IpAddr,
    /// UDP destination port, never 0.
    pub port: u16,
    /// For source-specific multicast: only datagrams from this source match. A source-specific
    /// rule takes precedence over an any-source rule on the same interface, address and port.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub source: Option<IpAddr>,
    /// 802.1Q VLAN id (1..=4094): only frames tagged with it match (the tag in the frame, or
    /// offloaded into the receive ring's frame header). `None` matches only untagged frames
    /// (and priority-tagged ones, VLAN id 0). Frames with two tags (802.1ad, Q-in-Q) match no
    /// rule: the data path counts and drops them (`DropReason::DoubleTagged`).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub vlan: Option<u16>,
}

/// One destination of a rule.
///
/// Its addresses are of one family, which may differ from the input's: an IPv4 input relayed
/// to an IPv6 output (or the reverse) is translated, headers and UDP checksum rewritten for the
/// output's family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Output {
    /// Name of the interface the rewritten datagram leaves on.
    pub interface: String,
    /// Destination address: a multicast group, or a unicast receiver (head-end replication),
    /// IPv4 or IPv6.
    pub destination: IpAddr,
    /// UDP destination port, never 0.
    pub port: u16,
    /// IPv4 time to live or IPv6 hop limit of the rewritten datagram: a number, never 0, or the
    /// incoming TTL (or hop limit) less one ([`Ttl::Decrement`], multicast outputs on Ethernet interfaces only);
    /// [`Output::DEFAULT_TTL`] where a file or message leaves it out (and always written, so a
    /// saved rule says what it does).
    #[cfg_attr(feature = "serde", serde(default = "Output::default_ttl"))]
    pub ttl: Ttl,
    /// Source address, of the destination's family; `None` takes the output interface's first
    /// address of that family (for IPv6 its first global address, else its link-local one).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub source: Option<IpAddr>,
    /// DiffServ code point (0..=63) to write, into the IPv4 TOS or the IPv6 traffic class;
    /// `None` keeps the incoming one (across families too: DSCP means the same in both).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub dscp: Option<u8>,
    /// 802.1Q VLAN id (1..=4094) to tag the output frame with, for trunk ports.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub vlan: Option<u16>,
}

impl Output {
    /// The TTL of an output that does not set one: enough to cross a campus, not the world.
    pub const DEFAULT_TTL: Ttl = Ttl::Fixed(16);

    #[cfg(feature = "serde")]
    fn default_ttl() -> Ttl {
        Output::DEFAULT_TTL
    }
}

/// The match of a rule, by interface name: two rules with equal keys cannot coexist.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    /// Input interface name.
    pub interface: String,
    /// Destination address.
    pub destination: IpAddr,
    /// UDP destination port.
    pub port: u16,
    /// Source address of a source-specific rule.
    pub source: Option<IpAddr>,
    /// VLAN id of the frames matched; `None` for untagged frames.
    pub vlan: Option<u16>,
}

impl Input {
    /// The key this input is matched and deduplicated by.
    pub fn key(&self) -> RuleKey {
        RuleKey {
            interface: self.interface.clone(),
            destination: self.destination,
            port: self.port,
            source: self.source,
            vlan: self.vlan,
        }
    }
}

impl fmt::Display for RuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.destination {
            IpAddr::V4(destination) => {
                write!(f, "{}:{}:{}", self.interface, destination, self.port)?
            }
            // Brackets keep the port apart from the address's own colons.
            IpAddr::V6(destination) => {
                write!(f, "{}:[{}]:{}", self.interface, destination, self.port)?
            }
        }
        if let Some(vlan) = self.vlan {
            write!(f, " vlan {vlan}")?;
        }
        if let Some(source) = self.source {
            write!(f, " from {source}")?;
        }
        Ok(())
    }
}

/// Limits a rule set is validated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most outputs a single rule may have.
    pub max_outputs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_outputs: 64 }
    }
}
