//! Support for the observability tests: scraping the relay's Prometheus listener from inside its
//! namespace, reading the exposition back, and checking it with `promtool`.
//!
//! ```no_run
//! use fanout_relay_tests::obs::{Metrics, scrape};
//! use fanout_relay_tests::privileged;
//! use fanout_relay_tests::relay::quiet_topology;
//!
//! if !privileged("example") {
//!     return;
//! }
//! let topo = quiet_topology("ex");
//! // ... start the relay with `--metrics 127.0.0.1:9469` ...
//! let answer = scrape(&topo.relay, "127.0.0.1:9469", "/metrics");
//! let metrics = Metrics::parse(&answer.body);
//! let received = metrics.get("fanout_relay_worker_received_total", &[("cpu", "0")]);
//! # drop(received);
//! ```

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Netns;

/// How long a scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The header lines, as sent.
    pub head: String,
    /// The body.
    pub body: String,
}

/// Sends `GET <path>` to `addr` from inside `ns` and returns the answer; panics when the
/// listener cannot be reached or answers garbage.
pub fn scrape(ns: &Netns, addr: &str, path: &str) -> HttpAnswer {
    request(
        ns,
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    )
}

/// Sends `raw` (a whole request) to `addr` from inside `ns` and returns the answer.
pub fn request(ns: &Netns, addr: &str, raw: &str) -> HttpAnswer {
    let target: std::net::SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{addr:?} is not a socket address: {e}"));
    // The socket belongs to the namespace it was made in; it can be used from any thread.
    let mut stream = ns
        .run(|| TcpStream::connect_timeout(&target, SCRAPE_TIMEOUT))
        .unwrap_or_else(|e| panic!("connect to {addr} in {}: {e}", ns.name()));
    stream
        .set_read_timeout(Some(SCRAPE_TIMEOUT))
        .expect("SO_RCVTIMEO");
    stream.write_all(raw.as_bytes()).expect("send the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("read the answer of {addr}: {e}"));
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in the answer: {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    HttpAnswer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// The samples of an exposition, by metric name and labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// `(name, labels sorted by key)` to value.
    pub samples: BTreeMap<(String, Vec<(String, String)>), f64>,
    /// `# TYPE` of each family.
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    /// Reads the text exposition format; panics on a line it cannot read (the relay's output
    /// must always be readable).
    pub fn parse(text: &str) -> Metrics {
        let mut metrics = Metrics::default();
        for line in text.lines().filter(|line| !line.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
                metrics.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value in {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (
                    name,
                    parse_labels(
                        labels
                            .strip_suffix('}')
                            .unwrap_or_else(|| panic!("unclosed labels in {line:?}")),
                    ),
                ),
                None => (series, Vec::new()),
            };
            metrics.samples.insert((name.to_owned(), labels), value);
        }
        metrics
    }

    /// The value of `name` with exactly `labels`, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut key: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        key.sort();
        self.samples.get(&(name.to_owned(), key)).copied()
    }

    /// Like [`Metrics::get`] as an integer, panicking with the exposition's names when absent.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "no sample {name}{labels:?}; samples: {:#?}",
                self.samples.keys().collect::<Vec<_>>()
            )
        }) as u64
    }
}

/// `a="x",b="y\"z"` to sorted pairs, undoing the format's escapes.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(
            chars.next(),
            Some('"'),
            "label {key} without a quoted value"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape in {text:?}"),
                },
                c => value.push(c),
            }
        }
        pairs.push((key.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    pairs.sort();
    pairs
}

/// Runs `promtool check metrics` on `text`: `None` when promtool is not installed (Debian
/// package `prometheus`), else its verdict with what it printed.
pub fn promtool_check(text: &str) -> Option<Result<(), String>> {
    if !crate::have_program("promtool") {
        return None;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start promtool: {e}"));
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expositions_read_back() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{cpu=\"1\",reason=\"x\\\"y\"} 5\n\
                    b 2\n";
        let metrics = Metrics::parse(text);
        assert_eq!(
            metrics.get("a_total", &[("reason", "x\"y"), ("cpu", "1")]),
            Some(5.0)
        );
        assert_eq!(metrics.count("b", &[]), 2);
        assert_eq!(metrics.types["a_total"], "counter");
        assert_eq!(metrics.get("a_total", &[("cpu", "1")]), None);
    }
}
