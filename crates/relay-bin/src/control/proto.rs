//! The control protocol, version 1: one JSON object per line each way, every request answered.
//!
//! A request names the protocol version and a command:
//!
//! ```json
//! {"version": 1, "command": "list"}
//! {"version": 1, "command": "add", "rule": {"name": "cam", "input": {...}, "outputs": [...]}}
//! {"version": 1, "command": "remove", "name": "cam"}
//! {"version": 1, "command": "remove", "key": {"interface": "eth0", "destination": "239.1.1.1", "port": 5000}}
//! {"version": 1, "command": "save", "path": "/etc/fanout-relay/saved.toml"}
//! {"version": 1, "command": "stats"}
//! {"version": 1, "command": "workers"}
//! {"version": 1, "command": "reload"}
//! ```
//!
//! The answer is `{"ok": true, "result": ...}` or `{"ok": false, "error": "what was wrong"}`. A
//! line that is not valid JSON, names another version or an unknown command, has a field its
//! command does not take, or is longer than [`MAX_REQUEST`] bytes is answered with an error, and
//! the connection stays usable. `save` takes an absolute path (the relay's working directory is
//! not the client's; `fanout-relay ctl save` resolves a relative one before sending it).
//!
//! `reload` makes the configuration file the truth: rules added at run time that the file does
//! not have are removed, and the answer names them in `runtime_only` (besides `removed`), so an
//! operator sees what a reload threw away. `save` first keeps them.
//!
//! The relay serves at most [`super::MAX_CONNECTIONS`] connections at once: the next one is
//! answered with an error saying so and closed. A connection that sends nothing for
//! [`super::IDLE_TIMEOUT`] is answered with an error saying so and closed.

use relay_rules::Rule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Longest request line accepted.
pub const MAX_REQUEST: usize = 1 << 20;

/// A request as sent on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    /// Protocol version; must be [`VERSION`].
    pub version: u32,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Add one rule; or, when its input names an `[[interface_group]]` of the running
    /// configuration or `interfaces` lists several, the rules it stands for, one per input
    /// interface (`RULE.INTERFACE`), as the configuration file would.
    Add {
        /// The rule, as in a configuration file.
        rule: Rule,
        /// The input interfaces of a rule on several, listed in place; `rule.input.interface`
        /// is then empty. Empty for a rule on one interface or on a named group.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        interfaces: Vec<String>,
    },
    /// Remove one rule, by name or by match key.
    Remove {
        /// Name of the rule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Match key of the rule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<KeyEntry>,
    },
    /// The running rules with their outputs.
    List,
    /// Write the running rules as a configuration file.
    Save {
        /// Where to write it (on the relay's host).
        path: String,
    },
    /// Counters and rates, per rule and per worker.
    Stats,
    /// The workers.
    Workers,
    /// Change the worker set while the relay runs: a count (`2`), a CPU list (`0,2-3`) or
    /// `all`, as `relay.workers` in the configuration. Answered with the workers once every
    /// worker whose share changed serves again.
    SetWorkers {
        /// The new worker set.
        workers: String,
        /// The `[[class]]` whose workers change; the default class's when left out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<String>,
    },
    /// Re-read the configuration file and apply the difference.
    Reload,
    /// Damage the table of the worker on `cpu` without changing its generation, to test drift
    /// repair. Only in builds with the `drift-test` feature.
    #[cfg(feature = "drift-test")]
    DebugCorruptTable {
        /// CPU of the worker.
        cpu: u32,
    },
    /// Make the worker on `cpu` call what its seccomp filter forbids, to test that it is
    /// killed and replaced. Only in builds with the `drift-test` feature.
    #[cfg(feature = "drift-test")]
    DebugForbiddenSyscall {
        /// CPU of the worker.
        cpu: u32,
    },
}

/// A rule's match key, to remove by.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Input interface.
    pub interface: String,
    /// Destination address.
    pub destination: IpAddr,
    /// UDP port.
    pub port: u16,
    /// Source, for a source-specific rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// VLAN id, for a rule of tagged frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// An answer as sent on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What it produced, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Reply>,
    /// Why not, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success carrying `reply`.
    pub fn ok(reply: Reply) -> Self {
        Response {
            ok: true,
            result: Some(reply),
            error: None,
        }
    }

    /// A refusal saying why.
    pub fn refused(error: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }
}

/// What a successful command produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// A change was applied.
    Changed(ChangeReport),
    /// The running rules.
    Rules {
        /// Generation of the running set.
        generation: u64,
        /// The rules, by name.
        rules: Vec<Rule>,
        /// Rules of the configuration that wait for interfaces that do not exist.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        waiting: Vec<WaitingRule>,
        /// The interfaces the rules name, and whether each exists and runs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        interfaces: Vec<InterfaceState>,
    },
    /// The file was written.
    Saved {
        /// Where.
        path: String,
        /// How many rules.
        rules: usize,
    },
    /// Counters and rates.
    Stats(StatsReport),
    /// The workers.
    Workers {
        /// One entry per worker slot.
        workers: Vec<WorkerReport>,
        /// Rules that no worker holds yet: they wait for interfaces that do not exist.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        waiting: Vec<WaitingRule>,
        /// With `consume_input`, the ingress filter of each input interface.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        consume: Vec<ConsumeFilter>,
    },
}

/// The relay's ingress filter on one input interface (`consume_input`), which drops the frames
/// its rules relay once its receive rings took them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsumeFilter {
    /// The input interface.
    pub interface: String,
    /// Its kernel index.
    pub ifindex: u32,
    /// Whether the filter is installed.
    pub installed: bool,
    /// The (destination, port) keys it drops.
    pub keys: usize,
    /// Why it is not installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The outcome of add, remove or reload.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeReport {
    /// Generation of the running set after the change.
    pub generation: u64,
    /// Rules added.
    pub added: Vec<String>,
    /// Rules removed.
    pub removed: Vec<String>,
    /// Of `removed`, the rules a reload removed because they existed only at run time (added
    /// with `add`, not in the configuration file). Empty for add and remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_only: Vec<String>,
    /// CPUs of live workers that had not confirmed the generation when the answer was sent;
    /// the supervisor keeps resyncing them.
    pub unconfirmed: Vec<u32>,
    /// Of `added`, the rules that wait for interfaces that do not exist yet (kept in the state
    /// file, relayed once the interfaces appear); of `removed`, those that were waiting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
}

/// Counters of one rule or one worker over the relay's life, with rates over the last interval.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rates {
    /// Packets per second (rules: matched; workers: received).
    pub packets_per_second: f64,
    /// Rules: payload bits per second. Workers: frames forwarded per second.
    pub bits_per_second: f64,
}

/// Per rule and per worker counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsReport {
    /// Seconds the rates were measured over.
    pub interval_seconds: f64,
    /// Per rule, by name.
    pub rules: BTreeMap<String, RuleStats>,
    /// Per worker slot.
    pub workers: Vec<WorkerStats>,
}

/// A rule that waits for interfaces that do not exist yet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaitingRule {
    /// The rule.
    pub rule: Rule,
    /// The interfaces it names that do not exist.
    pub missing: Vec<String>,
}

/// One interface a rule names, as netlink told of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceState {
    /// Its name.
    pub name: String,
    /// Its kernel index, while it exists.
    pub index: Option<u32>,
    /// Whether it exists and runs (`IFF_RUNNING`).
    pub up: bool,
    /// Times it went down since the relay started.
    pub downs: u64,
    /// Times it was deleted (or renamed away) since the relay started.
    pub removals: u64,
}

/// One rule's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleStats {
    /// Packets matched since start.
    pub packets: u64,
    /// Payload bytes matched since start.
    pub bytes: u64,
    /// Rates over the last interval.
    pub rates: Rates,
    /// Inspection and storm guard counters, summed over the workers, for a rule that has
    /// stream options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::counters::StreamCount>,
}

/// One worker's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerStats {
    /// CPU of the worker.
    pub cpu: u32,
    /// Every counter since start (all processes of this slot).
    pub counters: crate::counters::WorkerCounters,
    /// Received packets per second and received bits per second over the last interval.
    pub rates: Rates,
    /// This worker's share of the packets all workers received in the interval (0..=1).
    pub share: f64,
}

/// One worker slot.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerReport {
    /// CPU it is pinned to.
    pub cpu: u32,
    /// Process id, when running.
    pub pid: Option<u32>,
    /// `starting`, `ready`, `restarting`, `resyncing`.
    pub state: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Of `restarts`, how many for each reason (`exited`, `unresponsive`, `start_failed`,
    /// `forbidden_syscall`); reasons never seen are left out.
    #[serde(default)]
    pub restart_reasons: BTreeMap<String, u32>,
    /// Generation of the table the worker confirmed.
    pub generation: u64,
    /// Times its table was found to differ from the supervisor's and was repaired.
    pub drift_repairs: u32,
    /// Frames received.
    pub received: u64,
    /// Frames forwarded.
    pub forwarded: u64,
    /// The fanout members whose rings it serves; under shard placement, its shards.
    #[serde(default)]
    pub members: Vec<u32>,
    /// Under shard placement, rules of its shards that no worker serves right now (its worker
    /// is not serving: their packets wait in its rings).
    #[serde(default)]
    pub unserved_rules: u64,
    /// Times its worker exited or was killed.
    #[serde(default)]
    pub outages: u32,
    /// Milliseconds its worker was not serving (starting, restarting), in all.
    #[serde(default)]
    pub down_ms: u64,
    /// The `[[class]]` it belongs to; none for the default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

/// The fields a request of `command` may have besides `version` and `command`.
fn fields(command: &Command) -> &'static [&'static str] {
    match command {
        Command::Add { .. } => &["rule", "interfaces"],
        Command::Remove { .. } => &["name", "key"],
        Command::Save { .. } => &["path"],
        Command::SetWorkers { .. } => &["workers", "class"],
        Command::List | Command::Stats | Command::Workers | Command::Reload => &[],
        #[cfg(feature = "drift-test")]
        Command::DebugCorruptTable { .. } => &["cpu"],
        #[cfg(feature = "drift-test")]
        Command::DebugForbiddenSyscall { .. } => &["cpu"],
    }
}

/// A JSON value as an error message shows it: itself when short, else what kind it is (a
/// refusal never echoes a megabyte back).
fn describe(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.len() <= 40 {
        return text;
    }
    match value {
        serde_json::Value::Array(_) => "an array".into(),
        serde_json::Value::Object(_) => "an object".into(),
        serde_json::Value::String(_) => "a long string".into(),
        _ => "a long number".into(),
    }
}

/// Longest refusal of a request, in characters: enough for what is wrong, too short to echo
/// a long request back.
const MAX_REFUSAL: usize = 400;

/// `text` as one line of at most [`MAX_REFUSAL`] characters: control characters (a newline in a
/// JSON string the request carried) are escaped, the rest is cut with an ellipsis.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    let escaped = text.chars().flat_map(|c| {
        let (plain, escape) = if c.is_control() {
            (None, Some(c.escape_default()))
        } else {
            (Some(c), None)
        };
        plain.into_iter().chain(escape.into_iter().flatten())
    });
    for (count, c) in escaped.enumerate() {
        if count == MAX_REFUSAL {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// Why a request line is refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Longer than [`MAX_REQUEST`].
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    /// Not JSON at all.
    #[error("not a JSON object: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an object (what it is instead).
    #[error("not a JSON object: {0}")]
    NotObject(String),
    /// No `version`.
    #[error("missing \"version\": {VERSION}")]
    NoVersion,
    /// A version this relay does not speak.
    #[error("protocol version {0} is not spoken here (this relay speaks {VERSION})")]
    Version(u64),
    /// A `version` that is not an unsigned integer (what it is instead).
    #[error("\"version\" must be the integer {VERSION}, not {0}")]
    VersionType(String),
    /// Not a command, or a command with fields of the wrong shape.
    #[error("bad request: {0}")]
    Bad(#[source] serde_json::Error),
    /// A field the command does not take.
    #[error("bad request: unknown field \"{field}\": \"{command}\" takes {takes}")]
    UnknownField {
        /// The field.
        field: String,
        /// The command.
        command: String,
        /// The fields it takes, quoted, or "no other field".
        takes: String,
    },
    /// `save` to a relative path.
    #[error(
        "bad request: save: \"{0}\" is not an absolute path; the relay's working directory is \
         not the client's, so give the whole path"
    )]
    RelativeSave(String),
}

impl RequestError {
    /// What the refusal says: one line of at most 400 characters, whatever the request held.
    pub fn refusal(&self) -> String {
        one_line(&self.to_string())
    }
}

/// Parses one request line; [`RequestError::refusal`] says what is wrong with it, on one line.
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    if line.len() > MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    let value: serde_json::Value = serde_json::from_slice(line).map_err(RequestError::NotJson)?;
    let Some(object) = value.as_object() else {
        return Err(RequestError::NotObject(describe(&value)));
    };
    match object.get("version") {
        None => return Err(RequestError::NoVersion),
        Some(version) => match version.as_u64() {
            Some(version) if version == u64::from(VERSION) => {}
            Some(version) => return Err(RequestError::Version(version)),
            None => return Err(RequestError::VersionType(describe(version))),
        },
    }
    let request = Request::deserialize(&value).map_err(RequestError::Bad)?;
    let allowed = fields(&request.command);
    if let Some(unknown) = object.keys().find(|key| {
        !matches!(key.as_str(), "version" | "command") && !allowed.contains(&key.as_str())
    }) {
        let takes = if allowed.is_empty() {
            "no other field".to_owned()
        } else {
            allowed
                .iter()
                .map(|field| format!("\"{field}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let command = object
            .get("command")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        return Err(RequestError::UnknownField {
            field: unknown.clone(),
            command: command.to_owned(),
            takes,
        });
    }
    if let Command::Save { path } = &request.command
        && !Path::new(path).is_absolute()
    {
        return Err(RequestError::RelativeSave(path.clone()));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_refuse_with_reasons() {
        assert_eq!(
            parse_request(br#"{"version":1,"command":"list"}"#).expect("a list request"),
            Request {
                version: 1,
                command: Command::List
            }
        );
        let remove = parse_request(br#"{"version":1,"command":"remove","name":"cam"}"#)
            .expect("valid remove");
        assert!(matches!(remove.command, Command::Remove { name: Some(ref n), .. } if n == "cam"));
        let error = parse_request(br#"{"version":2,"command":"list"}"#)
            .map_err(|error| error.refusal())
            .expect_err("version 2");
        assert!(error.contains("version 2"), "{error}");
        let error = parse_request(br#"{"command":"list"}"#)
            .map_err(|error| error.refusal())
            .expect_err("no version");
        assert!(error.contains("version"), "{error}");
        let error = parse_request(br#"{"version":1,"command":"explode"}"#)
            .map_err(|error| error.refusal())
            .expect_err("unknown");
        assert!(error.contains("explode"), "{error}");
        let error = parse_request(b"\x00\xff garbage")
            .map_err(|error| error.refusal())
            .expect_err("garbage");
        assert!(error.contains("JSON"), "{error}");
        let error = parse_request(br#"{"version":1,"command":"add","rule":{"name":"x"}}"#)
            .map_err(|error| error.refusal())
            .expect_err("incomplete rule");
        assert!(error.contains("input"), "{error}");
    }

    #[test]
    fn a_refusal_is_one_short_line() {
        // Found by fuzz/control: serde's message quoted the unknown command with its newline.
        let found = include_bytes!("../../fuzz-regressions/control-newline-in-command");
        let error = parse_request(found)
            .map_err(|error| error.refusal())
            .expect_err("no such command");
        assert!(error.contains(r"remoscoda\nmm"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        let long = format!(r#"{{"version":1,"command":"{}"}}"#, "x".repeat(100_000));
        let error = parse_request(long.as_bytes())
            .map_err(|error| error.refusal())
            .expect_err("no such command");
        assert!(error.chars().count() <= MAX_REFUSAL + 1, "{error}");
        assert!(error.starts_with("bad request: unknown variant") && error.ends_with('…'));
    }

    #[test]
    fn unknown_fields_are_refused_in_every_request() {
        for command in ["list", "workers", "stats", "reload"] {
            let line = format!(r#"{{"version":1,"command":"{command}","colour":"red"}}"#);
            let error = parse_request(line.as_bytes())
                .map_err(|error| error.refusal())
                .expect_err("an unknown field");
            assert_eq!(
                error,
                format!(
                    "bad request: unknown field \"colour\": \"{command}\" takes no other field"
                )
            );
        }
        let error = parse_request(br#"{"version":1,"command":"remove","name":"a","colour":1}"#)
            .map_err(|error| error.refusal())
            .expect_err("an unknown field");
        assert!(error.contains("colour"), "{error}");
        let error = parse_request(br#"{"version":1,"command":"save","path":"/x","mode":1}"#)
            .map_err(|error| error.refusal())
            .expect_err("an unknown field");
        assert!(
            error.contains("`mode`") && error.contains("`path`"),
            "{error}"
        );
        // What each command does take still parses.
        assert!(parse_request(br#"{"version":1,"command":"remove","key":{"interface":"e","destination":"239.1.1.1","port":1}}"#).is_ok());
        assert!(parse_request(br#"{"version":1,"command":"save","path":"/tmp/x.toml"}"#).is_ok());
    }

    #[test]
    fn a_version_of_the_wrong_type_is_told_apart_from_a_missing_one() {
        let error = parse_request(br#"{"version":"1","command":"list"}"#)
            .map_err(|error| error.refusal())
            .expect_err("a string");
        assert_eq!(error, "\"version\" must be the integer 1, not \"1\"");
        let error = parse_request(br#"{"version":1.5,"command":"list"}"#)
            .map_err(|error| error.refusal())
            .expect_err("a float");
        assert_eq!(error, "\"version\" must be the integer 1, not 1.5");
        let error = parse_request(br#"{"version":-1,"command":"list"}"#)
            .map_err(|error| error.refusal())
            .expect_err("negative");
        assert_eq!(error, "\"version\" must be the integer 1, not -1");
        let error = parse_request(br#"{"version":null,"command":"list"}"#)
            .map_err(|error| error.refusal())
            .expect_err("null");
        assert_eq!(error, "\"version\" must be the integer 1, not null");
        let error = parse_request(br#"{"command":"list"}"#)
            .map_err(|error| error.refusal())
            .expect_err("absent");
        assert_eq!(error, "missing \"version\": 1");
        let error = parse_request(b"[1,2,3]")
            .map_err(|error| error.refusal())
            .expect_err("an array");
        assert_eq!(error, "not a JSON object: [1,2,3]");
        let long = format!("[{}1]", "1,".repeat(100));
        let error = parse_request(long.as_bytes())
            .map_err(|error| error.refusal())
            .expect_err("a long array");
        assert_eq!(error, "not a JSON object: an array");
    }

    #[test]
    fn save_takes_only_absolute_paths() {
        let error = parse_request(br#"{"version":1,"command":"save","path":"saved.toml"}"#)
            .map_err(|error| error.refusal())
            .expect_err("relative");
        assert!(
            error.contains("\"saved.toml\" is not an absolute path"),
            "{error}"
        );
        let error = parse_request(br#"{"version":1,"command":"save","path":""}"#)
            .map_err(|error| error.refusal())
            .expect_err("empty");
        assert!(error.contains("not an absolute path"), "{error}");
    }

    #[test]
    fn responses_round_trip() {
        let response = Response::ok(Reply::Changed(ChangeReport {
            generation: 3,
            added: vec!["a".into()],
            ..ChangeReport::default()
        }));
        let text = serde_json::to_string(&response).expect("serialisable");
        assert!(!text.contains("runtime_only"), "empty, so left out: {text}");
        let back: Response = serde_json::from_str(&text).expect("parses back");
        assert_eq!(back, response);
        let reload = Response::ok(Reply::Changed(ChangeReport {
            generation: 4,
            removed: vec!["extra".into()],
            runtime_only: vec!["extra".into()],
            ..ChangeReport::default()
        }));
        let text = serde_json::to_string(&reload).expect("serialisable");
        assert!(text.contains(r#""runtime_only":["extra"]"#), "{text}");
        let back: Response = serde_json::from_str(&text).expect("parses back");
        assert_eq!(back, reload);
    }
}
