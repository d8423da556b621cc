//! Interface groups: a rule whose input names an `[[interface_group]]` of two input interfaces
//! relays the group and port from both, each member's datagrams counted apart (as the rules
//! `cam.rin0` and `cam.rin1`); a rule listing its interfaces in place does the same; `ctl add`
//! adds a rule on several interfaces (listed, or a group's) as one change, a missing member's
//! rule waiting, and `ctl remove` takes them away together; `check-config` refuses a group named
//! like an interface.

use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section};
use fanout_relay_tests::relay::{
    ConfigFile, RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology, relay_binary,
};
use fanout_relay_tests::{Topology, privileged, veth_pair};
use nix::sys::socket::{setsockopt, sockopt};

/// Datagrams per member.
const N: u32 = 300;
const PPS: u32 = 500;

const RULES: &str = r#"
[[interface_group]]
name = "uplinks"
interfaces = ["rin0", "rin1"]

[[rule]]
name = "cam"
input = { interface = "uplinks", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000 } ]
"#;

#[test]
fn a_rule_on_a_group_relays_every_member_counted_apart() {
    if !privileged("a_rule_on_a_group_relays_every_member_counted_apart") {
        return;
    }
    let topo = quiet_topology("group");
    // A second input link from the sender to the relay.
    let _second = second_input(&topo);
    let dir = Workdir::new("group");
    let relay = RelayProcess::start(&topo.relay, &(relay_section(&dir, "") + RULES), &[]);
    let ctl = Ctl::new(&dir);
    let names = ctl.rule_names();
    assert_eq!(names, ["cam.rin0", "cam.rin1"], "one rule per member");

    relays_from_both(&topo, "239.1.1.1:5000", "239.2.2.2:6000");
    let n = u64::from(N);
    let stats = ctl.wait_stats("both members counted", Duration::from_secs(10), |stats| {
        ["cam.rin0", "cam.rin1"]
            .iter()
            .all(|rule| stats.rules.get(*rule).is_some_and(|r| r.packets >= n))
    });
    drop(relay.stop());
    assert_eq!(
        (
            stats.rules["cam.rin0"].packets,
            stats.rules["cam.rin1"].packets
        ),
        (n, n),
        "each member's datagrams, counted apart: {stats:#?}"
    );
}

/// The second input link, `snd1` -> `rin1`, with its addresses.
fn second_input(topo: &Topology) -> fanout_relay_tests::Veth {
    let pair = veth_pair(&topo.sender, "snd1", &topo.relay, "rin1");
    topo.sender.add_addr("snd1", "198.18.1.10/24");
    topo.relay.add_addr("rin1", "198.18.1.1/24");
    pair
}

/// Sends `N` datagrams to `group` from each input link (tags 1 and 2) and checks that all of
/// them arrive at `out` on the receiver.
fn relays_from_both(topo: &Topology, group: &str, out: &str) {
    let receiver = UdpReceiver::join(&topo.receiver, out, Topology::RECEIVER_ADDR)
        .collect(2 * N as usize, Duration::from_secs(30));
    let first = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let second = UdpSender::new(&topo.sender, "198.18.1.10", 4);
    // Its multicast leaves by snd1, not by the namespace's route for 224.0.0.0/4.
    setsockopt(second.socket(), sockopt::BindToDevice, &"snd1".into())
        .expect("SO_BINDTODEVICE snd1");
    std::thread::scope(|s| {
        s.spawn(|| first.send_numbered(group, 1, 0..N, PPS));
        s.spawn(|| second.send_numbered(group, 2, 0..N, PPS));
    });
    let got = receiver.finish();
    for tag in [1, 2] {
        if let Err(problem) = check_stream(&got, tag, 0..N) {
            panic!("{group} -> {out}, member {tag}: {problem}");
        }
    }
}

#[test]
fn rules_on_several_interfaces_are_listed_in_place_added_and_removed_together() {
    if !privileged("rules_on_several_interfaces_are_listed_in_place_added_and_removed_together") {
        return;
    }
    let topo = quiet_topology("grpctl");
    let _second = second_input(&topo);
    let dir = Workdir::new("grpctl");
    let rules = r#"
[[interface_group]]
name = "uplinks"
interfaces = ["rin0", "rin1"]

[[rule]]
name = "cam"
input = { interface = ["rin0", "rin1"], destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000 } ]
"#;
    let relay = RelayProcess::start(&topo.relay, &(relay_section(&dir, "") + rules), &[]);
    let ctl = Ctl::new(&dir);
    assert_eq!(
        ctl.rule_names(),
        ["cam.rin0", "cam.rin1"],
        "the list in place"
    );

    // Listed on the command line, and by the running configuration's group.
    ctl.ok(&[
        "add",
        "tv",
        "rin0+rin1:239.1.1.3:5002",
        "rout0:239.2.2.4:6002",
    ]);
    ctl.ok(&[
        "add",
        "up",
        "uplinks:239.1.1.5:5004",
        "rout0:239.2.2.6:6004",
    ]);
    // A member that does not exist: its rule waits, the other runs.
    let added = ctl.ok(&[
        "add",
        "late",
        "rin0+gone9:239.1.1.7:5006",
        "rout0:239.2.2.8:6008",
    ]);
    assert!(
        added.contains("late.gone9"),
        "the answer names the waiting rule: {added}"
    );
    assert_eq!(
        ctl.rule_names(),
        [
            "cam.rin0",
            "cam.rin1",
            "late.rin0",
            "tv.rin0",
            "tv.rin1",
            "up.rin0",
            "up.rin1"
        ]
    );
    let listed = ctl.ok(&["list"]);
    assert!(
        listed.contains("late.gone9") && listed.contains("gone9"),
        "ctl list shows the waiting member: {listed}"
    );
    let refused = ctl.run(&[
        "add",
        "dup",
        "rin0+rin0:239.1.1.9:5008",
        "rout0:239.2.2.9:6009",
    ]);
    assert!(!refused.status.success(), "a member twice is refused");
    assert!(
        refused.stderr.contains(r#""rin0" is listed twice"#),
        "{}",
        refused.stderr
    );

    relays_from_both(&topo, "239.1.1.1:5000", "239.2.2.2:6000");
    relays_from_both(&topo, "239.1.1.3:5002", "239.2.2.4:6002");
    relays_from_both(&topo, "239.1.1.5:5004", "239.2.2.6:6004");

    ctl.ok(&["remove", "tv"]);
    ctl.ok(&["remove", "late"]);
    assert_eq!(
        ctl.rule_names(),
        ["cam.rin0", "cam.rin1", "up.rin0", "up.rin1"]
    );
    let listed = ctl.ok(&["list"]);
    assert!(
        !listed.contains("late."),
        "the waiting member went too: {listed}"
    );
    let refused = ctl.run(&["remove", "tv"]);
    assert!(!refused.status.success(), "nothing is left under tv");
    drop(relay.stop());
}

#[test]
fn a_group_named_like_an_interface_is_refused() {
    if !privileged("a_group_named_like_an_interface_is_refused") {
        return;
    }
    let topo = quiet_topology("groupck");
    let config = ConfigFile::new(&RULES.replace("name = \"uplinks\"", "name = \"rout0\""));
    let out = topo
        .relay
        .cmd(relay_binary())
        .arg("check-config")
        .arg(config.path())
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(
        stderr.contains("interface_group \"rout0\": an interface has this name"),
        "{stderr}"
    );
}
