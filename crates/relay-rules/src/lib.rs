//! Sans-IO logic of a UDP multicast relay: everything a relay decides, nothing it does.
//!
//! A relay takes UDP frames off an interface, finds the forwarding rule they match, and sends
//! each output a rewritten copy. This crate holds the deciding half, on plain byte slices and
//! plain values, with no syscalls and no unsafe code, so that every part can be tested, fuzzed and
//! simulated without a network:
//!
//! ```text
//!  Rule (rule) ──validate──▶ RuleSet ──build / build_shard──▶ RuleTable (table)
//!   + Interfaces (facts the caller supplies)                      │ lookup(ifindex, dst, port, src)
//!                                                                 ▼
//!  frame bytes ──wire::parse──▶ Datagram ──────────────▶ CompiledRule.outputs
//!                                 │                       │ Ring { template } ─ FrameTemplate::write ─▶ TX slot
//!                                 └─ DropReason (counted)  └ Socket { destination } ─ payload ─▶ UDP socket
//!  shard(group, port, n) ═ bpf::steering_program(n): the kernel steers each packet to the
//!  worker whose shard holds its rule
//! ```
//!
//! - [`wire`]: checked views of Ethernet, 802.1Q/802.1ad, IPv4, IPv6 (and the extension
//!   headers before UDP) and UDP, and [`wire::parse`], which refuses a frame with a
//!   [`DropReason`] a worker can count.
//! - [`rule`], [`interface`], [`validate`]: the rule model, the interface facts it is checked
//!   against, and a [`RuleSet`] that can only exist validated.
//! - [`table`]: the compiled [`RuleTable`], one hash probe per lookup, with a generation and an
//!   order-independent checksum for drift detection.
//! - [`shard`] and [`bpf`]: the shard function and the classic BPF program that computes it in
//!   the kernel (`PACKET_FANOUT_CBPF`), with a checker and an interpreter that prove they agree.
//! - [`replicate`]: output frames written from precomputed header templates, IPv4 or IPv6 (an
//!   output may be of the other family than its input), the UDP checksum updated incrementally
//!   (computed only for an IPv6 output of an IPv4 datagram that came without one); several
//!   datagrams of one output in one frame for the kernel to split again
//!   ([`replicate::segments`]).
//! - [`counters`]: per-rule counters for a single writer.
//! - [`inspect`], [`guard`], [`stream`]: what a rule may ask of its stream beyond forwarding
//!   it: RTP and MPEG-TS health counted in fixed-size state, a token bucket that bounds its
//!   rate, and the per-rule state a worker keeps for both.
//!
//! ```
//! use relay_rules::{wire, Input, InterfaceFacts, Interfaces, Limits, Output, Rule, RuleSet, RuleTable, Ttl};
//! use std::net::Ipv4Addr;
//!
//! let interfaces: Interfaces = [
//!     InterfaceFacts { name: "in0".into(), index: 2, mac: Some([2, 0, 0, 0, 0, 1]), mtu: 1500, ipv4: vec![], ipv6: vec![] },
//!     InterfaceFacts { name: "out0".into(), index: 3, mac: Some([2, 0, 0, 0, 0, 2]), mtu: 1500,
//!                      ipv4: vec![Ipv4Addr::new(10, 1, 1, 1)], ipv6: vec![] },
//! ].into_iter().collect();
//! let rule = Rule {
//!     name: "camera".into(),
//!     input: Input {
//!         interface: "in0".into(), destination: Ipv4Addr::new(239, 1, 1, 1).into(), port: 5000,
//!         source: None, vlan: None,
//!     },
//!     outputs: vec![Output {
//!         interface: "out0".into(), destination: Ipv4Addr::new(239, 2, 2, 2).into(), port: 6000,
//!         ttl: Ttl::Fixed(8), source: None, dscp: None, vlan: None,
//!     }],
//!     class: None,
//!     inspect: None,
//!     rtp_clock_hz: None,
//!     max_pps: None,
//!     max_bps: None,
//! };
//! let set = RuleSet::new(vec![rule], interfaces, Limits::default()).expect("a valid rule");
//! let table = RuleTable::build(&set, 1);
//!
//! // A frame from 192.0.2.10 to 239.1.1.1:5000 carrying "hello", as it arrives on in0.
//! let mut frame = vec![0x01, 0x00, 0x5e, 0x01, 0x01, 0x01, 2, 0, 0, 0, 0, 9, 0x08, 0x00];
//! frame.extend_from_slice(&[0x45, 0, 0, 33, 0, 1, 0, 0, 5, 17, 0, 0, 192, 0, 2, 10, 239, 1, 1, 1]);
//! wire::Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
//! frame.extend_from_slice(&[0x13, 0x88, 0x13, 0x88, 0, 13, 0, 0]);
//! frame.extend_from_slice(b"hello");
//!
//! let datagram = wire::parse(&frame, None).expect("a well-formed frame");
//! let rule = table.lookup_datagram(2, &datagram).expect("the rule matches");
//! let relay_rules::CompiledOutput::Ring { template, .. } = &rule.outputs[0] else { unreachable!() };
//! let mut slot = [0u8; 2048];
//! let len = template.write(&datagram, 1, &mut slot).expect("fits the MTU");
//! let out = wire::parse(&slot[..len], None).expect("the output parses");
//! assert_eq!((out.destination_addr(), out.destination_port), (Ipv4Addr::new(239, 2, 2, 2).into(), 6000));
//! assert_eq!(out.payload, b"hello");
//! ```

#![forbid(unsafe_code)]

pub mod bpf;
pub mod counters;
pub mod guard;
pub mod inspect;
pub mod interface;
pub mod replicate;
#[cfg(feature = "fanout-core")]
pub mod ring_frames;
pub mod rule;
pub mod shard;
pub mod stream;
pub mod table;
#[cfg(test)]
pub(crate) mod test_frames;
pub mod validate;
pub mod wire;

pub use counters::RuleCounters;
pub use interface::{InterfaceFacts, Interfaces};
pub use replicate::{FrameTemplate, RewriteError, TemplateSpec};
pub use rule::{Input, Limits, Output, Rule, RuleKey, Ttl};
pub use table::{CompiledOutput, CompiledRule, RuleId, RuleTable};
pub use table::{Insertion, TableError};
pub use validate::{RuleSet, ValidationError, ValidationErrors};
pub use wire::{Datagram, DropReason, VlanTag};
