//! The relay end to end on one rule: every datagram arrives rewritten, byte for byte, with the
//! configured TTL; a source-specific rule relays its source only.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, payload, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged};

/// Datagrams per stream: two seconds at [`PPS`].
const N: u32 = 1000;
/// A rate any relay keeps up with, even a debug build on a busy machine.
const PPS: u32 = 500;
/// How long a receiver waits for a stream (it stops early once the stream is complete).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

const ONE_RULE: &str = r#"
[[rule]]
name = "cam"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000, ttl = 7 } ]
"#;

fn payload_bytes(tag: u8, seqs: std::ops::Range<u32>) -> u64 {
    seqs.map(|seq| payload(tag, seq).len() as u64).sum()
}

#[test]
fn one_rule_relays_every_datagram_byte_exact_with_its_ttl() {
    if !privileged("one_rule_relays_every_datagram_byte_exact_with_its_ttl") {
        return;
    }
    let topo = quiet_topology("basic");
    let relay = RelayProcess::start(&topo.relay, ONE_RULE, &[]);
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, RECEIVE_TIMEOUT);
    // TTL 4 on the way in, so a relay that kept the incoming TTL would show it.
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.1:5000",
        1,
        0..N,
        PPS,
    );
    let got = receiver.finish();
    let exit = relay.stop();

    if let Err(problem) = check_stream(&got, 1, 0..N) {
        panic!("receiver of 239.2.2.2:6000: {problem}");
    }
    assert_eq!(got.len(), N as usize, "datagrams of other streams arrived");
    let ttls: Vec<Option<u8>> = got
        .iter()
        .map(|d| d.ttl)
        .filter(|&t| t != Some(7))
        .collect();
    assert!(ttls.is_empty(), "TTLs other than 7 arrived: {ttls:?}");
    let relay_out: IpAddr = Topology::RELAY_OUT_ADDR.parse().expect("a literal address");
    let foreign: Vec<Option<SocketAddr>> = got
        .iter()
        .map(|d| d.from)
        .filter(|from| from.map(|a| a.ip()) != Some(relay_out))
        .collect();
    assert!(
        foreign.is_empty(),
        "datagrams not from the relay's output address {relay_out}: {:?}",
        &foreign[..foreign.len().min(5)]
    );

    let summary = &exit.summary;
    let total = summary.total();
    assert_eq!(summary.rule_packets("cam"), u64::from(N), "{summary:#?}");
    assert_eq!(
        summary.rule_bytes("cam"),
        payload_bytes(1, 0..N),
        "{summary:#?}"
    );
    assert_eq!(
        (
            total.received,
            total.forwarded,
            total.no_rule,
            total.malformed
        ),
        (u64::from(N), u64::from(N), 0, 0),
        "(received, forwarded, no_rule, malformed) of {summary:#?}"
    );
    assert_eq!(
        (total.tx_full, total.kernel_drops, total.restarts),
        (0, 0, 0),
        "{summary:#?}"
    );
}

const SOURCE_SPECIFIC: &str = r#"
[[rule]]
name = "ssm"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000, source = "192.0.2.10" }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000 } ]
"#;

#[test]
fn a_source_specific_rule_relays_only_its_source() {
    if !privileged("a_source_specific_rule_relays_only_its_source") {
        return;
    }
    const OTHER_SOURCE: &str = "192.0.2.11";
    let topo = quiet_topology("ssm");
    topo.sender
        .add_addr(Topology::SENDER_IF, &format!("{OTHER_SOURCE}/24"));
    let relay = RelayProcess::start(&topo.relay, SOURCE_SPECIFIC, &[]);
    // The streams are interleaved, so datagrams of the other source that were (wrongly)
    // relayed would arrive before the named source's stream is complete.
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, RECEIVE_TIMEOUT);
    let named = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let other = UdpSender::new(&topo.sender, OTHER_SOURCE, 4);
    std::thread::scope(|s| {
        s.spawn(|| named.send_numbered("239.1.1.1:5000", 1, 0..N, PPS));
        s.spawn(|| other.send_numbered("239.1.1.1:5000", 2, 0..N, PPS));
    });
    let got = receiver.finish();
    let exit = relay.stop();

    if let Err(problem) = check_stream(&got, 1, 0..N) {
        panic!("the named source's stream: {problem}");
    }
    let leaked = got.iter().filter(|d| d.payload.get(2) == Some(&2)).count();
    assert_eq!(
        leaked, 0,
        "datagrams of the other source {OTHER_SOURCE} were relayed"
    );
    assert_eq!(got.len(), N as usize);

    let summary = &exit.summary;
    let total = summary.total();
    assert_eq!(summary.rule_packets("ssm"), u64::from(N), "{summary:#?}");
    assert_eq!(
        (
            total.received,
            total.forwarded,
            total.no_rule,
            total.malformed
        ),
        (2 * u64::from(N), u64::from(N), u64::from(N), 0),
        "(received, forwarded, no_rule, malformed): the other source counts as no_rule; \
         {summary:#?}"
    );
}
