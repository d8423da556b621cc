//! The worker set changes while traffic flows: `ctl workers set` under `replicate` and under
//! `shard` placement loses nothing on steady flows, and a worker lost under `shard` is reported
//! (its shards and their rule count), its packets wait in its rings, and its restart serves them.
//!
//! They need two online CPUs and work with any number: under `steer` the relay makes one fanout
//! member (shard) per online CPU, so the shard counts these tests expect come from the online set.

use std::net::Ipv4Addr;
use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule, signal};
use fanout_relay_tests::relay::{
    Collector, RelayProcess, UdpReceiver, UdpSender, check_stream, payload, quiet_topology,
};
use fanout_relay_tests::{Topology, online_cpus, privileged, two_online_cpus};
use nix::sys::signal::Signal;
use relay_bin::control::proto::WorkerReport;
use relay_rules::shard::shard;

/// Datagrams per flow.
const N: u32 = 3000;
/// Datagrams per second per flow: a 3 s stream, long enough for two resizes.
const PPS: u32 = 1000;

/// Rings that hold a worker's packets for about a second at these rates (256 blocks retired
/// every 4 ms), so that a worker which is stopped, restarted, or slow to be scheduled on this
/// shared machine delays packets instead of losing them. The default ring (64 blocks, 2 ms)
/// holds 128 ms of a slow stream.
const RING: &str = "\n[ring]\nblock_size = 65536\nblock_count = 256\nretire_timeout_ms = 4\n";

/// Datagrams per flow of the autoscale test's loaded phase: 4 s at 3,000 per second.
const LOADED: u32 = 12_000;

/// A flow: its input (group, port) and its output (group, port).
#[derive(Debug, Clone, Copy)]
struct Flow {
    input: (Ipv4Addr, u16),
    output: (Ipv4Addr, u16),
}

/// `count` flows, each its own rule; with `Some(shards)`, alternately in the first and the last
/// of that many shards, which a split between two workers puts on different workers.
fn flows(count: u8, shards: Option<u32>) -> Vec<Flow> {
    let mut found = Vec::new();
    // Enough keys that up to 256 shards (CPUs) give the first and the last two each.
    for n in 1..=5000u16 {
        let group = Ipv4Addr::new(239, 1, 1 + ((n - 1) / 250) as u8, 1 + ((n - 1) % 250) as u8);
        let input = (group, 5000 + n);
        let wanted = |shards: u32| if found.len() % 2 == 0 { 0 } else { shards - 1 };
        if shards.is_none_or(|shards| shard(input.0, input.1, shards) == wanted(shards)) {
            let index = found.len() as u8 + 1;
            found.push(Flow {
                input,
                output: (Ipv4Addr::new(239, 2, 2, index), 6000 + u16::from(index)),
            });
        }
        if found.len() == usize::from(count) {
            break;
        }
    }
    assert_eq!(found.len(), usize::from(count), "not enough keys");
    found
}

fn rules(flows: &[Flow]) -> String {
    flows
        .iter()
        .enumerate()
        .map(|(i, flow)| {
            rule(
                &format!("f{i}"),
                &flow.input.0.to_string(),
                flow.input.1,
                &flow.output.0.to_string(),
                flow.output.1,
            )
        })
        .collect()
}

/// Sends every flow's datagrams 0..N, interleaved, at `PPS` each; flow i carries tag i + 1.
fn send_all(sender: &UdpSender, flows: &[Flow]) {
    send_at(sender, flows, N, PPS);
}

/// Sends every flow's datagrams 0..count, interleaved, at `pps` each.
fn send_at(sender: &UdpSender, flows: &[Flow], count: u32, pps: u32) {
    let start = std::time::Instant::now();
    for seq in 0..count {
        let due = start + Duration::from_secs_f64(f64::from(seq) / f64::from(pps));
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        for (i, flow) in flows.iter().enumerate() {
            sender
                .socket()
                .send_to(&payload(i as u8 + 1, seq), flow.input)
                .unwrap_or_else(|e| panic!("send {seq} to {:?}: {e}", flow.input));
        }
    }
}

/// A receiver per flow, each expecting `count` datagrams.
fn receive_all(topo: &Topology, flows: &[Flow], count: u32) -> Vec<Collector> {
    flows
        .iter()
        .map(|flow| {
            UdpReceiver::join(
                &topo.receiver,
                &format!("{}:{}", flow.output.0, flow.output.1),
                Topology::RECEIVER_ADDR,
            )
            .collect(count as usize, Duration::from_secs(30))
        })
        .collect()
}

/// The worker sets to go through while `flows` stream, each answered before the next.
fn resize_under_traffic(name: &str, extra: &str, flows: &[Flow], steps: &[&str]) -> Vec<String> {
    let topo = quiet_topology(name);
    let dir = Workdir::new(name);
    let config = relay_section(&dir, extra) + &rules(flows);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let receivers = receive_all(&topo, flows, N);
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let mut answers = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| send_all(&sender, flows));
        for step in steps {
            std::thread::sleep(Duration::from_millis(700));
            answers.push(ctl.ok(&["workers", "set", step]));
        }
    });
    for (i, receiver) in receivers.into_iter().enumerate() {
        if let Err(problem) = check_stream(&receiver.finish(), i as u8 + 1, 0..N) {
            panic!(
                "{name}: flow {i} across `workers set {steps:?}`: {problem}\n{}",
                relay.log()
            );
        }
    }
    relay.stop();
    answers
}

/// The rows of a `ctl workers` table (each starts with its CPU), not its header or the lines
/// about inputs under it.
fn worker_rows(table: &str) -> usize {
    table
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|cpu| cpu.parse::<u32>().is_ok())
        })
        .count()
}

fn cpus(workers: &[WorkerReport]) -> Vec<u32> {
    workers.iter().map(|w| w.cpu).collect()
}

#[test]
fn resizing_under_replicate_loses_nothing() {
    let test = "resizing_under_replicate_loses_nothing";
    if !privileged(test) || two_online_cpus(test).is_none() {
        return;
    }
    let answers = resize_under_traffic(
        "screp",
        &format!("workers = 1\nfanout = \"hash\"{RING}"),
        &flows(4, None),
        &["2", "1"],
    );
    assert!(answers[0].contains("ready"), "{}", answers[0]);
    assert_eq!(worker_rows(&answers[0]), 2, "two workers: {}", answers[0]);
    assert_eq!(worker_rows(&answers[1]), 1, "one worker: {}", answers[1]);
}

#[test]
fn resizing_under_shard_loses_nothing_and_moves_the_shards() {
    let test = "resizing_under_shard_loses_nothing_and_moves_the_shards";
    if !privileged(test) || two_online_cpus(test).is_none() {
        return;
    }
    // One shard per online CPU, fixed while the relay runs.
    let shards = online_cpus().len() as u32;
    let all: Vec<u32> = (0..shards).collect();
    let flows = flows(4, Some(shards));
    let topo = quiet_topology("scshd");
    let dir = Workdir::new("scshd");
    let extra = format!("workers = 1\nfanout = \"steer\"\nplacement = \"shard\"{RING}");
    let config = relay_section(&dir, &extra) + &rules(&flows);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let one = ctl.workers();
    assert_eq!(one.len(), 1, "{one:#?}");
    assert_eq!(one[0].members, all, "one worker holds every shard");
    let receivers = receive_all(&topo, &flows, N);
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let mut seen = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| send_all(&sender, &flows));
        for step in ["2", "1"] {
            std::thread::sleep(Duration::from_millis(700));
            ctl.ok(&["workers", "set", step]);
            seen.push(ctl.workers());
        }
    });
    for (i, receiver) in receivers.into_iter().enumerate() {
        if let Err(problem) = check_stream(&receiver.finish(), i as u8 + 1, 0..N) {
            panic!("flow {i} across two resizes: {problem}\n{}", relay.log());
        }
    }
    let two = &seen[0];
    assert_eq!(cpus(two).len(), 2, "{two:#?}");
    // The shards are split evenly: each worker holds half of them, one more for one of the two
    // when their number is odd, and together all of them once.
    let mut halves: Vec<usize> = two.iter().map(|w| w.members.len()).collect();
    halves.sort_unstable();
    assert_eq!(
        halves,
        vec![shards as usize / 2, shards.div_ceil(2) as usize],
        "an even split: {two:#?}"
    );
    let mut members: Vec<u32> = two.iter().flat_map(|w| w.members.clone()).collect();
    members.sort_unstable();
    assert_eq!(members, all, "every shard served once: {two:#?}");
    assert!(two.iter().all(|w| w.state == "ready"), "{two:#?}");
    let back = &seen[1];
    assert_eq!(back.len(), 1, "{back:#?}");
    assert_eq!(back[0].members, all);
    // Both shards' flows were relayed by the worker of each phase: no rule was missing where a
    // packet landed.
    let exit = relay.stop();
    assert_eq!(
        exit.summary.total().no_rule,
        0,
        "a packet reached a worker without its rule"
    );
}

#[test]
fn a_lost_shard_worker_is_reported_and_its_packets_wait() {
    let test = "a_lost_shard_worker_is_reported_and_its_packets_wait";
    if !privileged(test) || two_online_cpus(test).is_none() {
        return;
    }
    // A worker on every online CPU, each serving one shard of as many.
    let shards = online_cpus().len() as u32;
    let last = shards - 1;
    let flows = flows(2, Some(shards));
    let topo = quiet_topology("sclost");
    let dir = Workdir::new("sclost");
    let extra = format!("fanout = \"steer\"\nplacement = \"shard\"{RING}");
    let config = relay_section(&dir, &extra) + &rules(&flows);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let workers = ctl.workers();
    // Flow 1 is in the last shard: the worker serving that member is the victim.
    let victim = workers
        .iter()
        .find(|w| w.members == vec![last])
        .unwrap_or_else(|| panic!("no worker serves shard {last} alone: {workers:#?}"))
        .clone();
    let receiver = UdpReceiver::join(
        &topo.receiver,
        &format!("{}:{}", flows[1].output.0, flows[1].output.1),
        Topology::RECEIVER_ADDR,
    )
    .collect(N as usize, Duration::from_secs(30));
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let mut during = None;
    std::thread::scope(|s| {
        s.spawn(|| send_all(&sender, &flows[1..]));
        std::thread::sleep(Duration::from_millis(500));
        signal(
            victim.pid.expect("a ready worker has a pid"),
            Signal::SIGKILL,
        );
        during = Some(ctl.wait_workers(
            "the lost worker's shard to be reported unserved",
            Duration::from_secs(5),
            |workers| {
                workers
                    .iter()
                    .any(|w| w.cpu == victim.cpu && w.unserved_rules == 1 && w.outages == 1)
            },
        ));
        ctl.wait_workers(
            "the worker to be back",
            Duration::from_secs(20),
            |workers| {
                workers
                    .iter()
                    .all(|w| w.state == "ready" && w.unserved_rules == 0)
            },
        );
    });
    let during = during.expect("the workers while one was gone");
    assert!(
        during
            .iter()
            .any(|w| w.cpu == victim.cpu && w.state != "ready"),
        "{during:#?}"
    );
    relay.wait_for_log("the outage", Duration::from_secs(5), |line| {
        line.contains(&format!(
            "shards [{last}] of {shards} (1 rules) are not served"
        ))
    });
    // The datagrams sent while the worker was gone waited in its ring: none is lost.
    if let Err(problem) = check_stream(&receiver.finish(), 1, 0..N) {
        panic!("the lost shard's flow: {problem}\n{}", relay.log());
    }
    let after = ctl.workers();
    let back = after
        .iter()
        .find(|w| w.cpu == victim.cpu)
        .expect("the victim's slot");
    assert!(back.down_ms > 0, "{after:#?}");
    relay.stop();
}

#[test]
fn autoscale_grows_under_load_and_shrinks_when_idle_without_loss() {
    let test = "autoscale_grows_under_load_and_shrinks_when_idle_without_loss";
    if !privileged(test) || two_online_cpus(test).is_none() {
        return;
    }
    let flows = flows(4, None);
    let topo = quiet_topology("scauto");
    let dir = Workdir::new("scauto");
    // Thresholds for a debug build's worker: 12,000 datagrams per second keep it a few percent
    // busy (4-5 % seen with linear transmit, more without; CPU time is counted in 10 ms ticks,
    // so 1 % is the resolution); a trickle of 20 leaves it at 0 %, now and then 1 %. At most two
    // workers, however many CPUs are online: the test watches one step up and one down.
    let extra = format!(
        "fanout = \"hash\"{RING}\n[autoscale]\nbusy_above = 0.02\nidle_below = 0.01\n\
         sustain_s = 2\ncooldown_s = 1\nmax_workers = 2\n"
    );
    let config = relay_section(&dir, &extra) + &rules(&flows);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    assert_eq!(ctl.workers().len(), 1, "autoscale starts with min_workers");
    let receivers = receive_all(&topo, &flows, LOADED);
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let mut grown = None;
    std::thread::scope(|s| {
        s.spawn(|| send_at(&sender, &flows, LOADED, 3 * PPS));
        grown = Some(
            ctl.wait_workers("a second worker", Duration::from_secs(20), |w| {
                w.len() == 2 && w.iter().all(|w| w.state == "ready")
            }),
        );
    });
    for (i, receiver) in receivers.into_iter().enumerate() {
        if let Err(problem) = check_stream(&receiver.finish(), i as u8 + 1, 0..LOADED) {
            panic!("flow {i} while growing: {problem}\n{}", relay.log());
        }
    }
    // A trickle: the two workers are idle, one goes.
    let trickle = &flows[..1];
    let receiver = UdpReceiver::join(
        &topo.receiver,
        &format!("{}:{}", trickle[0].output.0, trickle[0].output.1),
        Topology::RECEIVER_ADDR,
    )
    .collect(200, Duration::from_secs(30));
    std::thread::scope(|s| {
        s.spawn(|| {
            sender.send_numbered(
                &format!("{}:{}", trickle[0].input.0, trickle[0].input.1),
                9,
                0..200,
                20,
            )
        });
        ctl.wait_workers("one worker again", Duration::from_secs(20), |w| {
            w.len() == 1 && w[0].state == "ready"
        });
    });
    if let Err(problem) = check_stream(&receiver.finish(), 9, 0..200) {
        panic!("the trickle while shrinking: {problem}\n{}", relay.log());
    }
    relay.wait_for_log("the decisions", Duration::from_secs(5), |line| {
        line.contains("autoscale: workers busy") && line.contains("shrinking")
    });
    // Growing added a fanout member for the new worker: one member each.
    let grown = grown.expect("the second worker's report");
    let mut members: Vec<Vec<u32>> = grown.iter().map(|w| w.members.clone()).collect();
    members.sort();
    assert_eq!(members, vec![vec![0], vec![1]], "{grown:#?}");
    relay.stop();
}
