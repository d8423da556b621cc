//! `ctl top` refreshes the stats table once a second: successive tables into a pipe, JSON lines
//! with `--json`, and stops after `--count` refreshes.

use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Ctl, Workdir, json_u64, relay_section, rule};
use fanout_relay_tests::relay::{RelayProcess, UdpSender, quiet_topology};
use fanout_relay_tests::{Topology, privileged};

/// Datagrams sent before watching.
const N: u32 = 200;

#[test]
fn ctl_top_prints_a_table_per_refresh() {
    if !privileged("ctl_top_prints_a_table_per_refresh") {
        return;
    }
    let topo = quiet_topology("top");
    let dir = Workdir::new("top");
    let config = relay_section(&dir, "") + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.1:5000",
        1,
        0..N,
        1000,
    );
    ctl.wait_stats("every packet to be counted", Duration::from_secs(20), |s| {
        s.rules
            .get("cam")
            .is_some_and(|r| r.packets == u64::from(N))
    });

    let started = Instant::now();
    let plain = ctl.ok(&["top", "--count", "3"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "3 refreshes one second apart took {took:?}"
    );
    assert!(!plain.contains('\x1b'), "escapes into a pipe: {plain:?}");
    let headers = plain.lines().filter(|l| l.starts_with("rule ")).count();
    assert_eq!(headers, 3, "one table per refresh:\n{plain}");
    let cam: Vec<&str> = plain.lines().filter(|l| l.starts_with("cam ")).collect();
    assert_eq!(cam.len(), 3, "{plain}");
    assert!(
        cam.iter()
            .all(|line| line.split_whitespace().nth(1) == Some(&N.to_string())),
        "{cam:?}"
    );

    let json = ctl.ok(&["--json", "top", "--count", "2"]);
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 2, "one JSON object per refresh:\n{json}");
    for line in lines {
        assert_eq!(
            json_u64(line, &["rules", "cam", "packets"]),
            Some(u64::from(N)),
            "{line}"
        );
    }
    relay.stop();
}
