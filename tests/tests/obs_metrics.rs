//! The Prometheus listener while the relay relays: a valid exposition (`promtool check
//! metrics`), counters that agree with `ctl stats`, and HTTP answers for everything else.

use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule};
use fanout_relay_tests::obs::{Metrics, promtool_check, request, scrape};
use fanout_relay_tests::relay::{RelayProcess, UdpReceiver, UdpSender, quiet_topology};
use fanout_relay_tests::{Topology, privileged, skip};
use relay_bin::control::proto::StatsReport;

/// Where the relay serves its metrics, inside its own namespace.
const METRICS: &str = "127.0.0.1:9469";
/// Datagrams sent.
const N: u32 = 1500;
/// Datagrams per second: the stream lasts 3 s, so a scrape lands in the middle of it.
const PPS: u32 = 500;
/// How long counters may take to reach the supervisor.
const SETTLE: Duration = Duration::from_secs(20);

fn rule_packets(stats: &StatsReport) -> u64 {
    stats.rules.get("cam").map_or(0, |rule| rule.packets)
}

/// Asserts that every counter of `stats` has the same value in `metrics`.
fn assert_same(stats: &StatsReport, metrics: &Metrics) {
    for (name, rule) in &stats.rules {
        let labels = [("rule", name.as_str())];
        assert_eq!(
            metrics.count("fanout_relay_rule_packets_total", &labels),
            rule.packets,
            "{name} packets"
        );
        assert_eq!(
            metrics.count("fanout_relay_rule_bytes_total", &labels),
            rule.bytes,
            "{name} bytes"
        );
    }
    for worker in &stats.workers {
        let cpu = worker.cpu.to_string();
        let labels = [("cpu", cpu.as_str())];
        let c = &worker.counters;
        for (metric, value) in [
            ("received", c.received),
            ("forwarded", c.forwarded),
            ("no_rule", c.no_rule),
            ("not_udp", c.not_udp),
            ("tx_full", c.tx_full),
            ("too_big", c.too_big),
            ("unopened", c.unopened),
            ("socket_errors", c.socket_errors),
            ("kernel_drops", c.kernel_drops),
            ("freezes", c.freezes),
        ] {
            assert_eq!(
                metrics.count(&format!("fanout_relay_worker_{metric}_total"), &labels),
                value,
                "worker on cpu {cpu}: {metric}"
            );
        }
        for (reason, &count) in &c.malformed {
            assert_eq!(
                metrics.count(
                    "fanout_relay_worker_malformed_total",
                    &[("cpu", cpu.as_str()), ("reason", reason.as_str())]
                ),
                count,
                "worker on cpu {cpu}: malformed {reason}"
            );
        }
    }
}

#[test]
fn metrics_agree_with_ctl_stats_and_pass_promtool() {
    if !privileged("metrics_agree_with_ctl_stats_and_pass_promtool") {
        return;
    }
    let topo = quiet_topology("metrics");
    let dir = Workdir::new("metrics");
    let config = relay_section(&dir, "") + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &["--metrics", METRICS]);
    relay.wait_for_log("the metrics listener", Duration::from_secs(5), |line| {
        line.contains(&format!("metrics on http://{METRICS}/metrics"))
    });
    let ctl = Ctl::new(&dir);
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, Duration::from_secs(30));
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);

    // During the stream: the scrape lies between two `ctl stats` taken around it.
    let (before, during, after) = std::thread::scope(|s| {
        let sending = s.spawn(|| sender.send_numbered("239.1.1.1:5000", 1, 0..N, PPS));
        ctl.wait_stats("the first packets to be counted", SETTLE, |stats| {
            rule_packets(stats) > 0
        });
        let before = ctl.stats();
        let during = scrape(&topo.relay, METRICS, "/metrics");
        let after = ctl.stats();
        sending.join().expect("the sender finished");
        (before, during, after)
    });
    assert_eq!(during.status, 200, "{}", during.head);
    assert!(
        during
            .head
            .contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        during.head
    );
    match promtool_check(&during.body) {
        Some(Ok(())) => {}
        Some(Err(said)) => panic!("promtool check metrics refused:\n{said}\n{}", during.body),
        None => skip(
            "metrics_agree_with_ctl_stats_and_pass_promtool (the promtool part)",
            "promtool is not installed (Debian package prometheus)",
        ),
    }
    let metrics = Metrics::parse(&during.body);
    let scraped = metrics.count("fanout_relay_rule_packets_total", &[("rule", "cam")]);
    assert!(
        rule_packets(&before) <= scraped && scraped <= rule_packets(&after),
        "the scrape says {scraped} packets, ctl stats {} before and {} after it",
        rule_packets(&before),
        rule_packets(&after)
    );
    for (old, new) in before.workers.iter().zip(&after.workers) {
        let cpu = old.cpu.to_string();
        let got = metrics.count(
            "fanout_relay_worker_received_total",
            &[("cpu", cpu.as_str())],
        );
        assert!(
            old.counters.received <= got && got <= new.counters.received,
            "worker on cpu {cpu}: scraped {got} received, ctl stats {} before and {} after",
            old.counters.received,
            new.counters.received
        );
    }

    // After the stream: every counter equal to `ctl stats` once nothing moves.
    let got = receiver.finish();
    assert_eq!(got.len(), N as usize, "datagrams relayed");
    ctl.wait_stats("every packet to be counted", SETTLE, |stats| {
        rule_packets(stats) == u64::from(N)
    });
    let (stats, settled) = loop {
        let first = ctl.stats();
        let answer = scrape(&topo.relay, METRICS, "/metrics");
        let second = ctl.stats();
        // Rates move with the clock; the counters must not move between the two.
        let counters = |s: &StatsReport| {
            (
                s.rules
                    .iter()
                    .map(|(n, r)| (n.clone(), r.packets, r.bytes))
                    .collect::<Vec<_>>(),
                s.workers
                    .iter()
                    .map(|w| w.counters.clone())
                    .collect::<Vec<_>>(),
            )
        };
        if counters(&first) == counters(&second) {
            break (first, Metrics::parse(&answer.body));
        }
    };
    assert_same(&stats, &settled);
    assert_eq!(
        settled.count("fanout_relay_rule_packets_total", &[("rule", "cam")]),
        u64::from(N)
    );
    let (generation, rules) = ctl.rules();
    assert_eq!(settled.count("fanout_relay_generation", &[]), generation);
    assert_eq!(settled.count("fanout_relay_rules", &[]), rules.len() as u64);
    for worker in ctl.workers() {
        let cpu = worker.cpu.to_string();
        let labels = [("cpu", cpu.as_str())];
        for reason in [
            "exited",
            "unresponsive",
            "start_failed",
            "forbidden_syscall",
        ] {
            assert_eq!(
                settled.count(
                    "fanout_relay_worker_restarts_total",
                    &[("cpu", cpu.as_str()), ("reason", reason)]
                ),
                0
            );
        }
        assert_eq!(settled.count("fanout_relay_worker_ready", &labels), 1);
        assert_eq!(
            settled.count("fanout_relay_worker_table_generation", &labels),
            generation
        );
    }
    let arrived = settled.count(
        "fanout_relay_interface_receive_packets_total",
        &[("interface", "rin0")],
    );
    assert!(arrived >= u64::from(N), "rin0 received {arrived} packets");
    for (name, kind) in [
        ("fanout_relay_worker_received_total", "counter"),
        ("fanout_relay_worker_table_generation", "gauge"),
    ] {
        assert_eq!(
            settled.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }

    // Anything but GET or HEAD of /metrics.
    assert_eq!(scrape(&topo.relay, METRICS, "/").status, 404);
    let post = request(
        &topo.relay,
        METRICS,
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    assert!(post.head.contains("Allow: GET, HEAD"), "{}", post.head);
    let head = request(&topo.relay, METRICS, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((head.status, head.body.as_str()), (200, ""));

    let exit = relay.stop();
    assert_eq!(exit.summary.total().forwarded, u64::from(N));
}
