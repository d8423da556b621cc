//! Run-time changes survive the relay: after SIGKILL of the supervisor (whose workers die with
//! it) a restart with the same configuration restores every rule from the state file, and
//! `ctl save` writes a configuration that `check-config` accepts with the same rules, replacing
//! a link at its target rather than writing through it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{
    Ctl, Workdir, config_path, relay_section, rule, run_bounded, signal,
};
use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology, relay_binary, worker_pids,
};
use fanout_relay_tests::{Topology, privileged};
use nix::sys::signal::Signal;

/// How long the workers of a killed supervisor may take to exit.
const ORPHAN_WAIT: Duration = Duration::from_secs(10);

/// Kills the supervisor with SIGKILL and waits until none of its workers runs any more.
fn kill_supervisor(relay: RelayProcess) {
    let supervisor = relay.pid();
    let workers = relay.worker_pids();
    assert!(!workers.is_empty(), "no worker processes found");
    signal(supervisor, Signal::SIGKILL);
    let deadline = Instant::now() + ORPHAN_WAIT;
    loop {
        let left = worker_pids(supervisor);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers {left:?} of the killed supervisor {supervisor} still run after {ORPHAN_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(relay);
}

#[test]
fn added_rules_come_back_after_the_supervisor_is_killed() {
    if !privileged("added_rules_come_back_after_the_supervisor_is_killed") {
        return;
    }
    let topo = quiet_topology("ctlste");
    let dir = Workdir::new("state");
    let config = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    for (name, n) in [("a1", 1), ("a2", 2), ("a3", 3)] {
        ctl.ok(&[
            "add",
            name,
            &format!("rin0:239.1.1.1{n}:500{n}"),
            &format!("rout0:239.2.2.1{n}:600{n},ttl=5"),
        ]);
    }
    ctl.ok(&["remove", "a2"]);
    let (generation, before) = ctl.rules();
    assert_eq!(generation, 5);
    kill_supervisor(relay);

    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    relay.wait_for_log("the state to be restored", Duration::from_secs(5), |line| {
        line.contains("restored 3 rule(s) from the state file")
    });
    let (_, after) = ctl.rules();
    let names = |rules: &[relay_rules::Rule]| -> BTreeSet<String> {
        rules.iter().map(|r| r.name.clone()).collect()
    };
    assert_eq!(
        names(&after),
        ["a1", "a3", "base"].map(String::from).into(),
        "{after:#?}"
    );
    for rule in &before {
        assert!(
            after.contains(rule),
            "{rule:?} came back different: {after:#?}"
        );
    }
    // The restored rules relay.
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.13:6003", Topology::RECEIVER_ADDR)
        .collect(100, Duration::from_secs(20));
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.13:5003",
        1,
        0..100,
        500,
    );
    let got = receiver.finish();
    if let Err(problem) = check_stream(&got, 1, 0..100) {
        panic!("the restored rule a3: {problem}");
    }
    assert!(
        got.iter().all(|d| d.ttl == Some(5)),
        "the restored TTL is not 5"
    );
    relay.stop();
}

/// Rules added after a reload that changed the configuration file must survive a crash as
/// well: the state file has to belong to the configuration as reloaded, not as first read.
#[test]
fn rules_added_after_a_reload_come_back_after_the_supervisor_is_killed() {
    if !privileged("rules_added_after_a_reload_come_back_after_the_supervisor_is_killed") {
        return;
    }
    let topo = quiet_topology("ctlstr");
    let dir = Workdir::new("statereload");
    let first = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let edited = first.clone() + &rule("extra", "239.1.1.2", 5001, "239.2.2.3", 6001);
    let relay = RelayProcess::start(&topo.relay, &first, &[]);
    let ctl = Ctl::new(&dir);
    std::fs::write(config_path(&relay), &edited).expect("rewrite the configuration");
    ctl.ok(&["reload"]);
    ctl.ok(&["add", "late", "rin0:239.1.1.3:5002", "rout0:239.2.2.4:6002"]);
    assert_eq!(ctl.rule_names(), ["base", "extra", "late"]);
    kill_supervisor(relay);

    // The file on disk is now `edited`: that is what a restart reads.
    let relay = RelayProcess::start(&topo.relay, &edited, &[]);
    assert_eq!(
        ctl.rule_names(),
        ["base", "extra", "late"],
        "a rule added at run time after a reload was lost by a crash"
    );
    relay.stop();
}

#[test]
fn saved_files_pass_check_config_with_the_running_rules() {
    if !privileged("saved_files_pass_check_config_with_the_running_rules") {
        return;
    }
    let topo = quiet_topology("ctlsav");
    let dir = Workdir::new("save");
    let config = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    ctl.ok(&[
        "add",
        "s1",
        "rin0:239.1.1.21:5021",
        "rout0:239.2.2.21:6021,ttl=3,dscp=46",
    ]);
    ctl.ok(&[
        "add",
        "s2",
        "rin0:239.1.1.22:5022@192.0.2.10",
        "rout0:239.2.2.22:6022",
        "rout0:203.0.113.2:7022",
    ]);
    ctl.ok(&["remove", "base"]);
    let saved = dir.path().join("saved.toml");
    // A link at the target is replaced, not written through: the file it points at stays as
    // it was (the save goes to a new temporary file renamed over the link).
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"not the relay's\n").expect("a file to protect");
    std::os::unix::fs::symlink(&victim, &saved).expect("a link at the target");
    let out = ctl.ok(&["save", &saved.display().to_string()]);
    assert!(out.contains("wrote 2 rule(s)"), "ctl save printed: {out}");
    assert_eq!(
        std::fs::read(&victim).expect("the link's target"),
        b"not the relay's\n",
        "save wrote through the link"
    );
    let kind = std::fs::symlink_metadata(&saved)
        .expect("saved")
        .file_type();
    assert!(
        kind.is_file(),
        "the link was replaced by the saved file: {kind:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("the directory lists")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let mut check = topo.relay.cmd(relay_binary());
    check.arg("check-config").arg(&saved);
    let checked = run_bounded(check, Duration::from_secs(20));
    assert!(
        checked.status.success(),
        "check-config refused the saved file: {}{}\n{}",
        checked.stdout,
        checked.stderr,
        std::fs::read_to_string(&saved).unwrap_or_default()
    );
    assert!(
        checked.stdout.contains("ok: 2 rule(s)"),
        "check-config printed: {}",
        checked.stdout
    );
    let text = std::fs::read_to_string(&saved).expect("the saved file is readable");
    let file = relay_bin::config::ConfigFile::parse(&text)
        .unwrap_or_else(|e| panic!("the saved file does not parse: {e}\n{text}"));
    let (_, running) = ctl.rules();
    assert_eq!(file.rules, running, "saved:\n{text}");
    relay.stop();
}

/// A journal damaged in the middle: the relay starts from the changes before the damage, keeps
/// the damaged journal aside under a new name, logs the file and line at error level, and
/// writes a consistent state that the next start reads without the damage.
#[test]
fn a_damaged_journal_restores_the_changes_before_the_damage() {
    if !privileged("a_damaged_journal_restores_the_changes_before_the_damage") {
        return;
    }
    let topo = quiet_topology("ctldmg");
    let dir = Workdir::new("dmg");
    let config = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    // The first change writes the snapshot; the next three are journal lines 2 to 4.
    for n in 1..=4 {
        ctl.ok(&[
            "add",
            &format!("a{n}"),
            &format!("rin0:239.1.1.1{n}:500{n}"),
            &format!("rout0:239.2.2.1{n}:600{n}"),
        ]);
    }
    relay.stop();
    let journal = dir.path().join("state.toml.journal");
    let text = std::fs::read(&journal).expect("the journal is readable");
    let mut lines: Vec<Vec<u8>> = text
        .split_inclusive(|&byte| byte == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(lines.len(), 4, "{}", String::from_utf8_lossy(&text));
    lines[2] = b"{\"remove\":[],\"add\":[{\"na\xffme\n".to_vec();
    let damaged = lines.concat();
    std::fs::write(&journal, &damaged).expect("the journal is writable");

    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let line = relay.wait_for_log("the damage to be logged", Duration::from_secs(5), |line| {
        line.contains("state.toml.journal:3:")
    });
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("not UTF-8"), "{line}");
    assert!(line.contains("1 later change(s)"), "{line}");
    assert_eq!(
        ctl.rule_names(),
        ["a1", "a2", "base"],
        "the snapshot and the journal line before the damage"
    );
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("listable")
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("state.toml.journal.damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "one damaged journal kept aside");
    assert_eq!(
        std::fs::read(aside[0].path()).expect("readable"),
        damaged,
        "kept as it was"
    );
    assert!(
        line.contains(&*aside[0].file_name().to_string_lossy()),
        "{line}"
    );
    relay.stop();

    // The next start reads the fresh state, not the damage again.
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    assert_eq!(ctl.rule_names(), ["a1", "a2", "base"]);
    assert!(
        !relay.log().contains("ERROR") && !relay.log().contains("state.toml.journal:"),
        "the damage was read again:\n{}",
        relay.log()
    );
    relay.stop();
}
