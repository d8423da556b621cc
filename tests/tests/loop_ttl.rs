//! Loop protection end to end: two relays in two namespaces that feed each other by mistake
//! (each one's output is the other's input, across one veth pair). With `ttl = "decrement"`
//! on both outputs a datagram goes round only as often as its TTL allows, then is dropped and
//! counted as `ttl_expired`; the counts are exact.

use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section};
use fanout_relay_tests::relay::{RelayProcess, UdpSender, quiet_topology};
use fanout_relay_tests::{Topology, online_cpus, privileged};
use relay_bin::control::proto::StatsReport;

/// Datagrams injected into the loop, and the TTL they start with.
const INJECTED: u64 = 10;
const TTL: u32 = 8;

fn config(dir: &Workdir, name: &str, interface: &str, from: &str, to: &str) -> String {
    relay_section(dir, &format!("cpus = \"{}\"", online_cpus()[0]))
        + &format!(
            "\n[[rule]]\nname = {name:?}\n\
             input = {{ interface = {interface:?}, destination = {from:?}, port = 5000 }}\n\
             outputs = [ {{ interface = {interface:?}, destination = {to:?}, port = 5000, ttl = \"decrement\" }} ]\n"
        )
}

/// (matched, forwarded, ttl_expired) of `stats`.
fn counts(stats: &StatsReport, rule: &str) -> (u64, u64, u64) {
    let matched = stats.rules.get(rule).map_or(0, |r| r.packets);
    let forwarded = stats.workers.iter().map(|w| w.counters.forwarded).sum();
    let expired = stats.workers.iter().map(|w| w.counters.ttl_expired).sum();
    (matched, forwarded, expired)
}

#[test]
fn a_loop_between_two_relays_dies_out_with_decrement() {
    if !privileged("a_loop_between_two_relays_dies_out_with_decrement") {
        return;
    }
    let topo = quiet_topology("loopttl");
    let (dir_a, dir_b) = (Workdir::new("loopa"), Workdir::new("loopb"));
    // Relay a, on rout0: 239.5.5.5 -> 239.6.6.6; relay b, across the pair on rcv0: back again.
    let a = RelayProcess::start(
        &topo.relay,
        &config(
            &dir_a,
            "a",
            Topology::RELAY_OUT_IF,
            "239.5.5.5",
            "239.6.6.6",
        ),
        &[],
    );
    let b = RelayProcess::start(
        &topo.receiver,
        &config(&dir_b, "b", Topology::RECEIVER_IF, "239.6.6.6", "239.5.5.5"),
        &[],
    );
    let (ctl_a, ctl_b) = (Ctl::new(&dir_a), Ctl::new(&dir_b));
    // Injected beside relay b, towards relay a's input, with TTL 8: a receives each datagram
    // with 8, 6, 4 and 2 and sends 7, 5, 3 and 1; b receives those and sends 6, 4 and 2, and
    // drops the one that arrives with 1.
    let injector = UdpSender::new(&topo.receiver, Topology::RECEIVER_ADDR, TTL);
    for seq in 0..INJECTED as u32 {
        injector
            .socket()
            .send_to(&seq.to_be_bytes(), "239.5.5.5:5000")
            .unwrap_or_else(|e| panic!("inject datagram {seq}: {e}"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let rounds = u64::from(TTL / 2);
    let want_a = (rounds * INJECTED, rounds * INJECTED, 0);
    let want_b = (rounds * INJECTED, (rounds - 1) * INJECTED, INJECTED);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (got_a, got_b) = (counts(&ctl_a.stats(), "a"), counts(&ctl_b.stats(), "b"));
        if (got_a, got_b) == (want_a, want_b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "(matched, forwarded, ttl_expired): relay a {got_a:?}, want {want_a:?}; \
             relay b {got_b:?}, want {want_b:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The loop is over: nothing more is relayed.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        counts(&ctl_a.stats(), "a"),
        want_a,
        "relay a after the loop died"
    );
    assert_eq!(
        counts(&ctl_b.stats(), "b"),
        want_b,
        "relay b after the loop died"
    );
    drop((a, b));
}
