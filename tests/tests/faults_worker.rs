//! A worker that stops answering (SIGSTOP) under traffic is killed by the watchdog and
//! replaced within the documented bound, counted as a restart for `unresponsive` in `ctl
//! workers` and in the metrics; the control socket answers all along, relaying on its CPU
//! resumes, and no other worker is restarted.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, signal};
use fanout_relay_tests::obs::{Metrics, scrape};
use fanout_relay_tests::relay::{RelayProcess, UdpSender, payload_id, quiet_topology};
use fanout_relay_tests::{Topology, privileged, two_online_cpus};
use nix::sys::signal::Signal;
use nix::sys::socket::{setsockopt, sockopt};
use relay_bin::control::proto::WorkerReport;

/// The bound the README gives for replacing a hung serving worker: the next counters request
/// within 1 s, the watchdog's 3 s, the restart backoff and the new worker's start.
const BOUND: Duration = Duration::from_secs(5);
/// Where the relay serves its metrics, inside its own namespace.
const METRICS: &str = "127.0.0.1:9471";
/// Datagrams per second of the stream sent from the victim's CPU.
const PPS: u32 = 200;
/// How long that stream lasts: one second before the stop, the replacement, and after.
const STREAM: Duration = Duration::from_secs(10);
/// When the worker is stopped, counted from the stream's start.
const STOP_AFTER: Duration = Duration::from_secs(1);
/// Longest a control request may take while a worker hangs.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Two workers on `cpus`, fanout by CPU, so the stream sent from the victim's CPU reaches only
/// its ring. Blocks retire every 100 ms, so the victim's ring holds what arrives while the
/// worker hangs (50 blocks in 5 s of 128) and the fanout's rollover flag, which spills a full
/// ring to the other worker, does not blur the pause this test measures.
fn config(dir: &Workdir, [first, second]: [u32; 2]) -> String {
    relay_section(
        dir,
        &format!("workers = \"{first},{second}\"\nfanout = \"cpu\"\nmetrics = {METRICS:?}"),
    ) + r#"
[ring]
block_size = 65536
block_count = 128
retire_timeout_ms = 100

[[rule]]
name = "cam"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000 } ]
"#
}

fn slot(workers: &[WorkerReport], cpu: u32) -> &WorkerReport {
    workers
        .iter()
        .find(|w| w.cpu == cpu)
        .unwrap_or_else(|| panic!("no worker on cpu {cpu}: {workers:#?}"))
}

/// A receiver of the relayed group that notes when each datagram arrived, until `stop` says so.
fn timed_receiver(topo: &Topology) -> UdpSocket {
    let socket = topo.receiver.run(|| {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(239, 2, 2, 2), 6000))?;
        let local: Ipv4Addr = Topology::RECEIVER_ADDR
            .parse()
            .map_err(std::io::Error::other)?;
        socket.join_multicast_v4(&Ipv4Addr::new(239, 2, 2, 2), &local)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        // Room for the backlog the replacement sends at once (the default buffer holds a few
        // hundred datagrams); forced past rmem_max, as root.
        setsockopt(&socket, sockopt::RcvBufForce, &(16 << 20)).map_err(std::io::Error::from)?;
        Ok::<_, std::io::Error>(socket)
    });
    socket.unwrap_or_else(|e| panic!("join 239.2.2.2:6000 in the receiver: {e}"))
}

#[test]
fn a_stopped_worker_is_replaced_within_the_bound() {
    let test = "a_stopped_worker_is_replaced_within_the_bound";
    if !privileged(test) {
        return;
    }
    let Some(cpus) = two_online_cpus(test) else {
        return;
    };
    let [victim_cpu, other_cpu] = cpus;
    let topo = quiet_topology("hang");
    let dir = Workdir::new("hang");
    let relay = RelayProcess::start(&topo.relay, &config(&dir, cpus), &[]);
    let ctl = Ctl::new(&dir);
    let before = ctl.workers();
    let victim = slot(&before, victim_cpu)
        .pid
        .expect("a ready worker has a pid");
    let other = slot(&before, other_cpu)
        .pid
        .expect("a ready worker has a pid");

    let socket = timed_receiver(&topo);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let receiving = std::thread::spawn(move || {
        let mut arrivals: Vec<(Instant, u32)> = Vec::new();
        let mut buf = [0u8; 2048];
        while stop_rx.try_recv().is_err() {
            if let Ok(len) = socket.recv(&mut buf)
                && let Some((1, seq)) = payload_id(&buf[..len])
            {
                arrivals.push((Instant::now(), seq));
            }
        }
        arrivals
    });
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let count = PPS * STREAM.as_secs() as u32;

    let (stopped_at, replaced_at, slowest_answer, workers) = std::thread::scope(|s| {
        let sender = &sender;
        s.spawn(move || {
            sender.send_numbered_on_cpu(victim_cpu as usize, "239.1.1.1:5000", 1, 0..count, PPS)
        });
        std::thread::sleep(STOP_AFTER);
        signal(victim, Signal::SIGSTOP);
        let stopped_at = Instant::now();
        // The control socket keeps answering while the worker hangs and is replaced.
        let mut slowest = Duration::ZERO;
        let deadline = stopped_at + BOUND + Duration::from_secs(10);
        let (replaced_at, workers) = loop {
            let asked = Instant::now();
            let workers = ctl.workers();
            let _ = ctl.stats();
            slowest = slowest.max(asked.elapsed());
            let w = slot(&workers, victim_cpu);
            if w.pid.is_some_and(|pid| pid != victim) && w.state == "ready" {
                break (Instant::now(), workers);
            }
            assert!(
                Instant::now() < deadline,
                "the stopped worker was not replaced {} s after SIGSTOP: {workers:#?}",
                deadline.duration_since(stopped_at).as_secs()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        (stopped_at, replaced_at, slowest, workers)
    });
    std::thread::sleep(Duration::from_millis(500));
    let _ = stop_tx.send(());
    let arrivals = receiving.join().expect("the receiving thread");

    let replacement = replaced_at.duration_since(stopped_at);
    // Relaying resumed where the longest pause between two arrivals that ends after the stop
    // ended: the victim's frames wait in its ring while it hangs, and its replacement sends
    // them at once.
    let times: Vec<Instant> = arrivals.iter().map(|&(at, _)| at).collect();
    let (pause, resumed) = times
        .windows(2)
        .filter(|pair| pair[1] >= stopped_at)
        .map(|pair| (pair[1].duration_since(pair[0]), pair[1]))
        .max()
        .map(|(pause, at)| (pause, Some(at.duration_since(stopped_at))))
        .unwrap_or((Duration::ZERO, None));
    let sent_late = count - (STOP_AFTER.as_secs_f64() * f64::from(PPS)) as u32;
    let late_seqs: std::collections::BTreeSet<u32> = arrivals
        .iter()
        .map(|&(_, seq)| seq)
        .filter(|&seq| seq >= count - sent_late)
        .collect();
    eprintln!(
        "SIGSTOP: worker replaced after {} ms, relaying resumed after {} ms (a pause of {} ms), \
         slowest control answer meanwhile {} ms; {} of the {} datagrams sent from the stop on \
         arrived",
        replacement.as_millis(),
        resumed.map_or_else(|| "never".to_owned(), |d| d.as_millis().to_string()),
        pause.as_millis(),
        slowest_answer.as_millis(),
        late_seqs.len(),
        sent_late
    );
    assert!(
        replacement <= BOUND,
        "replaced after {replacement:?}, bound {BOUND:?}"
    );
    assert!(
        slowest_answer <= ANSWER_WITHIN,
        "a control request took {slowest_answer:?} while the worker hung"
    );
    let resumed = resumed.expect("nothing relayed after the stop");
    assert!(
        resumed <= BOUND + Duration::from_millis(500),
        "relaying resumed {resumed:?} after the stop"
    );
    // Nothing was lost: what arrived while the worker hung waited in its ring, and the
    // replacement sent it.
    assert_eq!(
        late_seqs.len(),
        sent_late as usize,
        "datagrams sent from the stop on that arrived"
    );

    let w = slot(&workers, victim_cpu);
    assert_eq!(
        (w.restarts, w.restart_reasons.clone()),
        (1, BTreeMap::from([("unresponsive".to_owned(), 1)])),
        "{workers:#?}"
    );
    let o = slot(&workers, other_cpu);
    assert_eq!(
        (o.pid, o.restarts),
        (Some(other), 0),
        "the other worker was restarted: {workers:#?}"
    );
    let table = ctl.ok(&["workers"]);
    assert!(
        table.lines().any(|line| {
            line.split_whitespace().next() == Some(victim_cpu.to_string().as_str())
                && line.contains("unresponsive=1")
        }),
        "ctl workers does not say why it restarted:\n{table}"
    );
    let metrics = Metrics::parse(&scrape(&topo.relay, METRICS, "/metrics").body);
    for (cpu, reason, expected) in [
        (victim_cpu, "unresponsive", 1),
        (victim_cpu, "exited", 0),
        (other_cpu, "unresponsive", 0),
    ] {
        let cpu = cpu.to_string();
        assert_eq!(
            metrics.count(
                "fanout_relay_worker_restarts_total",
                &[("cpu", cpu.as_str()), ("reason", reason)]
            ),
            expected,
            "restarts of cpu {cpu} for {reason}"
        );
    }
    relay.wait_for_log("the watchdog's line", Duration::from_secs(1), |line| {
        line.contains(&format!("worker on cpu {victim_cpu} (pid {victim})"))
            && line.contains("killed as unresponsive")
    });
    let exit = relay.stop();
    assert!(
        exit.log.contains(&format!(
            "worker on cpu {victim_cpu} restarted (restart #1, unresponsive"
        )),
        "the restart's log line does not give its reason"
    );
}

/// A worker that is merely slow to answer (stopped for less than the watchdog's limit) is left
/// alone.
#[test]
fn a_briefly_stopped_worker_is_not_replaced() {
    let test = "a_briefly_stopped_worker_is_not_replaced";
    if !privileged(test) {
        return;
    }
    let Some(cpus) = two_online_cpus(test) else {
        return;
    };
    let topo = quiet_topology("pause");
    let dir = Workdir::new("pause");
    let relay = RelayProcess::start(&topo.relay, &config(&dir, cpus), &[]);
    let ctl = Ctl::new(&dir);
    let before = ctl.workers();
    let victim = slot(&before, cpus[0])
        .pid
        .expect("a ready worker has a pid");
    signal(victim, Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1500));
    signal(victim, Signal::SIGCONT);
    std::thread::sleep(Duration::from_secs(4));
    let after = ctl.workers();
    for (then, now) in before.iter().zip(&after) {
        assert_eq!(
            (now.pid, now.restarts),
            (then.pid, 0),
            "a worker stopped for 1.5 s was replaced: {after:#?}"
        );
    }
    relay.stop();
}
