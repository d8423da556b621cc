//! `[ring] tx_gso`: an output's datagrams of one batch leave as one segmented frame, and the
//! receiver still gets every datagram, byte for byte, in order, with a valid UDP checksum; a
//! datagram whose checksum nobody verified is never sent so. On a kernel without segmentation
//! through the transmit ring (probed: `Feature::TxSegmentation`, before 6.2) the same streams
//! must arrive whole with every datagram sent as a frame of its own.

use std::time::Duration;

use std::net::Ipv4Addr;
use std::time::Instant;

use fanout_core::ring::RxRingBuilder;
use fanout_core::{Feature, Protocol, RxRing};
use fanout_relay_tests::relay::{
    Datagram, RelayProcess, UdpReceiver, UdpSender, quiet_topology, worker_logged,
};
use fanout_relay_tests::{Netns, Topology, have_program, kernel_features, privileged, skip};
use relay_rules::wire;

/// Datagrams per output.
const N: u32 = 2000;
/// Sent back to back, then a pause: a burst lands in one receive block of the relay.
const BURST: u32 = 40;
const PAUSE: Duration = Duration::from_millis(3);
/// Payload bytes of every datagram: equal sizes are what a segmented frame carries.
const SIZE: usize = 1000;
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Two outputs, so two segmented frames are open at once on the output ring; the second
/// rewrites the DSCP.
const CONFIG: &str = r#"
[ring]
tx_gso = true

[[rule]]
name = "cam"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [
  { interface = "rout0", destination = "239.2.2.2", port = 6000, ttl = 7 },
  { interface = "rout0", destination = "239.2.2.3", port = 6001, ttl = 7, dscp = 10 },
]
"#;

/// Datagram `seq`: its number, then filler derived from it, [`SIZE`] bytes in all.
fn payload(seq: u32) -> Vec<u8> {
    let mut bytes = seq.to_be_bytes().to_vec();
    bytes.extend((4..SIZE).map(|i| (i as u32 * 13 + seq * 7) as u8));
    bytes
}

/// The receiver's UDP checksum failures (`Udp: ... InCsumErrors` of /proc/net/snmp).
fn checksum_errors(ns: &Netns) -> u64 {
    let snmp = ns.exec_checked(&["cat", "/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        panic!("no Udp lines in /proc/net/snmp:\n{snmp}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "InCsumErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("no InCsumErrors in /proc/net/snmp:\n{snmp}"))
}

/// Sends [`N`] datagrams in bursts through [`CONFIG`] and checks both outputs' streams; returns
/// the relay's log.
fn relay_bursts(topo: &Topology) -> String {
    let relay = RelayProcess::start(&topo.relay, CONFIG, &["--workers", "1"]);
    let receivers = ["239.2.2.2:6000", "239.2.2.3:6001"].map(|group| {
        UdpReceiver::join(&topo.receiver, group, Topology::RECEIVER_ADDR)
            .collect(N as usize, RECEIVE_TIMEOUT)
    });
    check_bursts(topo, relay, move || {
        receivers.map(|receiver| receiver.finish())
    })
}

/// Sends [`N`] datagrams in bursts while `relay` runs, and checks that each output's datagrams,
/// as `received` returns them, are every one, byte for byte and in order, with TTL 7; returns
/// the relay's log.
fn check_bursts<const OUTPUTS: usize>(
    topo: &Topology,
    relay: RelayProcess,
    received: impl FnOnce() -> [Vec<Datagram>; OUTPUTS],
) -> String {
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    for burst in 0..N / BURST {
        for seq in burst * BURST..(burst + 1) * BURST {
            sender
                .socket()
                .send_to(&payload(seq), "239.1.1.1:5000")
                .unwrap_or_else(|e| panic!("send datagram {seq}: {e}"));
        }
        std::thread::sleep(fanout_relay_tests::scaled(PAUSE));
    }
    let got = received();
    let exit = relay.stop();
    for (output, datagrams) in got.iter().enumerate() {
        let seqs: Vec<u32> = datagrams
            .iter()
            .map(|datagram| {
                let seq = u32::from_be_bytes(datagram.payload[..4].try_into().unwrap_or_default());
                assert_eq!(
                    datagram.payload,
                    payload(seq),
                    "output {output}: datagram {seq} differs"
                );
                assert_eq!(
                    datagram.ttl,
                    Some(7),
                    "output {output}: datagram {seq}'s TTL"
                );
                seq
            })
            .collect();
        assert_eq!(
            seqs,
            (0..N).collect::<Vec<_>>(),
            "output {output}: not every datagram, once, in order\nrelay log:\n{}",
            exit.log
        );
    }
    exit.summary
        .assert_relayed(u64::from(N), OUTPUTS as u64 * u64::from(N));
    exit.log
}

/// On a kernel without segmentation, checks that the relay said so and sent no segmented frame:
/// every datagram left as a frame of its own (and [`check_bursts`] found each byte for byte).
fn check_unsegmented(log: &str) {
    assert!(
        log.contains("kernel feature tx_gso"),
        "the relay did not say that it sends datagrams one frame each:\n{log}"
    );
    assert_eq!(
        (
            worker_logged(log, "segmented"),
            worker_logged(log, "segmented_datagrams")
        ),
        (Some(0), Some(0)),
        "segmented frames on a kernel that refuses them:\n{log}"
    );
}

/// Whether `test` can run here: namespaces, and `ethtool` to turn offloads off (else it says why).
fn can_run(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    if !have_program("ethtool") {
        skip(test, "ethtool is not installed");
        return false;
    }
    true
}

#[test]
fn segmented_frames_arrive_as_every_datagram_with_valid_checksums() {
    if !can_run("segmented_frames_arrive_as_every_datagram_with_valid_checksums") {
        return;
    }
    let topo = quiet_topology("gso");
    // Without offloads on the relay's output, the stack splits each frame before the veth and
    // computes every checksum, which the receiver's stack then verifies.
    topo.relay.disable_offloads(Topology::RELAY_OUT_IF);
    let log = relay_bursts(&topo);
    if kernel_features().has(Feature::TxSegmentation) {
        let segmented = worker_logged(&log, "segmented").unwrap_or(0);
        let carried = worker_logged(&log, "segmented_datagrams").unwrap_or(0);
        // Bursts of 40 equal datagrams in 2 outputs: nearly all should travel segmented.
        assert!(
            segmented > 0 && carried >= u64::from(N),
            "{carried} datagrams in {segmented} segmented frames:\n{log}"
        );
    } else {
        check_unsegmented(&log);
    }
    assert_eq!(
        checksum_errors(&topo.receiver),
        0,
        "the receiver saw bad UDP checksums"
    );
}

#[test]
fn unverified_checksums_are_not_segmented() {
    if !can_run("unverified_checksums_are_not_segmented") {
        return;
    }
    let topo = quiet_topology("gsonv");
    // The sender computes its checksums in full, and the relay's input does not vouch for them.
    topo.sender.disable_offloads(Topology::SENDER_IF);
    topo.relay.disable_offloads(Topology::RELAY_IN_IF);
    let log = relay_bursts(&topo);
    assert_eq!(
        worker_logged(&log, "segmented"),
        Some(0),
        "datagrams with unverified checksums went out segmented:\n{log}"
    );
}

/// One output tagged with VLAN 42: the tag sits between the Ethernet and IPv4 headers of the
/// segmented frame, and every datagram split off must carry it.
const TAGGED: &str = r#"
[[rule]]
name = "cam"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000, ttl = 7, vlan = 42 } ]
"#;

/// The datagrams to 239.2.2.2:6000 among `want` frames read off a receive ring on the
/// receiver's interface, each checked to carry VLAN tag 42.
fn tagged_datagrams(ring: &mut RxRing, want: usize) -> Vec<Datagram> {
    let deadline = Instant::now() + RECEIVE_TIMEOUT;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let _ = ring.wait(Duration::from_millis(100));
        while let Some(block) = ring.next_block() {
            for frame in block.frames() {
                let Ok(datagram) = wire::parse(frame.data(), None) else {
                    continue;
                };
                if (datagram.destination, datagram.destination_port) != (GROUP.into(), 6000) {
                    continue;
                }
                assert_eq!(
                    frame.vlan_tci().map(|tci| tci & 0x0fff),
                    Some(42),
                    "a datagram lost its tag"
                );
                got.push(Datagram {
                    payload: datagram.payload.to_vec(),
                    ttl: Some(datagram.ttl),
                    tos: None,
                    from: None,
                });
            }
        }
    }
    got
}

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 2, 2, 2);

#[test]
fn tagged_segmented_frames_split_into_tagged_datagrams() {
    if !can_run("tagged_segmented_frames_split_into_tagged_datagrams") {
        return;
    }
    let topo = quiet_topology("gsovlan");
    // Split by the stack before the veth, so the receiver sees the datagrams as the wire would;
    // the kernel takes the tag off into the frame's metadata, where the ring reports it.
    topo.relay.disable_offloads(Topology::RELAY_OUT_IF);
    let mut ring = topo
        .receiver
        .run(|| {
            RxRingBuilder::new(Topology::RECEIVER_IF)
                .protocol(Protocol::ALL)
                // Read only once the stream is sent: room for every burst in a block of its own.
                .block_size(1 << 16)
                .block_count(256)
                .build()
        })
        .expect("receive ring on the receiver's interface");
    let relay = RelayProcess::start(&topo.relay, TAGGED, &["--workers", "1"]);
    let log = check_bursts(&topo, relay, || [tagged_datagrams(&mut ring, N as usize)]);
    if kernel_features().has(Feature::TxSegmentation) {
        let carried = worker_logged(&log, "segmented_datagrams").unwrap_or(0);
        assert!(
            carried >= u64::from(N) / 2,
            "{carried} datagrams segmented:\n{log}"
        );
    } else {
        check_unsegmented(&log);
    }
}
