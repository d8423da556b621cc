//! The time from a worker's death (SIGKILL) to its replacement serving again.
//!
//! Two workers (CPUs 0 and 1), fanout `cpu`, and a steady stream sent from CPU 1, so the
//! worker on CPU 1 serves all of it. That worker is killed; two clocks then tell when its
//! replacement serves: the supervisor's view (`workers` polled every millisecond: gone,
//! started, ready) and the traffic's (the first datagram to arrive after the gap). The supervisor
//! keeps the ring socket open, so the kernel keeps filling the ring meanwhile: the datagrams of
//! the outage are either relayed late by the new worker, spilled to the other worker once the
//! ring is full (the rollover flag), or lost; the report says which.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanout_relay_tests::Topology;
use fanout_relay_tests::ctl::{Workdir, relay_section, rule, signal};
use fanout_relay_tests::relay::{RelayProcess, quiet_topology};
use nix::sys::signal::Signal;

use crate::control::{Control, kernel_drops};
use crate::extra_rule_toml;
use crate::stream::{Receiver, Sender, loss, now_ns};

/// A worker that ran this long before dying is restarted after the shortest backoff (the
/// supervisor's `HEALTHY_RUN` is 30 s).
const HEALTHY: Duration = Duration::from_secs(31);

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Rules in the table.
    pub rules: u32,
    /// Datagrams per second of the stream.
    pub pps: u32,
    /// Kill the worker only after it ran long enough to get the shortest backoff.
    pub healthy: bool,
}

/// The figures of one kill.
#[derive(Debug, Default)]
pub struct Report {
    /// Seconds the relay took to start with every worker ready.
    pub start_seconds: f64,
    /// Milliseconds from the kill until `workers` showed: the slot without a process, a new
    /// process (starting), the new process ready.
    pub seen_gone_ms: Option<f64>,
    /// The new process started.
    pub seen_started_ms: Option<f64>,
    /// The new process ready.
    pub seen_ready_ms: Option<f64>,
    /// Milliseconds from the kill to the first datagram that arrived after the gap.
    pub first_after_gap_ms: f64,
    /// The gap itself (last arrival before it to first after it).
    pub gap_ms: f64,
    /// Milliseconds from the kill to the arrival of the first datagram sent after it, which the
    /// new worker found in the ring (`None` if it never arrived).
    pub oldest_outage_arrival_ms: Option<f64>,
    /// Datagrams sent during the outage (from the kill until the new worker was ready).
    pub sent_in_outage: u64,
    /// Of those, how many never arrived.
    pub lost_in_outage: u64,
    /// Highest receive-minus-send latency (ms): how late the outage's datagrams arrived.
    pub latency_max_ms: f64,
    /// Datagrams lost over the whole run, and duplicates.
    pub lost: (u64, u64),
    /// Kernel ring drops over the run.
    pub kernel_drops: u64,
    /// Frames the other worker (CPU 0) received meanwhile: spilled by the rollover flag.
    pub spilled: u64,
    /// Restarts and generation of the victim's slot afterwards.
    pub restarts: u32,
}

/// Runs the measurement.
pub fn run(options: Options) -> Report {
    let topo = quiet_topology("cbrestart");
    let dir = Workdir::new("restart");
    let mut config = relay_section(&dir, "workers = \"0-1\"\nfanout = \"cpu\"")
        + &rule("stream", "239.1.1.1", 5000, "239.2.2.2", 6000);
    for i in 1..options.rules {
        config += &extra_rule_toml(i, 100);
    }
    let launched = Instant::now();
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let mut report = Report {
        start_seconds: launched.elapsed().as_secs_f64(),
        ..Report::default()
    };
    let mut control = Control::connect(&dir.socket());
    let group: SocketAddrV4 = "239.2.2.2:6000".parse().expect("a literal address");
    let receiver = Receiver::start(&topo.receiver, group, Topology::RECEIVER_ADDR);
    let sender = Sender::start(
        &topo.sender,
        Topology::SENDER_ADDR,
        "239.1.1.1:5000".parse().expect("a literal address"),
        1,
        options.pps,
    );
    let wait = if options.healthy {
        HEALTHY.saturating_sub(launched.elapsed())
    } else {
        Duration::from_secs(2)
    };
    std::thread::sleep(wait.max(Duration::from_secs(2)));
    let workers = control.workers();
    let victim = workers
        .iter()
        .find(|w| w.cpu == 1)
        .expect("a worker on cpu 1");
    let old_pid = victim.pid.expect("a running worker");
    let spilled_before = control
        .stats()
        .workers
        .iter()
        .find(|w| w.cpu == 0)
        .map_or(0, |w| w.counters.received);

    // The poller: the supervisor's view, every millisecond.
    let done = Arc::new(AtomicBool::new(false));
    let polling = Arc::clone(&done);
    let socket = dir.socket();
    let poller = std::thread::spawn(move || {
        let mut control = Control::connect(&socket);
        let mut seen: Vec<(u64, Option<u32>, String)> = Vec::new();
        while !polling.load(Ordering::Relaxed) {
            let workers = control.workers();
            let now = now_ns();
            if let Some(w) = workers.iter().find(|w| w.cpu == 1) {
                let state = (w.pid, w.state.clone());
                if seen
                    .last()
                    .is_none_or(|(_, pid, s)| (*pid, s.clone()) != state)
                {
                    seen.push((now, state.0, state.1));
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        seen
    });
    std::thread::sleep(Duration::from_millis(200));
    let killed = now_ns();
    signal(old_pid, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let workers = control.workers();
        let back = workers
            .iter()
            .any(|w| w.cpu == 1 && w.state == "ready" && w.pid.is_some_and(|p| p != old_pid));
        if back {
            report.restarts = workers
                .iter()
                .find(|w| w.cpu == 1)
                .map_or(0, |w| w.restarts);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker was not back within 120 s: {workers:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_secs(3));
    done.store(true, Ordering::Relaxed);
    let seen = poller.join().expect("the poller does not panic");
    let sent = sender.stop();
    let arrivals = receiver.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let stats = control.stats();
    report.kernel_drops = kernel_drops(&stats);
    report.spilled = stats
        .workers
        .iter()
        .find(|w| w.cpu == 0)
        .map_or(0, |w| w.counters.received)
        - spilled_before;
    drop(control);
    relay.stop();

    let ms = |t: u64| (t as f64 - killed as f64) / 1e6;
    for (t, pid, state) in &seen {
        if *t < killed {
            continue;
        }
        match (pid, state.as_str()) {
            (None, _) if report.seen_gone_ms.is_none() => report.seen_gone_ms = Some(ms(*t)),
            (Some(p), "starting") if *p != old_pid && report.seen_started_ms.is_none() => {
                report.seen_started_ms = Some(ms(*t));
            }
            (Some(p), "ready") if *p != old_pid && report.seen_ready_ms.is_none() => {
                report.seen_ready_ms = Some(ms(*t));
            }
            _ => {}
        }
    }
    // The gap: the longest pause in arrivals after the kill (in receive-time order: two workers
    // feed the receiver, so socket order and timestamp order may differ slightly).
    let mut by_time = arrivals.clone();
    by_time.sort_by_key(|a| a.received_ns);
    let mut last_before = killed;
    let mut first_after = killed;
    for pair in by_time.windows(2) {
        let (a, b) = (pair[0].received_ns, pair[1].received_ns);
        if b > killed && b.saturating_sub(a) > first_after.saturating_sub(last_before) {
            last_before = a;
            first_after = b;
        }
    }
    report.gap_ms = first_after.saturating_sub(last_before) as f64 / 1e6;
    report.first_after_gap_ms = ms(first_after);
    // The datagrams of the outage: sent from the kill until the new worker was ready.
    let ready_at = report
        .seen_ready_ms
        .map_or(first_after, |ready| killed + (ready * 1e6) as u64);
    let first_seq = arrivals
        .iter()
        .filter(|a| a.sent_ns < killed)
        .map(|a| a.seq)
        .max()
        .map_or(0, |s| s + 1);
    let arrived: std::collections::BTreeMap<u64, u64> = arrivals
        .iter()
        .filter(|a| a.seq >= first_seq)
        .map(|a| (a.seq, a.received_ns))
        .collect();
    // Sequence numbers are sent in order at a steady rate, so the outage's are those from the
    // first unsent-before-the-kill one up to the last one sent before the worker was ready.
    let sent_by_ready = arrivals
        .iter()
        .filter(|a| a.sent_ns < ready_at)
        .map(|a| a.seq)
        .max()
        .map_or(first_seq, |s| s + 1)
        .max(first_seq);
    report.sent_in_outage = sent_by_ready - first_seq;
    report.lost_in_outage = (first_seq..sent_by_ready)
        .filter(|seq| !arrived.contains_key(seq))
        .count() as u64;
    // The oldest datagram of the outage sat in the dead worker's ring: its arrival is when the
    // new worker served its first packet (later ones may have spilled to the other worker).
    report.oldest_outage_arrival_ms = (first_seq..sent_by_ready)
        .find_map(|seq| arrived.get(&seq))
        .map(|&t| ms(t));
    report.latency_max_ms = arrivals
        .iter()
        .map(|a| a.received_ns.saturating_sub(a.sent_ns) as f64 / 1e6)
        .fold(0.0, f64::max);
    report.lost = loss(&arrivals, sent.count);
    report
}

/// The report as text.
pub fn render(options: &Options, r: &Report) -> String {
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    format!(
        "restart: {} rule(s), stream {} pps from cpu 1, victim cpu 1{}\n\
         \x20 relay start to all ready: {:.2} s\n\
         \x20 supervisor view (ms after the kill): gone {}, new process {}, ready {}\n\
         \x20 traffic view (ms after the kill): the first datagram sent after the kill arrived at {}; \
         first arrival after the gap {:.1} (gap {:.1} ms)\n\
         \x20 outage (kill to new worker ready): {} datagrams sent, {} lost; latest arrival {:.1} ms after sending\n\
         \x20 whole run: lost {}, duplicated {}; kernel ring drops {}; spilled to cpu 0: {}; restarts {}\n",
        options.rules,
        options.pps,
        if options.healthy {
            " (after 31 s of service: shortest backoff)"
        } else {
            ""
        },
        r.start_seconds,
        opt(r.seen_gone_ms),
        opt(r.seen_started_ms),
        opt(r.seen_ready_ms),
        opt(r.oldest_outage_arrival_ms),
        r.first_after_gap_ms,
        r.gap_ms,
        r.sent_in_outage,
        r.lost_in_outage,
        r.latency_max_ms,
        r.lost.0,
        r.lost.1,
        r.kernel_drops,
        r.spilled,
        r.restarts
    )
}
