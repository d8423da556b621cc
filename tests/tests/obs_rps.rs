//! Steering on veth, which has one RX queue: `check-steering` says so, a sender pinned to one
//! CPU feeds one worker under fanout cpu, and `--rps auto` spreads its flows over both workers,
//! then puts the RPS mask back when the relay stops. The two workers are on the first two online
//! CPUs.

use std::collections::BTreeMap;
use std::time::Duration;

use fanout_core::cpu::CpuSet;
use fanout_core::steering::Steering;
use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule, run_bounded};
use fanout_relay_tests::relay::{RelayProcess, UdpSender, quiet_topology, relay_binary};
use fanout_relay_tests::{Netns, Topology, privileged, two_online_cpus};

/// Flows (source ports): RPS steers by flow hash, so several are needed to see both CPUs used.
const FLOWS: u32 = 16;
/// Datagrams per flow.
const PER_FLOW: u32 = 50;
/// Datagrams per second per flow.
const PPS: u32 = 2000;

/// The RPS mask of `rin0` in the relay's namespace, read through that namespace's sysfs.
fn rps_mask(topo: &Topology) -> String {
    topo.relay.run_with_sysfs(|| {
        Steering::new()
            .rps_cpus(Topology::RELAY_IN_IF, 0)
            .unwrap_or_else(|e| panic!("rps_cpus of rin0: {e}"))
            .to_string()
    })
}

/// `fanout-relay check-steering rin0 --workers <workers> [extra]` in the relay's namespace.
fn check_steering(ns: &Netns, workers: &str, extra: &[&str]) -> String {
    let mut cmd = ns.cmd(relay_binary());
    cmd.args([
        "check-steering",
        Topology::RELAY_IN_IF,
        "--workers",
        workers,
    ])
    .args(extra);
    let out = run_bounded(cmd, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "check-steering failed ({}): {}",
        out.status,
        out.stderr
    );
    out.stdout
}

/// Sends every flow from `cpu` and returns, per worker CPU, the packets the rule matched there.
fn send_and_count(topo: &Topology, ctl: &Ctl, cpu: u32) -> BTreeMap<u32, u64> {
    let senders: Vec<UdpSender> = (0..FLOWS)
        .map(|_| UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4))
        .collect();
    for (flow, sender) in senders.iter().enumerate() {
        sender.send_numbered_on_cpu(cpu as usize, "239.1.1.1:5000", flow as u8, 0..PER_FLOW, PPS);
    }
    let total = u64::from(FLOWS * PER_FLOW);
    let stats = ctl.wait_stats("every packet to be counted", Duration::from_secs(20), |s| {
        s.rules.get("spread").map_or(0, |r| r.packets) == total
    });
    stats
        .workers
        .iter()
        .map(|w| {
            (
                w.cpu,
                w.counters.rules.get("spread").map_or(0, |r| r.packets),
            )
        })
        .collect()
}

#[test]
fn rps_auto_spreads_a_single_queue_over_both_workers_and_is_undone() {
    let test = "rps_auto_spreads_a_single_queue_over_both_workers_and_is_undone";
    if !privileged(test) {
        return;
    }
    let Some([first, second]) = two_online_cpus(test) else {
        return;
    };
    // The workers' CPUs as the relay writes them in its log and in the RPS mask.
    let workers: CpuSet = [first, second]
        .map(|cpu| cpu as usize)
        .into_iter()
        .collect();
    let topo = quiet_topology("rps");
    let dir = Workdir::new("rps");
    let config = relay_section(&dir, &format!("workers = \"{first},{second}\""))
        + &rule("spread", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let ctl = Ctl::new(&dir);

    // veth: one queue, no RPS, no interrupt.
    assert_eq!(rps_mask(&topo), "", "veth starts without RPS");
    let before = check_steering(&topo.relay, &workers.to_string(), &[]);
    assert!(
        before.contains("verdict: BAD: 1 RX queue and no RPS"),
        "{before}"
    );
    assert!(before.contains("--rps auto"), "{before}");

    // Without RPS: everything sent from the first CPU reaches the worker on that CPU.
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let without = send_and_count(&topo, &ctl, first);
    let exit = relay.stop();
    assert!(!exit.log.contains("rps auto"), "{}", exit.log);
    assert_eq!(
        without,
        BTreeMap::from([(first, u64::from(FLOWS * PER_FLOW)), (second, 0)]),
        "packets per worker without RPS"
    );

    // With --rps auto: RPS on across the workers' CPUs while the relay runs, both workers busy.
    let relay = RelayProcess::start(&topo.relay, &config, &["--rps", "auto"]);
    let spread = format!(
        "rps auto: rin0 has 1 RX queue and had no RPS: RPS now spreads it over cpus {workers} \
         (mask {})",
        workers.to_mask()
    );
    assert!(relay.log().contains(&spread), "{}", relay.log());
    assert_eq!(
        rps_mask(&topo),
        workers.to_string(),
        "RPS on while the relay runs"
    );
    let during = check_steering(&topo.relay, &workers.to_string(), &["--json"]);
    assert!(during.contains("\"level\": \"good\""), "{during}");
    let with = send_and_count(&topo, &ctl, first);
    let exit = relay.stop();
    assert!(
        with.values().all(|&packets| packets > 0),
        "packets per worker with --rps auto: {with:?}"
    );
    assert!(
        exit.log.contains("rps: rin0 rx-0 put back to mask 0"),
        "{}",
        exit.log
    );
    assert_eq!(rps_mask(&topo), "", "the mask is put back at exit");
}
