//! A worker killed with SIGKILL under traffic is restarted, relaying goes on, and CPU k's packets
//! still reach the worker pinned to CPU k afterwards (fanout `cpu`); workers never outlive their
//! supervisor.

use std::time::{Duration, Instant};

use fanout_relay_tests::relay::{
    RelayProcess, Summary, UdpReceiver, UdpSender, check_stream, payload_id, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged, two_online_cpus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Two workers on `cpus`, fanout by CPU. Receive blocks are small and many and retire slowly,
/// so a ring has ample room: with the rollover flag, a ring under pressure spills to the other
/// worker, which is right for a relay but would blur the per-CPU counts this test reads.
fn config([first, second]: [u32; 2]) -> String {
    format!("[relay]\nworkers = \"{first},{second}\"\nfanout = \"cpu\"\n{RING_AND_RULE}")
}

/// The rest of [`config`].
const RING_AND_RULE: &str = r#"
[ring]
block_size = 65536
block_count = 64
retire_timeout_ms = 10

[[rule]]
name = "cam"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000 } ]
"#;

/// Datagrams per second of each background stream.
const BACKGROUND_PPS: u32 = 200;
/// Datagrams sent from the victim's CPU and from the survivor's after the restart (different, so
/// they cannot be swapped).
const ON_CPU: [u32; 2] = [150, 250];
/// Datagrams per second of the pinned senders.
const PPS: u32 = 250;

/// Waits until the relay's periodic table is unchanged from one print to the next, at least
/// `after` tables into the log, and returns it.
fn settled_table(relay: &RelayProcess, after: usize) -> Summary {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tables = Summary::parse_all(&relay.log());
        if tables.len() >= after + 2 && tables[tables.len() - 1] == tables[tables.len() - 2] {
            return tables[tables.len() - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the counters did not settle within 20 s; log:\n{}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_worker_is_restarted_and_keeps_its_cpu() {
    let test = "a_killed_worker_is_restarted_and_keeps_its_cpu";
    if !privileged(test) {
        return;
    }
    let Some(cpus) = two_online_cpus(test) else {
        return;
    };
    // The worker killed is that of the first online CPU: where CPU 0 is online (on every common
    // machine), its ring is the first member of the fanout group. Were its ring socket closed and
    // opened again, the kernel would move the other member into its slot and append the new one,
    // swapping the CPUs; the last member's leaving would change nothing.
    let [victim_cpu, survivor_cpu] = cpus;
    let topo = quiet_topology("restart");
    let relay = RelayProcess::start(&topo.relay, &config(cpus), &["--stats-every", "1"]);
    let before = relay.worker_pids();
    assert_eq!(
        before.keys().copied().collect::<Vec<_>>(),
        cpus.to_vec(),
        "one worker per CPU"
    );
    let victim = before[&victim_cpu];
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(usize::MAX, Duration::from_secs(60));
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);

    // Background traffic across the kill, one second before and three after, from both CPUs:
    // stream 1 to the victim, stream 4 to the survivor.
    let background = 4 * BACKGROUND_PPS;
    let kill_after = BACKGROUND_PPS;
    let restarted_pid = std::thread::scope(|s| {
        for (cpu, tag) in [(victim_cpu, 1), (survivor_cpu, 4)] {
            let sender = &sender;
            s.spawn(move || {
                sender.send_numbered_on_cpu(
                    cpu as usize,
                    "239.1.1.1:5000",
                    tag,
                    0..background,
                    BACKGROUND_PPS,
                )
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        kill(Pid::from_raw(victim as i32), Signal::SIGKILL)
            .unwrap_or_else(|e| panic!("kill -9 worker {victim}: {e}"));
        relay.wait_for_log("the restart", Duration::from_secs(15), |line| {
            line.contains(&format!("worker on cpu {victim_cpu} restarted"))
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        let new_pid = loop {
            match relay.worker_pids().get(&victim_cpu) {
                Some(&pid) if pid != victim => break pid,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => panic!("no new worker on cpu {victim_cpu} 15 s after the kill"),
            }
        };
        let ready = format!("worker on cpu {victim_cpu} (pid {new_pid}) ready");
        relay.wait_for_log(
            "the new worker to be ready",
            Duration::from_secs(15),
            |line| line.contains(&ready),
        );
        new_pid
    });
    assert_eq!(
        relay.worker_pids().get(&survivor_cpu),
        before.get(&survivor_cpu),
        "the worker on cpu {survivor_cpu} was replaced too"
    );

    // Everything before now is counted once the table stops moving; then the pinned senders.
    let snapshot = settled_table(&relay, Summary::parse_all(&relay.log()).len());
    for ((cpu, count), tag) in cpus.into_iter().zip(ON_CPU).zip([2, 3]) {
        sender.send_numbered_on_cpu(cpu as usize, "239.1.1.1:5000", tag, 0..count, PPS);
    }
    std::thread::sleep(Duration::from_secs(1));
    let got = receiver.stop();
    let exit = relay.stop();

    let summary = &exit.summary;
    assert_eq!(
        summary
            .workers
            .iter()
            .map(|w| (w.cpu, w.restarts))
            .collect::<Vec<_>>(),
        cpus.map(|cpu| (cpu, u64::from(cpu == victim_cpu))).to_vec(),
        "(cpu, restarts); {summary:#?}"
    );
    assert!(
        exit.log
            .contains(&format!("worker on cpu {victim_cpu} restarted")),
        "no restart in the log"
    );
    // Relaying went on: every background datagram sent from one second after the kill arrived,
    // on either CPU.
    for tag in [1, 4] {
        let late: std::collections::BTreeSet<u32> = got
            .iter()
            .filter_map(|d| payload_id(&d.payload))
            .filter(|&(t, seq)| t == tag && seq >= kill_after + BACKGROUND_PPS)
            .map(|(_, seq)| seq)
            .collect();
        let sent_late = background - kill_after - BACKGROUND_PPS;
        assert_eq!(
            late.len(),
            sent_late as usize,
            "datagrams of background stream {tag} sent from 1 s after the kill that arrived"
        );
    }
    for (tag, count) in [(2, ON_CPU[0]), (3, ON_CPU[1])] {
        if let Err(problem) = check_stream(&got, tag, 0..count) {
            panic!("after the restart (worker pid {restarted_pid}): {problem}");
        }
    }
    let delta = summary.since(&snapshot);
    let per_cpu: Vec<(u32, u64, u64)> = delta
        .workers
        .iter()
        .map(|w| (w.cpu, w.received, w.forwarded))
        .collect();
    let expected: Vec<(u32, u64, u64)> = cpus
        .into_iter()
        .zip(ON_CPU)
        .map(|(cpu, count)| (cpu, u64::from(count), u64::from(count)))
        .collect();
    assert_eq!(
        per_cpu, expected,
        "(cpu, received, forwarded) after the restart: the sender pinned to CPU k must be \
         served by the worker on CPU k; before: {snapshot:#?} at exit: {summary:#?}"
    );
}

#[test]
fn workers_exit_when_the_supervisor_is_killed() {
    if !privileged("workers_exit_when_the_supervisor_is_killed") {
        return;
    }
    let topo = quiet_topology("orphans");
    let relay = RelayProcess::start(&topo.relay, CONFIG_ANY_CPUS, &[]);
    let workers = relay.worker_pids();
    assert!(!workers.is_empty(), "no worker processes found");
    kill(Pid::from_raw(relay.pid() as i32), Signal::SIGKILL).expect("kill -9 the supervisor");
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    while workers.values().any(|&pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "workers {workers:?} still run 10 s after their supervisor was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One rule, workers on every CPU.
const CONFIG_ANY_CPUS: &str = r#"
[[rule]]
name = "cam"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000 } ]
"#;
