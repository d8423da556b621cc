//! An IPv6 output socket and its batch, sending from one namespace to a receiver in another
//! over a veth pair: the datagrams arrive in order, from the bound source, with the hop limit
//! and traffic class asked for, to a unicast and a multicast destination.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

use fanout_core::udp_batch::{Ipv6SocketOptions, UdpBatch, ipv6_socket};
use fanout_core::{PacketSocket, Protocol};
use fanout_relay_tests::{Netns, privileged};

const SENDER_IF: &str = "u6a";
const RECEIVER_IF: &str = "u6b";
const SOURCE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 6, 0, 0, 0, 0, 1);
const RECEIVER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 6, 0, 0, 0, 0, 2);
const GROUP: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x77, 6);
const HOP_LIMIT: u8 = 7;
/// DSCP 46 (expedited forwarding) with ECN 0.
const TRAFFIC_CLASS: u8 = 46 << 2;
const COUNT: u8 = 5;

/// The IPv6 header fields of one captured frame: (traffic class, hop limit, source,
/// destination, UDP payload).
type Seen = (u8, u8, Ipv6Addr, Ipv6Addr, Vec<u8>);

/// The UDP datagram (next header 17 right after the IPv6 header) in an Ethernet frame.
fn udp_of(frame: &[u8]) -> Option<Seen> {
    let ip = frame.get(14..54)?;
    if ip[0] >> 4 != 6 || ip[6] != 17 {
        return None;
    }
    let class = (ip[0] << 4) | (ip[1] >> 4);
    let address = |at: usize| {
        <[u8; 16]>::try_from(&ip[at..at + 16])
            .ok()
            .map(Ipv6Addr::from)
    };
    let &[hi, lo] = frame.get(58..60)? else {
        return None;
    };
    let udp_len = usize::from(u16::from_be_bytes([hi, lo]));
    let payload = frame.get(62..54 + udp_len)?.to_vec();
    Some((class, ip[7], address(8)?, address(24)?, payload))
}

#[test]
fn a_batch_reaches_an_ipv6_receiver_with_its_hop_limit_and_class() {
    if !privileged("a_batch_reaches_an_ipv6_receiver_with_its_hop_limit_and_class") {
        return;
    }
    let sender_ns = Netns::new("fcu6s");
    let receiver_ns = Netns::new("fcu6r");
    sender_ns.ip(&[
        "link",
        "add",
        SENDER_IF,
        "type",
        "veth",
        "peer",
        "name",
        RECEIVER_IF,
        "netns",
        receiver_ns.name(),
    ]);
    // nodad: a tentative address can be neither bound nor answered for.
    sender_ns.ip(&["addr", "add", "2001:db8:6::1/64", "dev", SENDER_IF, "nodad"]);
    receiver_ns.ip(&[
        "addr",
        "add",
        "2001:db8:6::2/64",
        "dev",
        RECEIVER_IF,
        "nodad",
    ]);
    sender_ns.ip(&["link", "set", SENDER_IF, "up"]);
    receiver_ns.ip(&["link", "set", RECEIVER_IF, "up"]);
    sender_ns.wait_running(SENDER_IF);
    receiver_ns.wait_running(RECEIVER_IF);

    let (receiver, capture) = receiver_ns.run(|| {
        let receiver = UdpSocket::bind((RECEIVER, 0)).expect("bind the receiver");
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("read timeout");
        let mut capture = PacketSocket::open().expect("packet socket");
        capture
            .bind(RECEIVER_IF, Protocol::IPV6)
            .expect("bind the capture");
        (receiver, capture)
    });
    let SocketAddr::V6(to) = receiver.local_addr().expect("local address") else {
        panic!("bound to an IPv6 address")
    };
    let outcome = sender_ns.run(|| {
        let socket = ipv6_socket(&Ipv6SocketOptions {
            interface: SENDER_IF.into(),
            source: SOURCE,
            hop_limit: HOP_LIMIT,
            traffic_class: Some(TRAFFIC_CLASS),
        })
        .expect("open the output socket");
        assert_eq!(
            socket.local_addr().expect("local address").ip(),
            SOURCE,
            "bound to the source"
        );
        let mut batch = UdpBatch::new(socket, usize::from(COUNT) + 1, 64);
        for n in 0..COUNT {
            batch.push(to, &[n; 20]).expect("room");
        }
        batch
            .push(SocketAddrV6::new(GROUP, 5006, 0, 0), b"to the group")
            .expect("room");
        batch.flush()
    });
    assert_eq!(
        (outcome.sent, outcome.failed, outcome.error),
        (usize::from(COUNT) + 1, 0, None)
    );

    let mut buf = [0u8; 64];
    for n in 0..COUNT {
        let (len, from) = receiver.recv_from(&mut buf).expect("a datagram arrives");
        assert_eq!(&buf[..len], &[n; 20], "datagram {n} in order");
        assert_eq!(from.ip(), SOURCE);
    }

    let mut seen: Vec<Seen> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut frame = [0u8; 2048];
    for _ in 0..2000 {
        if seen.len() > usize::from(COUNT) || Instant::now() > deadline {
            break;
        }
        match capture.try_recv(&mut frame).expect("capture") {
            Some(len) => seen.extend(udp_of(&frame[..len])),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    assert_eq!(
        seen.len(),
        usize::from(COUNT) + 1,
        "every datagram on the wire"
    );
    for (class, hops, from, _, _) in &seen {
        assert_eq!((*class, *hops, *from), (TRAFFIC_CLASS, HOP_LIMIT, SOURCE));
    }
    let to_group: Vec<&Seen> = seen.iter().filter(|s| s.3 == GROUP).collect();
    assert_eq!(
        to_group.len(),
        1,
        "the multicast datagram left by {SENDER_IF}"
    );
    assert_eq!(to_group[0].4, b"to the group");
}
