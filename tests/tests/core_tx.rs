//! Transmit rings (TPACKET_V3 and V2) on a real veth pair, checked by a receive ring on the peer.

mod core_rings_support;

use std::time::{Duration, Instant};

use core_rings_support::{ETHERTYPE, Link, collect, parse_test_frame, test_frame};
use fanout_core::ring::{
    Geometry, RetireTimeout, RingVersion, RxRingBuilder, TxRingBuilder, TxVersion,
};
use fanout_core::{Protocol, RxRing, TxRing};

fn receiver(link: &Link) -> RxRing {
    link.ns
        .run(|| {
            RxRingBuilder::new("vb")
                .protocol(Protocol(ETHERTYPE))
                .block_size(1 << 16)
                .block_count(32)
                .retire_timeout(RetireTimeout::Millis(5))
                .build()
        })
        .expect("receive ring on vb")
}

fn transmitter(link: &Link, builder: TxRingBuilder) -> TxRing {
    link.ns
        .run(move || builder.build())
        .expect("transmit ring on va")
}

/// 16 slots: 8 blocks of 4 KiB holding two 2048-byte slots each.
fn small_ring(version: TxVersion) -> TxRingBuilder {
    TxRingBuilder::new("va")
        .version(version)
        .geometry(Geometry::new(4096, 8, 2048))
}

fn sends_n_frames(version: TxVersion, expect: RingVersion, tag: &str, bypass: bool) {
    let Some(link) = Link::new(tag) else { return };
    let mut rx = receiver(&link);
    let mut tx = transmitter(&link, small_ring(version).qdisc_bypass(bypass));
    assert_eq!(tx.version(), expect);
    assert_eq!(
        tx.max_frame_len(),
        2048 - if expect == RingVersion::V3 { 48 } else { 32 }
    );
    let sent: Vec<Vec<u8>> = (0..300u32)
        .map(|i| test_frame(i, 0, 60 + (i as usize * 53) % 1400))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    for frame in &sent {
        loop {
            assert!(Instant::now() < deadline, "transmit ring stuck");
            if tx.send(frame).expect("frame fits a slot") {
                break;
            }
            // Full: kick the batch, then retry (reserve reclaims what the kernel sent).
            tx.flush().expect("kick");
        }
    }
    assert!(
        tx.drain(Duration::from_secs(5)).expect("drain"),
        "frames still in flight"
    );
    let got = collect(&mut rx, sent.len(), Duration::from_secs(5));
    assert_eq!(got.len(), sent.len());
    for (i, data) in got.iter().enumerate() {
        assert_eq!(data, &sent[i], "frame {i} differs or is out of order");
    }
    let c = tx.counters();
    assert_eq!((c.committed, c.completed, c.wrong_format), (300, 300, 0));
    assert!(
        c.ring_full > 0,
        "300 frames through 16 slots must fill the ring: {c:?}"
    );
    assert!(c.kicks < 300, "one kick per batch, not per frame: {c:?}");
}

#[test]
fn v3_tx_sends_n_frames_the_peer_receives_byte_exact() {
    sends_n_frames(TxVersion::V3, RingVersion::V3, "txv3", false);
}

#[test]
fn v2_tx_sends_n_frames_the_peer_receives_byte_exact() {
    sends_n_frames(TxVersion::V2, RingVersion::V2, "txv2", false);
}

#[test]
fn auto_tx_picks_v3_and_bypasses_the_qdisc() {
    sends_n_frames(TxVersion::Auto, RingVersion::V3, "txauto", true);
}

#[test]
fn refused_frame_is_reported_and_does_not_strand_the_rest() {
    let Some(link) = Link::new("txbad") else {
        return;
    };
    link.ns.set_mtu("va", 500);
    let mut rx = receiver(&link);
    for version in [TxVersion::V3, TxVersion::V2] {
        let mut tx = transmitter(&link, small_ring(version));
        let frames = [
            test_frame(0, 0, 100),
            test_frame(1, 0, 1000),
            test_frame(2, 0, 100),
            test_frame(3, 0, 100),
        ];
        for frame in &frames {
            assert!(tx.send(frame).expect("fits a slot"));
        }
        tx.flush().expect("a refused frame is not a flush error");
        assert!(
            tx.drain(Duration::from_secs(5)).expect("drain"),
            "{version:?}: frames stranded"
        );
        let got = collect(&mut rx, 3, Duration::from_secs(3));
        let seqs: Vec<u32> = got
            .iter()
            .filter_map(|d| parse_test_frame(d))
            .map(|p| p.0)
            .collect();
        assert_eq!(
            seqs,
            [0, 2, 3],
            "{version:?}: the 1000-byte frame exceeds MTU 500"
        );
        let c = tx.counters();
        assert_eq!(
            (c.wrong_format, c.completed, c.committed),
            (1, 3, 4),
            "{version:?}: {c:?}"
        );
        // The ring keeps working in order afterwards.
        assert!(tx.send(&test_frame(4, 0, 100)).expect("fits"));
        assert!(tx.drain(Duration::from_secs(5)).expect("drain"));
        let got = collect(&mut rx, 1, Duration::from_secs(3));
        assert_eq!(
            got.iter()
                .filter_map(|d| parse_test_frame(d))
                .map(|p| p.0)
                .collect::<Vec<_>>(),
            [4]
        );
    }
}

#[test]
fn tx_geometry_is_validated_before_any_syscall() {
    let err = TxRingBuilder::new("frnosuch0")
        .geometry(Geometry::new(4096, 4, 48))
        .build()
        .expect_err("tiny frames");
    assert!(matches!(
        err,
        fanout_core::RingError::Geometry {
            source: fanout_core::ring::GeometryError::FrameTooSmall { .. },
            ..
        }
    ));
}

/// Sequence numbers of the test frames in `frames`, in arrival order.
fn seqs(frames: &[Vec<u8>]) -> Vec<u32> {
    frames
        .iter()
        .filter_map(|d| parse_test_frame(d))
        .map(|p| p.0)
        .collect()
}

#[test]
fn held_slots_keep_ring_order_and_hold_back_what_follows() {
    let Some(link) = Link::new("txheld") else {
        return;
    };
    let mut rx = receiver(&link);
    let mut tx = transmitter(&link, small_ring(TxVersion::V3));
    let write = |seq: u32| {
        move |buffer: &mut [u8]| -> Result<usize, ()> {
            let frame = test_frame(seq, 0, 100);
            buffer[..frame.len()].copy_from_slice(&frame);
            Ok(frame.len())
        }
    };
    // Slot 0 held for frame 0, slot 1 committed at once (frame 1), slot 2 held (frame 2).
    let (first, len0) = tx
        .hold_with(write(0))
        .expect("a free slot")
        .expect("written");
    assert!(tx.send(&test_frame(1, 0, 100)).expect("fits"));
    let (third, len2) = tx
        .hold_with(write(2))
        .expect("a free slot")
        .expect("written");
    assert_eq!((tx.held(), tx.in_flight()), (2, 3));
    // A failed write gives its slot back.
    assert_eq!(
        tx.hold_with(|_| Err::<(), _>("no")).map(|r| r.err()),
        Some(Some("no"))
    );
    assert_eq!(tx.in_flight(), 3);

    // The kernel stops at the first slot not requested: nothing leaves while slot 0 is held.
    tx.flush().expect("kick");
    assert!(
        collect(&mut rx, 1, Duration::from_millis(300)).is_empty(),
        "a frame left past a held slot"
    );
    assert_eq!(tx.reclaim(), 0, "reclaimed past a held slot");

    // Committed out of order, sent in ring order.
    tx.commit_held(third, len2, None);
    tx.commit_held(first, len0, None);
    assert!(
        tx.drain(Duration::from_secs(5)).expect("drain"),
        "frames stranded"
    );
    assert_eq!(
        seqs(&collect(&mut rx, 3, Duration::from_secs(3))),
        [0, 1, 2]
    );
    let c = tx.counters();
    assert_eq!(
        (c.committed, c.completed, c.wrong_format),
        (3, 3, 0),
        "{c:?}"
    );
}
