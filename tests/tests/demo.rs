//! `fanout-relay demo`, the README's run command, run as a newcomer runs it: the built binary,
//! as root. It must relay every packet, say so in its final table, and leave no namespace,
//! file or process behind, also when Ctrl-C ends it early.
//!
//! Cargo does not build another package's binary for a test: `cargo build -p relay-bin` (with
//! the same `CARGO_TARGET_DIR`) first, as `scripts/test` does through `cargo test --workspace`.

use fanout_relay_tests::{privileged, skip};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Far more than the demo needs (a few seconds), so that only a hang fails on time (stretched
/// by the slowdown of an emulated kernel).
const DEMO_TIMEOUT: Duration = Duration::from_secs(90);

/// The `fanout-relay` binary next to this test executable, or `None` (after a skip) if it
/// has not been built.
fn demo_binary(test: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("a running test can name its own executable");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("fanout-relay"))?;
    if binary.is_file() {
        return Some(binary);
    }
    skip(
        test,
        &format!(
            "{} is not built: run `cargo build -p relay-bin` with the same CARGO_TARGET_DIR",
            binary.display()
        ),
    );
    None
}

/// The demo's namespaces that are still there, for the demo process `pid`.
fn namespaces_of(pid: u32) -> Vec<String> {
    let out = fanout_relay_tests::ip(&["netns", "list"]);
    out.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with("frdemo-") && name.contains(&format!("-{pid}-")))
        .map(str::to_owned)
        .collect()
}

/// Processes whose command line names the demo's configuration file (the relay it started).
fn relays_of(pid: u32) -> Vec<u32> {
    let needle = format!("frdemo-{pid}.toml");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|proc_pid| {
            std::fs::read(format!("/proc/{proc_pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
        })
        .collect()
}

/// Output of a finished demo.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Waits for `child` (whose stdout lines also go to `lines`), bounded by [`DEMO_TIMEOUT`]; on
/// timeout kills it, removes what it left, and panics.
fn finish(mut child: Child, lines: Option<mpsc::Sender<String>>) -> Finished {
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(&mut stdout).lines().map_while(Result::ok) {
            if let Some(lines) = &lines {
                let _ = lines.send(line.clone());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (done_tx, done) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = done_tx.send(());
        status
    });
    if done
        .recv_timeout(fanout_relay_tests::scaled(DEMO_TIMEOUT))
        .is_err()
    {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for name in namespaces_of(pid) {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
        panic!("the demo did not end within {DEMO_TIMEOUT:?}");
    }
    Finished {
        status: waiter
            .join()
            .expect("the waiter thread does not panic")
            .expect("wait for the demo"),
        stdout: out_reader.join().expect("stdout reader does not panic"),
        stderr: err_reader.join().expect("stderr reader does not panic"),
    }
}

/// The final table's numbers (sent, relayed, received, lost) per line (`rule`, destination).
fn final_rows(stdout: &str) -> Vec<(String, String, [u64; 4])> {
    stdout
        .lines()
        .filter(|line| line.starts_with("rewrite ") || line.starts_with("fanout "))
        .map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let numbers: Vec<u64> = tokens[tokens.len() - 4..]
                .iter()
                .map(|t| {
                    t.parse()
                        .unwrap_or_else(|_| panic!("not a count in {line:?}"))
                })
                .collect();
            (
                tokens[0].to_owned(),
                tokens[2].to_owned(),
                [numbers[0], numbers[1], numbers[2], numbers[3]],
            )
        })
        .collect()
}

/// The demo with `packets` per stream at `rate` per second; under a slowdown (an emulated
/// kernel) the rate is divided by it, at least 20 per second, and the start may take as much
/// longer: what is tested is that every packet arrives, not how fast.
fn demo_command(binary: &Path, packets: &str, rate: u32) -> Command {
    let slowdown = fanout_relay_tests::slowdown();
    let rate = (rate / slowdown).max(20).to_string();
    let start_timeout = (10 * slowdown).to_string();
    let mut cmd = Command::new(binary);
    cmd.args(["demo", "--packets", packets, "--rate", &rate])
        .args(["--start-timeout", &start_timeout])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn the_demo_relays_every_packet_and_leaves_nothing_behind() {
    let test = "the_demo_relays_every_packet_and_leaves_nothing_behind";
    if !privileged(test) {
        return;
    }
    let Some(binary) = demo_binary(test) else {
        return;
    };
    let child = demo_command(&binary, "200", 400)
        .spawn()
        .expect("start the demo");
    let pid = child.id();
    let run = finish(child, None);
    let all = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        run.status.success(),
        "the demo failed ({}):\n{all}",
        run.status
    );

    let rows = final_rows(&run.stdout);
    let mut destinations: Vec<(&str, &str)> = rows
        .iter()
        .map(|(rule, to, _)| (rule.as_str(), to.as_str()))
        .collect();
    destinations.sort_unstable();
    assert_eq!(
        destinations,
        [
            ("fanout", "239.3.3.3:7000"),
            ("fanout", "239.4.4.4:7000"),
            ("rewrite", "239.2.2.2:6000")
        ],
        "{all}"
    );
    for (rule, to, numbers) in &rows {
        assert_eq!(numbers, &[200, 200, 200, 0], "{rule} to {to}:\n{all}");
    }
    assert!(
        run.stdout
            .contains("every receiver got every packet: 600 of 600"),
        "{all}"
    );
    // The relay's own summary reached the demo: its workers saw the streams.
    assert!(run.stdout.contains("relay workers ("), "{all}");
    // The MPEG-TS stream through the inspected rule arrived whole: no continuity error.
    assert!(
        run.stdout
            .contains("  video: ts cc 0 sync 0 tei 0 pids 4\n"),
        "{all}"
    );

    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "{all}");
    assert_eq!(
        relays_of(pid),
        Vec::<u32>::new(),
        "a relay outlived the demo"
    );
    let config = std::env::temp_dir().join(format!("frdemo-{pid}.toml"));
    let socket = PathBuf::from(format!("/run/fanout-relay/frdemo-{pid}.sock"));
    for file in [config, socket] {
        assert!(!file.exists(), "{} was left behind", file.display());
    }
}

#[test]
fn ctrl_c_ends_the_demo_and_removes_everything() {
    let test = "ctrl_c_ends_the_demo_and_removes_everything";
    if !privileged(test) {
        return;
    }
    let Some(binary) = demo_binary(test) else {
        return;
    };
    // 40 s of traffic: only the interrupt can end it in time.
    let child = demo_command(&binary, "20000", 500)
        .spawn()
        .expect("start the demo");
    let pid = child.id();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let interrupter = std::thread::spawn(move || {
        // Interrupt once traffic flows, so the relay, sockets and threads all exist.
        let started = std::time::Instant::now();
        while started.elapsed() < fanout_relay_tests::scaled(DEMO_TIMEOUT) {
            match lines.recv_timeout(Duration::from_secs(1)) {
                Ok(line) if line.contains("1s ") => break,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        let sent =
            i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), Signal::SIGINT).is_ok());
        // Keep the channel drained until the demo ends.
        while lines.recv().is_ok() {}
        sent
    });
    let run = finish(child, Some(lines_tx));
    let all = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        interrupter.join().expect("no panic"),
        "the demo ended before it could be interrupted:\n{all}"
    );
    assert_eq!(run.status.code(), Some(1), "{all}");
    assert!(run.stderr.contains("interrupted"), "{all}");
    // It still stopped the relay in order and printed what it had.
    assert!(run.stdout.contains("stopping the relay"), "{all}");
    assert_eq!(final_rows(&run.stdout).len(), 3, "{all}");
    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "{all}");
    assert_eq!(
        relays_of(pid),
        Vec::<u32>::new(),
        "a relay outlived the demo"
    );
}

#[test]
fn the_impaired_demo_shows_the_continuity_errors_of_its_drops() {
    let test = "the_impaired_demo_shows_the_continuity_errors_of_its_drops";
    if !privileged(test) {
        return;
    }
    let Some(binary) = demo_binary(test) else {
        return;
    };
    let mut command = demo_command(&binary, "100", 500);
    command.arg("--impair");
    let child = command.spawn().expect("start the demo");
    let pid = child.id();
    let run = finish(child, None);
    let all = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        run.status.success(),
        "the demo failed ({}):\n{all}",
        run.status
    );
    // 1000 datagrams, one in 100 dropped: 10 losses, each breaking the continuity of the
    // stream's four PIDs once.
    assert!(
        run.stdout
            .contains("(990 datagrams of MPEG-TS sent, 10 dropped on the way)"),
        "{all}"
    );
    assert!(
        run.stdout
            .contains("  video: ts cc 40 sync 0 tei 0 pids 4\n"),
        "{all}"
    );
    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "{all}");
}
