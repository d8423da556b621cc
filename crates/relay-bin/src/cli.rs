//! The command line of `fanout-relay`.

#![allow(
    rustdoc::broken_intra_doc_links,
    reason = "doc comments here are --help text; brackets mean optional parts, not links"
)]

use crate::config::{
    CpuList, CpuListError, FanoutSetting, RpsSetting, WorkersError, WorkersSetting,
};
use clap::{Args, Parser, Subcommand};

mod stream;
use std::net::SocketAddr;
use std::path::PathBuf;
pub use stream::StreamArgs;

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

    Will eth0's packets reach every worker? And watch the load live:
        fanout-relay check-steering eth0 --workers 2-3
        fanout-relay ctl top

EXIT STATUS:
    0 after a clean stop, 1 when the configuration is refused or the relay cannot start.";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay described by a configuration file until SIGINT or SIGTERM.
    ///
    /// Prints a summary of per-worker and per-rule counters when it stops; a rule removed at
    /// run time keeps its line, marked `(removed)`. SIGHUP re-reads the configuration file as
    /// `ctl reload` does (see `ctl reload --help`), and logs why when it refuses it.
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
    /// Talk to a running relay through its control socket: list, add and remove rules, see
    /// counters and workers, reload the configuration. Exits 1 when the relay refuses.
    Ctl(CtlArgs),
    /// Show how the kernel spreads an interface's packets over CPUs (RX queues, RSS, RPS,
    /// interrupts and their affinity) and whether they will reach every worker, with advice
    /// when they will not. Run it in the relay's network namespace.
    CheckSteering(CheckSteeringArgs),
    /// Show which kernel features the running kernel offers (each tried once, as the relay
    /// does at start), the release that brought each, and what the relay does without it.
    /// Needs CAP_NET_RAW (root).
    Features {
        /// A configuration, to say which features it uses.
        #[arg(long)]
        config: Option<PathBuf>,
    },
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
    /// How many workers: `all` or a count (the first N online CPUs get one). Overrides
    /// `relay.workers` and `relay.cpus` of the file. (A CPU list with `-` or `,` is read as
    /// `--cpus`.)
    #[arg(long, value_name = "N|all", value_parser = parse_workers)]
    pub workers: Option<WorkersSetting>,
    /// Which CPUs get a worker, as a CPU list (`1`, `0-3,6`). Overrides `relay.workers` and
    /// `relay.cpus` of the file.
    #[arg(long, value_name = "LIST", value_parser = parse_cpus, conflicts_with = "workers")]
    pub cpus: Option<WorkersSetting>,
    /// How the kernel spreads each input's packets over the workers. Overrides `relay.fanout`.
    #[arg(long, value_enum)]
    pub fanout: Option<FanoutSetting>,
    /// Print per-worker and per-rule counters to standard error every SECONDS (0: only at exit).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub stats_every: u64,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9469). Overrides
    /// `relay.metrics`; without either, no listener.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// `auto`: turn RPS on across the workers' CPUs on inputs with one RX queue and no RPS,
    /// and put the previous masks back at exit. Overrides `relay.rps` (default off).
    #[arg(long, value_enum)]
    pub rps: Option<RpsSetting>,
}

/// Options of `check-steering`.
#[derive(Debug, Args)]
pub struct CheckSteeringArgs {
    /// The interface, in the network namespace this command runs in.
    pub interface: String,
    /// Print the facts and the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Workers to judge for, as `run --workers`. Default: the configuration's, else every
    /// online CPU.
    #[arg(long, value_name = "N|all", value_parser = parse_workers)]
    pub workers: Option<WorkersSetting>,
    /// CPUs to judge for, as `run --cpus`.
    #[arg(long, value_name = "LIST", value_parser = parse_cpus, conflicts_with = "workers")]
    pub cpus: Option<WorkersSetting>,
    /// Fanout mode to judge for. Default: the configuration's, else cpu.
    #[arg(long, value_enum)]
    pub fanout: Option<FanoutSetting>,
    /// Take the workers and the fanout mode from this configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Options and command of `ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The relay's control socket. Default: the socket of `--config`, or the only socket in
    /// /run/fanout-relay.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Find the control socket from this configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the relay's answer as JSON (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to ask.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The `ctl` commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The running rules and their outputs.
    List,
    /// Add a rule, given compactly or as TOML.
    ///
    /// Compact form: NAME INPUT OUTPUT..., where INPUT is IFACE:ADDRESS:PORT[@SOURCE][,vlan=N]
    /// (vlan: only frames tagged with that VLAN; without it, only untagged frames) and each
    /// OUTPUT is IFACE:ADDRESS:PORT[,ttl=N][,source=ADDRESS][,dscp=N][,vlan=N]. Example:
    /// `fanout-relay ctl add cam1 eth0:239.1.1.1:5000 eth1:239.2.2.2:6000,ttl=8`; with
    /// `--inspect rtp+mpegts --max-pps 20000` it also counts the stream's health and limits it.
    /// An input on several interfaces, `eth0+eth1:239.1.1.1:5000`, or on an `[[interface_group]]`
    /// of the configuration, by its name, adds one rule per interface, `NAME.IFACE`, which
    /// `ctl remove NAME` removes together.
    Add {
        /// Rule name.
        name: Option<String>,
        /// What it matches: IFACE[+IFACE...]:ADDRESS:PORT[@SOURCE][,vlan=N].
        input: Option<String>,
        /// Where it sends: IFACE:ADDRESS:PORT[,ttl=N][,source=A][,dscp=N][,vlan=N].
        outputs: Vec<String>,
        /// The worker class that serves it (a `[[class]]` of the configuration).
        #[arg(long, value_name = "NAME", conflicts_with = "toml")]
        class: Option<String>,
        /// Stream inspection and storm guard.
        #[command(flatten)]
        stream: StreamArgs,
        /// Read one [[rule]] table from this TOML file instead (`-` for standard input).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "input", "outputs"])]
        toml: Option<PathBuf>,
    },
    /// Remove a rule by name, or by its match key with --key IFACE:ADDRESS:PORT[@SOURCE][,vlan=N].
    Remove {
        /// Rule name.
        #[arg(required_unless_present = "key", conflicts_with = "key")]
        name: Option<String>,
        /// Match key instead of a name.
        #[arg(long)]
        key: Option<String>,
    },
    /// Write the running rules as a configuration file (that check-config accepts).
    Save {
        /// Where to write it, on the relay's host (a relative path is taken from the current
        /// directory).
        file: PathBuf,
    },
    /// Counters and rates per rule and per worker, and the load imbalance.
    Stats,
    /// The stats table, refreshed every second until Ctrl-C (successive tables, or JSON lines
    /// with --json, when standard output is not a terminal).
    Top {
        /// Stop after this many refreshes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// The workers: CPU, pid, state, restarts, table generation, counters; `workers set` changes
    /// the worker set while the relay runs.
    Workers {
        /// What to do; without one, list the workers.
        #[command(subcommand)]
        action: Option<WorkersAction>,
    },
    /// Re-read the configuration file and apply only what changed; rules added at run time that
    /// the file lacks are removed (run `save FILE` first to keep them).
    ///
    /// The file is the truth after a reload, as after a restart with an edited file: rules added
    /// with `ctl add` that it does not have are removed, and rules removed with `ctl remove` that
    /// it still has come back. The answer names the rules removed because they existed only at
    /// run time. To keep run-time changes, write the running set into the file first with
    /// `ctl save FILE`.
    Reload,
}

/// `ctl workers` actions.
#[derive(Debug, Subcommand)]
pub enum WorkersAction {
    /// Change the worker set: a count (`2`: keeps the current CPUs first, adds the lowest free
    /// ones), a CPU list (`0,2-3`) or `all`. Workers whose share of the rings does not change
    /// keep relaying; the others stop and start again with their new share, their rings
    /// queueing meanwhile. Lasts until the relay restarts (set `relay.workers` to keep it).
    Set {
        /// N, a CPU list, or `all` (of the CPUs no other class's workers run on).
        #[arg(value_parser = check_workers)]
        workers: String,
        /// Change this `[[class]]`'s workers instead of the default class's.
        #[arg(long, value_name = "NAME")]
        class: Option<String>,
    },
}

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Packets to send per input stream.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub packets: u32,
    /// Packets per second per stream.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// Drop one datagram in 100 of the MPEG-TS stream on the way, to see the relay count the
    /// continuity errors.
    #[arg(long)]
    pub impair: bool,
    /// How long the relay may take to start, and then to relay a first probe, in seconds
    /// (raise it on a slow or emulated machine).
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub start_timeout: u64,
}

/// Checks a worker set here, and passes the text on as the relay parses it.
fn check_workers(text: &str) -> Result<String, WorkersError> {
    WorkersSetting::parse(text).map(|_| text.trim().to_owned())
}

fn parse_workers(text: &str) -> Result<WorkersSetting, WorkersError> {
    WorkersSetting::parse(text)
}

fn parse_cpus(text: &str) -> Result<WorkersSetting, CpuListError> {
    CpuList::parse(text).map(|list| WorkersSetting::Cpus(list.0))
}

impl RunArgs {
    /// The worker set the command line asks for, if any.
    pub fn worker_override(&self) -> Option<WorkersSetting> {
        self.cpus.clone().or_else(|| self.workers.clone())
    }
}

impl CheckSteeringArgs {
    /// The worker set the command line asks for, if any.
    pub fn worker_override(&self) -> Option<WorkersSetting> {
        self.cpus.clone().or_else(|| self.workers.clone())
    }
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
        assert_eq!((args.metrics, args.rps), (None, None));
        let cli = Cli::try_parse_from([
            "fanout-relay",
            "run",
            "-c",
            "x.toml",
            "--metrics",
            "127.0.0.1:9469",
            "--rps",
            "auto",
        ])
        .expect("valid command line");
        let Command::Run(args) = cli.command else {
            panic!("parsed as run")
        };
        assert_eq!(args.metrics, Some(([127, 0, 0, 1], 9469).into()));
        assert_eq!(args.rps, Some(RpsSetting::Auto));
        assert!(
            Cli::try_parse_from(["fanout-relay", "run", "--config", "x", "--workers", "z"])
                .is_err()
        );
    }

    #[test]
    fn cpus_name_cpus_and_workers_count() {
        let run = |args: &[&str]| {
            let cli = Cli::try_parse_from(
                ["fanout-relay", "run", "--config", "x.toml"]
                    .iter()
                    .chain(args),
            )
            .map_err(|e| e.to_string())?;
            match cli.command {
                Command::Run(args) => Ok(args.worker_override()),
                _ => Err("not run".to_owned()),
            }
        };
        assert_eq!(
            run(&["--cpus", "1"]),
            Ok(Some(WorkersSetting::Cpus(vec![1])))
        );
        assert_eq!(run(&["--workers", "1"]), Ok(Some(WorkersSetting::Count(1))));
        assert_eq!(run(&[]), Ok(None));
        let both = run(&["--workers", "2", "--cpus", "0-1"]).expect_err("one of them");
        assert!(both.contains("cannot be used with"), "{both}");
        let backwards = run(&["--cpus", "3-1"]).expect_err("a range that goes down");
        assert!(
            backwards.contains("`3-1` is not a range of CPUs: it ends below where it starts"),
            "{backwards}"
        );
        let zero = run(&["--workers", "0"]).expect_err("no workers");
        assert!(zero.contains("a relay needs at least one"), "{zero}");
    }
}
