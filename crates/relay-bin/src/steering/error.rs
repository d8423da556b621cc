//! Why `check-steering` could not judge, and why the RPS fallback leaves an interface alone.

use crate::config::ConfigError;
use crate::cpus::CpuChoiceError;
use fanout_core::iface::IfaceError;
use fanout_core::steering::SteeringError;
use std::path::PathBuf;

/// Why `check-steering` gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum CheckSteeringError {
    /// The `--config` file could not be read or parsed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The worker set names no usable CPU.
    #[error("{setting}: {source}")]
    Workers {
        /// Where the worker set came from: `--workers`, `--cpus`, or the file's `relay.workers`.
        setting: String,
        /// Why no CPUs can be chosen.
        source: CpuChoiceError,
    },
    /// The interface's steering facts could not be read.
    #[error(transparent)]
    Steering(#[from] SteeringError),
    /// The report could not be written as JSON.
    #[error("writing the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Why the sysfs the relay would write RPS masks through may not be its own namespace's.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The interface is not in the relay's namespace.
    #[error("not found in the relay's network namespace: {0}")]
    NotHere(#[source] IfaceError),
    /// The interface's index or address could not be read from sysfs.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The sysfs file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Sysfs shows another interface of that name.
    #[error(
        "{sys} shows another network namespace than the relay's (index {there_index}, address \
         {there_mac} there; index {here_index}, address {here_mac} here); run the relay with \
         `ip netns exec`, which mounts the namespace's sysfs"
    )]
    Elsewhere {
        /// The sysfs root.
        sys: PathBuf,
        /// The interface's index in sysfs.
        there_index: String,
        /// Its MAC address in sysfs.
        there_mac: String,
        /// Its index in the relay's namespace.
        here_index: u32,
        /// Its MAC address in the relay's namespace (`none` for an interface without one).
        here_mac: String,
    },
}
