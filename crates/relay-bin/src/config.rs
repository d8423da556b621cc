//! The configuration file: its TOML shape, and its translation into the rule model.
//!
//! ```toml
//! [relay]
//! workers = "all"          # or a count of workers (2): the first N online CPUs get one
//! # cpus = "1,4-5"         # or instead of workers: exactly these CPUs get one
//! fanout = "cpu"           # cpu | hash | lb | qm | rollover | rnd | steer
//! metrics = "127.0.0.1:9469" # optional: serve Prometheus metrics on GET /metrics
//! rps = "off"              # or "auto": turn RPS on for single-queue inputs while running
//! user = "relay"            # the workers' user; nobody by default when run as root
//! consume_input = true     # drop relayed input at the interface's ingress, after the rings
//!
//! [ring]                   # optional: receive and transmit ring geometry
//! version = "v3"           # v3 (throughput) | v2 (latency: frames handed over one by one)
//! block_size = 262144
//! block_count = 64
//! # frame_size = 2048     # default: each ring sized for its interface's MTU
//! retire_timeout_ms = 2
//! tx_frames = 4096
//! busy_poll_us = 0         # low latency (v2 only): spin on the ring this long before sleeping
//! qdisc_bypass = false     # transmit rings skip the qdisc (PACKET_QDISC_BYPASS)
//! tx_linear = true         # frames copied whole into the kernel, not lent as ring pages
//! tx_gso = true            # an output's datagrams of one batch leave as one segmented frame
//!
//! [autoscale]              # optional: the worker set follows the load, on relay.workers' CPUs
//! min_workers = 1          # start with, and never go below
//! busy_above = 0.75        # add a worker when the mean busy fraction stays at or above
//! idle_below = 0.25        # remove one when the load over one fewer stays below
//! sustain_s = 5            # for this many one-second samples
//! cooldown_s = 10          # between changes
//!
//! [[class]]               # optional: CPUs with workers of their own, for the rules naming them
//! name = "video"
//! cpus = "0-1"             # the other CPUs of relay.workers serve rules that name no class
//!
//! [[interface_group]]      # optional: a rule's input on "uplinks" is one rule per member
//! name = "uplinks"         # (or in place: input = { interface = ["eth3", "eth4"], ... })
//! interfaces = ["eth3", "eth4"]
//!
//! [[rule]]
//! name = "camera-1"
//! class = "video"          # optional: served only by this class's workers
//! input = { interface = "eth0", destination = "239.1.1.1", port = 5000 }
//! outputs = [
//!   { interface = "eth1", destination = "239.2.2.2", port = 6000, ttl = 8 },
//! ]
//! ```
//!
//! The low-latency mode is `version = "v2"` with `busy_poll_us` above the longest gap between
//! frames that should not pay a wake-up (e.g. `2000` for flows of 1,000 packets per second and
//! more): a worker then relays each frame as it lands, at the price of one CPU kept 100 % busy
//! while traffic flows (see `bench/README.md` for the figures).
//!
//! Parsing checks the shape of the file (types, unknown keys, address syntax) and says where in the
//! file a mistake is; [`relay_rules`] validation then checks the meaning of the rules against the
//! interfaces of the host.

use relay_rules::Rule;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod autoscale;
mod class;
mod error;
mod groups;
mod inline;
mod pieces;
mod ring;
pub use autoscale::AutoscaleSection;
pub use class::{
    ClassEntry, CpuList, check_classes, check_rule_classes, check_shared_keys, shared_key_problem,
};
pub use error::{
    AutoscaleError, ConfigError, CpuListError, ParseError, RingFieldError, WorkersError,
};
pub use groups::{InterfaceGroup, check_groups, inline_group_name, is_member_of, member_rules};
pub use ring::{MAX_BUSY_POLL_US, RingSection, RingVersionSetting, SEGMENTED_SLOT_BYTES};

/// Files from this size on are parsed piece by piece: a whole parse needs about 40 times the
/// text's size for a moment (700 MB for 100,000 rules), which below this is a few megabytes.
const PIECES_FROM: usize = 64 * 1024;

/// A whole configuration file as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Process-wide settings.
    #[serde(default)]
    pub relay: RelaySection,
    /// Ring geometry.
    #[serde(default)]
    pub ring: RingSection,
    /// Growing and shrinking the worker set with load; absent, it changes only when told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleSection>,
    /// Worker classes: named sets of CPUs whose workers serve only the rules that name them.
    #[serde(default, rename = "class", skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassEntry>,
    /// Named sets of input interfaces, which a rule's input may name (see [`InterfaceGroup`]).
    #[serde(
        default,
        rename = "interface_group",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub interface_groups: Vec<InterfaceGroup>,
    /// Forwarding rules, in the order written.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

/// The `[relay]` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// Which CPUs get a worker. A CPU list is written as `cpus`, a count or `all` as `workers`
    /// (see [`RelaySection::set_workers`]).
    #[serde(default, skip_serializing_if = "WorkersSetting::is_cpus")]
    pub workers: WorkersSetting,
    /// `cpus = "1,4-5"`: the CPUs that get a worker, a key of its own so that a single CPU can
    /// never be read as a count. Mirrors `workers` once parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpus: Option<CpuList>,
    /// How the kernel spreads an input's packets over the workers.
    #[serde(default)]
    pub fanout: FanoutSetting,
    /// Which workers hold which rules.
    #[serde(default, skip_serializing_if = "PlacementSetting::is_replicate")]
    pub placement: PlacementSetting,
    /// Path of the control socket; by default `/run/fanout-relay/<config name>.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// Where the running rule set is kept across restarts; by default
    /// `/var/lib/fanout-relay/<config name>.state.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// Address of the Prometheus metrics listener; none (no listener) by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// Whether the relay turns RPS on for input interfaces that need it.
    #[serde(default, skip_serializing_if = "RpsSetting::is_off")]
    pub rps: RpsSetting,
    /// The user workers run as (they hold no capability either way); by default `nobody` when
    /// the relay runs as root, else the relay's own user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether the frames a rule relays are dropped at their input interface's ingress hook
    /// once the relay's receive rings took them, so that the host's own IP stack does not
    /// route, checksum and drop them. On by default; off where the host's own applications
    /// read the input groups too.
    #[serde(default, skip_serializing_if = "ConsumeInput::is_on")]
    pub consume_input: ConsumeInput,
}

/// `consume_input`: on (`true`, the default) or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct ConsumeInput(pub bool);

impl Default for ConsumeInput {
    fn default() -> Self {
        ConsumeInput(true)
    }
}

impl ConsumeInput {
    fn is_on(&self) -> bool {
        self.0
    }
}

/// Whether the relay spreads single-queue inputs over the workers' CPUs with RPS.
///
/// An interface with one receive queue and no RPS hands every packet to one CPU, so under fanout
/// `cpu` only one worker sees traffic. `auto` sets the RPS mask of such an interface to the
/// workers' CPUs while the relay runs and puts the previous mask back when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RpsSetting {
    /// Leave every interface's RPS masks as they are.
    #[default]
    Off,
    /// Turn RPS on across the workers' CPUs where an input has one RX queue and no RPS.
    Auto,
}

impl RpsSetting {
    fn is_off(&self) -> bool {
        *self == RpsSetting::Off
    }
}

/// Directory of the default control sockets.
pub const RUN_DIR: &str = "/run/fanout-relay";
/// Directory of the default state files.
pub const STATE_DIR: &str = "/var/lib/fanout-relay";

impl RelaySection {
    /// Sets which CPUs get a worker (a `--workers` or `--cpus` override).
    pub fn set_workers(&mut self, workers: WorkersSetting) {
        self.cpus = match &workers {
            WorkersSetting::Cpus(list) => Some(CpuList(list.clone())),
            _ => None,
        };
        self.workers = workers;
    }

    /// Reads `cpus` into `workers` after parsing, refusing both at once: `workers = 2` with
    /// `cpus = "0-3"` could mean two of those CPUs or all four.
    fn settle_cpus(&mut self) -> Result<(), ParseError> {
        match (&self.cpus, &self.workers) {
            (Some(list), WorkersSetting::All) => {
                self.workers = WorkersSetting::Cpus(list.0.clone());
                Ok(())
            }
            (Some(list), WorkersSetting::Cpus(old)) if &list.0 != old => {
                Err(ParseError::TwoCpuLists {
                    cpus: list.clone(),
                    workers: CpuList(old.clone()),
                })
            }
            (Some(list), WorkersSetting::Count(count)) => Err(ParseError::CpusAndCount {
                cpus: list.clone(),
                count: *count,
            }),
            (Some(_), WorkersSetting::Cpus(_)) => Ok(()),
            (None, workers) => {
                // The older form `workers = "0-3"` reads the same as `cpus = "0-3"`.
                let workers = workers.clone();
                self.set_workers(workers);
                Ok(())
            }
        }
    }

    /// The control socket of the relay run from the configuration file `config`.
    pub fn control_socket_for(&self, config: &Path) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| Path::new(RUN_DIR).join(format!("{}.sock", config_name(config))))
    }

    /// The state file of the relay run from the configuration file `config`.
    pub fn state_file_for(&self, config: &Path) -> PathBuf {
        self.state_file.clone().unwrap_or_else(|| {
            Path::new(STATE_DIR).join(format!("{}.state.toml", config_name(config)))
        })
    }
}

/// The file name of `config` without its extension: `relay` for `/etc/fanout-relay/relay.toml`.
fn config_name(config: &Path) -> String {
    config.file_stem().map_or_else(
        || "fanout-relay".to_owned(),
        |stem| stem.to_string_lossy().into_owned(),
    )
}

/// Which CPUs get a worker: all online CPUs, the first N of them, or a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WorkersSetting {
    /// One worker per online CPU.
    #[default]
    All,
    /// One worker on each of the first N online CPUs.
    Count(u32),
    /// One worker on each listed CPU.
    Cpus(Vec<u32>),
}

impl WorkersSetting {
    fn is_cpus(&self) -> bool {
        matches!(self, WorkersSetting::Cpus(_))
    }

    /// Parses `all`, a count (`2`) or a CPU list in the kernel's syntax (`0-3,6`).
    pub fn parse(text: &str) -> Result<Self, WorkersError> {
        let text = text.trim();
        if text == "all" {
            return Ok(WorkersSetting::All);
        }
        if let Ok(count) = text.parse::<u32>() {
            if count == 0 {
                return Err(WorkersError::Zero);
            }
            return Ok(WorkersSetting::Count(count));
        }
        Ok(WorkersSetting::Cpus(CpuList::parse(text)?.0))
    }
}

impl Serialize for WorkersSetting {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            WorkersSetting::All => serializer.serialize_str("all"),
            WorkersSetting::Count(count) => serializer.serialize_u32(*count),
            WorkersSetting::Cpus(cpus) => serializer.collect_str(&CpuList(cpus.clone())),
        }
    }
}

impl<'de> Deserialize<'de> for WorkersSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        // Only `relay.workers` has this type, so its errors name that field.
        match Raw::deserialize(deserializer)? {
            Raw::Count(0) => Err(serde::de::Error::custom(
                "relay.workers = 0: a relay needs at least one worker",
            )),
            Raw::Count(count) => Ok(WorkersSetting::Count(count)),
            // A quoted number reads as a CPU as easily as a count: an operator meaning "the
            // worker on CPU 1" must not get one worker on CPU 0.
            Raw::Text(text) if text.trim().parse::<u32>().is_ok() => {
                let text = text.trim();
                Err(serde::de::Error::custom(format!(
                    "relay.workers = \"{text}\": a quoted number could be a count or a CPU: \
                     write `workers = {text}` for {text} worker(s), or `cpus = \"{text}\"` for \
                     the worker on CPU {text}"
                )))
            }
            Raw::Text(text) => WorkersSetting::parse(&text).map_err(|error| {
                serde::de::Error::custom(format!("relay.workers = {text:?}: {error}"))
            }),
        }
    }
}

/// How the kernel spreads an input interface's packets over the workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FanoutSetting {
    /// The worker pinned to the CPU that received the packet serves it (no cross-CPU traffic).
    #[default]
    Cpu,
    /// A flow (addresses and ports) always goes to the same worker.
    Hash,
    /// Round robin over the workers.
    Lb,
    /// By the NIC's receive queue.
    Qm,
    /// Fill one worker's ring, then the next.
    Rollover,
    /// A random worker for each packet (the kernel's `PACKET_FANOUT_RND`).
    Rnd,
    /// A classic BPF program computes each packet's rule shard from its group and port
    /// (`relay_rules::shard`), so a packet always reaches the worker that holds its rule.
    Steer,
}

/// Which workers hold which rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PlacementSetting {
    /// Every worker holds every rule: any fanout mode works, and a dead worker's packets can be
    /// served by the others.
    #[default]
    Replicate,
    /// Worker k holds only the rules of shard k: memory and rule traffic O(rules) instead of
    /// O(rules × workers). Needs fanout `steer`, so each packet reaches its rule's worker.
    Shard,
}

impl PlacementSetting {
    fn is_replicate(&self) -> bool {
        *self == PlacementSetting::Replicate
    }
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The file's text: what `ctl save` writes, and what [`ConfigFile::parse`] reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a configuration always has a TOML form")
    }

    /// Parses the text of a configuration file; the error says where the mistake is. A large
    /// file is read one `[[rule]]` table at a time (module `pieces`), which bounds the memory
    /// the parse needs by one rule's document instead of the whole file's.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Self::parse_by(text, text.len() >= PIECES_FROM)
    }

    /// [`ConfigFile::parse`] with the reading chosen by the caller: `in_pieces` tries the
    /// piece-by-piece reading whatever the text's size. Both readings must give the same
    /// result for every text, which tests and the fuzz targets check through this.
    pub fn parse_by(text: &str, in_pieces: bool) -> Result<Self, ParseError> {
        let (text, inline_groups) = inline::lift(text);
        let text = text.as_ref();
        let mut config: ConfigFile = if in_pieces && let Some(config) = pieces::parse(text) {
            config
        } else {
            toml::from_str(text).map_err(|error| ParseError::toml(error, text))?
        };
        config.interface_groups.extend(inline_groups);
        config.relay.settle_cpus()?;
        Ok(config)
    }

    /// The rules, in the order written, a rule on an `[[interface_group]]` as one rule per
    /// member (`RULE.MEMBER`).
    pub fn to_rules(&self) -> Vec<Rule> {
        groups::expand(&self.rules, &self.interface_groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_rules::Output;
    use std::net::Ipv4Addr;

    const EXAMPLE: &str = r#"
        [relay]
        workers = "0-1"
        fanout = "hash"
        metrics = "127.0.0.1:9469"
        rps = "auto"
        consume_input = false

        [ring]
        block_count = 4

        [[rule]]
        name = "cam"
        input = { interface = "in0", destination = "239.1.1.1", port = 5000, source = "192.0.2.10" }
        outputs = [
            { interface = "out0", destination = "239.2.2.2", port = 6000, ttl = 4, dscp = 46 },
            { interface = "out1", destination = "10.0.0.2", port = 7000 },
        ]
    "#;

    #[test]
    fn parses_every_section() {
        let config = ConfigFile::parse(EXAMPLE).expect("the example is valid");
        assert_eq!(config.relay.workers, WorkersSetting::Cpus(vec![0, 1]));
        assert_eq!(config.relay.fanout, FanoutSetting::Hash);
        assert_eq!(config.relay.metrics, Some(([127, 0, 0, 1], 9469).into()));
        assert_eq!(config.relay.rps, RpsSetting::Auto);
        assert_eq!(ConfigFile::default().relay.rps, RpsSetting::Off);
        assert_eq!(config.relay.consume_input, ConsumeInput(false));
        assert_eq!(
            ConfigFile::default().relay.consume_input,
            ConsumeInput(true)
        );
        assert_eq!(config.ring.block_count, 4);
        assert_eq!(config.ring.block_size, RingSection::default().block_size);
        let rules = config.to_rules();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].input.source,
            Some(Ipv4Addr::new(192, 0, 2, 10).into())
        );
        assert_eq!(rules[0].outputs[0].ttl, relay_rules::Ttl::Fixed(4));
        assert_eq!(rules[0].outputs[0].dscp, Some(46));
        assert_eq!(rules[0].outputs[1].ttl, Output::DEFAULT_TTL);
        assert_eq!(rules[0].outputs[1].destination, Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn stream_options_and_a_decrementing_ttl_round_trip() {
        let text = r#"
            [[rule]]
            name = "cam"
            inspect = "rtp+mpegts"
            rtp_clock_hz = 27000000
            max_pps = 20000
            max_bps = 50000000
            input = { interface = "in0", destination = "239.1.1.1", port = 5000 }
            outputs = [ { interface = "out0", destination = "239.2.2.2", port = 6000, ttl = "decrement" } ]
        "#;
        let rules = ConfigFile::parse(text).expect("valid").to_rules();
        let rule = &rules[0];
        assert_eq!(rule.inspect, Some(relay_rules::inspect::Inspect::RtpMpegTs));
        assert_eq!(
            (rule.rtp_clock_hz, rule.max_pps, rule.max_bps),
            (Some(27_000_000), Some(20_000), Some(50_000_000))
        );
        assert_eq!(rule.outputs[0].ttl, relay_rules::Ttl::Decrement);
        let saved = ConfigFile::parse(text).expect("valid").to_toml();
        assert!(saved.contains("ttl = \"decrement\""), "{saved}");
        assert_eq!(ConfigFile::parse(&saved).expect("saved").to_rules(), rules);
        for wrong in [r#"ttl = "down""#, "ttl = 256", "ttl = -1"] {
            let text = text.replace(r#"ttl = "decrement""#, wrong);
            assert!(ConfigFile::parse(&text).is_err(), "{wrong} is refused");
        }
        let text = text.replace(r#""rtp+mpegts""#, r#""h264""#);
        assert!(
            ConfigFile::parse(&text).is_err(),
            "an unknown inspection is refused"
        );
    }

    #[test]
    fn mistakes_are_located() {
        let error = ConfigFile::parse("[[rule]]\nname = \"a\"\ninput = { interface = \"x\", destination = \"239.1.1.300\", port = 1 }\noutputs = []\n")
            .expect_err("300 is not an octet");
        assert_eq!(error.line(), Some(3));
        let error = error.to_string();
        assert!(error.contains("line 3"), "{error}");
        let error = ConfigFile::parse("[relay]\nworkrs = 2\n")
            .expect_err("typo")
            .to_string();
        assert!(error.contains("workrs"), "{error}");
        let error = ConfigFile::parse("[relay]\nworkers = 0\n")
            .expect_err("zero workers")
            .to_string();
        assert!(
            error.contains("relay.workers = 0: a relay needs at least one worker"),
            "{error}"
        );
        let error = ConfigFile::parse("[relay]\nworkers = \"0\"\n")
            .expect_err("zero, quoted")
            .to_string();
        assert!(
            error.contains("relay.workers = \"0\": a quoted number could be a count or a CPU"),
            "{error}"
        );
        let error = ConfigFile::parse("[relay]\nworkers = \"0-x\"\n")
            .expect_err("not a list")
            .to_string();
        assert!(error.contains("relay.workers = \"0-x\": `0-x`"), "{error}");
        assert_eq!(
            ConfigFile::parse("[relay]\nworkers = \"0-0\"\n")
                .expect("CPU 0 alone")
                .relay
                .workers,
            WorkersSetting::Cpus(vec![0])
        );
    }

    #[test]
    fn an_inline_interface_list_is_one_rule_per_member_in_both_readings() {
        let text = r#"
            [[rule]]
            name = "cam"
            input = { interface = ["in0", "in1"], destination = "239.1.1.1", port = 5000 }
            outputs = [ { interface = "out0", destination = "239.2.2.2", port = 6000 } ]
        "#;
        for in_pieces in [false, true] {
            let config = ConfigFile::parse_by(text, in_pieces).expect("valid");
            let rules = config.to_rules();
            let names: Vec<(&str, &str)> = rules
                .iter()
                .map(|rule| (rule.name.as_str(), rule.input.interface.as_str()))
                .collect();
            assert_eq!(names, [("cam.in0", "in0"), ("cam.in1", "in1")]);
            let saved = config.to_toml();
            let again = ConfigFile::parse(&saved).expect("saved text parses");
            assert_eq!(again.to_rules(), rules, "{saved}");
        }
        let twice = text.replace(r#"["in0", "in1"]"#, r#"["in0", "in0"]"#);
        let config = ConfigFile::parse(&twice).expect("parses");
        let problems = check_groups(&config.interface_groups, |name| name.starts_with("in"));
        assert_eq!(
            problems,
            [r#"rule "cam": input.interface: "in0" is listed twice"#]
        );
        let error = ConfigFile::parse(&text.replace("port = 5000", "port = 70000"))
            .expect_err("port out of range");
        assert_eq!(error.line(), Some(4), "{error}");
    }

    #[test]
    fn saved_files_read_back_the_same() {
        let config = ConfigFile::parse(EXAMPLE).expect("the example is valid");
        let text = config.to_toml();
        assert_eq!(
            ConfigFile::parse(&text).expect("saved text parses"),
            config,
            "{text}"
        );
    }

    #[test]
    fn a_cpu_is_never_read_as_a_count() {
        let error = ConfigFile::parse("[relay]\nworkers = \"1\"\n")
            .expect_err("ambiguous")
            .to_string();
        assert!(
            error.contains(
                "write `workers = 1` for 1 worker(s), or `cpus = \"1\"` for the worker on CPU 1"
            ),
            "{error}"
        );
        let one = ConfigFile::parse("[relay]\ncpus = \"1\"\n").expect("cpus names CPU 1");
        assert_eq!(one.relay.workers, WorkersSetting::Cpus(vec![1]));
        let bare = ConfigFile::parse("[relay]\ncpus = 1\n").expect("a bare CPU number");
        assert_eq!(bare.relay.workers, WorkersSetting::Cpus(vec![1]));
        assert_eq!(
            ConfigFile::parse("[relay]\nworkers = 1\n")
                .expect("a count")
                .relay
                .workers,
            WorkersSetting::Count(1)
        );
        let both = ConfigFile::parse("[relay]\nworkers = 2\ncpus = \"0-3\"\n")
            .expect_err("a count and CPUs");
        assert!(
            matches!(&both, ParseError::CpusAndCount { count: 2, cpus } if cpus.0 == [0, 1, 2, 3]),
            "{both:?}"
        );
        let both = both.to_string();
        assert!(both.contains("give one of them"), "{both}");
        let twice = ConfigFile::parse("[relay]\nworkers = \"0-1\"\ncpus = \"2-3\"\n")
            .expect_err("two lists")
            .to_string();
        assert!(twice.contains("give the CPUs once"), "{twice}");
        let bad = ConfigFile::parse("[relay]\ncpus = \"1-x\"\n")
            .expect_err("not a list")
            .to_string();
        assert!(bad.contains("`1-x`"), "{bad}");
    }

    #[test]
    fn cpu_lists_are_saved_as_cpus() {
        // The older `workers = "0-1"` still reads as a CPU list, and is saved as `cpus`.
        let old = ConfigFile::parse("[relay]\nworkers = \"0-1\"\n").expect("a list");
        assert_eq!(old.relay.workers, WorkersSetting::Cpus(vec![0, 1]));
        let text = old.to_toml();
        assert!(text.contains("cpus = \"0,1\""), "{text}");
        assert!(!text.contains("workers"), "{text}");
        assert_eq!(ConfigFile::parse(&text).expect("saved text parses"), old);
        let mut counted = old.clone();
        counted.relay.set_workers(WorkersSetting::Count(3));
        let text = counted.to_toml();
        assert!(
            text.contains("workers = 3") && !text.contains("cpus"),
            "{text}"
        );
        assert_eq!(
            ConfigFile::parse(&text).expect("saved text parses"),
            counted
        );
        let mut one = counted;
        one.relay.set_workers(WorkersSetting::Cpus(vec![1]));
        let text = one.to_toml();
        assert_eq!(ConfigFile::parse(&text).expect("saved text parses"), one);
    }

    #[test]
    fn workers_setting_forms() {
        assert_eq!(WorkersSetting::parse("all"), Ok(WorkersSetting::All));
        assert_eq!(WorkersSetting::parse("3"), Ok(WorkersSetting::Count(3)));
        assert_eq!(
            WorkersSetting::parse("0-2,6,1"),
            Ok(WorkersSetting::Cpus(vec![0, 1, 2, 6]))
        );
        assert!(WorkersSetting::parse("2-1").is_err());
        assert!(WorkersSetting::parse("x").is_err());
    }
}
