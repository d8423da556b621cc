//! Reloading the configuration (`ctl reload` and SIGHUP) applies only the difference: a flow
//! whose rule did not change relays every datagram through reloads that add and remove other
//! rules, and a configuration that does not parse or validate changes nothing.

use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Ctl, Workdir, config_path, relay_section, rule, signal};
use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged};
use nix::sys::signal::Signal;

/// The steady stream on the unchanged flow: [`PPS`] for six seconds, so that both reloads
/// (at 1 s and 2 s) end inside it even when a state file's fsync waits seconds for the disk.
const STREAM: u32 = 1800;
/// Its rate.
const PPS: u32 = 300;

fn keep() -> String {
    rule("keep", "239.1.1.1", 5000, "239.2.2.2", 6000)
}

/// Waits until the running rule names are `names` (sorted), after a SIGHUP.
fn wait_for_rules(ctl: &Ctl, names: &[&str], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let running = ctl.rule_names();
        if running == names {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rules after {timeout:?}: {running:?}, expected {names:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reloads_under_traffic_lose_nothing_on_an_unchanged_flow() {
    if !privileged("reloads_under_traffic_lose_nothing_on_an_unchanged_flow") {
        return;
    }
    let topo = quiet_topology("ctlrld");
    let dir = Workdir::new("reload");
    let head = relay_section(&dir, "");
    let first = head.clone() + &keep() + &rule("old", "239.1.1.5", 5005, "239.2.2.5", 6005);
    // `keep` is written after the new rule: order in the file is not a change.
    let second = head.clone() + &rule("new1", "239.1.1.6", 5006, "239.2.2.6", 6006) + &keep();
    let third = head + &keep() + &rule("new2", "239.1.1.7", 5007, "239.2.2.7", 6007);
    let relay = RelayProcess::start(&topo.relay, &first, &[]);
    let ctl = Ctl::new(&dir);
    let file = config_path(&relay);
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(STREAM as usize, Duration::from_secs(30));
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);

    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| sender.send_numbered("239.1.1.1:5000", 1, 0..STREAM, PPS));
        std::thread::sleep(Duration::from_secs(1));
        std::fs::write(&file, &second).expect("rewrite the configuration");
        let reloaded = ctl.ok(&["reload"]);
        assert!(
            reloaded.contains("added [\"new1\"], removed [\"old\"]"),
            "ctl reload printed: {reloaded}"
        );
        assert_eq!(ctl.rule_names(), ["keep", "new1"]);
        std::thread::sleep(Duration::from_secs(2).saturating_sub(started.elapsed()));
        std::fs::write(&file, &third).expect("rewrite the configuration");
        signal(relay.pid(), Signal::SIGHUP);
        wait_for_rules(&ctl, &["keep", "new2"], Duration::from_secs(10));
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the reloads took until {:?}, after the stream ended: the test proves nothing",
            started.elapsed()
        );
    });
    let got = receiver.finish();
    let generation = ctl.wait_settled(Duration::from_secs(10));
    assert_eq!(generation, 3, "two reloads, one generation each");
    if let Err(problem) = check_stream(&got, 1, 0..STREAM) {
        panic!("the unchanged flow through two reloads: {problem}");
    }

    // The SIGHUP reload reached the workers: the new rule relays.
    let added = UdpReceiver::join(&topo.receiver, "239.2.2.7:6007", Topology::RECEIVER_ADDR)
        .collect(100, Duration::from_secs(20));
    sender.send_numbered("239.1.1.7:5007", 2, 0..100, 500);
    if let Err(problem) = check_stream(&added.finish(), 2, 0..100) {
        panic!("the rule added by SIGHUP: {problem}");
    }
    let exit = relay.stop();
    assert_eq!(exit.summary.rule_packets("keep"), u64::from(STREAM));
    assert!(
        exit.log.contains("SIGHUP: reloading"),
        "no SIGHUP reload in the log"
    );
}

#[test]
fn a_bad_reload_changes_nothing() {
    if !privileged("a_bad_reload_changes_nothing") {
        return;
    }
    let topo = quiet_topology("ctlbad");
    let dir = Workdir::new("badreload");
    let good =
        relay_section(&dir, "") + &keep() + &rule("other", "239.1.1.5", 5005, "239.2.2.5", 6005);
    let relay = RelayProcess::start(&topo.relay, &good, &[]);
    let ctl = Ctl::new(&dir);
    let file = config_path(&relay);
    let pids: Vec<Option<u32>> = ctl.workers().iter().map(|w| w.pid).collect();
    let before = ctl.rules();
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(400, Duration::from_secs(30));
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    sender.send_numbered("239.1.1.1:5000", 1, 0..200, 500);

    // Valid TOML, invalid rules: a key used twice; `keep` goes away, a good rule comes in and a
    // rule on an interface that does not exist would wait for it, and none of it may happen. Through SIGHUP first: the log is the
    // only place its refusal is told.
    let invalid = relay_section(&dir, "")
        + &rule("other", "239.1.1.5", 5005, "239.2.2.5", 6005)
        + &rule("fresh", "239.1.1.8", 5008, "239.2.2.8", 6008)
        + &rule("twin", "239.1.1.8", 5008, "239.2.2.9", 6009)
        + &rule("lost", "239.1.1.9", 5009, "239.2.2.9", 6009).replace("rin0", "nosuch0");
    std::fs::write(&file, &invalid).expect("rewrite the configuration");
    signal(relay.pid(), Signal::SIGHUP);
    relay.wait_for_log(
        "the SIGHUP reload to be refused",
        Duration::from_secs(10),
        |line| line.contains("reload refused, nothing changed"),
    );
    // The problems are listed on the lines after it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !relay.log().contains("239.1.1.8") {
        assert!(
            Instant::now() < deadline,
            "the SIGHUP refusal does not name the problem:\n{}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        ctl.rules(),
        before,
        "a refused SIGHUP reload changed the rules"
    );
    let out = ctl.run(&["reload"]);
    assert!(!out.status.success(), "an invalid reload succeeded");
    assert!(
        out.stderr.contains("239.1.1.8"),
        "the refusal does not name the problems: {}",
        out.stderr
    );
    assert_eq!(ctl.rules(), before, "a refused reload changed the rules");

    // Not TOML at all.
    std::fs::write(&file, "this is [not toml\n").expect("rewrite the configuration");
    let out = ctl.run(&["reload"]);
    assert!(!out.status.success(), "a reload of garbage succeeded");
    assert!(
        out.stderr.contains("reload refused") && out.stderr.contains("line 1"),
        "ctl reload said: {}",
        out.stderr
    );
    assert_eq!(ctl.rules(), before, "a refused reload changed the rules");
    let after: Vec<Option<u32>> = ctl.workers().iter().map(|w| w.pid).collect();
    assert_eq!(after, pids, "workers were replaced");

    // Relaying went on.
    sender.send_numbered("239.1.1.1:5000", 1, 200..400, 500);
    if let Err(problem) = check_stream(&receiver.finish(), 1, 0..400) {
        panic!("across the refused reloads: {problem}");
    }

    // Once the file is good again, a reload applies it.
    let fixed = relay_section(&dir, "") + &keep();
    std::fs::write(&file, &fixed).expect("rewrite the configuration");
    let out = ctl.ok(&["reload"]);
    assert!(
        out.contains("removed [\"other\"]"),
        "ctl reload printed: {out}"
    );
    assert_eq!(ctl.rule_names(), ["keep"]);
    let exit = relay.stop();
    assert_eq!(exit.summary.rule_packets("keep"), 400);
}

#[test]
fn every_refused_sighup_reload_is_logged_with_its_reason() {
    if !privileged("every_refused_sighup_reload_is_logged_with_its_reason") {
        return;
    }
    let topo = quiet_topology("ctlhup");
    let dir = Workdir::new("hupreasons");
    let relay = RelayProcess::start(&topo.relay, &(relay_section(&dir, "") + &keep()), &[]);
    let ctl = Ctl::new(&dir);
    let file = config_path(&relay);
    let before = ctl.rules();
    // Two refusals in a row, well within any rate-limiting window, for different reasons: the
    // log is the only place a SIGHUP's refusal is told, so each must be there with its reason.
    let reasons = [
        ("224.0.0.251", 6009, "input.destination"),
        ("239.1.1.9", 0, "outputs[0].port"),
    ];
    for (round, (group, port, wanted)) in reasons.into_iter().enumerate() {
        let bad = relay_section(&dir, "") + &keep() + &rule("bad", group, 5009, "239.2.2.9", port);
        std::fs::write(&file, &bad).expect("rewrite the configuration");
        signal(relay.pid(), Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !relay.log().contains(wanted) {
            assert!(
                Instant::now() < deadline,
                "refused SIGHUP reload #{} is not logged with its reason ({wanted}):\n{}",
                round + 1,
                relay.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            ctl.rules(),
            before,
            "a refused SIGHUP reload changed the rules"
        );
    }
    let refusals = relay
        .log()
        .lines()
        .filter(|line| line.contains("reload refused, nothing changed"))
        .count();
    assert_eq!(refusals, 2, "log:\n{}", relay.log());
    relay.stop();
}

#[test]
fn a_reload_names_the_rules_that_existed_only_at_run_time() {
    if !privileged("a_reload_names_the_rules_that_existed_only_at_run_time") {
        return;
    }
    let topo = quiet_topology("ctlrto");
    let dir = Workdir::new("runtimeonly");
    let first =
        relay_section(&dir, "") + &keep() + &rule("old", "239.1.1.5", 5005, "239.2.2.5", 6005);
    let relay = RelayProcess::start(&topo.relay, &first, &[]);
    let ctl = Ctl::new(&dir);
    let file = config_path(&relay);
    ctl.ok(&[
        "add",
        "extra",
        "rin0:239.1.1.3:5003",
        "rout0:239.2.2.3:6003",
    ]);
    assert_eq!(ctl.rule_names(), ["extra", "keep", "old"]);

    // The file drops `old`; `extra` was never in it. Both go, and only `extra` is named as a
    // rule that existed only at run time.
    std::fs::write(&file, relay_section(&dir, "") + &keep()).expect("rewrite the configuration");
    let out = ctl.ok(&["reload"]);
    assert!(
        out.contains("removed [\"extra\", \"old\"]"),
        "ctl reload printed: {out}"
    );
    let line = out
        .lines()
        .find(|line| line.contains("only at run time"))
        .unwrap_or_else(|| panic!("ctl reload does not name the run-time rules: {out}"));
    assert!(
        line.contains("[\"extra\"]") && !line.contains("old"),
        "ctl reload printed: {out}"
    );
    assert!(out.contains("ctl save"), "no hint to keep them: {out}");
    assert_eq!(ctl.rule_names(), ["keep"]);
    relay.wait_for_log(
        "the reload's log line naming the run-time rules",
        Duration::from_secs(5),
        |line| line.contains("only at run time") && line.contains("[\"extra\"]"),
    );
    relay.stop();
}
