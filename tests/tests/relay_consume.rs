//! `[relay] consume_input`: with it on (the default) every datagram is relayed and a local socket
//! joined to the input group in the relay's namespace receives none, since the relay's ingress
//! filter drops the relayed frames after its receive rings took them; with it off that socket
//! receives every one. The rings are taps that the kernel serves before the ingress hook: a
//! drop-everything filter of someone else's does not keep frames from them. The filter follows
//! rule changes and an input deleted and created anew, a supervisor killed with SIGKILL leaves
//! one filter that the next start replaces (exactly one is installed), and a clean exit
//! leaves none.

use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::signal;
use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule};
use fanout_relay_tests::obs::{Metrics, scrape};
use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology, relay_binary,
};
use fanout_relay_tests::{Netns, Topology, have_program, privileged, skip, veth_pair};
use nix::sys::signal::Signal;
use relay_bin::control::proto::{Command, ConsumeFilter, Reply, Response};

/// Datagrams per stream.
const N: u32 = 500;
/// A rate any relay keeps up with, even a debug build on a busy machine.
const PPS: u32 = 500;
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a local socket that should get nothing is listened to after the stream ended.
const AFTER: Duration = Duration::from_millis(500);
/// How long a local socket listens for a stream of at most [`N`] (sent in one second at
/// [`PPS`]): one that should get nothing waits this long, not [`RECEIVE_TIMEOUT`].
const LOCAL_TIMEOUT: Duration = Duration::from_secs(4);
/// Where the relay serves its metrics, inside its own namespace.
const METRICS: &str = "127.0.0.1:9473";
/// The relay's filter as `tc filter show` prints it (see `relay_bin::ingress`).
const OURS: &str = "handle 0x46524c59";

fn ready(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    if !have_program("tc") {
        skip(test, "the tc program (iproute2) is missing");
        return false;
    }
    true
}

/// A topology whose relay namespace delivers the sender's unroutable datagrams to its own
/// sockets (no reverse-path filter), so that only the relay's filter can keep them away.
fn topology(tag: &str) -> Topology {
    let topo = quiet_topology(tag);
    topo.relay.sysctl("net.ipv4.conf.all.rp_filter", "0");
    topo.relay.sysctl(
        &format!("net.ipv4.conf.{}.rp_filter", Topology::RELAY_IN_IF),
        "0",
    );
    topo
}

fn config(dir: &Workdir, extra: &str) -> String {
    relay_section(dir, extra) + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000)
}

/// Lines of `tc filter show dev IF ingress` in `ns` that are the relay's filter.
fn our_filters(ns: &Netns, interface: &str) -> usize {
    let out = ns.exec(&["tc", "filter", "show", "dev", interface, "ingress"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(OURS))
        .count()
}

/// Whether `interface` in `ns` has a clsact qdisc.
fn has_clsact(ns: &Netns, interface: &str) -> bool {
    let out = ns.exec(&["tc", "qdisc", "show", "dev", interface]);
    String::from_utf8_lossy(&out.stdout).contains("clsact")
}

/// What the relay and a local socket joined to the input group got of one stream of [`N`]:
/// (relayed, local).
fn one_stream(topo: &Topology, tag: u8) -> (usize, usize) {
    let relayed = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, RECEIVE_TIMEOUT);
    let local = UdpReceiver::join(&topo.relay, "239.1.1.1:5000", Topology::RELAY_IN_ADDR)
        .collect(N as usize, LOCAL_TIMEOUT);
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.1:5000",
        tag,
        0..N,
        PPS,
    );
    let relayed = relayed.finish();
    if let Err(problem) = check_stream(&relayed, tag, 0..N) {
        panic!("receiver of 239.2.2.2:6000: {problem}");
    }
    std::thread::sleep(AFTER);
    (relayed.len(), local.finish().len())
}

fn workers_reply(ctl: &Ctl) -> Vec<ConsumeFilter> {
    match ctl.request(Command::Workers) {
        Response {
            ok: true,
            result: Some(Reply::Workers { consume, .. }),
            ..
        } => consume,
        other => panic!("ctl workers: {other:?}"),
    }
}

#[test]
fn consumed_input_is_relayed_and_reaches_no_local_socket() {
    let test = "consumed_input_is_relayed_and_reaches_no_local_socket";
    if !ready(test) {
        return;
    }
    let topo = topology("consume_on");
    let dir = Workdir::new("consume_on");
    let relay = RelayProcess::start(&topo.relay, &config(&dir, ""), &["--metrics", METRICS]);
    let ctl = Ctl::new(&dir);
    ctl.wait_settled(Duration::from_secs(10));
    assert_eq!(our_filters(&topo.relay, Topology::RELAY_IN_IF), 1);

    let (relayed, local) = one_stream(&topo, 1);
    assert_eq!(relayed, N as usize);
    assert_eq!(local, 0, "the local socket received relayed datagrams");

    let filters = workers_reply(&ctl);
    assert_eq!(filters.len(), 1, "{filters:?}");
    assert_eq!(
        (
            filters[0].interface.as_str(),
            filters[0].installed,
            filters[0].keys
        ),
        (Topology::RELAY_IN_IF, true, 1),
        "{filters:?}"
    );
    let steering = topo
        .relay
        .cmd(relay_binary())
        .args(["check-steering", "rin0"])
        .output();
    let steering = steering.expect("run check-steering");
    let steering = String::from_utf8_lossy(&steering.stdout);
    assert!(
        steering.contains("consume     the relay's ingress filter drops the relayed frames"),
        "check-steering does not show the filter:\n{steering}"
    );
    let page = scrape(&topo.relay, METRICS, "/metrics");
    assert_eq!(page.status, 200, "{}", page.head);
    let metrics = Metrics::parse(&page.body);
    let rin0 = [("interface", Topology::RELAY_IN_IF)];
    assert_eq!(
        (
            metrics.get("fanout_relay_consume_filter_installed", &rin0),
            metrics.get("fanout_relay_consume_keys", &rin0)
        ),
        (Some(1.0), Some(1.0)),
        "{}",
        page.body
    );
    let table = ctl.ok(&["workers"]);
    assert!(
        table.contains("consume_input rin0") && table.contains("1 key(s) dropped at ingress"),
        "ctl workers does not show the filter:\n{table}"
    );

    // A rule added at run time is consumed once its change is answered; one removed no longer.
    ctl.ok(&["add", "cam2", "rin0:239.1.1.3:5002", "rout0:239.2.2.3:6002"]);
    assert_eq!(workers_reply(&ctl)[0].keys, 2);
    let local = UdpReceiver::join(&topo.relay, "239.1.1.3:5002", Topology::RELAY_IN_ADDR)
        .collect(100, LOCAL_TIMEOUT);
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.3:5002",
        2,
        0..100,
        PPS,
    );
    std::thread::sleep(AFTER);
    assert_eq!(
        local.finish().len(),
        0,
        "the added rule's input reached the stack"
    );
    ctl.ok(&["remove", "cam"]);
    assert_eq!(workers_reply(&ctl)[0].keys, 1);
    let local = UdpReceiver::join(&topo.relay, "239.1.1.1:5000", Topology::RELAY_IN_ADDR)
        .collect(100, RECEIVE_TIMEOUT);
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.1:5000",
        3,
        0..100,
        PPS,
    );
    let got = local.finish();
    assert_eq!(got.len(), 100, "a removed rule's input is still dropped");

    relay.stop();
    assert_eq!(our_filters(&topo.relay, Topology::RELAY_IN_IF), 0);
    assert!(
        !has_clsact(&topo.relay, Topology::RELAY_IN_IF),
        "the clsact qdisc the relay added is left"
    );
}

#[test]
fn with_consume_input_off_a_local_socket_receives_everything() {
    let test = "with_consume_input_off_a_local_socket_receives_everything";
    if !ready(test) {
        return;
    }
    let topo = topology("consume_off");
    let dir = Workdir::new("consume_off");
    let relay = RelayProcess::start(&topo.relay, &config(&dir, "consume_input = false"), &[]);
    let ctl = Ctl::new(&dir);
    ctl.wait_settled(Duration::from_secs(10));
    assert_eq!(our_filters(&topo.relay, Topology::RELAY_IN_IF), 0);
    assert_eq!(workers_reply(&ctl), vec![]);

    let (relayed, local) = one_stream(&topo, 1);
    assert_eq!((relayed, local), (N as usize, N as usize));
    relay.stop();
}

#[test]
fn receive_rings_see_frames_an_ingress_filter_drops() {
    let test = "receive_rings_see_frames_an_ingress_filter_drops";
    if !ready(test) {
        return;
    }
    let topo = topology("consume_taps");
    let dir = Workdir::new("consume_taps");
    // Someone else's filter that drops every frame at the input's ingress hook.
    topo.relay
        .exec_checked(&["tc", "qdisc", "add", "dev", "rin0", "clsact"]);
    topo.relay.exec_checked(&[
        "tc",
        "filter",
        "add",
        "dev",
        "rin0",
        "ingress",
        "pref",
        "1",
        "bpf",
        "bytecode",
        "1,6 0 0 2",
        "direct-action",
    ]);
    let relay = RelayProcess::start(&topo.relay, &config(&dir, "consume_input = false"), &[]);
    Ctl::new(&dir).wait_settled(Duration::from_secs(10));
    let (relayed, local) = one_stream(&topo, 1);
    assert_eq!(
        (relayed, local),
        (N as usize, 0),
        "(relayed, received by the local socket) with every frame dropped at ingress"
    );
    relay.stop();
    assert!(
        has_clsact(&topo.relay, "rin0"),
        "the relay removed a qdisc it did not add"
    );
    let out = topo
        .relay
        .exec_checked(&["tc", "filter", "show", "dev", "rin0", "ingress"]);
    assert!(
        out.contains("pref 1 bpf"),
        "the relay removed a filter it did not add:\n{out}"
    );
}

#[test]
fn a_killed_supervisors_filter_is_replaced_at_start_and_none_is_left_at_exit() {
    let test = "a_killed_supervisors_filter_is_replaced_at_start_and_none_is_left_at_exit";
    if !ready(test) {
        return;
    }
    let topo = topology("consume_kill");
    let dir = Workdir::new("consume_kill");
    let text = config(&dir, "");
    let relay = RelayProcess::start(&topo.relay, &text, &[]);
    Ctl::new(&dir).wait_settled(Duration::from_secs(10));
    assert_eq!(our_filters(&topo.relay, Topology::RELAY_IN_IF), 1);
    signal(relay.pid(), Signal::SIGKILL);
    wait_gone(relay.pid());
    assert_eq!(
        our_filters(&topo.relay, Topology::RELAY_IN_IF),
        1,
        "SIGKILL leaves the filter behind"
    );
    drop(relay);

    let relay = RelayProcess::start(&topo.relay, &text, &[]);
    Ctl::new(&dir).wait_settled(Duration::from_secs(10));
    assert_eq!(our_filters(&topo.relay, Topology::RELAY_IN_IF), 1);
    let (relayed, local) = one_stream(&topo, 1);
    assert_eq!((relayed, local), (N as usize, 0));
    assert!(
        relay
            .log()
            .contains("removed the ingress filter(s) a previous run left"),
        "the start did not say it found the filter left behind:\n{}",
        relay.log()
    );

    // Killed again, and started with the setting off: the filter left behind goes all the same.
    signal(relay.pid(), Signal::SIGKILL);
    wait_gone(relay.pid());
    drop(relay);
    assert_eq!(our_filters(&topo.relay, Topology::RELAY_IN_IF), 1);
    let relay = RelayProcess::start(&topo.relay, &config(&dir, "consume_input = false"), &[]);
    assert_eq!(our_filters(&topo.relay, Topology::RELAY_IN_IF), 0);
    let (relayed, local) = one_stream(&topo, 2);
    assert_eq!((relayed, local), (N as usize, N as usize));
    relay.stop();

    let relay = RelayProcess::start(&topo.relay, &text, &[]);
    assert_eq!(our_filters(&topo.relay, Topology::RELAY_IN_IF), 1);
    relay.stop();
    assert_eq!(
        our_filters(&topo.relay, Topology::RELAY_IN_IF),
        0,
        "a clean exit left the filter"
    );
}

/// Waits until process `pid` is gone (or a zombie), for at most 10 s.
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    while alive() {
        assert!(
            Instant::now() < deadline,
            "process {pid} outlived SIGKILL by 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_filter_follows_an_input_deleted_and_created_anew() {
    let test = "the_filter_follows_an_input_deleted_and_created_anew";
    if !ready(test) {
        return;
    }
    const LATE_IF: &str = "late0";
    const LATE_PEER: &str = "snd1";
    let topo = topology("consume_ifc");
    let dir = Workdir::new("consume_ifc");
    let route = |topo: &Topology, from: Option<&str>| {
        topo.send_through(LATE_PEER, from);
        topo.relay.add_addr(LATE_IF, "198.51.101.1/24");
        topo.relay
            .sysctl(&format!("net.ipv4.conf.{LATE_IF}.rp_filter"), "0");
    };
    let _first = veth_pair(&topo.sender, LATE_PEER, &topo.relay, LATE_IF);
    route(&topo, Some(Topology::SENDER_IF));
    let text = config(&dir, "").replace("rin0", LATE_IF);
    let relay = RelayProcess::start(&topo.relay, &text, &[]);
    let ctl = Ctl::new(&dir);
    ctl.wait_settled(Duration::from_secs(10));
    let first = workers_reply(&ctl);
    assert_eq!(our_filters(&topo.relay, LATE_IF), 1, "{first:?}");

    topo.relay.ip(&["link", "del", LATE_IF]);
    relay.wait_for_log("the rule to wait again", Duration::from_secs(5), |line| {
        line.contains(r#"rule(s) ["cam"] wait for interface late0 again"#)
    });
    assert_eq!(workers_reply(&ctl), vec![]);

    let _again = veth_pair(&topo.sender, LATE_PEER, &topo.relay, LATE_IF);
    route(&topo, None);
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        let filters = workers_reply(&ctl);
        if filters.first().is_some_and(|filter| filter.installed) {
            break filters;
        }
        assert!(
            Instant::now() < deadline,
            "no filter 5 s after {LATE_IF} was created anew: {filters:?}; log:\n{}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(again[0].ifindex, first[0].ifindex, "{again:?}");
    assert_eq!(our_filters(&topo.relay, LATE_IF), 1);
    let local = UdpReceiver::join(&topo.relay, "239.1.1.1:5000", "198.51.101.1")
        .collect(100, LOCAL_TIMEOUT);
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.1:5000",
        5,
        0..100,
        PPS,
    );
    std::thread::sleep(AFTER);
    assert_eq!(
        local.finish().len(),
        0,
        "the new input's frames reached the stack"
    );
    let exit = relay.stop();
    assert!(
        exit.summary.rule_packets("cam") >= 100,
        "the new input's frames were not relayed: {:#?}",
        exit.summary
    );
    assert_eq!(our_filters(&topo.relay, LATE_IF), 0);
}
