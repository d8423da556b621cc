//! The command line of `fanout-relay`.

use crate::config::{FanoutSetting, WorkersSetting};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Relay UDP multicast at line rate, rewriting groups and ports.
///
/// fanout-relay takes UDP frames off an interface with AF_PACKET, before the IP layer (so the
/// kernel's reverse-path check never drops a stream from an unroutable source), matches them
/// against forwarding rules, and re-sends them rewritten: to another group or port, to several
/// groups on several interfaces, or to unicast receivers. One worker process per CPU serves its
/// share of the traffic from memory-mapped rings; a supervisor keeps the workers running.
///
/// Run as root, or with CAP_NET_RAW and CAP_NET_ADMIN. Log verbosity follows RUST_LOG
/// (error, warn, info, debug, trace; default info).
#[derive(Debug, Parser)]
#[command(name = "fanout-relay", version, propagate_version = true)]
#[command(after_long_help = EXAMPLES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
EXAMPLES:
    Check a configuration against this host without touching the network:
        fanout-relay check-config /etc/fanout-relay.toml

    Relay with one worker per online CPU until SIGINT or SIGTERM:
        fanout-relay run --config /etc/fanout-relay.toml

    Two workers on CPUs 2 and 3, spreading flows by hash:
        fanout-relay run --config relay.toml --workers 2-3 --fanout hash

    See it work in namespaces of its own (root; removes everything afterwards):
        fanout-relay demo

EXIT STATUS:
    0 after a clean stop, 1 when the configuration is refused or the relay cannot start.";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay described by a configuration file until SIGINT or SIGTERM.
    ///
    /// Prints a summary of per-worker and per-rule counters when it stops.
    Run(RunArgs),
    /// Check a configuration file against this host's interfaces and CPUs, without opening a
    /// socket. Prints every problem, naming the rule and the field; exits 1 if there is one.
    CheckConfig {
        /// Path of the TOML configuration file.
        file: PathBuf,
    },
    /// Build a sender, a relay and two receivers in network namespaces, relay a bounded stream
    /// between them with live counters, print what was sent, relayed and received, and remove
    /// everything (also on Ctrl-C or failure). Needs root.
    Demo(DemoArgs),
    /// Serve as one worker of a supervisor (started by `run`, not by hand).
    #[command(hide = true)]
    Worker {
        /// CPU to pin to.
        #[arg(long)]
        cpu: u32,
        /// Process id of the supervisor; the worker exits when it is gone.
        #[arg(long)]
        supervisor: u32,
        /// Number of receive rings the supervisor hands over before the start message.
        #[arg(long)]
        rings: usize,
    },
}

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Path of the TOML configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Which CPUs get a worker: `all`, a count (the first N online CPUs), or a CPU list such as
    /// `0-3,6`. Overrides `relay.workers` of the file.
    #[arg(long, value_name = "N|LIST", value_parser = parse_workers)]
    pub workers: Option<WorkersSetting>,
    /// How the kernel spreads each input's packets over the workers. Overrides `relay.fanout`.
    #[arg(long, value_enum)]
    pub fanout: Option<FanoutSetting>,
    /// Print per-worker and per-rule counters to standard error every SECONDS (0: only at exit).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub stats_every: u64,
}

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Packets to send per input stream.
    #[arg(long, default_value_t = 2000)]
    pub packets: u32,
    /// Packets per second per stream.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
}

fn parse_workers(text: &str) -> Result<WorkersSetting, String> {
    WorkersSetting::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_overrides() {
        let cli = Cli::try_parse_from([
            "fanout-relay",
            "run",
            "--config",
            "x.toml",
            "--workers",
            "0-1",
            "--fanout",
            "hash",
        ])
        .expect("valid command line");
        let Command::Run(args) = cli.command else {
            panic!("parsed as run")
        };
        assert_eq!(args.workers, Some(WorkersSetting::Cpus(vec![0, 1])));
        assert_eq!(args.fanout, Some(FanoutSetting::Hash));
        assert!(
            Cli::try_parse_from(["fanout-relay", "run", "--config", "x", "--workers", "z"])
                .is_err()
        );
    }
}
