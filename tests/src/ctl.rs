//! Talking to a running relay through its control socket, for the control-plane tests.
//!
//! Every control test runs its relay with the control socket and the state file in a
//! [`Workdir`] of its own (see [`relay_section`]), so tests running at the same time never share
//! a socket, and nothing is left in `/run` or `/var/lib`. [`Ctl`] asks the relay either through
//! the `fanout-relay ctl` client, as an operator would ([`Ctl::run`]), or with typed requests
//! ([`Ctl::request`], [`Ctl::rules`], [`Ctl::workers`], [`Ctl::stats`]). Every call has a
//! deadline, so a relay that stops answering fails its test instead of hanging it.
//!
//! ```no_run
//! use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule};
//! use fanout_relay_tests::privileged;
//! use fanout_relay_tests::relay::{RelayProcess, quiet_topology};
//!
//! if !privileged("example") {
//!     return;
//! }
//! let topo = quiet_topology("ex");
//! let dir = Workdir::new("ex");
//! let config = relay_section(&dir, "") + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
//! let relay = RelayProcess::start(&topo.relay, &config, &[]);
//! let ctl = Ctl::new(&dir);
//! ctl.ok(&["add", "cam2", "rin0:239.1.1.2:5000", "rout0:239.2.2.3:6000"]);
//! assert_eq!(ctl.rules().1.len(), 2);
//! # drop(relay);
//! ```

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use relay_bin::control::proto::{Command as Request, Reply, Response, StatsReport, WorkerReport};
use relay_rules::Rule;

use crate::relay::{RelayProcess, relay_binary};

/// How long one control request or `ctl` run may take (a debug build on a busy machine; a
/// change waits up to 3 s for the workers' confirmations).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A private directory for one test's control socket, state file and saved files, removed
/// with everything in it on drop.
///
/// The directory is mode 0755, so that another user can reach the socket inside and be refused
/// by the socket's own mode or by the relay, not by the directory.
#[derive(Debug)]
pub struct Workdir {
    path: PathBuf,
}

impl Workdir {
    /// Creates `<tmp>/fr-ctl-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Workdir {
        let path = std::env::temp_dir().join(format!(
            "fr-ctl-{tag}-{}-{}",
            std::process::id(),
            crate::next_id()
        ));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod 0755 {}: {e}", path.display()));
        Workdir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the relay's control socket goes.
    pub fn socket(&self) -> PathBuf {
        self.path.join("control.sock")
    }

    /// Where the relay keeps its running rule set.
    pub fn state_file(&self) -> PathBuf {
        self.path.join("state.toml")
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A `[relay]` section that puts the control socket and the state file in `dir`, followed by
/// `extra` lines of the same section (`workers = "0-1"`).
pub fn relay_section(dir: &Workdir, extra: &str) -> String {
    format!(
        "[relay]\ncontrol_socket = {:?}\nstate_file = {:?}\n{extra}\n",
        dir.socket().display().to_string(),
        dir.state_file().display().to_string()
    )
}

/// A `[[rule]]` from the topology's input `rin0` to its output `rout0`.
pub fn rule(name: &str, group: &str, port: u16, out_group: &str, out_port: u16) -> String {
    format!(
        "\n[[rule]]\nname = {name:?}\n\
         input = {{ interface = \"rin0\", destination = {group:?}, port = {port} }}\n\
         outputs = [ {{ interface = \"rout0\", destination = {out_group:?}, port = {out_port} }} ]\n"
    )
}

/// The configuration file a running relay was started with (read from its command line), so
/// that a test can rewrite it before a reload.
pub fn config_path(relay: &RelayProcess) -> PathBuf {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", relay.pid()))
        .unwrap_or_else(|e| panic!("read the relay's command line: {e}"));
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let at = args
        .iter()
        .position(|arg| *arg == b"--config")
        .unwrap_or_else(|| panic!("no --config on the relay's command line: {args:?}"));
    let path = args
        .get(at + 1)
        .unwrap_or_else(|| panic!("--config without a value: {args:?}"));
    PathBuf::from(String::from_utf8_lossy(path).into_owned())
}

/// Sends `signal` to process `pid`, panicking with the reason on failure.
pub fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// What one run of `fanout-relay ctl` printed and how it ended.
#[derive(Debug)]
pub struct CtlOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// The client side of one relay's control socket.
#[derive(Debug, Clone)]
pub struct Ctl {
    socket: PathBuf,
}

impl Ctl {
    /// Talks to the relay whose socket is in `dir`.
    pub fn new(dir: &Workdir) -> Ctl {
        Ctl {
            socket: dir.socket(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends a drift-test build's debug `command` (`debug_corrupt_table`,
    /// `debug_forbidden_syscall`) for the worker on `cpu`; `None` when this build does not
    /// have it.
    pub fn debug(&self, command: &str, cpu: u32) -> Option<()> {
        use std::io::{BufRead as _, BufReader, Write as _};
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket)
            .expect("connect to the control socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("SO_RCVTIMEO");
        writeln!(
            stream,
            "{{\"version\":1,\"command\":\"{command}\",\"cpu\":{cpu}}}"
        )
        .expect("send the request");
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .expect("an answer");
        if answer.contains("unknown variant") {
            return None;
        }
        assert!(answer.starts_with("{\"ok\":true"), "{command}: {answer}");
        Some(())
    }

    /// Runs `fanout-relay ctl --socket <socket> <args>` and returns what it did.
    pub fn run(&self, args: &[&str]) -> CtlOutput {
        let mut cmd = Command::new(relay_binary());
        cmd.arg("ctl").arg("--socket").arg(&self.socket).args(args);
        run_bounded(cmd, CALL_TIMEOUT)
    }

    /// Like [`Ctl::run`], but panics unless it exits with status 0; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`ctl {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            out.stderr,
            out.stdout
        );
        out.stdout
    }

    /// Sends one typed request and returns the relay's answer; panics if the relay does not
    /// answer within [`CALL_TIMEOUT`].
    pub fn request(&self, command: Request) -> Response {
        let socket = self.socket.clone();
        let what = format!("{command:?}");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let request = relay_bin::control::proto::Request {
                version: relay_bin::control::proto::VERSION,
                command,
            };
            let _ = tx.send(relay_bin::control::call(&socket, &request));
        });
        match rx.recv_timeout(CALL_TIMEOUT) {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => panic!("request {what} to {}: {e}", self.socket.display()),
            Err(_) => panic!(
                "the relay did not answer {what} on {} within {CALL_TIMEOUT:?}",
                self.socket.display()
            ),
        }
    }

    /// The running rules and their generation.
    pub fn rules(&self) -> (u64, Vec<Rule>) {
        match self.request(Request::List) {
            Response {
                ok: true,
                result:
                    Some(Reply::Rules {
                        generation, rules, ..
                    }),
                ..
            } => (generation, rules),
            other => panic!("list: unexpected answer {other:?}"),
        }
    }

    /// The names of the running rules, sorted.
    pub fn rule_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.rules().1.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    /// The worker slots.
    pub fn workers(&self) -> Vec<WorkerReport> {
        match self.request(Request::Workers) {
            Response {
                ok: true,
                result: Some(Reply::Workers { workers, .. }),
                ..
            } => workers,
            other => panic!("workers: unexpected answer {other:?}"),
        }
    }

    /// Per rule and per worker counters.
    pub fn stats(&self) -> StatsReport {
        match self.request(Request::Stats) {
            Response {
                ok: true,
                result: Some(Reply::Stats(stats)),
                ..
            } => stats,
            other => panic!("stats: unexpected answer {other:?}"),
        }
    }

    /// Polls `workers` every 50 ms until `done` holds, and returns that report; panics naming
    /// `what` with the last report after `timeout`.
    pub fn wait_workers(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[WorkerReport]) -> bool,
    ) -> Vec<WorkerReport> {
        let deadline = Instant::now() + timeout;
        loop {
            let workers = self.workers();
            if done(&workers) {
                return workers;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}; workers: {workers:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every worker is ready with the running set's generation, and returns that
    /// generation.
    pub fn wait_settled(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let (generation, _) = self.rules();
            let workers = self.workers();
            if workers
                .iter()
                .all(|w| w.state == "ready" && w.generation == generation)
            {
                return generation;
            }
            assert!(
                Instant::now() < deadline,
                "workers not all ready at generation {generation} after {timeout:?}: {workers:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `stats` until `done` holds (counters reach the supervisor once a second).
    pub fn wait_stats(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&StatsReport) -> bool,
    ) -> StatsReport {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}; stats: {stats:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs `cmd` with its output captured; kills it and panics if it takes longer than `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> CtlOutput {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => CtlOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("waiting for {what}: {e}"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("{what} did not finish within {timeout:?}");
        }
    }
}

/// The unsigned number at `path` in a JSON text, found by walking the keys in order: each key
/// is looked up after the previous one (enough for the `ctl --json` output, whose keys are
/// unique along the paths the tests read).
pub fn json_u64(text: &str, path: &[&str]) -> Option<u64> {
    let mut rest = text;
    for key in path {
        let quoted = format!("\"{key}\"");
        let at = rest.find(&quoted)?;
        rest = rest[at + quoted.len()..].trim_start().strip_prefix(':')?;
    }
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_are_walked_in_order() {
        let text =
            r#"{"result": {"rules": {"a": {"packets": 3}, "b": {"bytes": 9, "packets": 17}}}}"#;
        assert_eq!(json_u64(text, &["rules", "b", "packets"]), Some(17));
        assert_eq!(json_u64(text, &["rules", "a", "packets"]), Some(3));
        assert_eq!(json_u64(text, &["rules", "c", "packets"]), None);
        assert_eq!(json_u64("{\"x\": \"7\"}", &["x"]), None);
    }

    #[test]
    fn rules_and_sections_are_valid_configuration() {
        let dir = Workdir::new("unit");
        let text =
            relay_section(&dir, "workers = 1") + &rule("a", "239.1.1.1", 5000, "239.2.2.2", 6000);
        let file = relay_bin::config::ConfigFile::parse(&text).expect("valid TOML");
        assert_eq!(file.relay.control_socket, Some(dir.socket()));
        assert_eq!(file.relay.state_file, Some(dir.state_file()));
        assert_eq!(file.rules.len(), 1);
        assert_eq!(file.rules[0].outputs[0].port, 6000);
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists(), "the work directory is removed on drop");
    }
}
