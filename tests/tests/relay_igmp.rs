//! While the relay runs, its input groups are joined on the input interface (source-specific
//! for a source-specific rule), as the relay namespace's /proc/net/igmp and /proc/net/mcfilter
//! show; after it exits the memberships are gone.

use std::net::Ipv4Addr;

use fanout_relay_tests::relay::{RelayProcess, quiet_topology};
use fanout_relay_tests::{Netns, Topology, privileged};

const CONFIG: &str = r#"
[[rule]]
name = "any-source"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "rout0", destination = "239.2.2.2", port = 6000 } ]

[[rule]]
name = "one-source"
input = { interface = "rin0", destination = "239.5.5.5", port = 5000, source = "192.0.2.10" }
outputs = [ { interface = "rout0", destination = "239.2.2.3", port = 6000 } ]
"#;

const ANY_SOURCE: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const ONE_SOURCE: Ipv4Addr = Ipv4Addr::new(239, 5, 5, 5);
const SOURCE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// The groups joined on `ifname` in `ns`, from /proc/net/igmp: a device line
/// (`<idx>\t<name>\t:  <count> <querier>`) followed by one indented line per group, whose first
/// field is the group as the kernel stores it (network order) printed as a native hex number.
fn igmp_groups(ns: &Netns, ifname: &str) -> Vec<Ipv4Addr> {
    let table = ns.exec_checked(&["cat", "/proc/net/igmp"]);
    let mut groups = Vec::new();
    let mut in_device = false;
    for line in table.lines().skip(1) {
        if !line.starts_with('\t') {
            in_device = line.split_whitespace().nth(1) == Some(ifname);
        } else if in_device && let Some(hex) = line.split_whitespace().next() {
            let value = u32::from_str_radix(hex, 16)
                .unwrap_or_else(|e| panic!("group {hex:?} in /proc/net/igmp: {e}"));
            groups.push(Ipv4Addr::from(value.to_ne_bytes()));
        }
    }
    groups
}

/// The (group, source) filters on `ifname` in `ns`, from /proc/net/mcfilter, whose columns are
/// `Idx Device MCA SRC INC EXC` with addresses in host order (`0xef050505`).
fn source_filters(ns: &Netns, ifname: &str) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let table = ns.exec_checked(&["cat", "/proc/net/mcfilter"]);
    let hex = |text: &str| {
        let digits = text.trim_start_matches("0x");
        Ipv4Addr::from(
            u32::from_str_radix(digits, 16)
                .unwrap_or_else(|e| panic!("address {text:?} in /proc/net/mcfilter: {e}")),
        )
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&ifname) && fields.len() >= 4)
                .then(|| (hex(fields[2]), hex(fields[3])))
        })
        .collect()
}

#[test]
fn input_groups_are_joined_while_the_relay_runs() {
    if !privileged("input_groups_are_joined_while_the_relay_runs") {
        return;
    }
    let topo = quiet_topology("igmp");
    let input = Topology::RELAY_IN_IF;
    let before = igmp_groups(&topo.relay, input);
    assert!(
        !before.contains(&ANY_SOURCE) && !before.contains(&ONE_SOURCE),
        "joined before the relay started: {before:?}"
    );

    let relay = RelayProcess::start(&topo.relay, CONFIG, &[]);
    let during = igmp_groups(&topo.relay, input);
    let filters = source_filters(&topo.relay, input);
    let output_groups = igmp_groups(&topo.relay, Topology::RELAY_OUT_IF);
    let exit = relay.stop();
    let after = igmp_groups(&topo.relay, input);
    let filters_after = source_filters(&topo.relay, input);

    for group in [ANY_SOURCE, ONE_SOURCE] {
        assert!(
            during.contains(&group),
            "{group} is not joined on {input} while the relay runs: {during:?}\nlog:\n{}",
            exit.log
        );
        assert!(
            !after.contains(&group),
            "{group} is still joined on {input} after the relay exited: {after:?}"
        );
    }
    assert_eq!(
        filters,
        vec![(ONE_SOURCE, SOURCE)],
        "source filters on {input} while the relay runs: only the source-specific rule's"
    );
    assert!(
        filters_after.is_empty(),
        "source filters left: {filters_after:?}"
    );
    assert!(
        !output_groups.contains(&Ipv4Addr::new(239, 2, 2, 2)),
        "an output group was joined on {}: {output_groups:?}",
        Topology::RELAY_OUT_IF
    );
}

#[test]
fn run_time_changes_join_and_leave_only_what_no_other_rule_wants() {
    if !privileged("run_time_changes_join_and_leave_only_what_no_other_rule_wants") {
        return;
    }
    use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule};
    let topo = quiet_topology("igmpchg");
    let dir = Workdir::new("igmpchg");
    // Two rules share 239.7.7.7 (different ports); a third has 239.8.8.8.
    let config = relay_section(&dir, "")
        + &rule("a", "239.7.7.7", 5001, "239.2.2.1", 6001)
        + &rule("b", "239.7.7.7", 5002, "239.2.2.2", 6002)
        + &rule("c", "239.8.8.8", 5003, "239.2.2.3", 6003);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let input = Topology::RELAY_IN_IF;
    let shared = Ipv4Addr::new(239, 7, 7, 7);
    let single = Ipv4Addr::new(239, 8, 8, 8);
    let added = Ipv4Addr::new(239, 9, 9, 9);
    let joined = |group| igmp_groups(&topo.relay, input).contains(&group);
    assert!(joined(shared) && joined(single));
    ctl.ok(&["remove", "a"]);
    assert!(joined(shared), "rule b still wants {shared}");
    ctl.ok(&["remove", "b"]);
    assert!(!joined(shared), "no rule wants {shared} any more");
    assert!(joined(single), "rule c was not touched");
    ctl.ok(&["add", "d", "rin0:239.9.9.9:5004", "rout0:239.2.2.4:6004"]);
    assert!(joined(added));
    ctl.ok(&["remove", "c"]);
    assert!(!joined(single));
    relay.stop();
}
