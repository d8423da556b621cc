//! `fanout-relay demo`: a sender, the relay and receivers in network namespaces of its own.

use crate::cli::DemoArgs;

/// Runs the demonstration.
pub fn run(args: &DemoArgs) -> Result<(), String> {
    let _ = args;
    Err("not built yet".into())
}
