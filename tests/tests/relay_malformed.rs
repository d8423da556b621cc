//! Malformed frames written straight onto the relay's input with a packet socket are counted
//! and dropped, and the relay goes on relaying the good frames sent after them.

use std::net::Ipv4Addr;
use std::time::Duration;

use fanout_core::{PacketSocket, Protocol};
use fanout_relay_tests::relay::{RelayProcess, UdpReceiver, check_stream, payload, quiet_topology};
use fanout_relay_tests::{Topology, privileged};

const CONFIG: &str = r#"
[[rule]]
name = "cam"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000, ttl = 5 } ]
"#;

const SOURCE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
/// Good frames sent after the bad ones.
const GOOD: u32 = 60;

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

/// A frame carrying [`payload`]`(1, seq)` from [`SOURCE`]:40000 to [`GROUP`]:5000, every field
/// valid; with `udp_checksum` the UDP checksum is filled in, else it is 0 (none).
fn good_frame(seq: u32, udp_checksum: bool) -> Vec<u8> {
    let body = payload(1, seq);
    let udp_len = 8 + body.len();
    let total = 20 + udp_len;
    let mut frame = vec![0x01, 0x00, 0x5e, 0x01, 0x01, 0x01]; // the group's MAC
    frame.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x10]);
    frame.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0x00];
    ip.extend_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&(seq as u16).to_be_bytes()); // identification
    ip.extend_from_slice(&[0x40, 0x00, 4, 17, 0, 0]); // DF, TTL 4, UDP, checksum below
    ip.extend_from_slice(&SOURCE.octets());
    ip.extend_from_slice(&GROUP.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&5000u16.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&body);
    if udp_checksum {
        let mut pseudo = Vec::with_capacity(12 + udp_len);
        pseudo.extend_from_slice(&SOURCE.octets());
        pseudo.extend_from_slice(&GROUP.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        pseudo.extend_from_slice(&udp);
        let sum = match checksum(&pseudo) {
            0 => 0xffff,
            sum => sum,
        };
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
    }
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&udp);
    frame
}

/// Rewrites the IPv4 header checksum of `frame` after a header change.
fn fix_ip_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0x0f).max(5) * 4;
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
}

/// The malformed frames by kind, each kind a different count (3, 5, 7, 11) so that per-reason
/// counters can be told apart.
fn malformed_frames() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let truncated = vec![
        // The IPv4 total length promises more than the frame holds.
        good_frame(1000, false)[..14 + 20 + 8 + 4].to_vec(),
        good_frame(1001, true)[..14 + 20 + 8].to_vec(),
        // The frame ends inside the IPv4 header.
        good_frame(1002, false)[..14 + 12].to_vec(),
    ];
    let fragments = (0..5u32)
        .map(|i| {
            let mut frame = good_frame(1010 + i, false);
            // First fragments (more-fragments set) and later ones (offset 1480 bytes).
            let flags: u16 = if i < 3 { 0x2000 } else { 185 };
            frame[20..22].copy_from_slice(&flags.to_be_bytes());
            fix_ip_checksum(&mut frame);
            frame
        })
        .collect();
    let bad_ihl = (0..7u32)
        .map(|i| {
            let mut frame = good_frame(1020 + i, false);
            frame[14] = 0x40 | (i % 5) as u8; // IHL 0 to 4: shorter than the fixed header
            fix_ip_checksum(&mut frame);
            frame
        })
        .collect();
    let bad_checksum = (0..11u32)
        .map(|i| {
            let mut frame = good_frame(1030 + i, false);
            frame[24] ^= 0x5a;
            frame
        })
        .collect();
    vec![
        ("truncated", truncated),
        ("fragment", fragments),
        ("bad IHL", bad_ihl),
        ("bad IPv4 checksum", bad_checksum),
    ]
}

#[test]
fn malformed_frames_are_counted_and_good_ones_still_relayed() {
    if !privileged("malformed_frames_are_counted_and_good_ones_still_relayed") {
        return;
    }
    let topo = quiet_topology("malformed");
    let relay = RelayProcess::start(&topo.relay, CONFIG, &[]);
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(GOOD as usize, Duration::from_secs(30));
    let raw = topo.sender.run(|| {
        let mut socket = PacketSocket::open().expect("packet socket");
        socket
            .bind(Topology::SENDER_IF, Protocol::NONE)
            .expect("bind the packet socket to snd0");
        socket
    });
    let send = |frame: &[u8]| {
        raw.send(frame)
            .unwrap_or_else(|e| panic!("send a {}-byte frame: {e}", frame.len()));
        std::thread::sleep(Duration::from_millis(2));
    };
    let kinds = malformed_frames();
    let bad: u64 = kinds.iter().map(|(_, frames)| frames.len() as u64).sum();
    for (_, frames) in &kinds {
        frames.iter().for_each(|frame| send(frame));
    }
    // Half the good frames with a UDP checksum (which the relay must update for the new
    // destination), half without (which must stay 0).
    (0..GOOD).for_each(|seq| send(&good_frame(seq, seq % 2 == 0)));
    let got = receiver.finish();
    let exit = relay.stop();

    if let Err(problem) = check_stream(&got, 1, 0..GOOD) {
        panic!("good frames after malformed ones: {problem}");
    }
    let summary = &exit.summary;
    let total = summary.total();
    assert_eq!(
        total.malformed,
        bad,
        "malformed: {} sent ({}); {summary:#?}",
        bad,
        kinds
            .iter()
            .map(|(kind, frames)| format!("{} {kind}", frames.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(
        (total.received, total.no_rule, total.forwarded),
        (bad + u64::from(GOOD), 0, u64::from(GOOD)),
        "(received, no_rule, forwarded); {summary:#?}"
    );
    assert_eq!(summary.rule_packets("cam"), u64::from(GOOD));
    let by_reason: Vec<(&str, u64)> = summary
        .malformed_by_reason
        .iter()
        .map(|(reason, count)| (reason.as_str(), *count))
        .collect();
    assert_eq!(
        by_reason,
        vec![
            ("ipv4_bad_checksum", 11),
            ("ipv4_bad_ihl", 7),
            ("ipv4_fragment", 5),
            ("ipv4_packet_truncated", 2),
            ("ipv4_truncated", 1),
        ],
        "malformed frames per reason; {summary:#?}"
    );
}

#[test]
fn the_frame_builder_makes_valid_checksums() {
    let frame = good_frame(7, true);
    assert_eq!(checksum(&frame[14..34]), 0, "IPv4 header checksum verifies");
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&frame[26..34]);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&frame[38..40]);
    pseudo.extend_from_slice(&frame[34..]);
    assert_eq!(checksum(&pseudo), 0, "UDP checksum verifies");
    let kinds = malformed_frames();
    assert_eq!(
        kinds.iter().map(|(_, f)| f.len()).collect::<Vec<_>>(),
        vec![3, 5, 7, 11]
    );
}
