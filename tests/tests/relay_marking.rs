//! What an output writes into the IPv4 header, read from the datagrams as they arrive at the
//! receiver (`IP_RECVTOS` and the sender's address of each): an output's `dscp` replaces the
//! DSCP (and clears ECN), an output without one keeps the sender's DSCP, and an explicit
//! `source` is the address the datagrams come from, through a transmit ring (a group) and
//! through a socket (a unicast receiver). The receiving kernel checks every header and UDP
//! checksum, so a datagram whose rewrite left a checksum stale never arrives.

use std::time::Duration;

use fanout_relay_tests::relay::{
    Datagram, RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged};
use nix::sys::socket::{setsockopt, sockopt};

/// Datagrams per stream.
const N: u32 = 300;
/// Datagrams per second.
const PPS: u32 = 500;
/// The second address of the relay's output interface, named as the outputs' source.
const EXPLICIT_SOURCE: &str = "203.0.113.77";
/// What the sender writes: DSCP 10 (AF11) and ECT(0).
const SENT_TOS: u8 = (10 << 2) | 0b10;

const CONFIG: &str = r#"
[[rule]]
name = "marked"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [
  { interface = "rout0", destination = "239.2.2.2", port = 6000, dscp = 46, source = "203.0.113.77" },
  { interface = "rout0", destination = "239.2.2.3", port = 6001 },
  { interface = "rout0", destination = "203.0.113.2", port = 7000, dscp = 34, source = "203.0.113.77" },
]
"#;

/// Checks that `got` is the whole stream and that every datagram came with `tos` from `from`.
fn expect(label: &str, got: &[Datagram], tos: u8, from: &str) {
    if let Err(problem) = check_stream(got, 1, 0..N) {
        panic!("{label}: {problem}");
    }
    let wrong_tos: Vec<Option<u8>> = got
        .iter()
        .map(|d| d.tos)
        .filter(|&t| t != Some(tos))
        .take(5)
        .collect();
    assert!(
        wrong_tos.is_empty(),
        "{label}: datagrams arrived with TOS {wrong_tos:?}, not {tos:#04x}"
    );
    let wrong_source: Vec<String> = got
        .iter()
        .filter_map(|d| d.from)
        .map(|a| a.ip().to_string())
        .filter(|ip| ip != from)
        .take(5)
        .collect();
    assert!(
        wrong_source.is_empty() && got.iter().all(|d| d.from.is_some()),
        "{label}: datagrams came from {wrong_source:?}, not {from}"
    );
}

#[test]
fn dscp_and_an_explicit_source_arrive_as_configured() {
    if !privileged("dscp_and_an_explicit_source_arrive_as_configured") {
        return;
    }
    let topo = quiet_topology("marking");
    topo.relay
        .add_addr(Topology::RELAY_OUT_IF, &format!("{EXPLICIT_SOURCE}/24"));
    let relay = RelayProcess::start(&topo.relay, CONFIG, &[]);
    let timeout = Duration::from_secs(30);
    let marked = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, timeout);
    let kept = UdpReceiver::join(&topo.receiver, "239.2.2.3:6001", Topology::RECEIVER_ADDR)
        .collect(N as usize, timeout);
    let unicast =
        UdpReceiver::bind(&topo.receiver, "203.0.113.2:7000").collect(N as usize, timeout);
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    setsockopt(sender.socket(), sockopt::Ipv4Tos, &i32::from(SENT_TOS))
        .expect("IP_TOS on the sender");
    sender.send_numbered("239.1.1.1:5000", 1, 0..N, PPS);
    let (marked, kept, unicast) = (marked.finish(), kept.finish(), unicast.finish());
    let exit = relay.stop();

    // DSCP 46 (EF) replaces 10; ECN is cleared, since the relay ends the sender's path.
    expect("ring output, dscp 46", &marked, 46 << 2, EXPLICIT_SOURCE);
    expect(
        "ring output, no dscp",
        &kept,
        SENT_TOS & 0xfc,
        Topology::RELAY_OUT_ADDR,
    );
    expect("socket output, dscp 34", &unicast, 34 << 2, EXPLICIT_SOURCE);
    exit.summary.assert_relayed(u64::from(N), 3 * u64::from(N));
}
