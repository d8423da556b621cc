//! Driving the built `fanout-relay` binary in a namespace, and the traffic around it.
//!
//! The relay's end-to-end tests all follow one script: build a [`Topology`] (quiet: see
//! [`quiet_topology`]), start [`RelayProcess`] in its relay namespace with a configuration, open
//! receivers and captures ([`UdpReceiver`], [`Capture`]), send numbered datagrams
//! ([`UdpSender`]), stop the relay with SIGTERM and compare what arrived, byte for byte, and the
//! relay's exit [`Summary`] with what was sent. Every wait here has a deadline, so a relay that
//! hangs or never relays fails its test instead of stalling the run.
//!
//! ```no_run
//! use fanout_relay_tests::privileged;
//! use fanout_relay_tests::relay::{RelayProcess, UdpReceiver, UdpSender, quiet_topology};
//! use std::time::Duration;
//!
//! if !privileged("example") {
//!     return;
//! }
//! let topo = quiet_topology("ex");
//! let relay = RelayProcess::start(&topo.relay, "[[rule]]\n...", &[]);
//! let rx = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", "203.0.113.2")
//!     .collect(100, Duration::from_secs(10));
//! UdpSender::new(&topo.sender, "192.0.2.10", 4).send_numbered("239.1.1.1:5000", 1, 0..100, 500);
//! let received = rx.finish();
//! let exit = relay.stop();
//! assert_eq!(exit.summary.total().forwarded, 100);
//! # drop(received);
//! ```

mod process;
mod stream;
mod summary;
mod traffic;

pub use process::{ConfigFile, RelayExit, RelayProcess, relay_binary, worker_pids};
pub use stream::Stream;
pub use summary::{Summary, WorkerRow};
pub use traffic::{
    Capture, Collector, Datagram, UdpReceiver, UdpSender, check_stream, payload, payload_id,
};

use crate::{Netns, Topology};

/// A [`Topology`] in which nothing but the test's own traffic crosses the links.
///
/// IPv6 is turned off in all three namespaces, which silences router solicitations, duplicate
/// address detection and MLD reports: the relay counts every frame it receives (an IPv6 frame as
/// `not_ip` under `malformed`), so exact counter checks need links without them.
pub fn quiet_topology(tag: &str) -> Topology {
    let topo = Topology::new(tag);
    for ns in [&topo.sender, &topo.relay, &topo.receiver] {
        quiet(ns);
    }
    topo
}

/// Turns IPv6 off on every present and future interface of `ns` (see [`quiet_topology`]).
pub fn quiet(ns: &Netns) {
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
}

/// A number a worker logs when it stops, from its last `syscalls` line: `syscalls polls=P
/// sleeps=S kicks=K ... spin_hits=H segmented=F segmented_datagrams=D`; `None` when absent.
pub fn worker_logged(log: &str, key: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|line| line.contains(": syscalls "))?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}
