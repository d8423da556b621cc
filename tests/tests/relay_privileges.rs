//! The relay without root: as an unprivileged user holding only CAP_NET_RAW and CAP_NET_ADMIN
//! it relays every datagram; without CAP_NET_RAW it refuses to start and names the capability.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule};
use fanout_relay_tests::relay::{RelayProcess, Stream, quiet_topology, relay_binary};
use fanout_relay_tests::{have_program, privileged, skip};

/// The user the relay runs as: `nobody`.
const NOBODY: &str = "65534";

fn ready(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    if !have_program("setpriv") {
        skip(test, "setpriv (util-linux) is not installed");
        return false;
    }
    true
}

/// A work directory the unprivileged relay can write its control socket and state file in.
fn open_workdir(tag: &str) -> Workdir {
    let dir = Workdir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod 0777 the work directory");
    dir
}

/// `setpriv` as `nobody` with `caps` (as `+net_raw,+net_admin`) inherited and ambient.
fn as_nobody(caps: &str) -> Vec<String> {
    let mut wrapper = vec![
        "setpriv".to_owned(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
    ];
    if !caps.is_empty() {
        wrapper.push(format!("--inh-caps={caps}"));
        wrapper.push(format!("--ambient-caps={caps}"));
    }
    wrapper
}

#[test]
fn an_unprivileged_user_with_two_capabilities_relays() {
    if !ready("an_unprivileged_user_with_two_capabilities_relays") {
        return;
    }
    let topo = quiet_topology("privs");
    let dir = open_workdir("privs");
    let config = relay_section(&dir, "workers = \"0-1\"")
        + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let wrapper = as_nobody("+net_raw,+net_admin");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let relay = RelayProcess::start_wrapped(&topo.relay, &config, &[], &[], &wrapper);
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.pid()))
        .expect("the relay's status");
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .expect("a Uid line");
    assert!(
        uid.split_whitespace().all(|id| id == NOBODY),
        "the relay runs as uid {uid}"
    );
    let ctl = Ctl::new(&dir);
    ctl.wait_settled(Duration::from_secs(10));
    let stream = Stream::start(&topo, 9, 2000);
    let from = stream.next_seq();
    let started = std::time::Instant::now();
    assert!(
        stream
            .wait_from(from, started, Duration::from_secs(5))
            .is_some(),
        "nothing relayed as nobody; log:\n{}",
        relay.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(stream.arrived() > 500, "{} arrived", stream.arrived());
    // The state file is written by the unprivileged relay on a change.
    ctl.ok(&["add", "more", "rin0:239.1.1.7:5000", "rout0:239.2.2.7:6000"]);
    assert!(dir.state_file().exists(), "no state file written as nobody");
}

#[test]
fn without_cap_net_raw_the_relay_names_it() {
    if !ready("without_cap_net_raw_the_relay_names_it") {
        return;
    }
    let topo = quiet_topology("noprivs");
    let dir = open_workdir("noprivs");
    let config_path = dir.path().join("relay.toml");
    std::fs::write(
        &config_path,
        relay_section(&dir, "") + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000),
    )
    .expect("write the configuration");
    let out = topo
        .relay
        .cmd("setpriv")
        .args(as_nobody(""))
        .arg(relay_binary())
        .args(["run", "--config"])
        .arg(&config_path)
        .output()
        .expect("run the relay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started without CAP_NET_RAW: {stderr}"
    );
    assert!(
        stderr.contains("needs CAP_NET_RAW (packet sockets)"),
        "the refusal does not name the capability: {stderr}"
    );
}
