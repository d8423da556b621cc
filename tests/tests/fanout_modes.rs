//! Every fanout mode the relay offers, end to end with two workers: a steady, bounded stream of
//! many flows, sent from both workers' CPUs, relayed without loss, and each worker's share read
//! from `ctl stats` while the relay runs.
//!
//! What "spreads" means differs per mode, and each test asserts its mode's own signature:
//! `cpu` gives each worker exactly what was sent from its CPU (a veth frame is received on the
//! sender's CPU), `lb` deals frames round robin (two equal halves), `rnd` at random (two
//! halves within chance), `hash` and `qm` by flow and by receive queue (both workers get some
//! of the 16 flows; `qm` over a two-queue veth), and `rollover` gives everything to one worker
//! until its ring fills: the test stops that worker for a second, and the frames that arrive
//! meanwhile must reach the other one, with nothing lost once it resumes. `steer` is proved in
//! `shard_steer.rs`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, signal};
use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, payload, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged, two_online_cpus};
use nix::sys::signal::Signal;
use relay_bin::control::proto::StatsReport;

/// Datagrams per stream.
const N: u32 = 800;
/// Datagrams per second, both sending threads together.
const PPS: u32 = 1000;
/// Sending sockets (flows: one source port each) per sending CPU.
const FLOWS_PER_CPU: usize = 8;
/// How long a receiver waits for the stream.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the counters may take to reach the supervisor (it asks every second).
const STATS_TIMEOUT: Duration = Duration::from_secs(10);

const RULE: &str = r#"
[[rule]]
name = "spread"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000 } ]
"#;

fn config(dir: &Workdir, [first, second]: [u32; 2], fanout: &str, ring: &str) -> String {
    relay_section(
        dir,
        &format!("workers = \"{first},{second}\"\nfanout = \"{fanout}\""),
    ) + ring
        + RULE
}

/// Sends `seqs` of stream 1 to the rule's group from two threads, one pinned to each of `cpus`,
/// the one on `cpus[t]` sending the sequence numbers `t` modulo 2, each thread spreading its
/// datagrams round robin over [`FLOWS_PER_CPU`] sockets (source ports). Paced at `pps` in all.
fn send_from_both_cpus(topo: &Topology, cpus: [u32; 2], seqs: Range<u32>, pps: u32) {
    std::thread::scope(|s| {
        for (t, cpu) in cpus.into_iter().enumerate() {
            let seqs = seqs.clone();
            s.spawn(move || {
                fanout_core::cpu::pin_current_thread(cpu as usize)
                    .unwrap_or_else(|e| panic!("pin the sending thread to cpu {cpu}: {e}"));
                let flows: Vec<UdpSender> = (0..FLOWS_PER_CPU)
                    .map(|_| UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4))
                    .collect();
                let started = std::time::Instant::now();
                let mine = seqs.filter(|seq| *seq as usize % 2 == t);
                for (i, seq) in mine.enumerate() {
                    // Paced by the clock: this thread's i-th datagram leaves at 2i / pps.
                    let due = Duration::from_secs_f64(2.0 * i as f64 / f64::from(pps));
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    flows[i % FLOWS_PER_CPU]
                        .socket()
                        .send_to(&payload(1, seq), "239.1.1.1:5000")
                        .unwrap_or_else(|e| panic!("send datagram {seq}: {e}"));
                }
            });
        }
    });
}

/// Frames received per worker CPU, once the workers together forwarded `forwarded`.
fn shares(ctl: &Ctl, forwarded: u64) -> (BTreeMap<u32, u64>, StatsReport) {
    let stats = ctl.wait_stats(
        &format!("{forwarded} frames forwarded"),
        STATS_TIMEOUT,
        |stats| {
            stats
                .workers
                .iter()
                .map(|w| w.counters.forwarded)
                .sum::<u64>()
                >= forwarded
        },
    );
    let by_cpu = stats
        .workers
        .iter()
        .map(|w| (w.cpu, w.counters.received))
        .collect();
    (by_cpu, stats)
}

/// Checks what every mode must do: the whole stream arrived once and byte for byte, every frame
/// received was relayed, and none was dropped or refused.
fn assert_no_loss(mode: &str, got: &[fanout_relay_tests::relay::Datagram], stats: &StatsReport) {
    if let Err(problem) = check_stream(got, 1, 0..N) {
        panic!("fanout {mode}: {problem}");
    }
    let sum = |f: fn(&relay_bin::counters::WorkerCounters) -> u64| -> u64 {
        stats.workers.iter().map(|w| f(&w.counters)).sum()
    };
    assert_eq!(
        (
            sum(|c| c.received),
            sum(|c| c.forwarded),
            sum(|c| c.no_rule),
            sum(|c| c.kernel_drops),
            sum(|c| c.tx_full),
        ),
        (u64::from(N), u64::from(N), 0, 0, 0),
        "fanout {mode}: (received, forwarded, no_rule, kernel_drops, tx_full); {stats:#?}"
    );
    assert_eq!(
        stats.rules.get("spread").map(|r| r.packets),
        Some(u64::from(N)),
        "fanout {mode}: the rule's packets; {stats:#?}"
    );
}

/// Runs the stream through a relay with fanout `mode` and returns each worker's share.
fn relay_stream(
    test: &str,
    tag: &str,
    mode: &str,
    multiqueue: bool,
) -> Option<(BTreeMap<u32, u64>, [u32; 2])> {
    if !privileged(test) {
        return None;
    }
    let cpus = two_online_cpus(test)?;
    let topo = quiet_topology(tag);
    if multiqueue {
        two_queue_input(&topo);
    }
    let dir = Workdir::new(tag);
    let relay = RelayProcess::start(&topo.relay, &config(&dir, cpus, mode, ""), &[]);
    let ctl = Ctl::new(&dir);
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, RECEIVE_TIMEOUT);
    send_from_both_cpus(&topo, cpus, 0..N, PPS);
    let got = receiver.finish();
    let (by_cpu, stats) = shares(&ctl, u64::from(N));
    drop(relay.stop());
    assert_no_loss(mode, &got, &stats);
    assert_eq!(by_cpu.len(), 2, "fanout {mode}: two workers; {stats:#?}");
    eprintln!("fanout {mode}: frames received per worker cpu: {by_cpu:?}");
    Some((by_cpu, cpus))
}

/// Replaces the topology's input link with one of two receive and two transmit queues, so that
/// the sender's flows leave by either queue (chosen by flow hash) and arrive on the relay's
/// `rin0` with that queue's number, which fanout `qm` reads.
fn two_queue_input(topo: &Topology) {
    topo.sender.ip(&["link", "del", Topology::SENDER_IF]);
    let queues = ["numtxqueues", "2", "numrxqueues", "2"];
    let mut args = vec!["link", "add", Topology::SENDER_IF];
    args.extend(queues);
    args.extend(["type", "veth", "peer", "name", Topology::RELAY_IN_IF]);
    args.extend(queues);
    args.extend(["netns", topo.relay.name()]);
    topo.sender.ip(&args);
    topo.sender.link_up(Topology::SENDER_IF);
    topo.relay.link_up(Topology::RELAY_IN_IF);
    topo.sender.add_addr(
        Topology::SENDER_IF,
        &format!("{}/24", Topology::SENDER_ADDR),
    );
    topo.sender.add_multicast_route(Topology::SENDER_IF);
    topo.relay.add_addr(
        Topology::RELAY_IN_IF,
        &format!("{}/24", Topology::RELAY_IN_ADDR),
    );
}

#[test]
fn fanout_cpu_gives_each_worker_its_cpus_frames() {
    let Some((by_cpu, cpus)) = relay_stream(
        "fanout_cpu_gives_each_worker_its_cpus_frames",
        "fmcpu",
        "cpu",
        false,
    ) else {
        return;
    };
    for cpu in cpus {
        assert_eq!(
            by_cpu[&cpu],
            u64::from(N / 2),
            "the worker on cpu {cpu} gets exactly what was sent from cpu {cpu}: {by_cpu:?}"
        );
    }
}

#[test]
fn fanout_hash_spreads_flows_over_both_workers() {
    let Some((by_cpu, _)) = relay_stream(
        "fanout_hash_spreads_flows_over_both_workers",
        "fmhash",
        "hash",
        false,
    ) else {
        return;
    };
    // 16 flows on two workers: all on one worker has a chance of 2^-15.
    assert!(
        by_cpu.values().all(|&n| n > 0),
        "both workers get flows: {by_cpu:?}"
    );
}

#[test]
fn fanout_lb_deals_frames_round_robin() {
    let Some((by_cpu, _)) = relay_stream("fanout_lb_deals_frames_round_robin", "fmlb", "lb", false)
    else {
        return;
    };
    // Round robin over two members: equal halves, give or take a frame the rollover flag
    // moved or a stray frame of the link.
    for (&cpu, &n) in &by_cpu {
        assert!(
            n.abs_diff(u64::from(N / 2)) <= u64::from(N / 100),
            "the worker on cpu {cpu} gets half the frames: {by_cpu:?}"
        );
    }
}

#[test]
fn fanout_rnd_spreads_frames_at_random() {
    let Some((by_cpu, _)) =
        relay_stream("fanout_rnd_spreads_frames_at_random", "fmrnd", "rnd", false)
    else {
        return;
    };
    // Binomial(800, 1/2): a quarter is 14 standard deviations below the mean.
    for (&cpu, &n) in &by_cpu {
        assert!(
            n >= u64::from(N / 4),
            "the worker on cpu {cpu} gets about half the frames: {by_cpu:?}"
        );
    }
}

#[test]
fn fanout_qm_spreads_by_receive_queue() {
    let Some((by_cpu, _)) = relay_stream("fanout_qm_spreads_by_receive_queue", "fmqm", "qm", true)
    else {
        return;
    };
    assert!(
        by_cpu.values().all(|&n| n > 0),
        "flows on both queues reach both workers: {by_cpu:?}"
    );
}

/// Blocks of one page, retired every 2 ms: at this rate a block holds a frame or two, so a
/// stopped worker's ring fills within a fraction of a second, yet 64 blocks bridge a busy
/// machine's scheduling delays (about 128 ms) while the worker runs.
const SMALL_RING: &str = "\n[ring]\nblock_size = 4096\nblock_count = 64\nretire_timeout_ms = 2\n";
/// Datagrams before the stop, while it lasts and after the worker resumes.
const BEFORE: u32 = 200;
const DURING: u32 = 400;

#[test]
fn fanout_rollover_spills_a_full_ring_to_the_other_worker() {
    let test = "fanout_rollover_spills_a_full_ring_to_the_other_worker";
    if !privileged(test) {
        return;
    }
    let Some(cpus) = two_online_cpus(test) else {
        return;
    };
    let topo = quiet_topology("fmroll");
    let dir = Workdir::new("fmroll");
    let relay = RelayProcess::start(
        &topo.relay,
        &config(&dir, cpus, "rollover", SMALL_RING),
        &[],
    );
    let ctl = Ctl::new(&dir);
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, RECEIVE_TIMEOUT);

    // While its ring has room, the first member takes every frame.
    send_from_both_cpus(&topo, cpus, 0..BEFORE, PPS);
    let (first, _) = shares(&ctl, u64::from(BEFORE));
    let busy: Vec<u32> = first
        .iter()
        .filter(|&(_, &n)| n > 0)
        .map(|(&cpu, _)| cpu)
        .collect();
    let [busy] = busy[..] else {
        panic!("fanout rollover fills one worker's ring first: {first:?}");
    };
    assert_eq!(first[&busy], u64::from(BEFORE), "{first:?}");
    let idle = cpus
        .into_iter()
        .find(|&cpu| cpu != busy)
        .expect("two workers");

    // Stopped (for less than the watchdog's 3 s), its ring fills and the rest spills over.
    let pid = ctl
        .workers()
        .iter()
        .find(|w| w.cpu == busy)
        .and_then(|w| w.pid)
        .expect("the busy worker has a pid");
    signal(pid, Signal::SIGSTOP);
    send_from_both_cpus(&topo, cpus, BEFORE..BEFORE + DURING, PPS);
    signal(pid, Signal::SIGCONT);
    send_from_both_cpus(&topo, cpus, BEFORE + DURING..N, PPS);

    let got = receiver.finish();
    let (by_cpu, stats) = shares(&ctl, u64::from(N));
    drop(relay.stop());
    eprintln!("fanout rollover: frames received per worker cpu: {by_cpu:?}");
    assert_no_loss("rollover", &got, &stats);
    // The stopped worker's ring took a few blocks' worth; the other worker the rest.
    assert!(
        by_cpu[&idle] >= u64::from(DURING / 2),
        "the worker on cpu {idle} takes what the stopped one had no room for: {by_cpu:?}"
    );
    assert!(by_cpu[&busy] > u64::from(BEFORE), "{by_cpu:?}");
}
