//! The relay under demonstration: `fanout-relay run` as a child process in the relay namespace,
//! its standard error read line by line (counters tables parsed, everything else shown).

use super::stats::{RelayCounters, StatsParser};
use crate::netns::Netns;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The relay's line that says its rings are open and its workers are starting.
const READY_LINE: &str = "relaying with";
/// How long the relay may take to stop after SIGTERM (its workers get 3 s) before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(8);
/// How often waits look at the child and at Ctrl-C.
const TICK: Duration = Duration::from_millis(50);

/// The relay could not be started, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The child process could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited while the demo needed it (its own messages are shown above).
    #[error("the relay exited ({0}) before the demo ended; its messages are above")]
    Exited(ExitStatus),
    /// It did not say it was relaying in time.
    #[error("the relay did not start relaying within {0:?}; its messages are above")]
    NotReady(Duration),
    /// Waiting for it failed.
    #[error("waiting for the relay: {0}")]
    Wait(std::io::Error),
}

/// What the stderr reader shares with the demo.
#[derive(Debug)]
struct Shared {
    parser: StatsParser,
    ready: bool,
    eof: bool,
}

/// A running relay; dropping it kills the relay if it still runs.
#[derive(Debug)]
pub(super) struct Relay {
    child: Child,
    shared: Arc<Mutex<Shared>>,
}

/// How the relay ended.
#[derive(Debug)]
pub(super) struct RelayEnd {
    /// Its exit status.
    pub(super) status: ExitStatus,
    /// Whether it had to be killed after SIGTERM.
    pub(super) killed: bool,
    /// Its counters as of its final summary.
    pub(super) counters: RelayCounters,
}

impl Relay {
    /// Starts `exe run --config <config> --stats-every 1` inside `ns`.
    ///
    /// `rules` names the rules of the configuration, so that their counters can be read back.
    /// The relay gets a process group of its own, so that Ctrl-C on the terminal reaches only
    /// the demo, which then stops the relay in order.
    pub(super) fn start(
        ns: &Netns,
        exe: &Path,
        config: &Path,
        rules: impl IntoIterator<Item = String>,
    ) -> Result<Relay, RelayError> {
        let mut cmd = ns.cmd(exe);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .args(["--stats-every", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let command = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|part| part.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        println!("starting: {command}");
        let mut child = cmd
            .spawn()
            .map_err(|source| RelayError::Spawn { command, source })?;
        let shared = Arc::new(Mutex::new(Shared {
            parser: StatsParser::new(rules),
            ready: false,
            eof: false,
        }));
        let stderr = child.stderr.take().expect("stderr is piped above");
        let reader = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("relay-stderr".into())
            .spawn(move || {
                let mut input = BufReader::new(stderr);
                let mut line = Vec::new();
                while matches!(input.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end();
                    let mut shared = lock(&reader);
                    shared.ready |= text.contains(READY_LINE);
                    if !shared.parser.feed(text) {
                        // Echoing the relay's log is a courtesy: with no stderr to write to,
                        // there is no one to show it to either.
                        let _ = writeln!(std::io::stderr(), "  relay | {text}");
                    }
                    drop(shared);
                    line.clear();
                }
                lock(&reader).eof = true;
            });
        // From here on the guard exists, so an error kills the child.
        let relay = Relay { child, shared };
        spawned.map_err(RelayError::Wait)?;
        Ok(relay)
    }

    /// Waits until the relay says it relays, it exits, `give_up` says so, or `timeout` passes.
    /// Returns `Ok(false)` if `give_up` said so.
    pub(super) fn wait_ready(
        &mut self,
        timeout: Duration,
        mut give_up: impl FnMut() -> bool,
    ) -> Result<bool, RelayError> {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.shared).ready {
                return Ok(true);
            }
            self.check_running()?;
            if give_up() {
                return Ok(false);
            }
            if Instant::now() >= deadline {
                return Err(RelayError::NotReady(timeout));
            }
            std::thread::sleep(TICK);
        }
    }

    /// An error if the relay has exited.
    pub(super) fn check_running(&mut self) -> Result<(), RelayError> {
        match self.child.try_wait().map_err(RelayError::Wait)? {
            Some(status) => Err(RelayError::Exited(status)),
            None => Ok(()),
        }
    }

    /// The latest counters the relay printed.
    pub(super) fn counters(&self) -> RelayCounters {
        lock(&self.shared).parser.counters.clone()
    }

    /// Stops the relay with SIGTERM (SIGKILL if it takes too long) and returns its final
    /// counters, which it prints as it exits.
    pub(super) fn stop(&mut self) -> Result<RelayEnd, RelayError> {
        let mut killed = false;
        let status = match self.child.try_wait().map_err(RelayError::Wait)? {
            Some(status) => status,
            None => {
                if let Ok(pid) = i32::try_from(self.child.id()) {
                    // A relay that exited meanwhile is what is wanted; one that ignores the
                    // signal is killed after STOP_GRACE below.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                let deadline = Instant::now() + STOP_GRACE;
                loop {
                    if let Some(status) = self.child.try_wait().map_err(RelayError::Wait)? {
                        break status;
                    }
                    if Instant::now() >= deadline {
                        killed = true;
                        // Fails only for a child that exited already, which `wait` collects.
                        let _ = self.child.kill();
                        break self.child.wait().map_err(RelayError::Wait)?;
                    }
                    std::thread::sleep(TICK);
                }
            }
        };
        // The summary is the last thing it writes; give the reader a moment to take it in.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !lock(&self.shared).eof && Instant::now() < deadline {
            std::thread::sleep(TICK);
        }
        Ok(RelayEnd {
            status,
            killed,
            counters: self.counters(),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Dropping while unwinding or on an error path: the child is reaped if it can be,
            // and the error being reported matters more than one from here.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}
