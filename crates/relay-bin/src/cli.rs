//! Command-line interface of `fanout-relay`.

use clap::{Parser, Subcommand};

/// Relay UDP multicast at line rate: take frames off the wire with AF_PACKET, match them
/// against forwarding rules and re-send them rewritten from per-CPU workers.
#[derive(Debug, Parser)]
#[command(name = "fanout-relay", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `fanout-relay`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a configuration file without touching the network.
    CheckConfig {
        /// Path of the TOML configuration file.
        file: std::path::PathBuf,
    },
}
