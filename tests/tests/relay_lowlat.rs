//! The ring settings beyond the defaults relay every datagram: the low-latency mode
//! (`[ring] version = "v2"` with `busy_poll_us`), whose worker really finds frames by spinning
//! rather than by being woken, and the transmit options (`qdisc_bypass`, `tx_linear` on and
//! off).

use std::time::{Duration, Instant};

use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology, worker_logged as logged,
};
use fanout_relay_tests::{
    Topology, cpu_time_alone, privileged, process_cpu_ticks, two_online_cpus,
};

/// Datagrams in the stream: two seconds at [`PPS`].
const N: u32 = 1000;
/// 2 ms between datagrams, well inside the 5 ms spin below.
const PPS: u32 = 500;
/// How long the receiver waits for the stream (it stops early once the stream is complete).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

const LOW_LATENCY: &str = "[ring]\nversion = \"v2\"\nbusy_poll_us = 5000\n";

/// The one rule every test relays through, from the topology's input to its output.
const RULE: &str = r#"
[[rule]]
name = "cam"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000, ttl = 7 } ]
"#;

/// Runs one stream of [`N`] datagrams tagged `tag` through a relay with the `ring` section and
/// [`RULE`] (one worker) and checks that every one arrived byte for byte with the rule's TTL and that the worker
/// received and forwarded each once, with no transmit or ring drops; returns the relay's log.
///
/// The worker runs on the second online CPU, and this test's threads (sender, receiver) on the
/// first: a spinning worker pauses while other tasks want its CPU, so they must not be there.
/// The test holds [`cpu_time_alone`] so that no other test of this file takes that CPU either.
fn relay_one_stream(test: &str, topology: &str, ring: &str, tag: u8) -> Option<String> {
    let [ours, worker] = two_online_cpus(test)?;
    let _alone = cpu_time_alone();
    fanout_core::cpu::pin_current_thread(ours as usize)
        .unwrap_or_else(|e| panic!("pin the test thread to cpu {ours}: {e}"));
    let topo = quiet_topology(topology);
    let relay = RelayProcess::start(
        &topo.relay,
        &format!("{ring}{RULE}"),
        &["--workers", &format!("{worker}-{worker}")],
    );
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, RECEIVE_TIMEOUT);
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.1:5000",
        tag,
        0..N,
        PPS,
    );
    let got = receiver.finish();
    let exit = relay.stop();

    // check_stream compares every payload byte with what was sent: a vnet header left in the
    // frame, or a length counting it, would show here.
    if let Err(problem) = check_stream(&got, tag, 0..N) {
        panic!(
            "receiver of 239.2.2.2:6000: {problem}\nrelay log:\n{}",
            exit.log
        );
    }
    assert!(
        got.iter().all(|datagram| datagram.ttl == Some(7)),
        "a datagram left without the rule's TTL"
    );
    exit.summary.assert_relayed(u64::from(N), u64::from(N));
    Some(exit.log)
}

/// On a machine where other tasks want the worker's CPU, spinning pauses (by design), so the
/// share of frames found by spinning cannot be checked there: the test then checks that the
/// worker said why and had found frames by spinning before, and says what went unchecked.
#[test]
fn the_low_latency_mode_relays_every_datagram_by_spinning() {
    let test = "the_low_latency_mode_relays_every_datagram_by_spinning";
    if !privileged(test) {
        return;
    }
    let Some(log) = relay_one_stream(test, "lowlat", LOW_LATENCY, 1) else {
        return;
    };
    // The worker says how it found its frames. Datagrams 2 ms apart fall inside the 5 ms spin,
    // so most are found spinning; a worker that ignored the setting would have found none so.
    let spin_hits = logged(&log, "spin_hits")
        .unwrap_or_else(|| panic!("the worker logged no syscall counts:\n{log}"));
    let received = logged(&log, "received").unwrap_or(0);
    assert_eq!(received, u64::from(N), "{log}");
    // Spinning pauses while another task wants the worker's CPU, which this test keeps its own
    // threads off, but a busy machine may not: then the worker must say so, and have found
    // frames by spinning before it paused.
    let paused = logged(&log, "spin_pauses").is_some_and(|pauses| pauses > 0);
    if paused {
        assert!(
            spin_hits > 0 && log.contains("busy polling pauses"),
            "spinning paused without finding a frame or saying why:\n{log}"
        );
        fanout_relay_tests::unchecked(
            test,
            &format!(
                "another task took the worker's CPU, so spinning paused; found {spin_hits} of \
                 {N} frames by spinning"
            ),
        );
    } else {
        // Most, on this machine; on an emulated kernel's slow CPUs, a share as much smaller.
        let most = u64::from(N) / 2 / u64::from(fanout_relay_tests::slowdown());
        assert!(
            spin_hits >= most,
            "only {spin_hits} of {N} frames were found by spinning (at least {most} expected):\n{log}"
        );
    }
    // The workers' CPUs are not isolated on a test machine: the relay says what that costs.
    let isolated = std::fs::read_to_string("/sys/devices/system/cpu/isolated").unwrap_or_default();
    if isolated.trim().is_empty() {
        assert!(
            log.contains("spin, and those CPUs are not isolated (isolcpus)"),
            "no warning about spinning on shared CPUs:\n{log}"
        );
    }
}

const TX_OPTIONS: &str = "[ring]\nqdisc_bypass = true\ntx_linear = true\n";

#[test]
fn linear_frames_past_the_qdisc_arrive_byte_exact() {
    let test = "linear_frames_past_the_qdisc_arrive_byte_exact";
    if privileged(test) {
        relay_one_stream(test, "txopts", TX_OPTIONS, 2);
    }
}

/// Linear frames are the default: the ring's pages lent to the kernel are the other way.
const LENT_PAGES: &str = "[ring]\ntx_linear = false\n";

#[test]
fn frames_sent_from_lent_ring_pages_arrive_byte_exact() {
    let test = "frames_sent_from_lent_ring_pages_arrive_byte_exact";
    if privileged(test) {
        relay_one_stream(test, "txpages", LENT_PAGES, 3);
    }
}

/// Spins on CPU `cpu` until `until`: another busy task on a worker's CPU.
fn hog(cpu: usize, until: Instant) {
    fanout_core::cpu::pin_current_thread(cpu)
        .unwrap_or_else(|e| panic!("pin the busy thread to cpu {cpu}: {e}"));
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[test]
fn busy_polling_pauses_while_another_task_uses_the_cpu() {
    let test = "busy_polling_pauses_while_another_task_uses_the_cpu";
    if !privileged(test) {
        return;
    }
    // Two CPUs: the worker alone on the second, so the relay's supervisor runs on another,
    // and so does the sender: once the busy task ends, nothing of this test wants the worker's
    // CPU, and spinning can resume.
    let Some([ours, cpu]) = two_online_cpus(test) else {
        return;
    };
    let _alone = cpu_time_alone();
    fanout_core::cpu::pin_current_thread(ours as usize)
        .unwrap_or_else(|e| panic!("pin the test thread to cpu {ours}: {e}"));
    let topo = quiet_topology("lowlatshare");
    let relay = RelayProcess::start(
        &topo.relay,
        &format!("{LOW_LATENCY}{RULE}"),
        &["--workers", &format!("{cpu}-{cpu}")],
    );
    // A stream 4 ms apart keeps the worker spinning; for its first three seconds a second busy
    // task wants the worker's CPU. Then nothing of this test does, and the stream goes on, a
    // second at a time, until the worker resumes spinning or ten seconds passed: spinning
    // resumes after a whole second in which other tasks used under 5 % of the CPU, and on a
    // machine that just deleted other tests' namespaces the kernel's own clean-up may take
    // that CPU for a while first.
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let busy_until = Instant::now() + Duration::from_secs(3);
    let second = PPS / 2;
    std::thread::scope(|s| {
        s.spawn(|| hog(cpu as usize, busy_until));
        sender.send_numbered("239.1.1.1:5000", 4, 0..3 * second, second);
    });
    let resumed = |log: &str| {
        log.find("busy polling pauses")
            .is_some_and(|at| log[at..].contains("busy polling resumes"))
    };
    let worker = relay.worker_pids().get(&cpu).copied();
    let before = (cpu_busy_ticks(cpu), worker.and_then(process_cpu_ticks));
    for more in 3..13 {
        sender.send_numbered(
            "239.1.1.1:5000",
            4,
            more * second..(more + 1) * second,
            second,
        );
        if resumed(&relay.log()) {
            break;
        }
    }
    let after = (cpu_busy_ticks(cpu), worker.and_then(process_cpu_ticks));
    let exit = relay.stop();
    let log = &exit.log;
    let paused = log
        .find("busy polling pauses")
        .unwrap_or_else(|| panic!("spinning never paused for the busy task:\n{log}"));
    if !log[paused..].contains("busy polling resumes")
        && let ((Some(busy0), Some(own0)), (Some(busy1), Some(own1))) = (before, after)
    {
        // Other processes of the machine (not this test's) kept the CPU: staying paused was
        // right, and the resumption is not what this run can show.
        let others = busy1
            .saturating_sub(busy0)
            .saturating_sub(own1.saturating_sub(own0));
        let ticks = busy1.saturating_sub(busy0).max(1);
        if others * 20 > ticks {
            fanout_relay_tests::unchecked(
                test,
                &format!(
                    "other tasks of the machine used cpu {cpu} for {others} of its {ticks} busy \
                     ticks after the busy task ended, so spinning rightly stayed paused"
                ),
            );
            return;
        }
    }
    assert!(
        log[paused..].contains("busy polling resumes"),
        "spinning never resumed once the busy task ended:\n{log}"
    );
    assert!(
        logged(log, "spin_pauses").is_some_and(|pauses| pauses >= 1),
        "{log}"
    );
}

/// Clock ticks CPU `cpu` spent busy (every state but idle and iowait), from `/proc/stat`.
fn cpu_busy_ticks(cpu: u32) -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat
        .lines()
        .find(|line| line.starts_with(&format!("cpu{cpu} ")))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    Some(busy)
}
