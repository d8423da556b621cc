//! Sans-IO logic of a UDP multicast relay.
//!
//! (Crate documentation is completed with the crate.)

#![forbid(unsafe_code)]

pub mod interface;
pub mod rule;

pub use interface::{InterfaceFacts, Interfaces};
pub use rule::{Input, Limits, Output, Rule, RuleKey};
pub mod counters;
pub mod replicate;
pub mod wire;

pub use counters::RuleCounters;
pub use replicate::{FrameTemplate, RewriteError, TemplateSpec};
pub use wire::{Datagram, DropReason, VlanTag};
