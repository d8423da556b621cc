//! VLAN-aware rules on a trunk: the sender writes onto the relay's input link, with a packet
//! socket, what a trunk port carries: one group and port sent untagged, in VLAN 100, in VLAN 300
//! and double-tagged (VLAN 100 inside 802.1ad service VLAN 10), each tag in the frame as VLAN
//! sub-interfaces would put it (the receiving veth moves the outer tag into metadata, so the
//! relay's ring reports it offloaded). A rule with `vlan = 100` relays only VLAN 100's stream, a
//! rule without `vlan` only the untagged one; VLAN 300 matches no rule, and the double-tagged
//! stream is counted as `double_tagged` and relayed nowhere. The same holds with the rules
//! sharded over two workers by the steering program (`steer`, `shard`), which must send each
//! VLAN's frames to the worker holding its rule, and with the two rules in two worker classes,
//! whose socket filters must tell the VLANs apart.
//!
//! (The frames are written by hand rather than sent through `ip link add ... type vlan`
//! sub-interfaces, which need the kernel's 802.1Q module; the bytes on the wire are the same.)

use std::net::Ipv4Addr;
use std::time::Duration;

use fanout_core::{PacketSocket, Protocol};
use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section};
use fanout_relay_tests::relay::{
    Collector, RelayProcess, UdpReceiver, check_stream, payload, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged, two_online_cpus};
use relay_bin::control::proto::StatsReport;

/// Datagrams per stream.
const N: u32 = 300;
/// Streams by tag: VLAN 100, untagged, VLAN 300, double-tagged.
const V100: u8 = 1;
const UNTAGGED: u8 = 2;
const V300: u8 = 3;
const DOUBLE: u8 = 4;
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);

const PLAIN_RULE: &str = r#"
[[rule]]
name = "plain"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.3", port = 6001 } ]
"#;

const VLAN_RULE: &str = r#"
[[rule]]
name = "v100"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000, vlan = 100 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000 } ]
"#;

/// The tags of each stream, outer first: (TPID, TCI).
fn tags(stream: u8) -> &'static [(u16, u16)] {
    match stream {
        V100 => &[(0x8100, 100)],
        V300 => &[(0x8100, 300)],
        // Priority 5 on the service tag, as a provider might set it.
        DOUBLE => &[(0x88a8, 0xa000 | 10), (0x8100, 100)],
        _ => &[],
    }
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Datagram `seq` of `stream` to 239.1.1.1:5000 as an Ethernet frame with the stream's tags in
/// it, from 192.0.2.<stream> (no UDP checksum, which IPv4 allows).
fn frame(stream: u8, seq: u32) -> Vec<u8> {
    let body = payload(stream, seq);
    let mut frame = vec![0x01, 0x00, 0x5e, 0x01, 0x01, 0x01, 0x02, 0, 0, 0, 0, stream];
    for (tpid, tci) in tags(stream) {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&tci.to_be_bytes());
    }
    frame.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + body.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 4, 17, 0, 0]);
    ip.extend_from_slice(&Ipv4Addr::new(192, 0, 2, stream).octets());
    ip.extend_from_slice(&[239, 1, 1, 1]);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&5000u16.to_be_bytes());
    frame.extend_from_slice(&(8 + body.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(&body);
    frame
}

/// A quiet topology, and a packet socket on the sender's end of the trunk (`snd0`).
fn trunk(tag: &str) -> (Topology, PacketSocket) {
    let topo = quiet_topology(tag);
    let raw = topo.sender.run(|| {
        let mut socket = PacketSocket::open().expect("packet socket");
        socket
            .bind(Topology::SENDER_IF, Protocol::NONE)
            .expect("bind the packet socket to snd0");
        socket
    });
    (topo, raw)
}

/// Sends datagrams 0..N of every stream, interleaved, about 2,000 per second in all.
fn send_all(raw: &PacketSocket) {
    for seq in 0..N {
        for stream in [V100, UNTAGGED, V300, DOUBLE] {
            raw.send(&frame(stream, seq))
                .unwrap_or_else(|e| panic!("send {seq} of stream {stream}: {e}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The receivers of the two rules' outputs: (VLAN 100's, the untagged one's).
fn receivers(topo: &Topology) -> (Collector, Collector) {
    let join = |group| {
        UdpReceiver::join(&topo.receiver, group, Topology::RECEIVER_ADDR)
            .collect(N as usize, RECEIVE_TIMEOUT)
    };
    (join("239.2.2.2:6000"), join("239.2.2.3:6001"))
}

/// Checks that each output got exactly its own stream.
fn expect_own_streams(v100: Collector, plain: Collector) {
    for (label, got, tag) in [
        ("VLAN 100's output", v100.finish(), V100),
        ("the untagged output", plain.finish(), UNTAGGED),
    ] {
        if let Err(problem) = check_stream(&got, tag, 0..N) {
            panic!("{label}: {problem}");
        }
        assert_eq!(
            got.len(),
            N as usize,
            "{label}: datagrams of other streams arrived (VLAN 300's, the double-tagged or \
             the other rule's)"
        );
    }
}

/// Waits for both rules' datagrams to be counted and returns the counters.
fn counted(ctl: &Ctl) -> StatsReport {
    ctl.wait_stats("both rules' datagrams", Duration::from_secs(10), |stats| {
        ["v100", "plain"].iter().all(|rule| {
            stats
                .rules
                .get(*rule)
                .is_some_and(|r| r.packets >= u64::from(N))
        })
    })
}

fn total(stats: &StatsReport, f: fn(&relay_bin::counters::WorkerCounters) -> u64) -> u64 {
    stats.workers.iter().map(|w| f(&w.counters)).sum()
}

#[test]
fn each_rule_relays_only_its_vlan() {
    if !privileged("each_rule_relays_only_its_vlan") {
        return;
    }
    let (topo, raw) = trunk("vlan");
    let dir = Workdir::new("vlan");
    let relay = RelayProcess::start(
        &topo.relay,
        &(relay_section(&dir, "workers = 1") + PLAIN_RULE),
        &[],
    );
    let ctl = Ctl::new(&dir);
    // The VLAN rule in the compact form; the state file keeps its VLAN.
    ctl.ok(&[
        "add",
        "v100",
        "rin0:239.1.1.1:5000,vlan=100",
        "rout0:239.2.2.2:6000",
    ]);
    ctl.wait_settled(Duration::from_secs(10));
    let state = std::fs::read_to_string(dir.state_file()).expect("the state file");
    assert!(state.contains("vlan = 100"), "{state}");
    let listed = ctl.ok(&["list"]);
    assert!(listed.contains("v100"), "{listed}");
    let refused = ctl.run(&[
        "add",
        "bad",
        "rin0:239.1.1.1:5000,vlan=4095",
        "rout0:239.2.2.4:6002",
    ]);
    assert!(
        !refused.status.success() && refused.stderr.contains("input.vlan"),
        "{refused:?}"
    );

    let (v100, plain) = receivers(&topo);
    send_all(&raw);
    expect_own_streams(v100, plain);
    let stats = counted(&ctl);
    drop(relay.stop());
    let n = u64::from(N);
    assert_eq!(stats.rules["v100"].packets, n, "{stats:#?}");
    assert_eq!(stats.rules["plain"].packets, n, "{stats:#?}");
    assert_eq!(total(&stats, |c| c.no_rule), n, "VLAN 300's; {stats:#?}");
    assert_eq!(
        total(&stats, |c| c
            .malformed
            .get("double_tagged")
            .copied()
            .unwrap_or(0)),
        n,
        "{stats:#?}"
    );
    assert_eq!(total(&stats, |c| c.received), 4 * n, "{stats:#?}");
}

#[test]
fn the_steering_program_sends_each_vlan_to_its_shard() {
    let test = "the_steering_program_sends_each_vlan_to_its_shard";
    if !privileged(test) || two_online_cpus(test).is_none() {
        return;
    }
    let (topo, raw) = trunk("vlanst");
    let dir = Workdir::new("vlanst");
    let config = relay_section(
        &dir,
        "workers = \"all\"\nfanout = \"steer\"\nplacement = \"shard\"",
    ) + PLAIN_RULE
        + VLAN_RULE;
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let (v100, plain) = receivers(&topo);
    send_all(&raw);
    expect_own_streams(v100, plain);
    let stats = counted(&ctl);
    drop(relay.stop());
    // A frame at a worker that does not hold its rule would be counted as no_rule there: only
    // VLAN 300's frames, which no worker has a rule for, may be.
    let n = u64::from(N);
    assert_eq!(total(&stats, |c| c.no_rule), n, "{stats:#?}");
    assert_eq!(
        (stats.rules["v100"].packets, stats.rules["plain"].packets),
        (n, n),
        "{stats:#?}"
    );
}

#[test]
fn class_filters_tell_vlans_apart() {
    let test = "class_filters_tell_vlans_apart";
    if !privileged(test) {
        return;
    }
    let Some([tagged_cpu, plain_cpu]) = two_online_cpus(test) else {
        return;
    };
    let (topo, raw) = trunk("vlancl");
    let dir = Workdir::new("vlancl");
    // The same group and port in two classes: only because the VLAN is part of the key.
    let config = relay_section(&dir, &format!("workers = \"{tagged_cpu},{plain_cpu}\""))
        + &format!("\n[[class]]\nname = \"tagged\"\ncpus = \"{tagged_cpu}\"\n")
        + &format!("\n[[class]]\nname = \"untagged\"\ncpus = \"{plain_cpu}\"\n")
        + &PLAIN_RULE.replace("name = \"plain\"", "name = \"plain\"\nclass = \"untagged\"")
        + &VLAN_RULE.replace("name = \"v100\"", "name = \"v100\"\nclass = \"tagged\"");
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let (v100, plain) = receivers(&topo);
    send_all(&raw);
    expect_own_streams(v100, plain);
    let stats = counted(&ctl);
    drop(relay.stop());
    // Each class's rings took exactly its key's frames: VLAN 300's and the double-tagged ones
    // reached neither.
    let n = u64::from(N);
    for (cpu, rule) in [(tagged_cpu, "v100"), (plain_cpu, "plain")] {
        let counters = &stats
            .workers
            .iter()
            .find(|w| w.cpu == cpu)
            .unwrap_or_else(|| panic!("no worker on cpu {cpu}: {stats:#?}"))
            .counters;
        assert_eq!(
            (counters.received, counters.forwarded, counters.no_rule),
            (n, n, 0),
            "cpu {cpu}: {counters:#?}"
        );
        assert_eq!(counters.rules.get(rule).map(|r| r.packets), Some(n));
        assert_eq!(counters.malformed_total(), 0, "cpu {cpu}: {counters:#?}");
    }
}
