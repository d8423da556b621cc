//! The parts of the `fanout-relay` binary, as a library so tests and embedders can call them.
//!
//! `main.rs` only parses the command line; everything else is here: the configuration file
//! ([`config`]), the supervisor that owns the rings and keeps workers running ([`supervisor`]),
//! the worker processes and their data path ([`worker`]), the messages between them
//! ([`protocol`]), their counters ([`counters`]), and the self-contained [`demo`].

pub mod cli;
pub mod config;
pub mod control;
pub mod counters;
pub mod cpus;
pub mod ctl;
pub mod ctl_tables;
pub mod demo;
pub mod ingress;
pub mod kernel_features;
pub mod metrics;
pub mod netns;
pub mod notices;
pub mod outputs;
pub mod protocol;
pub mod ratelimit;
pub mod rings;
pub mod steering;
pub mod supervisor;
mod text;
pub mod top;
pub mod worker;
