//! Shard placement under fanout `steer`, proved by the kernel: the relay's steering program runs
//! in the kernel's fanout hook, and a worker holds only its shard's rules, so a packet that
//! reached any worker other than `shard(group, port, shards)` would find no rule there.
//! Every one of at least 2,000 keys must be relayed, each by the worker the function names.
//!
//! Under `steer` the relay makes one fanout member (shard) per online CPU; with a worker on every
//! online CPU, the worker on the i-th online CPU serves shard i. The test needs two online CPUs
//! and works with any number.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use fanout_relay_tests::relay::{RelayProcess, UdpSender, quiet_topology};
use fanout_relay_tests::{Topology, online_cpus, privileged, two_online_cpus};
use relay_rules::shard::shard;

/// Distinct (group, port) keys, one rule and one packet each; more on a machine with many CPUs,
/// see [`keys`].
const KEYS: u32 = 2000;
/// Keys per shard at least, so that every shard, and so every worker, gets a fair share.
const KEYS_PER_SHARD: u32 = 40;
/// Modest, so that no ring ever fills and every packet is counted where it landed.
const PPS: u32 = 1000;

/// How many keys to send for `shards` shards.
fn keys(shards: u32) -> u32 {
    KEYS.max(KEYS_PER_SHARD * shards)
}

fn key(index: u32) -> (Ipv4Addr, u16) {
    assert!(
        index < 200 * 256,
        "key {index}: the group's third byte would overflow"
    );
    let group = Ipv4Addr::new(239, 10, (index / 200) as u8, (index % 200 + 1) as u8);
    let port = 5000 + (index % 7) as u16;
    (group, port)
}

fn config(keys: u32) -> String {
    let mut text =
        "[relay]\nworkers = \"all\"\nfanout = \"steer\"\nplacement = \"shard\"\n".to_owned();
    for index in 0..keys {
        let (group, port) = key(index);
        let _ = write!(
            text,
            "\n[[rule]]\nname = \"k{index}\"\n\
             input = {{ interface = \"rin0\", destination = \"{group}\", port = {port} }}\n\
             outputs = [ {{ interface = \"rout0\", destination = \"239.200.0.1\", port = 7000 }} ]\n"
        );
    }
    text
}

#[test]
fn every_key_reaches_exactly_the_worker_its_shard_names() {
    let test = "every_key_reaches_exactly_the_worker_its_shard_names";
    if !privileged(test) || two_online_cpus(test).is_none() {
        return;
    }
    let online = online_cpus();
    let shards = online.len() as u32;
    let keys = keys(shards);
    let topo = quiet_topology("steer");
    let relay = RelayProcess::start(&topo.relay, &config(keys), &[]);
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let mut expected: BTreeMap<u32, u64> = BTreeMap::new();
    let started = std::time::Instant::now();
    for index in 0..keys {
        let (group, port) = key(index);
        *expected.entry(shard(group, port, shards)).or_default() += 1;
        sender
            .socket()
            .send_to(&index.to_be_bytes(), (group, port))
            .unwrap_or_else(|e| panic!("send to {group}:{port}: {e}"));
        // Paced by the clock: packet i leaves no earlier than i / PPS seconds after the first.
        let due = std::time::Duration::from_secs_f64(f64::from(index + 1) / f64::from(PPS));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let exit = relay.stop();
    let summary = &exit.summary;
    let total = summary.total();
    assert_eq!(
        (
            total.received,
            total.no_rule,
            total.malformed,
            total.kernel_drops
        ),
        (u64::from(keys), 0, 0, 0),
        "(received, no_rule, malformed, kernel drops): a packet at the wrong worker finds no \
         rule there; {summary:#?}"
    );
    for (&shard_index, &count) in &expected {
        // A worker on every online CPU, holding the shards in the same order.
        let cpu = online[shard_index as usize];
        let worker = summary.worker(cpu);
        assert_eq!(
            (worker.received, worker.forwarded),
            (count, count),
            "the worker on cpu {cpu} must see exactly shard {shard_index}'s {count} keys; \
             {summary:#?}"
        );
    }
    // Every worker had a share to prove its steering with: more than a quarter of an even one
    // (true of these keys for every shard count up to 1,024).
    assert_eq!(
        expected.len(),
        online.len(),
        "a shard got no key: {expected:?}"
    );
    assert!(
        expected
            .values()
            .all(|&count| count * 4 * u64::from(shards) > u64::from(keys)),
        "the shard function spreads keys evenly: {expected:?}"
    );
}

#[test]
fn shard_placement_without_steer_is_refused() {
    if !privileged("shard_placement_without_steer_is_refused") {
        return;
    }
    let topo = quiet_topology("steerno");
    let config = fanout_relay_tests::relay::ConfigFile::new(
        "[relay]\nfanout = \"hash\"\nplacement = \"shard\"\n",
    );
    let out = topo
        .relay
        .cmd(fanout_relay_tests::relay::relay_binary())
        .arg("check-config")
        .arg(config.path())
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(
        stderr.contains("relay.placement") && stderr.contains("steer"),
        "the error names the field and the fix: {stderr}"
    );
}
