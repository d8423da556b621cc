//! The storm guard end to end: a flood on a rule with `max_pps` is cut to the limit, counted
//! and logged, while another rule's flow passes whole.

use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section};
use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology,
};
use fanout_relay_tests::{Topology, online_cpus, privileged};

/// The rates of the test on this machine: a 20,000 pps flood on a rule limited to 5,000 pps
/// beside a calm flow of 1,000 pps, all divided by the slowdown of an emulated kernel (whose
/// worker cannot take 20,000 pps: what is tested is the guard's share, not the machine's speed).
struct Rates {
    flood_pps: u32,
    limit: u32,
    calm_pps: u32,
}

fn rates() -> Rates {
    let slowdown = fanout_relay_tests::slowdown();
    Rates {
        flood_pps: 20_000 / slowdown,
        limit: 5_000 / slowdown,
        calm_pps: 1_000 / slowdown,
    }
}

const SECONDS: u32 = 3;

#[test]
fn a_flood_is_cut_to_max_pps_and_another_rule_is_untouched() {
    if !privileged("a_flood_is_cut_to_max_pps_and_another_rule_is_untouched") {
        return;
    }
    let Rates {
        flood_pps,
        limit,
        calm_pps,
    } = rates();
    // The guard's burst: a tenth of a second at the limit (relay_rules::guard::BURST_NS).
    let burst = limit / 10;
    let topo = quiet_topology("storm");
    let dir = Workdir::new("storm");
    // One worker: the whole limit is its own (with n workers each gets 1/n).
    let config = relay_section(&dir, &format!("cpus = \"{}\"", online_cpus()[0]))
        + &format!(
            "\n[[rule]]\nname = \"flood\"\nmax_pps = {limit}\n\
             input = {{ interface = \"rin0\", destination = \"239.1.1.1\", port = 5000 }}\n\
             outputs = [ {{ interface = \"rout0\", destination = \"239.2.2.2\", port = 6000 }} ]\n\
             \n[[rule]]\nname = \"calm\"\n\
             input = {{ interface = \"rin0\", destination = \"239.1.1.2\", port = 5001 }}\n\
             outputs = [ {{ interface = \"rout0\", destination = \"239.2.2.3\", port = 6001 }} ]\n"
        );
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let flood_n = flood_pps * SECONDS;
    let calm_n = calm_pps * SECONDS;
    let flood_rx = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(flood_n as usize, Duration::from_secs(30));
    let calm_rx = UdpReceiver::join(&topo.receiver, "239.2.2.3:6001", Topology::RECEIVER_ADDR)
        .collect(calm_n as usize, Duration::from_secs(30));
    let flood = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let calm = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let started = Instant::now();
    let flood_took = std::thread::scope(|s| {
        s.spawn(|| calm.send_numbered("239.1.1.2:5001", 2, 0..calm_n, calm_pps));
        s.spawn(|| {
            flood.send_numbered("239.1.1.1:5000", 1, 0..flood_n, flood_pps);
            started.elapsed()
        })
        .join()
        .expect("the flood sender")
    });
    std::thread::sleep(Duration::from_millis(500));
    let flood_got = flood_rx.stop();
    let calm_got = calm_rx.finish();

    if let Err(problem) = check_stream(&calm_got, 2, 0..calm_n) {
        panic!("the calm rule's flow: {problem}");
    }
    let seconds = flood_took.as_secs_f64();
    let rate = (flood_got.len() as f64 - f64::from(burst)) / seconds;
    assert!(
        (f64::from(limit) * 0.95..=f64::from(limit) * 1.05).contains(&rate),
        "{} of {flood_n} flood datagrams in {seconds:.2} s: {rate:.0}/s after the burst of \
         {burst}, not {limit} +- 5 %",
        flood_got.len()
    );
    // The workers report every second: wait for the counts of everything sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = u64::from(flood_n + calm_n);
    let stats = loop {
        let stats = ctl.stats();
        let received: u64 = stats.workers.iter().map(|w| w.counters.received).sum();
        if received >= sent || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let flood_stats = &stats.rules["flood"];
    let limited = flood_stats
        .stream
        .as_ref()
        .map_or(0, |stream| stream.limited_packets);
    let received = stats
        .workers
        .iter()
        .map(|w| w.counters.received)
        .sum::<u64>();
    assert_eq!(
        received,
        u64::from(flood_n + calm_n),
        "the relay received every datagram sent"
    );
    assert_eq!(
        (flood_stats.packets, limited),
        (
            flood_got.len() as u64,
            u64::from(flood_n) - flood_got.len() as u64
        ),
        "forwarded and limited datagrams of the flood"
    );
    assert_eq!(stats.rules["calm"].packets, u64::from(calm_n));
    assert_eq!(
        stats.rules["calm"].stream, None,
        "no options, no stream counters"
    );
    let table = ctl.ok(&["stats"]);
    assert!(table.contains(&format!("limited {limited}")), "{table}");
    relay.wait_for_log(
        "the storm guard's log line",
        Duration::from_secs(5),
        |line| line.contains(&format!("rule \"flood\" is limited (max_pps {limit})")),
    );
    drop(relay);
}
