//! Sans-IO logic of a UDP multicast relay.
//!
//! (Crate documentation is completed with the crate.)

#![forbid(unsafe_code)]

pub mod interface;
pub mod rule;
pub mod wire;
pub mod replicate;
pub mod counters;
pub mod bpf;
pub mod shard;
pub mod table;
pub mod validate;

pub use interface::{InterfaceFacts, Interfaces};
pub use rule::{Input, Limits, Output, Rule, RuleKey};
pub use counters::RuleCounters;
pub use replicate::{FrameTemplate, RewriteError, TemplateSpec};
pub use wire::{Datagram, DropReason, VlanTag};
pub use table::{CompiledOutput, CompiledRule, RuleId, RuleTable};
pub use validate::{RuleSet, ValidationError, ValidationErrors};
