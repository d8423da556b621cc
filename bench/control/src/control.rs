//! A persistent connection to the relay's control socket, for requests many times a second.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use relay_bin::control::proto::{
    Command, Reply, Request, Response, StatsReport, VERSION, WorkerReport,
};

/// One connection, kept open across requests.
#[derive(Debug)]
pub struct Control {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Control {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Control {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("SO_RCVTIMEO");
        let reader = BufReader::new(stream.try_clone().expect("clone a Unix stream"));
        Control { stream, reader }
    }

    /// Sends `command` and waits for the answer.
    pub fn call(&mut self, command: Command) -> Response {
        let request = Request {
            version: VERSION,
            command,
        };
        let mut line = serde_json::to_vec(&request).expect("a request serialises");
        line.push(b'\n');
        self.stream.write_all(&line).expect("send a request");
        let mut answer = Vec::new();
        self.reader
            .read_until(b'\n', &mut answer)
            .expect("read an answer");
        serde_json::from_slice(&answer).unwrap_or_else(|e| {
            panic!(
                "not a response ({e}): {}",
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            )
        })
    }

    /// The worker slots.
    pub fn workers(&mut self) -> Vec<WorkerReport> {
        match self.call(Command::Workers) {
            Response {
                result: Some(Reply::Workers { workers }),
                ..
            } => workers,
            other => panic!("workers: {other:?}"),
        }
    }

    /// Counters per rule and per worker.
    pub fn stats(&mut self) -> StatsReport {
        match self.call(Command::Stats) {
            Response {
                result: Some(Reply::Stats(stats)),
                ..
            } => stats,
            other => panic!("stats: {other:?}"),
        }
    }
}

/// Kernel ring drops, summed over workers.
pub fn kernel_drops(stats: &StatsReport) -> u64 {
    stats.workers.iter().map(|w| w.counters.kernel_drops).sum()
}
