//! Receive rings (TPACKET_V3 and V2) on a real veth pair.

mod core_rings_support;

use std::time::{Duration, Instant};

use core_rings_support::{ETHERTYPE, Link, collect, parse_test_frame, test_frame};
use fanout_core::ring::{GeometryError, Readiness, RetireTimeout, RingVersion, RxRingBuilder};
use fanout_core::{BpfError, BpfProgram, Protocol, RingError, SocketError};

fn ring_on_vb(link: &Link, builder: RxRingBuilder) -> fanout_core::RxRing {
    link.ns
        .run(move || builder.build())
        .expect("build ring on vb")
}

fn base(version: RingVersion) -> RxRingBuilder {
    RxRingBuilder::new("vb")
        .version(version)
        .protocol(Protocol(ETHERTYPE))
        .block_size(1 << 16)
        .block_count(16)
        .frame_size(2048)
        .retire_timeout(RetireTimeout::Millis(5))
}

fn receives_every_frame_once(version: RingVersion, tag: &str) {
    let Some(link) = Link::new(tag) else { return };
    let mut ring = ring_on_vb(&link, base(version));
    let tx = link.sender("va");
    let sent: Vec<Vec<u8>> = (0..200u32)
        .map(|i| test_frame(i, 0, 60 + (i as usize * 37) % 1400))
        .collect();
    for frame in &sent {
        assert_eq!(tx.send(frame).expect("send"), frame.len());
    }
    let got = collect(&mut ring, sent.len(), Duration::from_secs(5));
    assert_eq!(got.len(), sent.len(), "frames received");
    let mut seen = vec![false; sent.len()];
    for data in &got {
        let (seq, _) = parse_test_frame(data).expect("only test frames on this EtherType");
        let seq = seq as usize;
        assert!(!seen[seq], "frame {seq} received twice");
        seen[seq] = true;
        assert_eq!(data, &sent[seq], "frame {seq} differs");
    }
    assert!(
        collect(&mut ring, 1, Duration::from_millis(50)).is_empty(),
        "extra frames"
    );
    let stats = ring.statistics().expect("statistics");
    assert_eq!((stats.packets, stats.drops), (200, 0));
    let counters = ring.counters();
    assert_eq!(
        (counters.frames, counters.malformed, counters.truncated),
        (200, 0, 0)
    );
}

#[test]
fn v3_receives_every_frame_once_byte_exact() {
    receives_every_frame_once(RingVersion::V3, "rxv3");
}

#[test]
fn v2_receives_every_frame_once_byte_exact() {
    receives_every_frame_once(RingVersion::V2, "rxv2");
}

#[test]
fn v3_block_retires_within_its_timeout_when_half_full() {
    let Some(link) = Link::new("retire") else {
        return;
    };
    let mut ring = ring_on_vb(
        &link,
        base(RingVersion::V3).retire_timeout(RetireTimeout::Millis(100)),
    );
    let tx = link.sender("va");
    for i in 0..20 {
        tx.send(&test_frame(i, 0, 1000)).expect("send");
    }
    let sent_at = Instant::now();
    let deadline = sent_at + Duration::from_secs(3);
    loop {
        assert!(
            Instant::now() < deadline,
            "no block within 3 s of a 100 ms retire timeout"
        );
        ring.wait(Duration::from_millis(500)).expect("wait");
        if let Some(block) = ring.next_block() {
            assert_eq!(block.len(), 20, "all 20 frames (20 kB) in one 64 KiB block");
            assert!(block.retired_by_timeout());
            break;
        }
    }
    assert_eq!(ring.counters().blocks, 1);
}

#[test]
fn v3_half_full_block_is_marked_retired_by_timer() {
    let Some(link) = Link::new("tmo") else { return };
    let mut ring = ring_on_vb(
        &link,
        base(RingVersion::V3).retire_timeout(RetireTimeout::Millis(50)),
    );
    let tx = link.sender("va");
    for i in 0..10 {
        tx.send(&test_frame(i, 0, 500)).expect("send");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        assert!(Instant::now() < deadline, "no block within 3 s");
        ring.wait(Duration::from_millis(500)).expect("wait");
        if let Some(block) = ring.next_block() {
            assert_eq!(block.len(), 10);
            assert!(
                block.retired_by_timeout(),
                "a half-full block is retired by the timer"
            );
            assert_eq!(
                block.seq_num(),
                Some(1),
                "block sequence numbers start at 1"
            );
            let seqs: Vec<u32> = block
                .frames()
                .map(|f| parse_test_frame(f.data()).expect("test frame").0)
                .collect();
            assert_eq!(seqs, (0..10).collect::<Vec<_>>());
            break;
        }
    }
}

#[test]
fn v2_frame_is_readable_at_once_while_v3_waits_for_the_timer() {
    let Some(link) = Link::new("lat") else { return };
    let tov = Duration::from_millis(1000);
    let mut v2 = ring_on_vb(&link, base(RingVersion::V2));
    // The V3 retire timer starts when the ring is made; send right after.
    let mut v3 = ring_on_vb(
        &link,
        base(RingVersion::V3).retire_timeout(RetireTimeout::Millis(1000)),
    );
    let tx = link.sender("va");
    let sent_at = Instant::now();
    tx.send(&test_frame(7, 0, 100)).expect("send");
    assert_eq!(
        v2.wait(Duration::from_secs(2)).expect("wait v2"),
        Readiness::Readable
    );
    {
        let block = v2.next_block().expect("the V2 frame is ready at once");
        let frame = block.frames().next().expect("one frame");
        assert_eq!(parse_test_frame(frame.data()), Some((7, 0)));
        assert_eq!(block.seq_num(), None);
    }
    if sent_at.elapsed() < tov / 2 {
        assert!(
            v3.next_block().is_none(),
            "the V3 block is still being filled"
        );
    }
    let got = collect(&mut v3, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "the V3 frame arrives once the timer fires");
    assert!(
        sent_at.elapsed() >= tov / 2,
        "V3 handed the frame over after {:?}, before its retire timer",
        sent_at.elapsed()
    );
}

#[test]
fn undersized_ring_under_a_burst_reports_drops() {
    let Some(link) = Link::new("drops") else {
        return;
    };
    let mut ring = ring_on_vb(
        &link,
        base(RingVersion::V3)
            .block_size(4096)
            .block_count(2)
            .retire_timeout(RetireTimeout::Millis(1000)),
    );
    let tx = link.sender("va");
    for i in 0..100 {
        tx.send(&test_frame(i, 0, 1000)).expect("send");
    }
    let stats = ring.statistics().expect("statistics");
    assert_eq!(
        stats.packets, 100,
        "tp_packets counts every frame offered, drops included"
    );
    assert!(
        stats.drops > 0,
        "a 8 KiB ring cannot hold 100 kB: {stats:?}"
    );
    assert!(stats.freezes >= 1, "the V3 queue froze: {stats:?}");
    let got = collect(
        &mut ring,
        stats.delivered() as usize,
        Duration::from_secs(5),
    );
    assert_eq!(
        got.len() as u64,
        stats.delivered(),
        "frames in the ring = packets - drops"
    );
    let again = ring.statistics().expect("statistics");
    assert_eq!(
        (again.packets, again.drops),
        (0, 0),
        "PACKET_STATISTICS is clear-on-read"
    );
    assert_eq!(ring.total_statistics().packets, 100);
}

/// The kernel strips the tag in software (`skb_vlan_untag`) and, with no VLAN device for the
/// VID, clears it again before protocol-specific delivery: only `ETH_P_ALL` sockets, which see
/// frames first, get the tag in their ring headers.
#[test]
fn offloaded_vlan_tag_is_reported_in_the_header() {
    let Some(link) = Link::new("vlan") else {
        return;
    };
    for version in [RingVersion::V3, RingVersion::V2] {
        let mut ring = ring_on_vb(&link, base(version).protocol(Protocol::ALL));
        let tx = link.sender("va");
        let inner = test_frame(3, 0, 100);
        let mut tagged = inner[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x01, 0x23]);
        tagged.extend_from_slice(&inner[12..]);
        tx.send(&tagged).expect("send");
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut found = false;
        while !found {
            assert!(
                Instant::now() < deadline,
                "{version:?}: tagged frame not received"
            );
            ring.wait(Duration::from_millis(100)).expect("wait");
            while let Some(block) = ring.next_block() {
                for frame in block.frames() {
                    if parse_test_frame(frame.data()).is_none() {
                        continue;
                    }
                    assert_eq!(frame.vlan_tci(), Some(0x0123), "{version:?}");
                    assert_eq!(frame.vlan_tpid(), Some(0x8100), "{version:?}");
                    assert_eq!(
                        frame.data(),
                        &inner[..],
                        "{version:?}: tag stripped from the bytes"
                    );
                    found = true;
                }
            }
        }
    }
}

#[test]
fn interface_down_is_a_typed_event() {
    let Some(link) = Link::new("down") else {
        return;
    };
    let mut ring = ring_on_vb(&link, base(RingVersion::V3));
    link.ns.ip(&["link", "set", "vb", "down"]);
    assert_eq!(
        ring.wait(Duration::from_secs(2)).expect("wait"),
        Readiness::InterfaceDown
    );
}

#[test]
fn socket_filter_set_before_bind_keeps_frames_out_and_locks() {
    let Some(link) = Link::new("filter") else {
        return;
    };
    let mut ring = ring_on_vb(
        &link,
        base(RingVersion::V3).filter(BpfProgram::reject_all()),
    );
    let tx = link.sender("va");
    tx.send(&test_frame(1, 0, 100)).expect("send");
    assert!(
        collect(&mut ring, 1, Duration::from_millis(100)).is_empty(),
        "filter rejects all"
    );
    ring.set_filter(&BpfProgram::accept_all())
        .expect("replace filter");
    tx.send(&test_frame(2, 0, 100)).expect("send");
    let got = collect(&mut ring, 1, Duration::from_secs(2));
    assert_eq!(
        got.iter()
            .map(|d| parse_test_frame(d).map(|p| p.0))
            .collect::<Vec<_>>(),
        [Some(2)]
    );
    ring.lock_filter().expect("lock");
    assert!(matches!(
        ring.detach_filter(),
        Err(BpfError::SetOption {
            errno: nix::errno::Errno::EPERM,
            ..
        })
    ));
}

#[test]
fn missing_interface_is_a_typed_error() {
    let err = RxRingBuilder::new("frnosuch0")
        .build()
        .expect_err("no such interface");
    match err {
        RingError::Socket(SocketError::NoSuchInterface { name, .. }) => {
            assert_eq!(name, "frnosuch0")
        }
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn bad_geometry_is_a_typed_error_before_any_syscall() {
    let err = RxRingBuilder::new("frnosuch0")
        .block_size(5000)
        .build()
        .expect_err("bad geometry");
    match err {
        RingError::Geometry {
            source: GeometryError::BlockSizeNotPageMultiple { block_size, .. },
            ..
        } => {
            assert_eq!(block_size, 5000)
        }
        other => panic!("wrong error: {other}"),
    }
    let err = RxRingBuilder::new("frnosuch0")
        .frame_size(1000)
        .build()
        .expect_err("bad frame");
    assert!(matches!(
        err,
        RingError::Geometry {
            source: GeometryError::FrameSizeUnaligned { frame_size: 1000 },
            ..
        }
    ));
    let err = RxRingBuilder::new("lo")
        .protocol(Protocol::NONE)
        .build()
        .expect_err("protocol 0");
    assert!(matches!(err, RingError::NoProtocol { .. }));
}

/// Outgoing frames reach only `ETH_P_ALL` sockets (`dev_queue_xmit_nit()` serves the
/// "all" taps), so the rings here take every protocol and pick the test frame out.
#[test]
fn ignore_outgoing_hides_frames_this_host_sends() {
    let Some(link) = Link::new("ignout") else {
        return;
    };
    let on_va = |ignore: bool| {
        link.ns
            .run(move || {
                RxRingBuilder::new("va")
                    .protocol(Protocol::ALL)
                    .block_size(1 << 16)
                    .block_count(4)
                    .retire_timeout(RetireTimeout::Millis(5))
                    .ignore_outgoing(ignore)
                    .promiscuous(true)
                    .timestamp_source(fanout_core::socket::TimestampSource::Software)
                    .build()
            })
            .expect("ring on va")
    };
    let mut sees = on_va(false);
    let mut ignores = on_va(true);
    let tx = link.sender("va");
    tx.send(&test_frame(9, 0, 100)).expect("send");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut outgoing = None;
    while outgoing.is_none() && Instant::now() < deadline {
        sees.wait(Duration::from_millis(100)).expect("wait");
        while let Some(block) = sees.next_block() {
            for frame in block
                .frames()
                .filter(|f| parse_test_frame(f.data()).is_some())
            {
                outgoing = Some((
                    frame.packet_type(),
                    frame.ifindex().is_some(),
                    frame.timestamp().as_secs() > 0,
                ));
            }
        }
    }
    assert_eq!(
        outgoing,
        Some((Some(fanout_core::ring::PacketType::Outgoing), true, true))
    );
    let ignored = collect(&mut ignores, 1, Duration::from_millis(200));
    assert!(
        ignored.iter().all(|d| parse_test_frame(d).is_none()),
        "an outgoing frame got through"
    );
}

#[test]
fn rx_hash_and_private_area_on_v3() {
    let Some(link) = Link::new("rxhash") else {
        return;
    };
    let mut ring = ring_on_vb(&link, base(RingVersion::V3).rx_hash(true).private_size(256));
    let tx = link.sender("va");
    for i in 0..5 {
        tx.send(&test_frame(i, 0, 100)).expect("send");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = 0;
    while seen < 5 && Instant::now() < deadline {
        ring.wait(Duration::from_millis(100)).expect("wait");
        while let Some(block) = ring.next_block() {
            for frame in block.frames() {
                assert!(
                    frame.rx_hash().is_some(),
                    "hash requested with TP_FT_REQ_FILL_RXHASH"
                );
                assert_eq!(parse_test_frame(frame.data()), Some((seen, 0)));
                seen += 1;
            }
        }
    }
    assert_eq!(
        seen, 5,
        "frames after a 256-byte private area are read correctly"
    );
}
