//! IPv6 end to end: rules whose input is an IPv6 group (any-source and source-specific) relay to
//! IPv6 groups through the transmit ring, to an IPv6 unicast receiver through a socket, and to an
//! IPv4 group; an IPv4 group is relayed to an IPv6 one. Datagrams are checked byte for byte where
//! they arrive, with the hop limit and traffic class each output writes; the receiving kernel
//! drops an IPv6 datagram whose UDP checksum is wrong, so every datagram that arrives had a valid
//! one. Frames with hop-by-hop and destination options before the UDP header are relayed like the
//! others. The relay joins its IPv6 input groups with MLD (`/proc/net/igmp6`, and the source in
//! `/proc/net/mcfilter6` for a source-specific rule) while it runs, and leaves them at exit.

use std::net::Ipv6Addr;
use std::time::Duration;

use fanout_core::{PacketSocket, Protocol};
use fanout_relay_tests::relay::{
    Collector, Datagram, RelayProcess, UdpReceiver, UdpSender, check_stream, payload,
};
use fanout_relay_tests::{Netns, Topology, privileged};

/// Datagrams per stream.
const N: u32 = 300;
/// Datagrams per second, per stream.
const PPS: u32 = 500;
const SENDER: &str = "2001:db8:1::10";
const RELAY_IN: &str = "2001:db8:2::1";
const RELAY_OUT: &str = "2001:db8:3::1";
const RECEIVER: &str = "2001:db8:3::2";
/// What the IPv6 sender writes as its traffic class: DSCP 10 (AF11), ECT(0).
const SENT_TCLASS: u8 = (10 << 2) | 0b10;

const CONFIG: &str = r#"
[[rule]]
name = "six"
input = { interface = "rin0", destination = "ff3e::8000:1", port = 5000 }
outputs = [
  { interface = "rout0", destination = "ff3e::8000:11", port = 6000, ttl = 7, dscp = 46 },
  { interface = "rout0", destination = "ff3e::8000:12", port = 6001, ttl = 9 },
  { interface = "rout0", destination = "239.2.2.2", port = 6002, ttl = 5 },
  { interface = "rout0", destination = "2001:db8:3::2", port = 7000, ttl = 11 },
]

[[rule]]
name = "ssm"
input = { interface = "rin0", destination = "ff3e::8000:2", port = 5000, source = "2001:db8:1::10" }
outputs = [ { interface = "rout0", destination = "ff3e::8000:13", port = 6003 } ]

[[rule]]
name = "four-to-six"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "ff3e::8000:14", port = 6004, ttl = 6 } ]
"#;

/// The usual topology with IPv6 on: documentation addresses on every link end (no duplicate
/// address detection, so they are usable at once).
fn topology(tag: &str) -> Topology {
    let topo = Topology::new(tag);
    for (ns, ifname, address) in [
        (&topo.sender, Topology::SENDER_IF, SENDER),
        (&topo.relay, Topology::RELAY_IN_IF, RELAY_IN),
        (&topo.relay, Topology::RELAY_OUT_IF, RELAY_OUT),
        (&topo.receiver, Topology::RECEIVER_IF, RECEIVER),
    ] {
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{address}/64"),
            "dev",
            ifname,
            "nodad",
        ]);
    }
    topo
}

/// Rows of `/proc/net/<table>` in `ns` for interface `ifname`, as their hexadecimal address
/// columns (from the third on) parsed.
fn proc_rows(ns: &Netns, table: &str, ifname: &str, columns: usize) -> Vec<Vec<Ipv6Addr>> {
    let text = ns.exec_checked(&["cat", &format!("/proc/net/{table}")]);
    let hex = |text: &str| {
        u128::from_str_radix(text, 16)
            .map(Ipv6Addr::from)
            .unwrap_or_else(|e| panic!("address {text:?} in /proc/net/{table}: {e}"))
    };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&ifname) && fields.len() >= 2 + columns)
                .then(|| fields[2..2 + columns].iter().map(|f| hex(f)).collect())
        })
        .collect()
}

/// The IPv6 groups joined on `ifname` in `ns`.
fn mld_groups(ns: &Netns, ifname: &str) -> Vec<Ipv6Addr> {
    proc_rows(ns, "igmp6", ifname, 1)
        .into_iter()
        .map(|row| row[0])
        .collect()
}

/// The (group, source) filters on `ifname` in `ns`.
fn mld_filters(ns: &Netns, ifname: &str) -> Vec<(Ipv6Addr, Ipv6Addr)> {
    proc_rows(ns, "mcfilter6", ifname, 2)
        .into_iter()
        .map(|row| (row[0], row[1]))
        .collect()
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().expect("a literal address")
}

/// Checks that `got` is stream `tag` whole, each datagram from `from` with hop limit (or TTL)
/// `hops` and, when given, traffic class (or TOS) `class`.
fn expect(label: &str, got: &[Datagram], tag: u8, from: &str, hops: u8, class: Option<u8>) {
    if let Err(problem) = check_stream(got, tag, 0..N) {
        panic!("{label}: {problem}");
    }
    let wrong: Vec<String> = got
        .iter()
        .filter(|d| {
            d.ttl != Some(hops)
                || class.is_some_and(|class| d.tos != Some(class))
                || d.from.map(|a| a.ip().to_string()).as_deref() != Some(from)
        })
        .take(5)
        .map(|d| format!("{:?} hops {:?} class {:?}", d.from, d.ttl, d.tos))
        .collect();
    assert!(
        wrong.is_empty(),
        "{label}: expected from {from}, hops {hops}, class {class:?}; got {wrong:?}"
    );
}

#[test]
fn ipv6_groups_are_relayed_within_and_across_families() {
    if !privileged("ipv6_groups_are_relayed_within_and_across_families") {
        return;
    }
    let topo = topology("ipv6");
    let input = Topology::RELAY_IN_IF;
    let relay = RelayProcess::start(&topo.relay, CONFIG, &[]);
    let joined = mld_groups(&topo.relay, input);
    let filters = mld_filters(&topo.relay, input);

    let timeout = Duration::from_secs(30);
    let rcv = Topology::RECEIVER_IF;
    let collect = |receiver: UdpReceiver, n| receiver.collect(n, timeout);
    let marked = collect(
        UdpReceiver::join_v6(&topo.receiver, "[ff3e::8000:11]:6000", rcv),
        N as usize,
    );
    let kept = collect(
        UdpReceiver::join_v6(&topo.receiver, "[ff3e::8000:12]:6001", rcv),
        N as usize,
    );
    let to_four = collect(
        UdpReceiver::join(&topo.receiver, "239.2.2.2:6002", Topology::RECEIVER_ADDR),
        N as usize,
    );
    let unicast = collect(
        UdpReceiver::bind(&topo.receiver, &format!("[{RECEIVER}]:7000")),
        N as usize,
    );
    let ssm = collect(
        UdpReceiver::join_v6(&topo.receiver, "[ff3e::8000:13]:6003", rcv),
        N as usize,
    );
    let from_four = collect(
        UdpReceiver::join_v6(&topo.receiver, "[ff3e::8000:14]:6004", rcv),
        N as usize,
    );

    let six = UdpSender::new_v6(&topo.sender, SENDER, 4, Some(SENT_TCLASS));
    let four = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    std::thread::scope(|s| {
        s.spawn(|| six.send_numbered("[ff3e::8000:1]:5000", 1, 0..N, PPS));
        s.spawn(|| six.send_numbered("[ff3e::8000:2]:5000", 2, 0..N, PPS));
        s.spawn(|| four.send_numbered("239.1.1.1:5000", 3, 0..N, PPS));
    });

    // An output's dscp replaces the DSCP; without one the DSCP is kept. ECN is cleared either
    // way: the relay ends the sender's transport path, as over IPv4.
    let kept_class = SENT_TCLASS & !0b11;
    expect("dscp 46", &marked.finish(), 1, RELAY_OUT, 7, Some(46 << 2));
    expect("kept", &kept.finish(), 1, RELAY_OUT, 9, Some(kept_class));
    expect(
        "IPv6 to IPv4",
        &to_four.finish(),
        1,
        Topology::RELAY_OUT_ADDR,
        5,
        None,
    );
    expect("unicast", &unicast.finish(), 1, RELAY_OUT, 11, None);
    expect(
        "source-specific",
        &ssm.finish(),
        2,
        RELAY_OUT,
        16,
        Some(kept_class),
    );
    expect("IPv4 to IPv6", &from_four.finish(), 3, RELAY_OUT, 6, None);

    let exit = relay.stop();
    for group in ["ff3e::8000:1", "ff3e::8000:2"] {
        assert!(
            joined.contains(&v6(group)),
            "{group} is not joined on {input} while the relay runs: {joined:?}\nlog:\n{}",
            exit.log
        );
    }
    assert!(
        filters.contains(&(v6("ff3e::8000:2"), v6(SENDER))),
        "no source filter for the source-specific rule: {filters:?}"
    );
    let after = mld_groups(&topo.relay, input);
    assert!(
        !after.contains(&v6("ff3e::8000:1")) && !after.contains(&v6("ff3e::8000:2")),
        "still joined after the relay exited: {after:?}"
    );
    assert!(mld_filters(&topo.relay, input).is_empty());
}

/// One's complement sum of `bytes` as 16-bit words, folded.
fn sum16(bytes: &[u8], mut sum: u32) -> u32 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// An Ethernet frame from the sender to group `ff3e::8000:1` port 5000 carrying datagram `seq`
/// of stream `tag`, with a hop-by-hop and a destination options header before the UDP header.
fn frame_with_options(tag: u8, seq: u32) -> Vec<u8> {
    let body = payload(tag, seq);
    let (source, group) = (v6(SENDER).octets(), v6("ff3e::8000:1").octets());
    let udp_len = 8 + body.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&5000u16.to_be_bytes());
    udp.extend_from_slice(&u16::try_from(udp_len).expect("small").to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&body);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&source);
    pseudo.extend_from_slice(&group);
    pseudo.extend_from_slice(&u32::try_from(udp_len).expect("small").to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    let checksum = !(sum16(&udp, sum16(&pseudo, 0)) as u16);
    let checksum = if checksum == 0 { 0xffff } else { checksum };
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());

    // Hop-by-hop (next: destination options), then destination options (next: UDP), each eight
    // bytes: next header, length 0, a PadN option of four bytes.
    let options = [60, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
    let mut frame = vec![0x33, 0x33, 0x80, 0x00, 0x00, 0x01, 0x02, 0, 0, 0, 0, 0x10];
    frame.extend_from_slice(&0x86ddu16.to_be_bytes());
    let payload_len = u16::try_from(options.len() + udp_len).expect("small");
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&payload_len.to_be_bytes());
    // Next header: hop-by-hop; hop limit 4.
    frame.extend_from_slice(&[0, 4]);
    frame.extend_from_slice(&source);
    frame.extend_from_slice(&group);
    frame.extend_from_slice(&options);
    frame.extend_from_slice(&udp);
    frame
}

#[test]
fn extension_headers_before_udp_are_skipped() {
    if !privileged("extension_headers_before_udp_are_skipped") {
        return;
    }
    let topo = topology("ipv6ext");
    let relay = RelayProcess::start(&topo.relay, CONFIG, &[]);
    let kept: Collector = UdpReceiver::join_v6(
        &topo.receiver,
        "[ff3e::8000:12]:6001",
        Topology::RECEIVER_IF,
    )
    .collect(N as usize, Duration::from_secs(30));
    let raw = topo.sender.run(|| {
        let mut socket = PacketSocket::open().expect("packet socket");
        socket
            .bind(Topology::SENDER_IF, Protocol::NONE)
            .expect("bind the packet socket to snd0");
        socket
    });
    for seq in 0..N {
        raw.send(&frame_with_options(1, seq))
            .unwrap_or_else(|e| panic!("send frame {seq}: {e}"));
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = kept.finish();
    drop(relay.stop());
    if let Err(problem) = check_stream(&got, 1, 0..N) {
        panic!("datagrams behind extension headers: {problem}");
    }
}
