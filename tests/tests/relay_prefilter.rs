//! The receive rings' plain socket filter (`relay_rules::bpf::udp_prefilter`) keeps ARP, IPv6,
//! TCP and IGMP frames out of the rings: while such frames flow onto the relay's input (written
//! with a packet socket, and counted by the input interface), the workers' `received`, `not_udp`
//! and malformed counters (`ctl stats`) stay at zero; the UDP datagrams sent after them are
//! counted and relayed, which shows the counters count.

use std::time::Duration;

use fanout_core::{PacketSocket, Protocol};
use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section};
use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology,
};
use fanout_relay_tests::{Netns, Topology, privileged};

/// Frames of each foreign kind.
const EACH: usize = 40;
/// UDP datagrams sent after them.
const GOOD: u32 = 50;

const SENDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const SENDER_IP: [u8; 4] = [192, 0, 2, 10];
const GROUP: [u8; 4] = [239, 1, 1, 1];
const GROUP_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x01, 0x01, 0x01];

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

fn ethernet(destination: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut frame = destination.to_vec();
    frame.extend_from_slice(&SENDER_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// An IPv4 frame to the rule's group carrying `protocol` and `body`, every checksum valid.
fn ipv4(protocol: u8, body: &[u8]) -> Vec<u8> {
    let total = (20 + body.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 1, protocol, 0, 0]);
    ip.extend_from_slice(&SENDER_IP);
    ip.extend_from_slice(&GROUP);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(body);
    ethernet(GROUP_MAC, 0x0800, &ip)
}

/// The foreign frames by kind: an ARP request for the relay's input address, an IPv6 UDP
/// datagram to the rule's port, a TCP SYN and an IGMPv2 report for the rule's group.
fn foreign_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    arp.extend_from_slice(&SENDER_MAC);
    arp.extend_from_slice(&SENDER_IP);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[198, 51, 100, 1]);

    let mut ipv6 = vec![0x60, 0, 0, 0, 0, 12, 17, 4];
    ipv6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    ipv6.extend_from_slice(&[0xff, 0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ipv6.extend_from_slice(&[0x13, 0x88, 0x13, 0x88, 0, 12, 0, 0, b'F', b'R', 0, 0]);

    let mut tcp = vec![
        0x9c, 0x40, 0x13, 0x88, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
    ];
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    let mut igmp = vec![0x16, 0, 0, 0];
    igmp.extend_from_slice(&GROUP);
    let sum = checksum(&igmp);
    igmp[2..4].copy_from_slice(&sum.to_be_bytes());

    vec![
        ("ARP", ethernet([0xff; 6], 0x0806, &arp)),
        ("IPv6", ethernet([0x33, 0x33, 0, 0, 0, 1], 0x86dd, &ipv6)),
        ("TCP", ipv4(6, &tcp)),
        ("IGMP", ipv4(2, &igmp)),
    ]
}

/// Packets the interface `ifname` of `ns` received (`/proc/net/dev`).
fn rx_packets(ns: &Netns, ifname: &str) -> u64 {
    let dev = ns.exec_checked(&["cat", "/proc/net/dev"]);
    dev.lines()
        .find_map(|line| {
            let (name, counters) = line.split_once(':')?;
            (name.trim() == ifname).then(|| counters.split_whitespace().nth(1)?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {ifname} in /proc/net/dev:\n{dev}"))
}

#[test]
fn arp_ipv6_tcp_and_igmp_never_reach_the_rings() {
    if !privileged("arp_ipv6_tcp_and_igmp_never_reach_the_rings") {
        return;
    }
    let topo = quiet_topology("prefilt");
    let dir = Workdir::new("prefilt");
    let config = relay_section(&dir, "workers = 1")
        + r#"
[[rule]]
name = "cam"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000 } ]
"#;
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let raw = topo.sender.run(|| {
        let mut socket = PacketSocket::open().expect("packet socket");
        socket
            .bind(Topology::SENDER_IF, Protocol::NONE)
            .expect("bind the packet socket to snd0");
        socket
    });
    let arrived_before = rx_packets(&topo.relay, Topology::RELAY_IN_IF);
    let kinds = foreign_frames();
    for _ in 0..EACH {
        for (kind, frame) in &kinds {
            raw.send(frame)
                .unwrap_or_else(|e| panic!("send a {kind} frame: {e}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let foreign = (EACH * kinds.len()) as u64;
    let arrived = rx_packets(&topo.relay, Topology::RELAY_IN_IF) - arrived_before;
    assert!(
        arrived >= foreign,
        "only {arrived} of the {foreign} foreign frames reached rin0, so this test proves nothing"
    );

    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(GOOD as usize, Duration::from_secs(30));
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.1:5000",
        1,
        0..GOOD,
        500,
    );
    let got = receiver.finish();
    let stats = ctl.wait_stats("the datagrams counted", Duration::from_secs(10), |s| {
        s.workers.iter().map(|w| w.counters.forwarded).sum::<u64>() >= u64::from(GOOD)
    });
    drop(relay.stop());

    if let Err(problem) = check_stream(&got, 1, 0..GOOD) {
        panic!("the UDP datagrams after the foreign frames: {problem}");
    }
    let sum = |f: fn(&relay_bin::counters::WorkerCounters) -> u64| -> u64 {
        stats.workers.iter().map(|w| f(&w.counters)).sum()
    };
    assert_eq!(
        (
            sum(|c| c.received),
            sum(|c| c.not_udp),
            sum(|c| c.malformed_total()),
            sum(|c| c.no_rule),
            sum(|c| c.forwarded),
        ),
        (u64::from(GOOD), 0, 0, 0, u64::from(GOOD)),
        "(received, not_udp, malformed, no_rule, forwarded): no foreign frame entered a ring; \
         {stats:#?}"
    );
}
