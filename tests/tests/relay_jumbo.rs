//! Jumbo frames: with an MTU of 9000 on every link, datagrams of 8,972 bytes (the most a
//! 9,000-byte IPv4 packet carries) are relayed byte for byte through TPACKET_V3 and V2 receive
//! rings, with and without `tx_gso`, to a group (transmit ring) and to a unicast receiver
//! (socket), with no `[ring]` size set: the rings follow the interfaces' MTU. A V2 ring whose
//! `frame_size` is set too small clamps such frames; they are counted as `ring_truncated` and
//! never relayed, while small datagrams still are, and `check-config` warns of the setting.

use std::time::Duration;

use fanout_relay_tests::relay::{
    ConfigFile, Datagram, RelayProcess, UdpReceiver, UdpSender, quiet_topology, relay_binary,
    worker_logged,
};
use fanout_relay_tests::{Topology, privileged};

/// The MTU of every link.
const MTU: u32 = 9000;
/// UDP payload of a full-size datagram: the MTU less the IPv4 and UDP headers.
const JUMBO: usize = MTU as usize - 20 - 8;
/// Datagrams per run.
const N: u32 = 200;
/// Sent back to back, then a pause, so that a transmit batch holds several.
const BURST: u32 = 10;
const PAUSE: Duration = Duration::from_millis(20);
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Datagram `seq` of `len` bytes: its number, then filler derived from it.
fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut bytes = seq.to_be_bytes().to_vec();
    bytes.extend((4..len).map(|i| (i as u32 * 31 + seq * 17 + (i >> 8) as u32) as u8));
    bytes
}

/// A topology whose four interfaces have an MTU of [`MTU`].
fn jumbo_topology(tag: &str) -> Topology {
    let topo = quiet_topology(tag);
    topo.sender.set_mtu(Topology::SENDER_IF, MTU);
    topo.relay.set_mtu(Topology::RELAY_IN_IF, MTU);
    topo.relay.set_mtu(Topology::RELAY_OUT_IF, MTU);
    topo.receiver.set_mtu(Topology::RECEIVER_IF, MTU);
    topo
}

fn config(ring: &str) -> String {
    format!(
        "[ring]\n{ring}\n\
         [[rule]]\nname = \"jumbo\"\n\
         input = {{ interface = \"rin0\", destination = \"239.1.1.1\", port = 5000 }}\n\
         outputs = [\n\
           {{ interface = \"rout0\", destination = \"239.2.2.2\", port = 6000 }},\n\
           {{ interface = \"rout0\", destination = \"203.0.113.2\", port = 7000 }},\n\
         ]\n"
    )
}

/// Sends `seqs` to the rule's input in bursts, each datagram `len(seq)` bytes.
fn send(topo: &Topology, seqs: std::ops::Range<u32>, len: impl Fn(u32) -> usize) {
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    for seq in seqs {
        sender
            .socket()
            .send_to(&payload(seq, len(seq)), "239.1.1.1:5000")
            .unwrap_or_else(|e| panic!("send datagram {seq} ({} bytes): {e}", len(seq)));
        if seq % BURST == BURST - 1 {
            std::thread::sleep(PAUSE);
        }
    }
}

/// Checks that `got` holds exactly `seqs`, once each, every one as [`payload`] made it.
fn expect_exact(label: &str, got: &[Datagram], seqs: &[u32], len: impl Fn(u32) -> usize) {
    let mut arrived: Vec<u32> = got
        .iter()
        .map(|datagram| {
            let seq = u32::from_be_bytes(datagram.payload[..4].try_into().unwrap_or_default());
            assert!(
                datagram.payload == payload(seq, len(seq)),
                "{label}: datagram {seq} arrived with {} bytes, not the {} sent, or changed",
                datagram.payload.len(),
                len(seq)
            );
            seq
        })
        .collect();
    arrived.sort_unstable();
    assert_eq!(arrived, seqs, "{label}: not every datagram, once");
}

/// Relays [`N`] full-size datagrams through a relay with `ring` settings; checks both outputs.
fn relay_jumbo(tag: &str, ring: &str) {
    let topo = jumbo_topology(tag);
    let relay = RelayProcess::start(&topo.relay, &config(ring), &["--workers", "1"]);
    let group = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, RECEIVE_TIMEOUT);
    let unicast =
        UdpReceiver::bind(&topo.receiver, "203.0.113.2:7000").collect(N as usize, RECEIVE_TIMEOUT);
    send(&topo, 0..N, |_| JUMBO);
    let (group, unicast) = (group.finish(), unicast.finish());
    let exit = relay.stop();
    let all: Vec<u32> = (0..N).collect();
    expect_exact(&format!("{ring}: group output"), &group, &all, |_| JUMBO);
    expect_exact(&format!("{ring}: socket output"), &unicast, &all, |_| JUMBO);
    exit.summary.assert_relayed(u64::from(N), 2 * u64::from(N));
    assert_eq!(
        exit.summary.rule_bytes("jumbo"),
        u64::from(N) * JUMBO as u64,
        "{ring}: the rule's payload bytes"
    );
    assert!(
        exit.summary.malformed_by_reason.is_empty(),
        "{ring}: {:#?}",
        exit.summary
    );
    eprintln!(
        "{ring:?}: segmented frames {:?}, datagrams in them {:?}",
        worker_logged(&exit.log, "segmented"),
        worker_logged(&exit.log, "segmented_datagrams")
    );
}

#[test]
fn jumbo_datagrams_through_v3_rings_with_tx_gso() {
    if privileged("jumbo_datagrams_through_v3_rings_with_tx_gso") {
        relay_jumbo("jv3g", "version = \"v3\"\ntx_gso = true");
    }
}

#[test]
fn jumbo_datagrams_through_v3_rings_without_tx_gso() {
    if privileged("jumbo_datagrams_through_v3_rings_without_tx_gso") {
        relay_jumbo("jv3", "version = \"v3\"\ntx_gso = false");
    }
}

#[test]
fn jumbo_datagrams_through_v2_rings_with_tx_gso() {
    if privileged("jumbo_datagrams_through_v2_rings_with_tx_gso") {
        relay_jumbo("jv2g", "version = \"v2\"\ntx_gso = true");
    }
}

#[test]
fn jumbo_datagrams_through_v2_rings_without_tx_gso() {
    if privileged("jumbo_datagrams_through_v2_rings_without_tx_gso") {
        relay_jumbo("jv2", "version = \"v2\"\ntx_gso = false");
    }
}

/// V2 slots of 2,048 bytes hold frames of up to 1,982 bytes.
const SMALL_SLOTS: &str = "version = \"v2\"\nframe_size = 2048";
/// Payload of the datagrams that fit.
const SMALL: usize = 1000;

#[test]
fn frames_longer_than_a_set_frame_size_are_counted_and_never_relayed() {
    if !privileged("frames_longer_than_a_set_frame_size_are_counted_and_never_relayed") {
        return;
    }
    let topo = jumbo_topology("jtrunc");
    let relay = RelayProcess::start(&topo.relay, &config(SMALL_SLOTS), &["--workers", "1"]);
    // Even datagrams are full size, odd ones small.
    let len = |seq: u32| if seq.is_multiple_of(2) { JUMBO } else { SMALL };
    let small: Vec<u32> = (0..N).filter(|seq| seq % 2 == 1).collect();
    let group = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(small.len(), RECEIVE_TIMEOUT);
    send(&topo, 0..N, len);
    let group = group.finish();
    let exit = relay.stop();
    expect_exact("only the small datagrams", &group, &small, len);
    let summary = &exit.summary;
    let truncated = u64::from(N) - small.len() as u64;
    assert_eq!(
        summary.malformed_by_reason.get("ring_truncated").copied(),
        Some(truncated),
        "{summary:#?}"
    );
    assert_eq!(
        (summary.total().received, summary.total().forwarded),
        (u64::from(N), 2 * small.len() as u64),
        "(received, forwarded); {summary:#?}"
    );
    assert_eq!(summary.rule_packets("jumbo"), small.len() as u64);
    assert!(
        exit.log
            .contains("input rin0: its receive rings hold frames of up to 1982 bytes"),
        "the relay warns of the setting at start:\n{}",
        exit.log
    );
}

#[test]
fn check_config_says_when_a_set_frame_size_would_truncate() {
    if !privileged("check_config_says_when_a_set_frame_size_would_truncate") {
        return;
    }
    let topo = jumbo_topology("jcheck");
    let check = |ring: &str| {
        let file = ConfigFile::new(&config(ring));
        let out = topo
            .relay
            .cmd(relay_binary())
            .arg("check-config")
            .arg(file.path())
            .output()
            .expect("run check-config");
        assert!(out.status.success(), "{ring}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let warned = check(SMALL_SLOTS);
    assert!(
        warned.contains("warning: input rin0: its receive rings hold frames of up to 1982 bytes")
            && warned.contains("MTU of 9000")
            && warned.contains("ring.frame_size"),
        "{warned}"
    );
    for ring in ["version = \"v2\"", "version = \"v3\"\nframe_size = 2048"] {
        let quiet = check(ring);
        assert!(!quiet.contains("warning"), "{ring}: {quiet}");
    }
}
