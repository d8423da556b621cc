//! Interfaces followed through netlink, under a steady stream of [`PPS`] datagrams per second:
//! a rule whose input interface does not exist when the relay starts waits for it, shows as
//! waiting in `ctl list` and the metrics, and relays within a second of the interface's
//! creation; a rule whose input is deleted waits for it again, and relays within a second of
//! its creation anew.

use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Ctl, Workdir, config_path, relay_section, rule};
use fanout_relay_tests::obs::{Metrics, scrape};
use fanout_relay_tests::relay::{Capture, RelayProcess, Stream, payload, quiet_topology};
use fanout_relay_tests::{Topology, privileged, scaled, skip, veth_pair};

/// Datagrams per second of the stream.
const PPS: u32 = 5000;
/// Where the relay serves its metrics, inside its own namespace.
const METRICS: &str = "127.0.0.1:9471";
/// Longest time from the interface's creation to the first datagram sent after it arriving
/// (stretched by [`fanout_relay_tests::slowdown`] on a slow machine, as every wait below).
const RESUME: Duration = Duration::from_secs(1);
/// The tag of the test's stream.
const TAG: u8 = 3;
/// The input interface the rule names, absent when the relay starts.
const LATE_IF: &str = "late0";
/// Its peer in the sender's namespace.
const LATE_PEER: &str = "snd1";

fn ready(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    let online = fanout_core::cpu::online_cpus().expect("online CPUs");
    if !(online.contains(0) && online.contains(1)) {
        skip(test, "CPUs 0 and 1 must be online");
        return false;
    }
    true
}

/// The value of metric `name` for `interface` (or without labels), once the scrape has it.
fn metric(topo: &Topology, name: &str, interface: Option<&str>) -> Option<f64> {
    let page = scrape(&topo.relay, METRICS, "/metrics");
    assert_eq!(page.status, 200, "{}", page.head);
    let labels: Vec<(&str, &str)> = interface.map(|i| ("interface", i)).into_iter().collect();
    Metrics::parse(&page.body).get(name, &labels)
}

/// The relay of `config`, settled, and the test's stream through it, once its first datagram
/// arrived; with the generation the workers settled at.
fn relaying(topo: &Topology, dir: &Workdir, config: &str) -> (RelayProcess, Ctl, Stream, u64) {
    let relay = RelayProcess::start(&topo.relay, config, &["--metrics", METRICS]);
    let ctl = Ctl::new(dir);
    let settled = ctl.wait_settled(Duration::from_secs(10));
    let stream = Stream::start(topo, TAG, PPS);
    let from = stream.next_seq();
    assert!(
        stream
            .wait_from(from, Instant::now(), scaled(Duration::from_secs(5)))
            .is_some(),
        "nothing relayed before the fault; log:\n{}",
        relay.log()
    );
    (relay, ctl, stream, settled)
}

/// Polls `count` every 20 ms for up to 2 s until it is above zero; returns its last value.
fn rises(count: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = count();
        if now > 0 || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn input_absent_at_start_then_created() {
    if !ready("input_absent_at_start_then_created") {
        return;
    }
    let topo = quiet_topology("ifc_late");
    let dir = Workdir::new("ifc_late");
    let config = relay_section(&dir, "workers = \"0-1\"\nfanout = \"cpu\"")
        + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000).replace("rin0", LATE_IF);
    let relay = RelayProcess::start(&topo.relay, &config, &["--metrics", METRICS]);
    let ctl = Ctl::new(&dir);
    relay.wait_for_log(
        "the waiting rule to be logged",
        Duration::from_secs(10),
        |line| line.contains(r#"rule "cam" waits for interface(s) ["late0"]"#),
    );
    let listed = ctl.ok(&["list"]);
    assert!(
        listed.contains("cam") && listed.contains("waiting for interface(s) late0"),
        "ctl list does not show the waiting rule:\n{listed}"
    );
    assert_eq!(metric(&topo, "fanout_relay_rules_waiting", None), Some(1.0));
    assert_eq!(
        metric(&topo, "fanout_relay_interface_up", Some(LATE_IF)),
        Some(0.0)
    );

    let stream = Stream::start(&topo, TAG, PPS);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stream.arrived(), 0, "relayed without an input interface");

    // The input appears: a new veth pair whose sender end carries the sender's address and
    // its multicast route from now on.
    let from = stream.next_seq();
    let at = Instant::now();
    let _late = veth_pair(&topo.sender, LATE_PEER, &topo.relay, LATE_IF);
    topo.sender.ip(&[
        "addr",
        "del",
        &format!("{}/24", Topology::SENDER_ADDR),
        "dev",
        Topology::SENDER_IF,
    ]);
    topo.sender
        .add_addr(LATE_PEER, &format!("{}/24", Topology::SENDER_ADDR));
    topo.sender
        .ip(&["route", "replace", "224.0.0.0/4", "dev", LATE_PEER]);
    let Some(resumed) = stream.wait_from(from, at, scaled(Duration::from_secs(5))) else {
        panic!(
            "nothing relayed within 5 s of {LATE_IF}'s creation; log:\n{}",
            relay.log()
        );
    };
    println!("{LATE_IF} created: relaying started after {resumed:?}");
    assert!(
        resumed < scaled(RESUME),
        "relaying started {resumed:?} after {LATE_IF} was created"
    );

    let listed = ctl.ok(&["list"]);
    assert!(
        !listed.contains("waiting"),
        "ctl list still shows a waiting rule:\n{listed}"
    );
    assert_eq!(metric(&topo, "fanout_relay_rules_waiting", None), Some(0.0));
    assert_eq!(
        metric(&topo, "fanout_relay_interface_up", Some(LATE_IF)),
        Some(1.0)
    );
    // The new input's rings go to the workers, which take rings only when they start: each is
    // restarted once, on purpose (a hand-over to running workers is not done yet).
    for worker in ctl.workers() {
        assert!(
            worker.restarts <= 1,
            "worker on cpu {} restarted {} times",
            worker.cpu,
            worker.restarts
        );
    }
}

#[test]
fn input_deleted_and_recreated() {
    if !ready("input_deleted_and_recreated") {
        return;
    }
    let topo = quiet_topology("ifc_again");
    let dir = Workdir::new("ifc_again");
    let _first = veth_pair(&topo.sender, LATE_PEER, &topo.relay, LATE_IF);
    topo.send_through(LATE_PEER, Some(Topology::SENDER_IF));
    let config = relay_section(&dir, "workers = \"0-1\"\nfanout = \"cpu\"")
        + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000).replace("rin0", LATE_IF);
    let (relay, ctl, stream, _) = relaying(&topo, &dir, &config);

    topo.relay.ip(&["link", "del", LATE_IF]);
    relay.wait_for_log(
        "the rule to wait again",
        scaled(Duration::from_secs(5)),
        |line| line.contains(r#"rule(s) ["cam"] wait for interface late0 again"#),
    );
    let listed = ctl.ok(&["list"]);
    assert!(
        listed.contains("cam") && listed.contains("waiting for interface(s) late0"),
        "ctl list does not show the rule waiting again:\n{listed}"
    );
    let workers_table = ctl.ok(&["workers"]);
    assert!(
        workers_table.contains("cam") && workers_table.contains("waiting for interface(s) late0"),
        "ctl workers does not show the rule waiting:\n{workers_table}"
    );
    assert_eq!(metric(&topo, "fanout_relay_rules_waiting", None), Some(1.0));
    assert_eq!(
        metric(&topo, "fanout_relay_interface_up", Some(LATE_IF)),
        Some(0.0)
    );

    let workers = relay.worker_pids();
    let from = stream.next_seq();
    let at = Instant::now();
    let _again = veth_pair(&topo.sender, LATE_PEER, &topo.relay, LATE_IF);
    // The sender's end went with the pair, and its address with it.
    topo.send_through(LATE_PEER, None);
    let Some(resumed) = stream.wait_from(from, at, scaled(Duration::from_secs(5))) else {
        panic!(
            "nothing relayed within 5 s of {LATE_IF}'s creation anew; log:\n{}",
            relay.log()
        );
    };
    println!("{LATE_IF} created anew: relaying resumed after {resumed:?}");
    assert_eq!(
        relay.worker_pids(),
        workers,
        "the new rings go to the running workers: none restarts"
    );
    assert!(
        resumed < scaled(RESUME),
        "relaying resumed {resumed:?} after {LATE_IF} was created anew"
    );
    assert_eq!(metric(&topo, "fanout_relay_rules_waiting", None), Some(0.0));
    assert_eq!(
        metric(&topo, "fanout_relay_interface_up", Some(LATE_IF)),
        Some(1.0)
    );
    // The new rings went to the running workers: none was restarted.
    for worker in ctl.workers() {
        assert_eq!(
            worker.restarts, 0,
            "worker on cpu {} restarted ({:?})",
            worker.cpu, worker.restart_reasons
        );
    }
}

#[test]
fn output_deleted_and_recreated() {
    if !ready("output_deleted_and_recreated") {
        return;
    }
    let topo = quiet_topology("ifc_out");
    let dir = Workdir::new("ifc_out");
    let config = relay_section(&dir, "workers = \"0-1\"\nfanout = \"cpu\"")
        + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let (relay, ctl, _stream, _) = relaying(&topo, &dir, &config);

    let out = Topology::RELAY_OUT_IF;
    topo.relay.ip(&["link", "del", out]);
    relay.wait_for_log(
        "the deletion to be seen",
        scaled(Duration::from_secs(5)),
        |line| line.contains("interface rout0 (index") && line.contains("was deleted"),
    );
    assert_eq!(
        metric(&topo, "fanout_relay_interface_up", Some(out)),
        Some(0.0)
    );
    // What the workers send to it meanwhile fails, and is counted by errno.
    let failed = || -> u64 {
        ctl.stats()
            .workers
            .iter()
            .filter_map(|w| w.counters.output_errors.get(out))
            .flat_map(|by_errno| by_errno.values())
            .sum()
    };
    assert!(
        rises(failed) > 0,
        "no send error counted on the deleted {out}"
    );

    // The pair again, with both addresses: the receiver's stack has no membership on its new
    // end, so a capture there sees what the relay sends.
    let at = Instant::now();
    let _again = veth_pair(&topo.relay, out, &topo.receiver, Topology::RECEIVER_IF);
    topo.relay
        .add_addr(out, &format!("{}/24", Topology::RELAY_OUT_ADDR));
    topo.receiver.add_addr(
        Topology::RECEIVER_IF,
        &format!("{}/24", Topology::RECEIVER_ADDR),
    );
    let seen = Capture::open(&topo.receiver, Topology::RECEIVER_IF, "239.2.2.2:6000")
        .collect(50, scaled(Duration::from_secs(5)))
        .finish();
    let resumed = at.elapsed();
    assert!(
        seen.len() >= 50,
        "{} datagrams on the new {out} within 5 s; log:\n{}",
        seen.len(),
        relay.log()
    );
    println!("{out} created anew: 50 datagrams sent on it within {resumed:?}");
    assert!(
        resumed < scaled(RESUME),
        "relaying on {out} resumed {resumed:?} after it was created anew"
    );
    assert_eq!(
        metric(&topo, "fanout_relay_interface_up", Some(out)),
        Some(1.0)
    );
    // The workers opened a transmit ring on the new interface while serving: none restarted.
    for worker in ctl.workers() {
        assert_eq!(
            worker.restarts, 0,
            "worker on cpu {} restarted ({:?})",
            worker.cpu, worker.restart_reasons
        );
    }
}

/// Whether datagram `seq` of the stream is too big for an output MTU of `mtu` bytes.
fn too_big_for(seq: u32, mtu: usize) -> bool {
    payload(TAG, seq).len() + 28 > mtu
}

#[test]
fn mtu_lowered_below_a_frame_and_raised_back() {
    if !ready("mtu_lowered_below_a_frame_and_raised_back") {
        return;
    }
    const LOW: usize = 200;
    let topo = quiet_topology("ifc_mtu");
    let dir = Workdir::new("ifc_mtu");
    let config = relay_section(&dir, "workers = \"0-1\"\nfanout = \"cpu\"")
        + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let (relay, ctl, stream, settled) = relaying(&topo, &dir, &config);
    let too_big = || -> u64 { ctl.stats().workers.iter().map(|w| w.counters.too_big).sum() };
    assert_eq!(too_big(), 0);

    let out = Topology::RELAY_OUT_IF;
    topo.relay
        .ip(&["link", "set", out, "mtu", &LOW.to_string()]);
    relay.wait_for_log(
        "the new MTU to be taken",
        scaled(Duration::from_secs(5)),
        |line| line.contains("interface rout0: facts changed; generation"),
    );
    let lowered = ctl.wait_settled(scaled(Duration::from_secs(5)));
    assert!(lowered > settled, "no new generation for the MTU");
    let small_from = stream.next_seq();
    assert!(
        stream
            .wait_from(small_from, Instant::now(), scaled(Duration::from_secs(2)))
            .is_some(),
        "datagrams that fit the lowered MTU stopped too; log:\n{}",
        relay.log()
    );
    assert!(
        rises(too_big) > 0,
        "nothing counted as too big for MTU {LOW}"
    );
    let big_sent_low = stream.next_seq();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        stream.first_arrival_where(big_sent_low, |seq| too_big_for(seq, LOW)),
        None,
        "a datagram too big for MTU {LOW} arrived"
    );

    let from = stream.next_seq();
    let at = Instant::now();
    topo.relay.ip(&["link", "set", out, "mtu", "1500"]);
    let Some(big) = (0..100).find_map(|_| {
        let arrived = stream.first_arrival_where(from, |seq| too_big_for(seq, LOW));
        if arrived.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        arrived
    }) else {
        panic!(
            "no datagram bigger than {LOW} bytes within 2 s of the MTU's return; log:\n{}",
            relay.log()
        );
    };
    let resumed = big.saturating_duration_since(at);
    println!("MTU back to 1500: big datagrams relayed again after {resumed:?}");
    assert!(
        resumed < scaled(RESUME),
        "big datagrams resumed {resumed:?} after the MTU's return"
    );
    for worker in ctl.workers() {
        assert_eq!(
            worker.restarts, 0,
            "worker on cpu {} restarted ({:?})",
            worker.cpu, worker.restart_reasons
        );
    }
}

#[test]
fn a_rule_added_for_a_missing_interface_waits_for_it() {
    if !ready("a_rule_added_for_a_missing_interface_waits_for_it") {
        return;
    }
    let topo = quiet_topology("ifc_add");
    let dir = Workdir::new("ifc_add");
    // A rule on another group, so that the relay runs with the stream unmatched.
    let config = relay_section(&dir, "workers = \"0-1\"\nfanout = \"cpu\"")
        + &rule("other", "239.9.9.9", 5000, "239.2.2.9", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &["--metrics", METRICS]);
    let ctl = Ctl::new(&dir);
    ctl.wait_settled(Duration::from_secs(10));
    let before = ctl.rules().0;

    let added = ctl.ok(&["add", "cam", "late0:239.1.1.1:5000", "rout0:239.2.2.2:6000"]);
    assert!(
        added.contains("waiting for interfaces that do not exist yet"),
        "ctl add does not say the rule waits:\n{added}"
    );
    let spare = ctl.ok(&[
        "add",
        "spare",
        "late0:239.1.1.2:5000",
        "rout0:239.2.2.2:6002",
    ]);
    assert!(spare.contains("waiting"), "{spare}");
    let listed = ctl.ok(&["list"]);
    assert!(
        listed.contains("cam") && listed.contains("spare") && listed.contains("late0"),
        "ctl list does not show the waiting rules:\n{listed}"
    );
    assert_eq!(metric(&topo, "fanout_relay_rules_waiting", None), Some(2.0));
    // What can be checked without the interface is checked.
    let invalid = ctl.run(&["add", "bad", "late0:239.1.1.4:0", "rout0:239.2.2.2:6004"]);
    assert!(
        !invalid.status.success() && invalid.stderr.contains("port 0"),
        "a waiting rule with input port 0 was not refused: {}",
        invalid.stderr
    );
    // A second rule of the same name is refused, waiting or not.
    let twice = ctl.run(&["add", "cam", "late0:239.1.1.3:5000", "rout0:239.2.2.2:6003"]);
    assert!(
        !twice.status.success(),
        "a second rule named cam was accepted"
    );
    // A waiting rule is removed like any other.
    ctl.ok(&["remove", "spare"]);
    assert_eq!(metric(&topo, "fanout_relay_rules_waiting", None), Some(1.0));
    assert!(
        !ctl.ok(&["list"]).contains("spare"),
        "the removed waiting rule is still listed"
    );
    assert_eq!(ctl.rules().0, before + 3, "two adds and a remove");
    // A reload whose file names a missing interface makes its rule wait too, and keeps the
    // waiting rule added at run time only if the file has it.
    let file = config_path(&relay);
    let reloaded_config = config.clone()
        + &rule("third", "239.1.1.3", 5000, "239.2.2.2", 6003).replace("rin0", "gone0");
    std::fs::write(&file, &reloaded_config).expect("rewrite the configuration");
    let reloaded = ctl.ok(&["reload"]);
    assert!(
        reloaded.contains("cam"),
        "the run-time rule cam is not named: {reloaded}"
    );
    let listed = ctl.ok(&["list"]);
    assert!(
        listed.contains("third") && listed.contains("gone0") && !listed.contains("cam"),
        "after the reload ctl list shows:\n{listed}"
    );
    // Back to the rule the stream needs.
    ctl.ok(&["add", "cam", "late0:239.1.1.1:5000", "rout0:239.2.2.2:6000"]);

    let stream = Stream::start(&topo, TAG, PPS);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stream.arrived(), 0, "relayed without its input interface");
    let from = stream.next_seq();
    let at = Instant::now();
    let _late = veth_pair(&topo.sender, LATE_PEER, &topo.relay, LATE_IF);
    topo.send_through(LATE_PEER, Some(Topology::SENDER_IF));
    let Some(started) = stream.wait_from(from, at, scaled(Duration::from_secs(5))) else {
        panic!(
            "nothing relayed within 5 s of {LATE_IF}'s creation; log:\n{}",
            relay.log()
        );
    };
    println!("{LATE_IF} created: the rule added while it was missing relayed after {started:?}");
    assert!(
        started < scaled(RESUME),
        "relaying started {started:?} after {LATE_IF} was created"
    );
    assert_eq!(
        metric(&topo, "fanout_relay_rules_waiting", None),
        Some(1.0),
        "only third, whose gone0 does not exist, waits"
    );
}

/// The input appears down (moved into the relay's namespace, which takes an interface down):
/// the kernel refuses a fanout group on it, so the rule goes on waiting, quietly, and starts
/// when the interface comes up. A relay that started the rule on the interface's appearance
/// would be refused and, not trying again, never relay.
#[test]
fn input_appearing_down_starts_when_up() {
    if !ready("input_appearing_down_starts_when_up") {
        return;
    }
    let topo = quiet_topology("ifc_down");
    let dir = Workdir::new("ifc_down");
    let config = relay_section(&dir, "workers = \"0-1\"\nfanout = \"cpu\"")
        + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000).replace("rin0", LATE_IF);
    let relay = RelayProcess::start(&topo.relay, &config, &["--metrics", METRICS]);
    let ctl = Ctl::new(&dir);
    let stream = Stream::start(&topo, TAG, PPS);

    // Made in the sender's namespace and moved: the pair dies with either namespace.
    topo.sender.ip(&[
        "link", "add", LATE_PEER, "type", "veth", "peer", "name", LATE_IF,
    ]);
    topo.sender.ip(&["link", "set", LATE_PEER, "up"]);
    topo.sender
        .ip(&["link", "set", LATE_IF, "netns", topo.relay.name()]);
    topo.send_through(LATE_PEER, Some(Topology::SENDER_IF));
    relay.wait_for_log(
        "the interface's appearance",
        scaled(Duration::from_secs(5)),
        |line| line.contains("interface late0 appeared"),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stream.arrived(), 0, "relayed from an input that is down");
    assert_eq!(metric(&topo, "fanout_relay_rules_waiting", None), Some(1.0));
    let listed = ctl.ok(&["list"]);
    assert!(
        listed.contains("cam") && listed.contains("waiting for interface(s) late0"),
        "ctl list does not show the rule:\n{listed}"
    );

    let from = stream.next_seq();
    let at = Instant::now();
    topo.relay.ip(&["link", "set", LATE_IF, "up"]);
    let Some(started) = stream.wait_from(from, at, scaled(Duration::from_secs(5))) else {
        panic!(
            "nothing relayed within 5 s of {LATE_IF} coming up; log:\n{}",
            relay.log()
        );
    };
    println!("{LATE_IF} up: relaying started after {started:?}");
    assert!(
        started < scaled(RESUME),
        "relaying started {started:?} after {LATE_IF} came up"
    );
    let log = relay.log();
    assert!(
        !log.contains("go on waiting: refused"),
        "the relay tried the rule on the down interface:\n{log}"
    );
    assert_eq!(metric(&topo, "fanout_relay_rules_waiting", None), Some(0.0));
}
