//! The namespace harness itself: namespaces and veth pairs work and vanish, even on panic.

use std::net::UdpSocket;
use std::time::Duration;

use fanout_relay_tests::{
    Netns, Topology, have_program, privileged, skip, unique_ifname, veth_pair,
};

fn netns_exists(name: &str) -> bool {
    let out = fanout_relay_tests::ip(&["netns", "list"]);
    out.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn need_ping(test: &str) -> bool {
    if have_program("ping") {
        return true;
    }
    skip(test, "ping (iputils-ping) is missing");
    false
}

#[test]
fn veth_pings_across_and_everything_vanishes() {
    if !privileged("veth_pings_across_and_everything_vanishes") || !need_ping("veth_ping") {
        return;
    }
    let (a_name, b_name);
    {
        let a = Netns::new("ha");
        let b = Netns::new("hb");
        a_name = a.name().to_owned();
        b_name = b.name().to_owned();
        assert!(netns_exists(&a_name) && netns_exists(&b_name));

        let link = veth_pair(&a, "va", &b, "vb");
        a.add_addr(link.a_if(), "10.231.0.1/24");
        b.add_addr(link.b_if(), "10.231.0.2/24");
        a.set_mtu("va", 1400);
        assert!(a.ip(&["-j", "link", "show", "va"]).contains("\"mtu\":1400"));

        let out = a.exec(&["ping", "-c", "1", "-W", "1", "10.231.0.2"]);
        assert!(
            out.status.success(),
            "ping failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // The address exists only in the namespaces, so the root namespace cannot reach it.
        let root = std::process::Command::new("ping")
            .args(["-c", "1", "-W", "1", "10.231.0.2"])
            .output()
            .expect("ping ran above");
        assert!(
            !root.status.success(),
            "root namespace reached a test address"
        );
    }
    assert!(!netns_exists(&a_name), "{a_name} survived its guard");
    assert!(!netns_exists(&b_name), "{b_name} survived its guard");
}

#[test]
fn run_puts_sockets_in_the_namespace() {
    if !privileged("run_puts_sockets_in_the_namespace") {
        return;
    }
    let a = Netns::new("hr");
    let b = Netns::new("hr");
    let _link = veth_pair(&a, "ra", &b, "rb");
    a.add_addr("ra", "10.232.0.1/24");
    b.add_addr("rb", "10.232.0.2/24");

    assert!(
        UdpSocket::bind("10.232.0.2:0").is_err(),
        "the root namespace has the test address"
    );
    let rx = b.run(|| UdpSocket::bind("10.232.0.2:0").expect("bind inside the namespace"));
    rx.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set timeout");
    let to = rx.local_addr().expect("bound socket has an address");
    let tx = a.run(|| UdpSocket::bind("10.232.0.1:0").expect("bind inside the namespace"));
    tx.send_to(b"hello", to).expect("send across the veth");
    let mut buf = [0u8; 16];
    let (n, from) = rx.recv_from(&mut buf).expect("datagram within 2 s");
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.ip().to_string(), "10.232.0.1");
}

#[test]
fn run_with_sysfs_shows_the_namespace() {
    if !privileged("run_with_sysfs_shows_the_namespace") {
        return;
    }
    let a = Netns::new("hs");
    let b = Netns::new("hs");
    let name = unique_ifname("sys");
    let _link = veth_pair(&a, &name, &b, "peer0");
    let path = format!("/sys/class/net/{name}");
    assert!(a.run_with_sysfs(|| std::path::Path::new(&path).exists()));
    assert!(!b.run_with_sysfs(|| std::path::Path::new(&path).exists()));
    // Plain run keeps the mount namespace, whose sysfs shows the root namespace.
    assert!(!a.run(|| std::path::Path::new(&path).exists()));
    assert!(!std::path::Path::new(&path).exists(), "sysfs mount leaked");
}

#[test]
fn a_panic_still_removes_the_namespace() {
    if !privileged("a_panic_still_removes_the_namespace") {
        return;
    }
    let mut name = String::new();
    let mut child = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::new("hp");
        name = ns.name().to_owned();
        // A process left running inside must not keep the test from cleaning up.
        child = Some(ns.cmd("sleep").arg("30").spawn().expect("spawn sleep"));
        ns.run(|| panic!("boom inside the namespace"));
    }));
    assert!(result.is_err(), "the panic in run() must reach the caller");
    assert!(!name.is_empty());
    assert!(!netns_exists(&name), "{name} survived a panic");
    // The guard killed the process it found inside (ip netns exec became sleep).
    let status = child
        .expect("spawned above")
        .wait()
        .expect("wait for sleep");
    assert!(!status.success(), "sleep 30 ran to the end: {status}");
}

#[test]
fn topology_links_sender_relay_receiver() {
    if !privileged("topology_links_sender_relay_receiver") || !need_ping("topology") {
        return;
    }
    let t = Topology::new("ht");
    let ping = |ns: &Netns, to: &str| ns.exec(&["ping", "-c", "1", "-W", "1", to]).status;
    assert!(ping(&t.receiver, Topology::RELAY_OUT_ADDR).success());
    // The relay has no route back to the sender's source: what the reverse-path filter drops.
    let back = t.relay.exec(&["ip", "route", "get", Topology::SENDER_ADDR]);
    assert!(
        !back.status.success(),
        "the relay must not route back to the sender: {}",
        String::from_utf8_lossy(&back.stdout)
    );
    let link = t.relay.ip(&["-j", "link", "show", Topology::RELAY_IN_IF]);
    assert!(link.contains("LOWER_UP"), "{link}");
    let rp = t.relay.run(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").expect("read sysctl")
    });
    assert_eq!(rp.trim(), "1");
}
