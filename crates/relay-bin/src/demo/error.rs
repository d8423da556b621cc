//! Why the demonstration did not show every packet arriving intact.

use super::RelayError;
use super::traffic::SocketError;
use crate::netns::NetnsError;
use std::fmt;
use std::time::Duration;

/// Why the demonstration did not show every packet arriving.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Namespaces need privileges.
    #[error(
        "the demo creates network namespaces and veth pairs, which needs root: run it as root \
         (for example `sudo fanout-relay demo`, or `sudo scripts/demo` in the source tree)"
    )]
    NotRoot,
    /// `--packets` or `--rate` is zero.
    #[error("--packets and --rate must be at least 1")]
    NothingToSend,
    /// A namespace, link or address could not be set up.
    #[error("setting up the namespaces: {0}")]
    Netns(#[from] NetnsError),
    /// A socket of the sender or a receiver could not be made.
    #[error("opening sockets: {0}")]
    Socket(#[from] SocketError),
    /// The relay could not be started, or stopped before the demo ended.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// Something local failed (the configuration file, the signal mask, ...).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The relay ran, but a probe sent through it never arrived.
    #[error(
        "the relay started but relayed nothing within {0:?} (a probe sent through it never arrived)"
    )]
    NoProbe(Duration),
    /// Ctrl-C (or SIGTERM) ended the demo early; everything was removed.
    #[error("interrupted; everything the demo made has been removed")]
    Interrupted,
    /// The relay's stream health counters of the MPEG-TS stream are not what was sent.
    #[error("the stream health counters are wrong: {0}")]
    Health(String),
    /// Packets were lost, duplicated or damaged.
    #[error("not every packet arrived intact: {0}")]
    Incomplete(#[source] Shortfall),
}

/// What fell short, one problem per stream or receiver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Joined(.0))]
pub struct Shortfall(pub Vec<Problem>);

/// One stream that was not sent in full, or one receiver that did not get its stream once and
/// intact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The sender stopped early (interrupted, or its socket refused).
    #[error("{rule}: only {sent} of {planned} sent")]
    Unsent {
        /// The stream's rule.
        rule: &'static str,
        /// Packets sent.
        sent: u64,
        /// Packets planned.
        planned: u64,
    },
    /// A receiver got fewer packets than planned.
    #[error("{leg}: {lost} of {planned} lost")]
    Lost {
        /// The rule and receiver (`fanout to rx1:239.3.3.3`).
        leg: String,
        /// Packets that never arrived.
        lost: u64,
        /// Packets planned.
        planned: u64,
    },
    /// A receiver got some packets more than once.
    #[error("{leg}: {count} duplicates")]
    Duplicates {
        /// The rule and receiver.
        leg: String,
        /// Packets received again.
        count: u64,
    },
    /// A receiver got packets that were not the demo's or were damaged.
    #[error("{leg}: {count} damaged or foreign")]
    Damaged {
        /// The rule and receiver.
        leg: String,
        /// Such packets.
        count: u64,
    },
}

/// The problems, separated by `; `.
struct Joined<'a>(&'a [Problem]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
