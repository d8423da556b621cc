//! The relay as a process: its binary, its configuration file, start, readiness, stop.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Summary;
use crate::Netns;

/// How long the relay may take from spawn to every worker ready (a debug build on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the relay may take to exit after SIGTERM (its own grace for workers is 3 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the workers may keep the relay's stderr open after the supervisor exited.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(10);

/// The `fanout-relay` binary next to the running test executable.
///
/// Cargo puts a test at `<target>/debug/deps/<test>-<hash>` and the package's binaries at
/// `<target>/debug/`, but does not build another package's binary for a test: build it with
/// `cargo build -p relay-bin` and the same `CARGO_TARGET_DIR` first. Panics saying so when it is
/// missing.
pub fn relay_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("a running test can name its own executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not inside <target>/<profile>/deps", exe.display()));
    let binary = profile_dir.join("fanout-relay");
    if !binary.is_file() {
        panic!(
            "{} is missing: build it with `cargo build -p relay-bin` using the same \
             CARGO_TARGET_DIR as the tests",
            binary.display()
        );
    }
    binary
}

/// A configuration file in the temporary directory, removed (with the control socket and state
/// file the relay derives from its name) when dropped.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `text` to a file whose name no other test uses (`fr-e2e-<pid>-<n>.toml`).
    pub fn new(text: &str) -> ConfigFile {
        let stem = format!("fr-e2e-{}-{}", std::process::id(), crate::next_id());
        let path = std::env::temp_dir().join(format!("{stem}.toml"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        ConfigFile { path }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // The relay names its default control socket and state file after the configuration
        // file; they are this test's, so they go with it.
        if let Some(stem) = self.path.file_stem().and_then(|s| s.to_str()) {
            let _ = std::fs::remove_file(format!("/run/fanout-relay/{stem}.sock"));
            let _ = std::fs::remove_file(format!("/var/lib/fanout-relay/{stem}.state.toml"));
        }
    }
}

/// `fanout-relay run` running in a namespace, its stderr collected as it comes.
///
/// Dropping it kills the relay (a test that panicked); [`RelayProcess::stop`] is the clean way.
/// When a test panics, the drop prints the relay's log so the failure can be read with it.
#[derive(Debug)]
pub struct RelayProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    eof: Receiver<()>,
    _config: ConfigFile,
}

/// How the relay ended after [`RelayProcess::stop`].
#[derive(Debug)]
pub struct RelayExit {
    /// Its exit status (already checked to be 0).
    pub status: ExitStatus,
    /// Everything it and its workers wrote to stderr.
    pub log: String,
    /// The counters table it printed last (the one at exit).
    pub summary: Summary,
}

impl RelayProcess {
    /// Starts `fanout-relay run --config <config> <args>` in `ns` with `RUST_LOG=debug` and waits
    /// until every worker it started said it is ready, so traffic sent afterwards is served
    /// at once. Panics with the relay's log if it exits or is not ready in time.
    pub fn start(ns: &Netns, config: &str, args: &[&str]) -> RelayProcess {
        Self::start_with_env(ns, config, args, &[])
    }

    /// [`RelayProcess::start`] with `env` added to the relay's environment.
    pub fn start_with_env(
        ns: &Netns,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> RelayProcess {
        Self::start_wrapped(ns, config, args, env, &[])
    }

    /// [`RelayProcess::start_with_env`], the relay started through the command `wrapper` (its
    /// program and arguments, the relay's command line after them), e.g. `setpriv` with a user
    /// and capabilities.
    pub fn start_wrapped(
        ns: &Netns,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> RelayProcess {
        let config = ConfigFile::new(config);
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = ns.cmd(program);
                command.args(rest).arg(relay_binary());
                command
            }
            None => ns.cmd(relay_binary()),
        };
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(config.path())
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start fanout-relay in {}: {e}", ns.name()));
        let stderr = child.stderr.take().expect("stderr was piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (eof_tx, eof) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap_or_else(PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
            let _ = eof_tx.send(());
        });
        let relay = RelayProcess {
            child,
            log,
            eof,
            _config: config,
        };
        let started = relay.wait_for_log("the relay to start its workers", START_TIMEOUT, |line| {
            line.contains("relaying with ")
        });
        for cpu in cpus_of(&started) {
            let ready = format!("worker on cpu {cpu} (pid ");
            relay.wait_for_log(
                &format!("the worker on cpu {cpu} to be ready"),
                START_TIMEOUT,
                |line| line.contains(&ready) && line.contains(") ready"),
            );
        }
        relay
    }

    /// The supervisor's process id (`ip netns exec` replaces itself with the relay).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written to stderr so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until a line of the log satisfies `matches` and returns it; panics after `timeout`,
    /// or when the relay exits first, naming `what` and showing the log.
    pub fn wait_for_log(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().lines().find(|line| matches(line)) {
                return line.to_owned();
            }
            let exited = !pid_alive(self.pid());
            if exited || Instant::now() >= deadline {
                panic!(
                    "waited {timeout:?} for {what}, but the relay {}; its log:\n{}",
                    if exited { "exited" } else { "never logged it" },
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Worker process ids by CPU, read from `/proc` (see [`worker_pids`]).
    pub fn worker_pids(&self) -> BTreeMap<u32, u32> {
        worker_pids(self.pid())
    }

    /// Stops the relay with SIGTERM and returns what it printed; panics unless it exits with
    /// status 0 in time, with no worker left behind, and printed a counters table.
    pub fn stop(mut self) -> RelayExit {
        let pid = self.pid();
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
            .unwrap_or_else(|e| panic!("kill -TERM {pid}: {e}"));
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => panic!(
                    "the relay did not exit within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
                    self.log()
                ),
                Err(e) => panic!("waiting for the relay: {e}"),
            }
        };
        // The workers share the supervisor's stderr: it closes when the last of them is gone.
        if self.eof.recv_timeout(ORPHAN_TIMEOUT).is_err() {
            panic!(
                "{ORPHAN_TIMEOUT:?} after the supervisor exited its workers still run ({:?}); \
                 log:\n{}",
                worker_pids(pid),
                self.log()
            );
        }
        let log = self.log();
        assert!(
            status.success(),
            "the relay exited with {status} after SIGTERM; its log:\n{log}"
        );
        let summary = Summary::parse_last(&log)
            .unwrap_or_else(|| panic!("no counters table in the relay's stderr:\n{log}"));
        RelayExit {
            status,
            log,
            summary,
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- relay log (pid {}) ---\n{}",
                self.child.id(),
                self.log()
            );
        }
    }
}

/// The CPUs in the supervisor's `relaying with ... (cpus [0, 1]) ...` line.
fn cpus_of(line: &str) -> Vec<u32> {
    let list = line
        .split_once("(cpus [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no `(cpus [...])` in the relay's start line: {line}"));
    list.split(',')
        .filter_map(|cpu| cpu.trim().parse().ok())
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>, but its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// The worker processes of supervisor `supervisor`, by CPU: processes whose command line is
/// `fanout-relay worker --cpu K --supervisor <supervisor> ...`.
pub fn worker_pids(supervisor: u32) -> BTreeMap<u32, u32> {
    let mut workers = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return workers;
    };
    let supervisor = supervisor.to_string();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let value = |flag: &str| {
            args.iter()
                .position(|arg| arg == flag)
                .and_then(|i| args.get(i + 1))
        };
        if args.iter().any(|arg| arg == "worker")
            && value("--supervisor") == Some(&supervisor)
            && pid_alive(pid)
            && let Some(cpu) = value("--cpu").and_then(|cpu| cpu.parse().ok())
        {
            workers.insert(cpu, pid);
        }
    }
    workers
}

#[cfg(test)]
mod tests {
    use super::cpus_of;

    #[test]
    fn start_line_names_the_cpus() {
        let line = "[x INFO relay_bin::supervisor] relaying with 1 rule(s) on 2 worker(s) \
                    (cpus [0, 1]), fanout Cpu";
        assert_eq!(cpus_of(line), vec![0, 1]);
        assert_eq!(cpus_of("... (cpus [3]) ..."), vec![3]);
    }
}
