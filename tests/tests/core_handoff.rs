//! Hand-off of a receive ring between processes: a worker serving a ring is killed mid-stream
//! and a new worker takes over the same socket. The group is unchanged, and only the block the
//! first worker held when it died is seen twice.
//!
//! Workers are this test binary re-executed with `FR_HANDOFF_SOCKET` set, running only
//! [`handoff_child`]; they receive the ring over `SCM_RIGHTS` and report each frame as a line
//! `F <seq> <block seq>` on the same Unix socket.

mod core_rings_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use core_rings_support::{ETHERTYPE, Link, parse_test_frame, test_frame};
use fanout_core::handoff::{recv_ring, send_ring};
use fanout_core::ring::{Readiness, RetireTimeout, RxRingBuilder};
use fanout_core::{FanoutConfig, FanoutGroupId, FanoutMode, Protocol, RingHandle};

const SOCKET_ENV: &str = "FR_HANDOFF_SOCKET";

/// The worker side; does nothing unless started by the test below.
#[test]
fn handoff_child() {
    let Ok(path) = std::env::var(SOCKET_ENV) else {
        return;
    };
    let mut stream = UnixStream::connect(&path).expect("connect to the supervisor");
    let mut ring = recv_ring(stream.as_fd())
        .expect("receive ring")
        .map()
        .expect("map ring");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ring.wait(Duration::from_millis(100)).expect("wait") == Readiness::InterfaceDown {
            return;
        }
        while let Some(block) = ring.next_block() {
            let block_seq = block.seq_num().expect("V3 block");
            for frame in block.frames() {
                let Some((seq, _)) = parse_test_frame(frame.data()) else {
                    continue;
                };
                if writeln!(stream, "F {seq} {block_seq}").is_err() {
                    return;
                }
            }
            // Hold the block a while, so that a kill is likely to land while it is in hand.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Worker {
    child: Child,
    reports: mpsc::Receiver<(u32, u64)>,
}

fn start_worker(listener: &UnixListener, path: &std::path::Path, handle: &RingHandle) -> Worker {
    let exe = std::env::current_exe().expect("test binary path");
    let child = Command::new(exe)
        .args([
            "handoff_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SOCKET_ENV, path)
        .stdout(Stdio::null())
        .spawn()
        .expect("start worker");
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "worker did not connect");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).expect("blocking stream");
    send_ring(stream.as_fd(), handle).expect("send ring");
    let (tx, reports) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split(' ').skip(1).map(|p| p.parse::<u64>());
            if let (Some(Ok(seq)), Some(Ok(block))) = (parts.next(), parts.next())
                && tx.send((seq as u32, block)).is_err()
            {
                break;
            }
        }
    });
    Worker { child, reports }
}

/// Gathers reports until `done` says so or `timeout` passes.
fn gather(
    worker: &Worker,
    seen: &mut Vec<(u32, u64)>,
    timeout: Duration,
    done: impl Fn(&[(u32, u64)]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match worker
            .reports
            .recv_timeout(left.min(Duration::from_millis(100)))
        {
            Ok(report) => seen.push(report),
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => break,
        }
    }
}

fn kill(worker: &mut Worker, seen: &mut Vec<(u32, u64)>) {
    worker.child.kill().expect("SIGKILL worker");
    worker.child.wait().expect("reap worker");
    // The reader thread ends at EOF; take what the worker wrote before it died.
    seen.extend(worker.reports.iter());
}

#[test]
fn killed_worker_is_replaced_and_only_the_block_in_hand_is_seen_twice() {
    let Some(link) = Link::new("handoff") else {
        return;
    };
    let group = FanoutGroupId(0x4401);
    let ring = link
        .ns
        .run(move || {
            RxRingBuilder::new("vb")
                .protocol(Protocol(ETHERTYPE))
                .block_size(8192)
                .block_count(64)
                .retire_timeout(RetireTimeout::Millis(5))
                .dont_fork(true)
                .fanout(FanoutConfig::new(group, FanoutMode::Hash))
                .build()
        })
        .expect("supervisor's ring");
    let before = ring
        .read_fanout_membership()
        .expect("membership")
        .expect("in a group");
    let handle = ring.into_handle();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("handoff.sock");
    let listener = UnixListener::bind(&path).expect("bind unix socket");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let tx = link.sender("va");
    let send = |range: std::ops::Range<u32>| {
        for i in range {
            tx.send(&test_frame(i, 0, 100)).expect("send");
            if i % 10 == 9 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };

    let mut first = start_worker(&listener, &path, &handle);
    let mut seen1 = Vec::new();
    send(0..100);
    gather(&first, &mut seen1, Duration::from_secs(10), |s| {
        s.len() >= 50
    });
    assert!(
        seen1.len() >= 50,
        "first worker served only {} frames",
        seen1.len()
    );
    kill(&mut first, &mut seen1);

    send(100..200);
    let mut second = start_worker(&listener, &path, &handle);
    let mut seen2 = Vec::new();
    let covered = |s1: &[(u32, u64)], s2: &[(u32, u64)]| {
        s1.iter()
            .chain(s2)
            .map(|r| r.0)
            .collect::<BTreeSet<_>>()
            .len()
    };
    gather(&second, &mut seen2, Duration::from_secs(10), |s| {
        covered(&seen1, s) >= 200
    });
    kill(&mut second, &mut seen2);

    // Nothing lost.
    let all: BTreeSet<u32> = seen1.iter().chain(&seen2).map(|r| r.0).collect();
    assert_eq!(all, (0..200).collect(), "frames lost across the hand-off");
    // Each worker saw each frame once.
    for (name, seen) in [("first", &seen1), ("second", &seen2)] {
        let unique: BTreeSet<u32> = seen.iter().map(|r| r.0).collect();
        assert_eq!(unique.len(), seen.len(), "{name} worker saw a frame twice");
    }
    // Frames seen by both belong to one block: the first worker's last one.
    let block_of: BTreeMap<u32, u64> = seen1.iter().map(|&(seq, block)| (seq, block)).collect();
    let twice: Vec<u32> = seen2
        .iter()
        .map(|r| r.0)
        .filter(|s| block_of.contains_key(s))
        .collect();
    let blocks: BTreeSet<u64> = twice.iter().map(|s| block_of[s]).collect();
    let last_block = seen1.iter().map(|r| r.1).max();
    eprintln!(
        "hand-off: first worker {} frames, second {} frames, {} seen twice (block {blocks:?})",
        seen1.len(),
        seen2.len(),
        twice.len()
    );
    assert!(
        blocks.len() <= 1,
        "frames of several blocks seen twice: {blocks:?}"
    );
    if let Some(&block) = blocks.first() {
        assert_eq!(
            Some(block),
            last_block,
            "only the block in hand may be seen again"
        );
    }
    // The supervisor's socket never left the group.
    let ring = handle
        .try_clone()
        .expect("dup")
        .map()
        .expect("map in the supervisor");
    assert_eq!(
        ring.read_fanout_membership().expect("membership"),
        Some(before)
    );
}

/// A second mapping of the same socket resumes at the block (V3) or frame run (V2) the first
/// mapping still holds: the oldest memory user space owns.
#[test]
fn a_new_mapping_resumes_at_the_oldest_user_owned_memory() {
    let Some(link) = Link::new("resume") else {
        return;
    };
    for version in [fanout_core::RingVersion::V3, fanout_core::RingVersion::V2] {
        let mut first = link
            .ns
            .run(move || {
                RxRingBuilder::new("vb")
                    .version(version)
                    .protocol(Protocol(ETHERTYPE))
                    .block_size(8192)
                    .block_count(8)
                    .frame_size(2048)
                    .retire_timeout(RetireTimeout::Millis(5))
                    .build()
            })
            .expect("ring");
        let handle = RingHandle::from_fd(
            first.socket().as_fd().try_clone_to_owned().expect("dup"),
            first.descriptor(),
        );
        let tx = link.sender("va");
        for i in 0..3 {
            tx.send(&test_frame(i, 0, 100)).expect("send");
        }
        assert_eq!(
            first.wait(Duration::from_secs(2)).expect("wait"),
            Readiness::Readable
        );
        std::thread::sleep(Duration::from_millis(50));
        let held = first.next_block().expect("a block or run is ready");
        let held_seqs: Vec<u32> = held
            .frames()
            .filter_map(|f| parse_test_frame(f.data()))
            .map(|p| p.0)
            .collect();
        assert_eq!(held_seqs, [0, 1, 2], "{version:?}");
        let mut second = handle.map().expect("second mapping");
        let again = second
            .next_block()
            .expect("the held memory is still user-owned");
        let again_seqs: Vec<u32> = again
            .frames()
            .filter_map(|f| parse_test_frame(f.data()))
            .map(|p| p.0)
            .collect();
        assert_eq!(again_seqs, held_seqs, "{version:?}: resumed elsewhere");
        assert_eq!(again.seq_num(), held.seq_num(), "{version:?}");
    }
}
