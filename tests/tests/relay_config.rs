//! Invalid configuration files are refused by `check-config` and by `run`, with a non-zero exit
//! status and a message naming the file, the rule and the field.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use fanout_relay_tests::relay::{ConfigFile, relay_binary};
use fanout_relay_tests::{Netns, Veth, privileged, veth_pair};

/// How long `run` may take to refuse a configuration; one that runs this long accepted it.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(15);

/// A namespace with interfaces `in0` (10.20.0.1) and `out0` (10.21.0.1), so that every refusal
/// below is about the file, not about a missing interface.
struct Host {
    _link: Veth,
    ns: Netns,
}

impl Host {
    fn new(test: &str) -> Option<Host> {
        if !privileged(test) {
            return None;
        }
        let ns = Netns::new("config");
        let link = veth_pair(&ns, "in0", &ns, "out0");
        ns.add_addr("in0", "10.20.0.1/24");
        ns.add_addr("out0", "10.21.0.1/24");
        Some(Host { _link: link, ns })
    }

    /// Runs `fanout-relay <args> <file>` in the namespace; `run` is killed after
    /// [`REFUSE_TIMEOUT`] (and the result says it did not exit).
    fn relay(&self, args: &[&str], config: &ConfigFile) -> (Option<i32>, String, String) {
        let mut child = self
            .ns
            .cmd(relay_binary())
            .args(args)
            .arg(config.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fanout-relay");
        let deadline = Instant::now() + REFUSE_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let still_running = matches!(child.try_wait(), Ok(None));
        if still_running {
            let _ = child.kill();
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child
            .wait_with_output()
            .expect("collect fanout-relay's output");
        let code = if still_running { None } else { status.code() };
        (
            code,
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        )
    }
}

const VALID: &str = r#"
[[rule]]
name = "cam"
input = { interface = "in0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "out0", destination = "239.2.2.2", port = 6000, ttl = 8 } ]
"#;

/// Checks that both `check-config` and `run` refuse `config`, exit non-zero and say every one
/// of `needles` and the file's path on stderr.
fn assert_refused(test: &str, config: &str, needles: &[&str]) {
    let Some(host) = Host::new(test) else {
        return;
    };
    let file = ConfigFile::new(config);
    let path = file.path().display().to_string();
    for command in [&["check-config"][..], &["run", "--config"][..]] {
        let (code, stdout, stderr) = host.relay(command, &file);
        let what = format!("`fanout-relay {} FILE`", command.join(" "));
        assert!(
            code.is_some_and(|code| code != 0),
            "{what} did not refuse (exit {code:?}, None = still running after \
             {REFUSE_TIMEOUT:?})\nconfig:{config}\nstdout: {stdout}\nstderr: {stderr}"
        );
        for needle in needles.iter().chain([&path.as_str()]) {
            assert!(
                stderr.contains(needle),
                "{what}: the message does not say {needle:?}\nconfig:{config}\nstderr: {stderr}"
            );
        }
    }
}

#[test]
fn the_valid_base_configuration_is_accepted() {
    let Some(host) = Host::new("the_valid_base_configuration_is_accepted") else {
        return;
    };
    let file = ConfigFile::new(VALID);
    let (code, stdout, stderr) = host.relay(&["check-config"], &file);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("ok"), "stdout: {stdout}");
}

/// An interface that does not exist (yet) is not refused: its rules wait for it. A typo must
/// still be easy to see: `check-config` warns and names the rule and the interface, and `run`
/// keeps running (still running when the refusal timeout ends) and logs the same.
#[test]
fn an_unknown_interface_is_warned_about_and_waited_for() {
    let Some(host) = Host::new("an_unknown_interface_is_warned_about_and_waited_for") else {
        return;
    };
    let file = ConfigFile::new(&VALID.replace(r#"interface = "in0""#, r#"interface = "nosuch0""#));
    let (code, stdout, stderr) = host.relay(&["check-config"], &file);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains(r#""cam""#) && stderr.contains("nosuch0"),
        "check-config does not name the waiting rule and its interface: {stderr}"
    );
    let (code, _, stderr) = host.relay(&["run", "--config"], &file);
    assert_eq!(code, None, "run exited instead of waiting: {stderr}");
    assert!(
        stderr.contains(r#"rule "cam" waits for interface(s) ["nosuch0"]"#),
        "run does not log the waiting rule: {stderr}"
    );
}

#[test]
fn an_input_neither_multicast_nor_local_is_refused() {
    assert_refused(
        "an_input_neither_multicast_nor_local_is_refused",
        &VALID.replace("239.1.1.1", "10.99.0.5"),
        &[r#"rule "cam""#, "input.destination", "10.99.0.5"],
    );
}

#[test]
fn a_unicast_input_of_another_interface_is_refused() {
    // 10.21.0.1 is out0's address, not in0's: in0 never receives it for this host.
    assert_refused(
        "a_unicast_input_of_another_interface_is_refused",
        &VALID.replace("239.1.1.1", "10.21.0.1"),
        &[r#"rule "cam""#, "input.destination", "10.21.0.1"],
    );
}

#[test]
fn a_link_local_group_is_refused() {
    assert_refused(
        "a_link_local_group_is_refused",
        &VALID.replace("239.1.1.1", "224.0.0.251"),
        &[r#"rule "cam""#, "input.destination", "224.0.0.251"],
    );
}

#[test]
fn an_output_onto_an_input_is_refused() {
    let config = VALID.replace(
        r#"{ interface = "out0", destination = "239.2.2.2", port = 6000, ttl = 8 }"#,
        r#"{ interface = "in0", destination = "239.1.1.1", port = 5000, ttl = 8 }"#,
    );
    assert_ne!(config, VALID);
    assert_refused(
        "an_output_onto_an_input_is_refused",
        &config,
        &[r#"rule "cam""#, "outputs[0].destination", "239.1.1.1:5000"],
    );
}

#[test]
fn a_duplicate_rule_name_is_refused() {
    let second = VALID
        .replace("239.1.1.1", "239.1.1.2")
        .replace("6000", "6001");
    assert_refused(
        "a_duplicate_rule_name_is_refused",
        &format!("{VALID}{second}"),
        &[r#"rule "cam": name"#],
    );
}

#[test]
fn a_duplicate_match_key_is_refused() {
    let second = VALID
        .replace(r#""cam""#, r#""cam2""#)
        .replace("6000", "6001");
    assert_refused(
        "a_duplicate_match_key_is_refused",
        &format!("{VALID}{second}"),
        &[r#"rule "cam2""#, "input.destination", "in0"],
    );
}

#[test]
fn input_port_zero_is_refused() {
    assert_refused(
        "input_port_zero_is_refused",
        &VALID.replace("port = 5000", "port = 0"),
        &[r#"rule "cam""#, "input.port"],
    );
}

#[test]
fn output_port_zero_is_refused() {
    assert_refused(
        "output_port_zero_is_refused",
        &VALID.replace("port = 6000", "port = 0"),
        &[r#"rule "cam""#, "outputs[0].port"],
    );
}

#[test]
fn ttl_zero_is_refused() {
    assert_refused(
        "ttl_zero_is_refused",
        &VALID.replace("ttl = 8", "ttl = 0"),
        &[r#"rule "cam""#, "outputs[0].ttl"],
    );
}

#[test]
fn a_toml_syntax_error_is_located() {
    // Line 3 of the file (the first is empty) loses its closing quote.
    let config = VALID.replace(r#"name = "cam""#, r#"name = "cam"#);
    assert_eq!(config.lines().nth(2), Some(r#"name = "cam"#));
    assert_refused("a_toml_syntax_error_is_located", &config, &["line 3"]);
}

#[test]
fn an_unknown_key_is_refused() {
    assert_refused(
        "an_unknown_key_is_refused",
        &VALID.replace("port = 5000", "prot = 5000"),
        &["prot", "line 4"],
    );
}

#[test]
fn a_duplicate_toml_key_is_refused() {
    assert_refused(
        "a_duplicate_toml_key_is_refused",
        &VALID.replace("port = 5000", "port = 5000, port = 5001"),
        &["duplicate key", "port", "line 4"],
    );
}
