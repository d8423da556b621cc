//! One input, several outputs: two groups on two interfaces, a group plus a unicast receiver
//! (head-end replication); and a unicast input relayed to a group without the kernel answering
//! the sender with ICMP port-unreachable.

use std::io::ErrorKind;
use std::time::Duration;

use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, quiet, quiet_topology,
};
use fanout_relay_tests::{Netns, Topology, privileged, veth_pair};

/// Datagrams per stream.
const N: u32 = 600;
/// Datagrams per second.
const PPS: u32 = 500;
/// How long a receiver waits for a stream (it stops early once the stream is complete).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

fn expect_stream(label: &str, got: &[fanout_relay_tests::relay::Datagram], ttl: u8) {
    if let Err(problem) = check_stream(got, 1, 0..N) {
        panic!("{label}: {problem}");
    }
    assert_eq!(got.len(), N as usize, "{label}: datagrams of other streams");
    let wrong_ttl = got.iter().filter(|d| d.ttl != Some(ttl)).count();
    assert_eq!(
        wrong_ttl, 0,
        "{label}: {wrong_ttl} datagrams without TTL {ttl}"
    );
}

const TWO_INTERFACES: &str = r#"
[[rule]]
name = "fan"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [
    { interface = "rout0", destination = "239.2.2.2", port = 6000, ttl = 5 },
    { interface = "rout1", destination = "239.3.3.3", port = 6001, ttl = 6 },
]
"#;

#[test]
fn one_input_reaches_two_groups_on_two_interfaces() {
    if !privileged("one_input_reaches_two_groups_on_two_interfaces") {
        return;
    }
    let topo = quiet_topology("fan2");
    // A second receiver behind a second output interface of the relay.
    let second = Netns::new("fan2_d2");
    quiet(&second);
    let _link = veth_pair(&topo.relay, "rout1", &second, "rcv1");
    topo.relay.add_addr("rout1", "198.18.0.1/24");
    second.add_addr("rcv1", "198.18.0.2/24");

    let relay = RelayProcess::start(&topo.relay, TWO_INTERFACES, &[]);
    let first_rx = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, RECEIVE_TIMEOUT);
    let second_rx = UdpReceiver::join(&second, "239.3.3.3:6001", "198.18.0.2")
        .collect(N as usize, RECEIVE_TIMEOUT);
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.1:5000",
        1,
        0..N,
        PPS,
    );
    let (first, second_got) = (first_rx.finish(), second_rx.finish());
    let exit = relay.stop();

    expect_stream("239.2.2.2:6000 on rout0", &first, 5);
    expect_stream("239.3.3.3:6001 on rout1", &second_got, 6);
    let total = exit.summary.total();
    assert_eq!(exit.summary.rule_packets("fan"), u64::from(N));
    assert_eq!(
        (total.received, total.forwarded, total.tx_full),
        (u64::from(N), 2 * u64::from(N), 0),
        "(received, forwarded, tx_full): one frame in, two out; {:#?}",
        exit.summary
    );
}

const GROUP_AND_UNICAST: &str = r#"
[[rule]]
name = "headend"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [
    { interface = "rout0", destination = "239.2.2.2", port = 6000, ttl = 5 },
    { interface = "rout0", destination = "203.0.113.2", port = 7000, ttl = 9 },
]
"#;

#[test]
fn one_input_reaches_a_group_and_a_unicast_receiver() {
    if !privileged("one_input_reaches_a_group_and_a_unicast_receiver") {
        return;
    }
    let topo = quiet_topology("headend");
    let relay = RelayProcess::start(&topo.relay, GROUP_AND_UNICAST, &[]);
    let group_rx = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, RECEIVE_TIMEOUT);
    let unicast_rx =
        UdpReceiver::bind(&topo.receiver, "203.0.113.2:7000").collect(N as usize, RECEIVE_TIMEOUT);
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.1:5000",
        1,
        0..N,
        PPS,
    );
    let (group, unicast) = (group_rx.finish(), unicast_rx.finish());
    let exit = relay.stop();

    expect_stream("group 239.2.2.2:6000", &group, 5);
    expect_stream("unicast 203.0.113.2:7000", &unicast, 9);
    let from_relay = unicast
        .iter()
        .filter(|d| {
            d.from
                .is_some_and(|a| a.ip().to_string() == Topology::RELAY_OUT_ADDR)
        })
        .count();
    assert_eq!(
        from_relay, N as usize,
        "unicast datagrams not sent from rout0's address"
    );
    let total = exit.summary.total();
    assert_eq!(exit.summary.rule_packets("headend"), u64::from(N));
    assert_eq!(
        (total.received, total.forwarded),
        (u64::from(N), 2 * u64::from(N)),
        "{:#?}",
        exit.summary
    );
}

const UNICAST_INPUT: &str = r#"
[[rule]]
name = "uni"
input = { interface = "rin0", destination = "198.51.100.1", port = 5001 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000, ttl = 5 } ]
"#;

/// Datagrams sent to a port no rule takes, to prove the sender would notice ICMP.
const CONTROL: u32 = 3;

#[test]
fn a_unicast_input_is_relayed_without_icmp_port_unreachable() {
    if !privileged("a_unicast_input_is_relayed_without_icmp_port_unreachable") {
        return;
    }
    let topo = quiet_topology("uni");
    // The sender reaches the relay's input address, and the relay can answer it: without a
    // route back, the reverse-path filter would drop the datagrams before UDP and no ICMP could
    // ever be sent, which would make the check below meaningless.
    topo.sender.ip(&[
        "route",
        "add",
        "198.51.100.0/24",
        "dev",
        Topology::SENDER_IF,
    ]);
    topo.relay
        .ip(&["route", "add", "192.0.2.0/24", "dev", Topology::RELAY_IN_IF]);
    let relay = RelayProcess::start(&topo.relay, UNICAST_INPUT, &[]);
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, RECEIVE_TIMEOUT);

    // A connected UDP socket learns of an ICMP port-unreachable as ECONNREFUSED: a later send
    // fails with it, or it waits in SO_ERROR.
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    sender
        .socket()
        .connect("198.51.100.1:5001")
        .expect("connect the sender");
    if let Err((seq, e)) = sender.try_send_numbered("198.51.100.1:5001", 1, 0..N, PPS) {
        panic!(
            "sending datagram {seq} to the rule's unicast input failed: {e}{}",
            if e.kind() == ErrorKind::ConnectionRefused {
                " (the kernel answered an earlier one with ICMP port-unreachable)"
            } else {
                ""
            }
        );
    }
    let got = receiver.finish();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sender
            .socket()
            .take_error()
            .expect("SO_ERROR")
            .map(|e| e.kind()),
        None,
        "the sender got an ICMP error for the rule's unicast input"
    );

    // The control: the same sender, a port without a rule: the kernel must refuse it.
    let control = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    control
        .socket()
        .connect("198.51.100.1:5002")
        .expect("connect the control sender");
    let (mut refused, mut sent) = (false, 0u64);
    for _ in 0..CONTROL {
        // A send that reports the pending error does not send.
        match control.socket().send(b"control") {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused = true,
            Err(e) => panic!("control send: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    refused |= control
        .socket()
        .take_error()
        .expect("SO_ERROR")
        .is_some_and(|e| e.kind() == ErrorKind::ConnectionRefused);
    let exit = relay.stop();

    assert!(
        refused,
        "the control port 5002 was not refused either, so this test cannot see ICMP"
    );
    expect_stream("239.2.2.2:6000 from a unicast input", &got, 5);
    assert_eq!(exit.summary.rule_packets("uni"), u64::from(N));
    assert_eq!(
        exit.summary.total().no_rule,
        sent,
        "the control datagrams match no rule; {:#?}",
        exit.summary
    );
}
