//! The demo's network: who sits where, which rules the relay gets, and the namespaces and the
//! configuration file that make it real for one run.
//!
//! ```text
//!  sender ns                  relay ns                              receiver 1 ns
//!  snd0 192.0.2.10/24 --veth-- rin0 198.51.100.1/24
//!                              rout1 10.1.1.1/24   --veth--         rx1 10.1.1.2/24
//!                              rout2 10.2.2.1/24   --veth--         rx2 10.2.2.2/24
//!                                                                   receiver 2 ns
//! ```
//!
//! Everything the demo prints, sends, joins and checks comes from the constants here, so the
//! configuration file and the receivers cannot disagree.

use crate::netns::{Netns, NetnsError, Veth, veth_pair};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// Prefix of the demo's namespace names (`frdemo-<role>-<pid>-<n>`).
pub(super) const PREFIX: &str = "frdemo";

/// The sender's interface and its source address: TEST-NET-1, on no subnet the relay knows.
pub(super) const SENDER_IF: &str = "snd0";
/// See [`SENDER_IF`].
pub(super) const SENDER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The relay's input interface.
pub(super) const RELAY_IN_IF: &str = "rin0";
/// The relay's input address: TEST-NET-2, so the relay has no route back to the sender.
pub(super) const RELAY_IN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// One receiver: a namespace linked to its own output interface of the relay.
#[derive(Debug)]
pub(super) struct ReceiverSpec {
    /// Short name, also the receiver's interface name.
    pub(super) name: &'static str,
    /// The relay's interface towards this receiver.
    pub(super) relay_if: &'static str,
    /// The relay's address on that link: the source of every relayed packet.
    pub(super) relay_addr: Ipv4Addr,
    /// The receiver's address, on which it joins the groups.
    pub(super) addr: Ipv4Addr,
}

/// The two receivers.
pub(super) const RECEIVERS: [ReceiverSpec; 2] = [
    ReceiverSpec {
        name: "rx1",
        relay_if: "rout1",
        relay_addr: Ipv4Addr::new(10, 1, 1, 1),
        addr: Ipv4Addr::new(10, 1, 1, 2),
    },
    ReceiverSpec {
        name: "rx2",
        relay_if: "rout2",
        relay_addr: Ipv4Addr::new(10, 2, 2, 1),
        addr: Ipv4Addr::new(10, 2, 2, 2),
    },
];

/// One relayed destination of a stream: a group and port on one receiver's link.
#[derive(Debug)]
pub(super) struct Leg {
    /// Index into [`RECEIVERS`].
    pub(super) receiver: usize,
    /// The group and port the relay rewrites to.
    pub(super) to: SocketAddrV4,
}

/// A stream the sender sends, and the rule that relays it.
#[derive(Debug)]
pub(super) struct StreamSpec {
    /// The rule's name in the configuration (and in the relay's counters).
    pub(super) rule: &'static str,
    /// The group and port the sender sends to.
    pub(super) input: SocketAddrV4,
    /// Where the relay sends it.
    pub(super) legs: &'static [Leg],
}

const fn group(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port)
}

/// The streams of the demo: a group and port rewrite, and a fan-out to two links.
pub(super) const STREAMS: [StreamSpec; 2] = [
    StreamSpec {
        rule: "rewrite",
        input: group(239, 1, 1, 1, 5000),
        legs: &[Leg {
            receiver: 0,
            to: group(239, 2, 2, 2, 6000),
        }],
    },
    StreamSpec {
        rule: "fanout",
        input: group(239, 1, 1, 2, 5001),
        legs: &[
            Leg {
                receiver: 0,
                to: group(239, 3, 3, 3, 7000),
            },
            Leg {
                receiver: 1,
                to: group(239, 4, 4, 4, 7000),
            },
        ],
    },
];

/// A rule used only to learn that the relay relays, before the counted streams start.
pub(super) const PROBE: StreamSpec = StreamSpec {
    rule: "probe",
    input: group(239, 1, 1, 9, 5009),
    legs: &[Leg {
        receiver: 0,
        to: group(239, 9, 9, 9, 5009),
    }],
};

/// A synthetic MPEG-TS stream (module `health`) through a rule with `inspect = "mpegts"`,
/// whose health the relay counts.
pub(super) const VIDEO: StreamSpec = StreamSpec {
    rule: "video",
    input: group(239, 1, 1, 20, 5020),
    legs: &[Leg {
        receiver: 0,
        to: group(239, 20, 20, 20, 7020),
    }],
};

/// TTL of the relayed packets.
const OUTPUT_TTL: u8 = 4;

/// Every leg of every stream, in the order of the demo's tables: (stream index, leg).
pub(super) fn legs() -> impl Iterator<Item = (usize, &'static Leg)> {
    STREAMS
        .iter()
        .enumerate()
        .flat_map(|(index, stream)| stream.legs.iter().map(move |leg| (index, leg)))
}

/// The configuration file of the demo's relay, with `workers` worker processes.
pub(super) fn config_text(workers: usize) -> String {
    let mut text = String::from(
        "# fanout-relay demo: written for one run, removed when it ends.\n\
         [relay]\n",
    );
    crate::text::append(&mut text, |text| {
        // Steering keeps each flow on one worker, always (no rollover to another when its ring
        // fills up), which the inspected MPEG-TS stream needs to be counted exactly.
        writeln!(text, "workers = {workers}\nfanout = \"steer\"\n")?;
        // Small rings (4 MiB): the demo's streams are slow, and at most two workers have one
        // each. At a trickle the kernel hands blocks over by their timer, so a ring holds
        // block_count x retire_timeout_ms of traffic while its worker waits for a CPU: two
        // seconds here, so that a worker a busy machine leaves waiting drops nothing (a drop
        // would show in the MPEG-TS stream's health line). The 32 ms this may add to a packet's
        // way does not matter to the demo.
        text.push_str("[ring]\nblock_size = 65536\nblock_count = 64\nretire_timeout_ms = 32\n");
        for stream in STREAMS.iter().chain([&PROBE, &VIDEO]) {
            let inspect = if stream.rule == VIDEO.rule {
                "inspect = \"mpegts\"\n"
            } else {
                ""
            };
            writeln!(
                text,
                "\n[[rule]]\nname = \"{}\"\n{inspect}input = {{ interface = \"{RELAY_IN_IF}\", destination = \"{}\", port = {} }}\noutputs = [",
                stream.rule,
                stream.input.ip(),
                stream.input.port()
            )?;
            for leg in stream.legs {
                writeln!(
                    text,
                    "  {{ interface = \"{}\", destination = \"{}\", port = {}, ttl = {OUTPUT_TTL} }},",
                    RECEIVERS[leg.receiver].relay_if,
                    leg.to.ip(),
                    leg.to.port()
                )?;
            }
            text.push_str("]\n");
        }
        Ok(())
    });
    text
}

/// The namespaces and links of one run; dropping it removes them (links first).
#[derive(Debug)]
pub(super) struct World {
    links: Vec<Veth>,
    /// Sends the streams from [`SENDER_ADDR`].
    pub(super) sender: Netns,
    /// Runs the relay.
    pub(super) relay: Netns,
    /// One per entry of [`RECEIVERS`].
    pub(super) receivers: Vec<Netns>,
}

impl World {
    /// Creates the namespaces, links, addresses and routes of the picture above.
    pub(super) fn build() -> Result<World, NetnsError> {
        let sender = quiet(Netns::new(PREFIX, "snd")?)?;
        let relay = quiet(Netns::new(PREFIX, "relay")?)?;
        let mut world = World {
            links: Vec::new(),
            sender,
            relay,
            receivers: Vec::new(),
        };
        for spec in &RECEIVERS {
            world.receivers.push(quiet(Netns::new(PREFIX, spec.name)?)?);
        }

        let link = veth_pair(&world.sender, SENDER_IF, &world.relay, RELAY_IN_IF)?;
        world.links.push(link);
        world
            .sender
            .add_addr(SENDER_IF, &format!("{SENDER_ADDR}/24"))?;
        world.sender.add_multicast_route(SENDER_IF)?;
        world
            .relay
            .add_addr(RELAY_IN_IF, &format!("{RELAY_IN_ADDR}/24"))?;
        // What a careful router does, and what makes the sender's stream invisible to sockets.
        world.relay.sysctl("net.ipv4.conf.all.rp_filter", "1")?;
        world
            .relay
            .sysctl(&format!("net.ipv4.conf.{RELAY_IN_IF}.rp_filter"), "1")?;

        for (spec, ns) in RECEIVERS.iter().zip(&world.receivers) {
            let link = veth_pair(&world.relay, spec.relay_if, ns, spec.name)?;
            world.links.push(link);
            world
                .relay
                .add_addr(spec.relay_if, &format!("{}/24", spec.relay_addr))?;
            ns.add_addr(spec.name, &format!("{}/24", spec.addr))?;
            ns.add_multicast_route(spec.name)?;
        }
        Ok(world)
    }

    /// Names of all the namespaces, for the operator.
    pub(super) fn names(&self) -> Vec<&str> {
        [&self.sender, &self.relay]
            .into_iter()
            .chain(&self.receivers)
            .map(Netns::name)
            .collect()
    }
}

/// Turns IPv6 off in `ns`, so that router solicitations and MLD reports do not show up in the
/// relay's counters as frames it had to refuse. A kernel without IPv6 is already quiet.
fn quiet(ns: Netns) -> Result<Netns, NetnsError> {
    for key in [
        "net.ipv6.conf.all.disable_ipv6",
        "net.ipv6.conf.default.disable_ipv6",
    ] {
        match ns.sysctl(key, "1") {
            Err(NetnsError::Sysctl { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(ns)
}

/// The configuration file of one run, under the temporary directory, removed on drop.
#[derive(Debug)]
pub(super) struct TempConfig {
    path: PathBuf,
}

impl TempConfig {
    /// Writes `text` to `frdemo-<pid>.toml` in the temporary directory.
    pub(super) fn write(text: &str) -> std::io::Result<TempConfig> {
        let path = std::env::temp_dir().join(format!("{PREFIX}-{}.toml", std::process::id()));
        std::fs::write(&path, text)?;
        Ok(TempConfig { path })
    }

    /// Where it is.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            log::warn!("cannot remove {}: {error}", self.path.display());
        }
        // The relay names its default control socket and state file after the configuration
        // file; they belong to this run, so they go with it (the relay itself removes its
        // socket when it stops, and writes a state file only for run-time changes).
        let defaults = crate::config::RelaySection::default();
        for derived in [
            defaults.control_socket_for(&self.path),
            defaults.state_file_for(&self.path),
        ] {
            // Most runs leave neither file behind: only another error is worth a word.
            if let Err(error) = std::fs::remove_file(&derived)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!("demo: cannot remove {}: {error}", derived.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigFile;

    #[test]
    fn the_configuration_says_what_the_receivers_expect() {
        let config = ConfigFile::parse(&config_text(2)).expect("the demo's config parses");
        let rules = config.to_rules();
        assert_eq!(rules.len(), STREAMS.len() + 2);
        for (rule, stream) in rules.iter().zip(STREAMS.iter().chain([&PROBE, &VIDEO])) {
            assert_eq!(rule.name, stream.rule);
            let inspect =
                (stream.rule == VIDEO.rule).then_some(relay_rules::inspect::Inspect::MpegTs);
            assert_eq!(rule.inspect, inspect, "only the video rule inspects");
            assert_eq!(rule.input.interface, RELAY_IN_IF);
            assert_eq!(rule.input.destination, *stream.input.ip());
            assert_eq!(rule.input.port, stream.input.port());
            assert_eq!(rule.outputs.len(), stream.legs.len());
            for (output, leg) in rule.outputs.iter().zip(stream.legs) {
                assert_eq!(output.interface, RECEIVERS[leg.receiver].relay_if);
                assert_eq!(output.destination, *leg.to.ip());
                assert_eq!(output.port, leg.to.port());
                assert_eq!(output.ttl, relay_rules::Ttl::Fixed(OUTPUT_TTL));
            }
        }
        assert_eq!(
            config.relay.workers,
            crate::config::WorkersSetting::Count(2)
        );
    }

    #[test]
    fn the_demo_shows_a_rewrite_and_a_fan_out_to_two_links() {
        let rewrite = &STREAMS[0];
        assert_ne!(rewrite.input, rewrite.legs[0].to);
        assert_ne!(rewrite.input.port(), rewrite.legs[0].to.port());
        let fanout = &STREAMS[1];
        assert_eq!(fanout.legs.len(), 2);
        assert_ne!(fanout.legs[0].receiver, fanout.legs[1].receiver);
        assert_eq!(legs().count(), 3);
        // The probe must never be counted as one of the streams.
        assert!(legs().all(|(_, leg)| leg.to != PROBE.legs[0].to));
        for name in [SENDER_IF, RELAY_IN_IF]
            .into_iter()
            .chain(RECEIVERS.iter().flat_map(|r| [r.name, r.relay_if]))
        {
            assert!(name.len() <= crate::netns::IFNAME_MAX, "{name}");
        }
    }
}
