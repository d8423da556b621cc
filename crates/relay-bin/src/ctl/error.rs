//! Why a `ctl` command failed: the socket, the request the command line makes, or the answer.

use crate::config::{ConfigError, ParseError, RUN_DIR};
use std::path::{Path, PathBuf};

/// Why a `ctl` command failed; its text is what `ctl` prints before exiting with status 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The `--config` file, which names the socket, could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No socket given and none in the default directory.
    #[error(
        "no relay control socket in {RUN_DIR}: is the relay running? (or give --socket / --config)"
    )]
    NoSocket,
    /// No socket given, and the default directory could not be read to look for one.
    #[error(
        "cannot look for a relay control socket in {RUN_DIR}: {0} (or give --socket / --config)"
    )]
    RunDir(#[source] std::io::Error),
    /// No socket given and several in the default directory.
    #[error("several relays run here ({}): say which with --socket or --config", list(.0))]
    SeveralSockets(Vec<PathBuf>),
    /// The relay could not be reached, or its answer not read.
    #[error("{socket}: {source}")]
    Call {
        /// The control socket.
        socket: PathBuf,
        /// The connect, write or read error.
        source: std::io::Error,
    },
    /// The command line could not be made into a request.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The answer could not be printed as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The relay refused the request; its reason.
    #[error("{0}")]
    Refused(String),
    /// `top` asked for the stats and got another answer.
    #[error("the relay answered stats with something else")]
    NotStats,
    /// `top` could not write to standard output (a closed pipe, a full disk).
    #[error("standard output: {0}")]
    Stdout(#[source] std::io::Error),
}

/// The paths, comma separated.
fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the command line could not be made into a request; each names the argument or file.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// `ctl add` with neither form of a rule.
    #[error("add takes NAME INPUT OUTPUT... or --toml FILE (see `ctl add --help`)")]
    AddForm,
    /// `ctl save FILE`: the path could not be made absolute (no working directory).
    #[error("{}: {source}", path.display())]
    Absolute {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `ctl add --toml FILE`: the file could not be read.
    #[error("{}: {source}", shown(path))]
    Read {
        /// The file (`-`: standard input).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `ctl add --toml FILE`: the file does not parse.
    #[error("{}: {source}", shown(path))]
    Parse {
        /// The file (`-`: standard input).
        path: PathBuf,
        /// What is wrong and where.
        source: ParseError,
    },
    /// `ctl add --toml FILE`: the file holds no rule, or more than one.
    #[error("{}: expected exactly one [[rule]], found {found}", shown(path))]
    RuleCount {
        /// The file (`-`: standard input).
        path: PathBuf,
        /// How many it holds.
        found: usize,
    },
    /// An input, output or key argument.
    #[error(transparent)]
    Argument(#[from] ArgError),
}

/// `stdin` for `-`, the path otherwise.
fn shown(path: &Path) -> String {
    if path == Path::new("-") {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Why an input (`IFACE:ADDRESS:PORT[@SOURCE]`) or output
/// (`IFACE:ADDRESS:PORT[,ttl=N][,source=A][,dscp=N][,vlan=N]`) argument is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// Not three parts separated by `:`, or no interface.
    #[error("`{text}`: expected INTERFACE:ADDRESS:PORT")]
    Endpoint {
        /// The endpoint as written.
        text: String,
    },
    /// The port is not a number from 0 to 65535.
    #[error("`{text}`: `{port}` is not a UDP port")]
    Port {
        /// The endpoint as written.
        text: String,
        /// The port as written.
        port: String,
    },
    /// An address is not a dotted IPv4 address.
    #[error("`{text}` is not an IPv4 {what}")]
    Address {
        /// The address as written.
        text: String,
        /// `address` (the destination) or `source`.
        what: &'static str,
    },
    /// An output option without `=`.
    #[error("`{option}`: expected key=value (ttl, source, dscp, vlan)")]
    NotKeyValue {
        /// The option as written.
        option: String,
    },
    /// An output option whose value is not a number, or too large for the option.
    #[error("`{option}`: {key} must be a number from {min} to {max}")]
    OutOfRange {
        /// The option as written.
        option: String,
        /// `ttl`, `dscp` or `vlan`.
        key: &'static str,
        /// The smallest value a rule may have (a smaller one is refused when the rule is
        /// checked).
        min: u32,
        /// The largest value a rule may have.
        max: u32,
    },
    /// An output option of another name.
    #[error("`{option}`: unknown output option (ttl, source, dscp, vlan)")]
    UnknownOption {
        /// The option as written.
        option: String,
    },
}
