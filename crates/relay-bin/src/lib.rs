//! The parts of the `fanout-relay` binary, as a library so tests and embedders can call them.

pub mod cli;
pub mod config;
