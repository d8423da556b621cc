//! A ring drop burst is logged once, with the worker, its CPU and the counts, and a second burst
//! within the rate limit's window is held back and summarised afterwards.
//!
//! The burst is made by stopping the workers (SIGSTOP) while a sender pinned to the first online
//! CPU overflows their small receive rings, then letting them go on (SIGCONT): they read the
//! kernel's drop counts and report them with their counters. Every worker is stopped because the
//! fanout group rolls a full ring's packets over to the others; once all are full, the kernel
//! drops and counts the drop on the ring it chose first, the one of the worker for that CPU.

use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule, signal};
use fanout_relay_tests::relay::{RelayProcess, UdpSender, quiet_topology};
use fanout_relay_tests::{Topology, online_cpus, privileged, skip};
use nix::sys::signal::Signal;

/// Datagrams sent while the worker is stopped: far more than its 128 KiB ring holds.
const BURST: u32 = 3000;
/// How long to wait for a log line or a counter.
const WAIT: Duration = Duration::from_secs(20);

/// Keeps workers stopped; lets them go on when dropped, also when the test panics.
struct Stopped(Vec<u32>);

impl Stopped {
    fn new(pids: Vec<u32>) -> Stopped {
        let mut stopped = Stopped(Vec::new());
        for pid in pids {
            signal(pid, Signal::SIGSTOP);
            stopped.0.push(pid);
        }
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGCONT);
        }
    }
}

fn drops_on_cpu(ctl: &Ctl, cpu: u32) -> u64 {
    ctl.stats()
        .workers
        .iter()
        .find(|w| w.cpu == cpu)
        .map_or(0, |w| w.counters.kernel_drops)
}

/// Overflows the rings from `cpu` once and waits until the supervisor counted drops on the
/// worker of `cpu`.
fn burst(relay: &RelayProcess, ctl: &Ctl, sender: &UdpSender, cpu: u32, tag: u8) -> u64 {
    let before = drops_on_cpu(ctl, cpu);
    {
        let _stopped = Stopped::new(relay.worker_pids().into_values().collect());
        sender.send_numbered_on_cpu(cpu as usize, "239.1.1.1:5000", tag, 0..BURST, 20_000);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let drops = drops_on_cpu(ctl, cpu);
        if drops > before {
            return drops;
        }
        assert!(
            Instant::now() < deadline,
            "no kernel drops counted for the worker on cpu {cpu}; log:\n{}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_ring_drop_burst_is_logged_once_per_window() {
    let test = "a_ring_drop_burst_is_logged_once_per_window";
    if !privileged(test) {
        return;
    }
    // A worker on every online CPU (fanout cpu); the bursts come from the first.
    let cpu = *online_cpus()
        .first()
        .expect("the CPU running this test is online");
    let topo = quiet_topology("drops");
    let dir = Workdir::new("drops");
    let config = relay_section(&dir, "")
        + "\n[ring]\nblock_size = 65536\nblock_count = 2\n"
        + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let burst_line = format!("worker on cpu {cpu}: the kernel dropped");
    let is_burst_line =
        |line: &str| line.contains(&burst_line) && line.contains("receive ring was full");

    let first = burst(&relay, &ctl, &sender, cpu, 1);
    let line = relay.wait_for_log("the drop burst's line", WAIT, is_burst_line);
    let logged_at = Instant::now();
    assert!(
        line.contains(&format!("({first} dropped and ")),
        "the line gives the total since start ({first}): {line}"
    );

    let second = burst(&relay, &ctl, &sender, cpu, 2);
    assert!(second > first);
    // One more counter poll, so a second line would have been written by now.
    std::thread::sleep(Duration::from_millis(1500));
    if logged_at.elapsed() < Duration::from_secs(9) {
        let lines = relay.log().lines().filter(|l| is_burst_line(l)).count();
        assert_eq!(
            lines,
            1,
            "the second burst is held back; log:\n{}",
            relay.log()
        );
        relay.wait_for_log("the summary of the held-back line", WAIT, |line| {
            line.contains(&format!(
                "1 more ring drop line(s) about the worker on cpu {cpu} suppressed"
            ))
        });
    } else {
        // The machine was too slow to make both bursts inside one window: the second burst
        // was allowed its own line, which is right too.
        skip(
            test,
            "the two bursts were more than one rate-limit window apart",
        );
    }
    relay.stop();
}
