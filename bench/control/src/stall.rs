//! The longest worker stall while rules are added one by one under traffic.
//!
//! One worker (CPU 0) relays a steady stream sent from another CPU. Three windows of the same
//! stream are compared at the receiver: before any change (baseline), while `rules` rules are
//! added one `add` request at a time, and afterwards with the big table in place. A stall of
//! the worker shows as a gap between consecutive arrivals; the relay's own counters say whether
//! its ring overflowed (kernel drops).

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use fanout_relay_tests::Topology;
use fanout_relay_tests::ctl::{Workdir, relay_section, rule};
use fanout_relay_tests::relay::{RelayProcess, quiet_topology};
use relay_bin::control::proto::{Command, Reply, Response};

use crate::control::{Control, kernel_drops};
use crate::stream::{Receiver, Sender, Window, loss, now_ns, window};
use crate::{extra_rule, percentile};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Rules to add.
    pub rules: u32,
    /// Added rules per input group (1: a group each, so every add joins one; more: ports of
    /// a shared group).
    pub per_group: u32,
    /// Datagrams per second of the stream.
    pub pps: u32,
    /// Seconds of the windows without changes (before and after).
    pub quiet_seconds: u64,
    /// CPU of the sender (the worker is on CPU 0).
    pub sender_cpu: usize,
    /// Move the supervisor (and this tool's requests) to this CPU, away from the worker's, to
    /// tell the worker's own pauses from CPU time the supervisor takes from it.
    pub supervisor_cpu: Option<usize>,
}

/// The figures.
#[derive(Debug)]
pub struct Report {
    /// Before any change.
    pub baseline: Window,
    /// While the rules were added.
    pub adding: Window,
    /// Afterwards, with every rule in the table.
    pub after: Window,
    /// Seconds the adds took, all together.
    pub add_seconds: f64,
    /// Answer time of one add: median, 99th percentile, maximum (ms).
    pub add_ms: (f64, f64, f64),
    /// Adds answered before every worker had confirmed them.
    pub unconfirmed: u32,
    /// Datagrams sent, and sends refused by the sender's kernel.
    pub sent: (u64, u64),
    /// Sequence numbers that never arrived, and duplicates.
    pub lost: (u64, u64),
    /// Kernel ring drops during the adds, and over the whole run.
    pub kernel_drops: (u64, u64),
    /// Add time per thousand rules (s), to see whether adds slow down as the table grows.
    pub add_seconds_per_thousand: Vec<f64>,
    /// Worker restarts during the run.
    pub restarts: u32,
    /// The relay's warnings and errors (first few), which explain pauses.
    pub warnings: Vec<String>,
    /// The CPUs the supervisor's main thread may run on, as it placed itself (or was moved
    /// with `--supervisor-cpu`).
    pub supervisor_cpus: String,
}

/// Runs the measurement.
pub fn run(options: Options) -> Report {
    let topo = quiet_topology("cbstall");
    let dir = Workdir::new("stall");
    let config = relay_section(&dir, "workers = \"0-0\"\nfanout = \"cpu\"")
        + &rule("stream", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    if let Some(cpu) = options.supervisor_cpu {
        let pid = relay.pid().to_string();
        let cpu = cpu.to_string();
        let status = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu, &pid])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run taskset");
        assert!(status.success(), "taskset -a -p -c {cpu} {pid} failed");
        fanout_core::cpu::pin_current_thread(cpu.parse().expect("a CPU number"))
            .expect("pin the requests to the supervisor's CPU");
    }
    let supervisor_cpus = allowed_cpus(relay.pid());
    let mut control = Control::connect(&dir.socket());
    let group: SocketAddrV4 = "239.2.2.2:6000".parse().expect("a literal address");
    let receiver = Receiver::start(&topo.receiver, group, Topology::RECEIVER_ADDR);
    let sender = Sender::start(
        &topo.sender,
        Topology::SENDER_ADDR,
        "239.1.1.1:5000".parse().expect("a literal address"),
        options.sender_cpu,
        options.pps,
    );
    let quiet = Duration::from_secs(options.quiet_seconds);
    std::thread::sleep(Duration::from_secs(1));
    let t0 = now_ns();
    std::thread::sleep(quiet);
    let t1 = now_ns();
    let drops_before = kernel_drops(&control.stats());

    let mut answers = Vec::with_capacity(options.rules as usize);
    let mut per_thousand = Vec::new();
    let mut unconfirmed = 0;
    let started = Instant::now();
    let mut thousand = Instant::now();
    for i in 0..options.rules {
        let asked = Instant::now();
        let response = control.call(Command::Add {
            rule: extra_rule(i, options.per_group),
        });
        answers.push(asked.elapsed().as_secs_f64() * 1e3);
        match response {
            Response {
                ok: true,
                result: Some(Reply::Changed(report)),
                ..
            } => unconfirmed += u32::from(!report.unconfirmed.is_empty()),
            other => panic!("add r{i} refused: {other:?}"),
        }
        if (i + 1) % 1000 == 0 {
            per_thousand.push(thousand.elapsed().as_secs_f64());
            thousand = Instant::now();
        }
    }
    let add_seconds = started.elapsed().as_secs_f64();
    let t2 = now_ns();
    // Counters reach the supervisor once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let drops_adding = kernel_drops(&control.stats()) - drops_before;
    let t3 = now_ns();
    std::thread::sleep(quiet);
    let t4 = now_ns();
    let sent = sender.stop();
    let arrivals = receiver.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let drops_total = kernel_drops(&control.stats());
    let restarts = control.workers().iter().map(|w| w.restarts).sum();
    drop(control);
    let exit = relay.stop();
    let warnings: Vec<String> = exit
        .log
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .map(str::to_owned)
        .collect();

    let p50 = percentile(&mut answers, 50.0);
    let p99 = percentile(&mut answers, 99.0);
    let max = percentile(&mut answers, 100.0);
    Report {
        baseline: window(&arrivals, t0, t1),
        adding: window(&arrivals, t1, t2),
        after: window(&arrivals, t3, t4),
        add_seconds,
        add_ms: (p50, p99, max),
        unconfirmed,
        sent: (sent.count, sent.failed),
        lost: loss(&arrivals, sent.count),
        kernel_drops: (drops_adding, drops_total),
        add_seconds_per_thousand: per_thousand,
        restarts,
        warnings,
        supervisor_cpus,
    }
}

/// The `Cpus_allowed_list` of process `pid`, or `?` when it cannot be read.
fn allowed_cpus(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .map(|list| list.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

/// The report as text.
pub fn render(options: &Options, report: &Report) -> String {
    let line = |name: &str, w: &Window| {
        format!(
            "  {name:<9} arrivals {:>8}  max gap {:>8.2} ms  p99.9 gap {:>6.2} ms  latency p50 {:>6.2} p99.9 {:>7.2} max {:>8.2} ms  gaps>10ms {}\n",
            w.arrivals,
            w.max_gap_ms,
            w.p999_gap_ms,
            w.latency_p50_ms,
            w.latency_p999_ms,
            w.latency_max_ms,
            w.long_gaps.len()
        )
    };
    let mut text = format!(
        "stall: {} rules added one by one ({} per group), stream {} pps (worker cpu 0, sender cpu {}, supervisor {} on cpus {})\n",
        options.rules,
        options.per_group,
        options.pps,
        options.sender_cpu,
        options
            .supervisor_cpu
            .map_or("placed by the relay", |_| "moved by --supervisor-cpu"),
        report.supervisor_cpus
    );
    text += &line("baseline", &report.baseline);
    text += &line("adding", &report.adding);
    text += &line("after", &report.after);
    text += &format!(
        "  adds: {:.1} s in all ({:.0}/s); answer p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; unconfirmed {}\n",
        report.add_seconds,
        f64::from(options.rules) / report.add_seconds.max(1e-9),
        report.add_ms.0,
        report.add_ms.1,
        report.add_ms.2,
        report.unconfirmed
    );
    text += &format!(
        "  seconds per 1000 adds: {:?}\n",
        report
            .add_seconds_per_thousand
            .iter()
            .map(|s| (s * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    text += &format!(
        "  sent {} (send errors {}), lost {}, duplicated {}; kernel ring drops while adding {}, whole run {}\n",
        report.sent.0,
        report.sent.1,
        report.lost.0,
        report.lost.1,
        report.kernel_drops.0,
        report.kernel_drops.1
    );
    text += &format!(
        "  worker restarts {}; relay warnings and errors {}\n",
        report.restarts,
        report.warnings.len()
    );
    for line in report.warnings.iter().take(8) {
        text += &format!("    {line}\n");
    }
    let mut gaps = report.adding.long_gaps.clone();
    gaps.sort_by(|a, b| b.1.total_cmp(&a.1));
    if !gaps.is_empty() {
        text += "  longest gaps while adding (ms): ";
        text += &gaps
            .iter()
            .take(10)
            .map(|(_, ms)| format!("{ms:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        text += "\n";
    }
    let mut gaps = report.after.long_gaps.clone();
    gaps.sort_by(|a, b| b.1.total_cmp(&a.1));
    if !gaps.is_empty() {
        text += "  gaps > 10 ms afterwards (ms, seconds into the window): ";
        let start = report.after.long_gaps.first().map_or(0, |g| g.0);
        text += &report
            .after
            .long_gaps
            .iter()
            .take(12)
            .map(|(end, ms)| format!("{ms:.1}@{:.2}", (*end as f64 - start as f64) / 1e9))
            .collect::<Vec<_>>()
            .join(", ");
        text += "\n";
    }
    text
}
