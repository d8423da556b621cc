//! Rules changed at run time through `fanout-relay ctl`: an added rule relays at once, a removed
//! one stops, a refused change changes nothing, and `list` and `stats` show what was done.

use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, Workdir, json_u64, relay_section, rule};
use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, payload, payload_id, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged};

/// Datagrams per phase.
const N: u32 = 300;
/// A rate any relay keeps up with, even a debug build on a busy machine.
const PPS: u32 = 500;

#[test]
fn added_rules_relay_removed_rules_stop_and_list_and_stats_show_it() {
    if !privileged("added_rules_relay_removed_rules_stop_and_list_and_stats_show_it") {
        return;
    }
    let topo = quiet_topology("ctlrul");
    let dir = Workdir::new("rules");
    let config = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.3:6001", Topology::RECEIVER_ADDR)
        .collect(usize::MAX, Duration::from_secs(90));
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);

    // No rule yet: the stream is counted as no_rule, nothing is relayed.
    let (generation, rules) = ctl.rules();
    assert_eq!((generation, rules.len()), (1, 1), "{rules:#?}");
    sender.send_numbered("239.1.1.2:5001", 1, 0..N, PPS);
    ctl.wait_stats(
        "the unmatched stream in no_rule",
        Duration::from_secs(15),
        |s| s.workers.iter().map(|w| w.counters.no_rule).sum::<u64>() >= u64::from(N),
    );

    // add: answered once the workers confirmed, so the stream relays at once.
    let added = ctl.ok(&[
        "add",
        "added",
        "rin0:239.1.1.2:5001",
        "rout0:239.2.2.3:6001,ttl=9",
    ]);
    assert!(
        added.contains("generation 2") && added.contains("\"added\""),
        "ctl add printed: {added}"
    );
    let listed = ctl.ok(&["list"]);
    assert!(
        listed.contains("generation 2, 2 rule(s)")
            && listed.contains("rin0:239.1.1.2:5001")
            && listed.contains("-> rout0:239.2.2.3:6001 ttl 9"),
        "ctl list printed:\n{listed}"
    );
    let (generation, rules) = ctl.rules();
    assert_eq!(generation, 2);
    let rule = rules
        .iter()
        .find(|r| r.name == "added")
        .unwrap_or_else(|| panic!("no rule `added` in {rules:#?}"));
    assert_eq!(
        (
            rule.input.destination.to_string(),
            rule.input.port,
            rule.outputs.len(),
            rule.outputs[0].destination.to_string(),
            rule.outputs[0].port,
            rule.outputs[0].ttl
        ),
        (
            "239.1.1.2".into(),
            5001,
            1,
            "239.2.2.3".into(),
            6001,
            relay_rules::Ttl::Fixed(9)
        )
    );
    for worker in ctl.workers() {
        assert_eq!(
            (worker.state.as_str(), worker.generation),
            ("ready", 2),
            "{worker:?}"
        );
    }
    sender.send_numbered("239.1.1.2:5001", 2, 0..N, PPS);
    let stats = ctl.wait_stats("the added rule's counters", Duration::from_secs(15), |s| {
        s.rules
            .get("added")
            .is_some_and(|r| r.packets >= u64::from(N))
    });
    let bytes: u64 = (0..N).map(|seq| payload(2, seq).len() as u64).sum();
    assert_eq!(
        (stats.rules["added"].packets, stats.rules["added"].bytes),
        (u64::from(N), bytes),
        "{stats:#?}"
    );
    assert_eq!(stats.rules["base"].packets, 0, "{stats:#?}");
    let json = ctl.ok(&["--json", "stats"]);
    assert_eq!(
        json_u64(&json, &["rules", "added", "packets"]),
        Some(u64::from(N)),
        "ctl --json stats printed:\n{json}"
    );
    let human = ctl.ok(&["stats"]);
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("added ") && l.split_whitespace().nth(1) == Some("300")),
        "ctl stats printed:\n{human}"
    );

    // A refused change (same match key as `base`) changes nothing.
    let refused = ctl.run(&["add", "dup", "rin0:239.1.1.1:5000", "rout0:239.2.2.9:6009"]);
    assert!(!refused.status.success(), "a duplicate key was accepted");
    assert!(
        refused.stderr.contains("239.1.1.1"),
        "the refusal does not say why: {}",
        refused.stderr
    );
    assert_eq!(ctl.rules().0, 2, "a refused change moved the generation");

    // remove: the stream stops being relayed and is counted as no_rule again.
    let no_rule_before: u64 = ctl.stats().workers.iter().map(|w| w.counters.no_rule).sum();
    let removed = ctl.ok(&["remove", "added"]);
    assert!(
        removed.contains("generation 3"),
        "ctl remove printed: {removed}"
    );
    assert_eq!(ctl.rule_names(), ["base"]);
    sender.send_numbered("239.1.1.2:5001", 3, 0..N, PPS);
    ctl.wait_stats(
        "the stream after remove in no_rule",
        Duration::from_secs(15),
        |s| {
            s.workers.iter().map(|w| w.counters.no_rule).sum::<u64>()
                >= no_rule_before + u64::from(N)
        },
    );
    let again = ctl.run(&["remove", "added"]);
    assert!(!again.status.success(), "removing a missing rule succeeded");
    assert!(again.stderr.contains("added"), "{}", again.stderr);

    // remove by key.
    ctl.ok(&["remove", "--key", "rin0:239.1.1.1:5000"]);
    let (generation, rules) = ctl.rules();
    assert_eq!((generation, rules.len()), (4, 0), "{rules:#?}");

    std::thread::sleep(Duration::from_millis(500));
    let got = receiver.stop();
    let exit = relay.stop();
    if let Err(problem) = check_stream(&got, 2, 0..N) {
        panic!("while the rule was in place: {problem}");
    }
    let stray: Vec<(u8, u32)> = got
        .iter()
        .filter_map(|d| payload_id(&d.payload))
        .filter(|&(tag, _)| tag != 2)
        .collect();
    assert!(
        stray.is_empty(),
        "relayed without a rule (tag 1 before add, tag 3 after remove): {} datagrams, first {:?}",
        stray.len(),
        &stray[..stray.len().min(5)]
    );
    // Only the stream that had a rule was forwarded, over the relay's whole life.
    let total = exit.summary.total();
    assert_eq!(total.forwarded, u64::from(N), "{:#?}", exit.summary);
    assert_eq!(total.no_rule, 2 * u64::from(N), "{:#?}", exit.summary);
    // The rule removed at run time keeps its counters in the exit summary, marked as removed.
    assert_eq!(
        exit.summary.rules.get("added"),
        Some(&(u64::from(N), bytes)),
        "{:#?}",
        exit.summary
    );
    assert!(
        exit.summary.removed.contains("added"),
        "not marked removed: {:#?}",
        exit.summary
    );
}
