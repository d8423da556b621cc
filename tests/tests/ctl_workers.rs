//! Workers and their tables: a worker killed with SIGKILL comes back with the current generation,
//! rules added at run time included, and serves them; a worker whose table drifted (forced with
//! the `drift-test` build's debug command) is found out by its checksum and resynced.

use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule, signal};
use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged, skip};
use nix::sys::signal::Signal;
use relay_bin::control::proto::WorkerReport;

/// Datagrams per check.
const N: u32 = 200;
/// Their rate.
const PPS: u32 = 500;

fn slot(workers: &[WorkerReport], cpu: u32) -> &WorkerReport {
    workers
        .iter()
        .find(|w| w.cpu == cpu)
        .unwrap_or_else(|| panic!("no worker on cpu {cpu}: {workers:#?}"))
}

#[test]
fn a_killed_worker_comes_back_with_the_current_generation() {
    if !privileged("a_killed_worker_comes_back_with_the_current_generation") {
        return;
    }
    let topo = quiet_topology("ctlkil");
    let dir = Workdir::new("kill");
    let config = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    // Changes after the start: the restarted worker must get them from the supervisor.
    ctl.ok(&["add", "late", "rin0:239.1.1.8:5008", "rout0:239.2.2.8:6008"]);
    ctl.ok(&["add", "gone", "rin0:239.1.1.9:5009", "rout0:239.2.2.9:6009"]);
    ctl.ok(&["remove", "gone"]);
    let generation = ctl.wait_settled(Duration::from_secs(10));
    assert_eq!(generation, 4);

    let workers = ctl.workers();
    let victim = workers[0].cpu;
    let old_pid = workers[0].pid.expect("a ready worker has a pid");
    signal(old_pid, Signal::SIGKILL);
    let workers = ctl.wait_workers(
        "the killed worker to be back, ready at the current generation",
        Duration::from_secs(20),
        |workers| {
            let w = slot(workers, victim);
            w.pid.is_some_and(|pid| pid != old_pid)
                && w.state == "ready"
                && w.generation == generation
                && w.restarts == 1
        },
    );
    relay.wait_for_log("the restart", Duration::from_secs(5), |line| {
        line.contains(&format!("worker on cpu {victim} restarted"))
    });
    for w in &workers {
        assert_eq!(
            (w.state.as_str(), w.generation, w.restarts),
            ("ready", generation, u32::from(w.cpu == victim)),
            "{workers:#?}"
        );
    }

    // The restarted worker serves the rule added after the start: frames sent from its CPU
    // reach it (fanout cpu).
    let before: Vec<(u32, u64)> = workers.iter().map(|w| (w.cpu, w.forwarded)).collect();
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.8:6008", Topology::RECEIVER_ADDR)
        .collect(N as usize, Duration::from_secs(20));
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered_on_cpu(
        victim as usize,
        "239.1.1.8:5008",
        1,
        0..N,
        PPS,
    );
    if let Err(problem) = check_stream(&receiver.finish(), 1, 0..N) {
        panic!("rule `late` after the restart: {problem}");
    }
    let workers = ctl.wait_workers(
        "the restarted worker's counters",
        Duration::from_secs(10),
        |workers| {
            let forwarded: u64 = workers.iter().map(|w| w.forwarded).sum();
            forwarded >= before.iter().map(|(_, f)| f).sum::<u64>() + u64::from(N)
        },
    );
    let delta: Vec<(u32, u64)> = workers
        .iter()
        .zip(&before)
        .map(|(w, (cpu, f))| (*cpu, w.forwarded - f))
        .collect();
    let expected: Vec<(u32, u64)> = before
        .iter()
        .map(|&(cpu, _)| (cpu, if cpu == victim { u64::from(N) } else { 0 }))
        .collect();
    assert_eq!(delta, expected, "(cpu, forwarded) since the restart");
    let exit = relay.stop();
    assert_eq!(exit.summary.rule_packets("late"), u64::from(N));
}

#[test]
fn a_drifted_table_is_found_and_repaired() {
    if !privileged("a_drifted_table_is_found_and_repaired") {
        return;
    }
    let topo = quiet_topology("ctldft");
    let dir = Workdir::new("drift");
    let config = relay_section(&dir, "")
        + &rule("r1", "239.1.1.1", 5001, "239.2.2.1", 6001)
        + &rule("r2", "239.1.1.2", 5002, "239.2.2.2", 6002)
        + &rule("r3", "239.1.1.3", 5003, "239.2.2.3", 6003);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    ctl.ok(&["add", "r4", "rin0:239.1.1.4:5004", "rout0:239.2.2.4:6004"]);
    let generation = ctl.wait_settled(Duration::from_secs(10));
    let victim = ctl.workers()[0].cpu;

    if ctl.debug("debug_corrupt_table", victim).is_none() {
        skip(
            "a_drifted_table_is_found_and_repaired",
            "the relay binary was built without `--features drift-test`",
        );
        return;
    }
    relay.wait_for_log(
        "the worker to drop a rule",
        Duration::from_secs(5),
        |line| line.contains(&format!("worker on cpu {victim}: dropping rule")),
    );
    let workers = ctl.wait_workers(
        "the drift to be repaired",
        Duration::from_secs(10),
        |workers| {
            let w = slot(workers, victim);
            w.drift_repairs >= 1 && w.state == "ready" && w.generation == generation
        },
    );
    relay.wait_for_log("the drift to be logged", Duration::from_secs(5), |line| {
        line.contains(&format!("worker on cpu {victim}")) && line.contains("drift, resyncing")
    });
    for w in &workers {
        assert_eq!(
            (w.drift_repairs, w.restarts, w.generation),
            (u32::from(w.cpu == victim), 0, generation),
            "{workers:#?}"
        );
    }
    assert!(
        ctl.ok(&["workers"]).contains("drift"),
        "ctl workers has no drift column"
    );
    // Every rule relays on the repaired worker.
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    for n in 1..=4u16 {
        let receiver = UdpReceiver::join(
            &topo.receiver,
            &format!("239.2.2.{n}:600{n}"),
            Topology::RECEIVER_ADDR,
        )
        .collect(100, Duration::from_secs(20));
        sender.send_numbered_on_cpu(
            victim as usize,
            &format!("239.1.1.{n}:500{n}"),
            n as u8,
            0..100,
            PPS,
        );
        if let Err(problem) = check_stream(&receiver.finish(), n as u8, 0..100) {
            panic!("rule r{n} on the repaired worker: {problem}");
        }
    }
    // Every worker reports the repaired table: the generation and one checksum, the same on
    // every worker since every worker holds every rule.
    ctl.wait_stats(
        "every worker to report one table checksum",
        Duration::from_secs(5),
        |s| {
            s.workers.iter().all(|w| {
                w.counters.table_generation == generation
                    && w.counters.table_checksum == s.workers[0].counters.table_checksum
                    && w.counters.table_checksum != 0
            })
        },
    );
    let exit = relay.stop();
    for n in 1..=4 {
        assert_eq!(exit.summary.rule_packets(&format!("r{n}")), 100);
    }
}
