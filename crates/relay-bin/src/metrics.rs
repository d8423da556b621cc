//! The Prometheus listener: `GET /metrics` answers the relay's counters in the text exposition
//! format 0.0.4 ([`exposition`] says which metrics).
//!
//! # Where the numbers come from
//! A scrape is served like a `ctl` connection: the listener's thread sends `stats`, `workers` and
//! `list` requests down the same channel into the supervisor's loop and renders the answers
//! itself. So a scrape sees exactly what `ctl stats` would at that moment; the supervisor keeps
//! sole ownership of its state (no lock, no shared buffer, nothing rendered when nobody
//! scrapes); and the data path is not involved at all: workers report their counters to the
//! supervisor once per second whether or not anyone scrapes.
//!
//! # HTTP
//! Hand-written HTTP/1.1, the least a scraper needs: one connection at a time, a request head of
//! at most 8 KiB read within 5 s, `GET` or `HEAD` of `/metrics`, an answer with
//! `Content-Length` and `Connection: close`, then the connection is closed. Anything else gets
//! 400, 404, 405 or 431. This is less code than the glue a server crate would need.

pub mod exposition;
pub mod netdev;

use crate::control::Pending;
use crate::control::proto::{Command, Reply, Request, Response, VERSION};
use exposition::Snapshot;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

/// Longest request head (request line and headers) read.
const MAX_HEAD: usize = 8192;
/// Time a client has to send its request head, and each write of the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the supervisor has to answer one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics listener on {addr}: {what}: {source}")]
pub struct MetricsError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// What failed.
    pub what: &'static str,
    /// The error.
    pub source: io::Error,
}

/// The listening socket and its thread; dropping it stops the thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl MetricsServer {
    /// Listens on `addr` and serves scrapes with the answers of `requests` (the supervisor's
    /// control channel).
    pub fn start(addr: SocketAddr, requests: Sender<Pending>) -> Result<Self, MetricsError> {
        let fail = |what, source| MetricsError { addr, what, source };
        let listener = TcpListener::bind(addr).map_err(|error| fail("bind", error))?;
        let local = listener
            .local_addr()
            .map_err(|error| fail("getsockname", error))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    match stream {
                        Ok(stream) => serve(stream, &requests),
                        // Out of descriptors or memory: let it pass rather than spin.
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })
            .map_err(|error| fail("starting its thread", error))?;
        Ok(MetricsServer { addr: local, stop })
    }

    /// The address it listens on (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the thread from accept() so it sees the flag.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        // Only the wake-up matters, not the connection: if it fails, the thread still sees the
        // flag at its next connection.
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
    }
}

fn serve(mut stream: TcpStream, requests: &Sender<Pending>) {
    if let Err(error) = stream.set_write_timeout(Some(IO_TIMEOUT)) {
        // Without it a scraper that stops reading could hold this thread: do not answer.
        log::debug!("metrics: cannot set a write timeout, closing the connection: {error}");
        return;
    }
    let answer = match read_head(&mut stream, Instant::now() + IO_TIMEOUT) {
        Ok(head) => respond(&head, || fetch(requests).map(|s| exposition::render(&s))),
        Err(HeadError::TooLarge) => plain(431, "Request Header Fields Too Large", "", true),
        Err(HeadError::Closed) => return,
    };
    // A scraper that went away or timed out misses this answer and asks again: nothing to do.
    if let Err(error) = stream.write_all(&answer) {
        log::debug!("metrics: the answer was not delivered: {error}");
    }
    // The stream is dropped (and closed) next anyway; shutting it down only ends it sooner.
    let _ = stream.shutdown(Shutdown::Both);
}

#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// Longer than [`MAX_HEAD`].
    TooLarge,
    /// Closed, failed or too slow before the end of the head.
    Closed,
}

/// Reads up to the blank line that ends a request head, by `deadline`.
fn read_head(stream: &mut impl ReadWithTimeout, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Closed);
        }
        stream.set_timeout(left).map_err(|_| HeadError::Closed)?;
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Where the head ends: after `\r\n\r\n` (or a bare `\n\n`, which some clients send).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A stream whose reads can be given a timeout (a trait so tests can use a byte slice).
trait ReadWithTimeout: Read {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

impl ReadWithTimeout for TcpStream {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

/// The answer to a request head; `body` renders the metrics, or says why it cannot.
fn respond(head: &[u8], body: impl FnOnce() -> Result<String, String>) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line.trim_ascii_end());
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return plain(400, "Bad Request", "malformed request line\n", true);
    };
    if !version.starts_with("HTTP/1.") {
        return plain(400, "Bad Request", "HTTP/1.x only\n", true);
    }
    let with_body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => {
            let mut answer = plain(405, "Method Not Allowed", "GET or HEAD only\n", true);
            let at = answer
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a status line ends with CRLF")
                + 2;
            answer.splice(at..at, b"Allow: GET, HEAD\r\n".iter().copied());
            return answer;
        }
    };
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return plain(
            404,
            "Not Found",
            "not found: the metrics are at /metrics\n",
            with_body,
        );
    }
    match body() {
        Ok(text) => http(200, "OK", CONTENT_TYPE, &text, with_body),
        Err(why) => plain(503, "Service Unavailable", &format!("{why}\n"), with_body),
    }
}

fn plain(status: u16, reason: &str, text: &str, with_body: bool) -> Vec<u8> {
    http(status, reason, "text/plain; charset=utf-8", text, with_body)
}

fn http(status: u16, reason: &str, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        answer.extend_from_slice(body.as_bytes());
    }
    answer
}

/// Asks the supervisor for everything a scrape shows.
fn fetch(requests: &Sender<Pending>) -> Result<Snapshot, String> {
    let ask = |command: Command| -> Result<Reply, String> {
        let (reply, answer) = mpsc::channel();
        let request = Request {
            version: VERSION,
            command,
        };
        requests
            .send(Pending { request, reply })
            .map_err(|_| "the relay is shutting down".to_owned())?;
        match answer.recv_timeout(ANSWER_TIMEOUT) {
            Ok(Response {
                ok: true,
                result: Some(reply),
                ..
            }) => Ok(reply),
            Ok(Response { error, .. }) => Err(error.unwrap_or_else(|| "refused".into())),
            Err(_) => Err("the relay did not answer in time".into()),
        }
    };
    let Reply::Stats(stats) = ask(Command::Stats)? else {
        return Err("unexpected answer to stats".into());
    };
    let Reply::Workers { workers } = ask(Command::Workers)? else {
        return Err("unexpected answer to workers".into());
    };
    let Reply::Rules {
        generation,
        rules,
        waiting,
        interfaces: links,
    } = ask(Command::List)?
    else {
        return Err("unexpected answer to list".into());
    };
    let interfaces = netdev::read_interfaces(&rules);
    Ok(Snapshot {
        stats,
        workers,
        generation,
        rules,
        interfaces,
        waiting: waiting.len(),
        links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ReadWithTimeout for &[u8] {
        fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(answer: &[u8]) -> String {
        String::from_utf8_lossy(answer).into_owned()
    }

    #[test]
    fn routes_and_statuses() {
        let ok = || Ok::<_, String>("up 1\n".to_owned());
        let get = text(&respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", ok));
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(
            get.contains("Content-Type: text/plain; version=0.0.4"),
            "{get}"
        );
        assert!(get.contains("Content-Length: 5\r\n"), "{get}");
        assert!(get.ends_with("\r\n\r\nup 1\n"), "{get}");
        let head = text(&respond(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n", ok));
        assert!(
            head.contains("Content-Length: 5\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let missing = text(&respond(b"GET / HTTP/1.1\r\n\r\n", ok));
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = text(&respond(b"POST /metrics HTTP/1.1\r\n\r\n", ok));
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"\x00\xff\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
        ] {
            let answer = text(&respond(bad, ok));
            assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        }
        let down = text(&respond(b"GET /metrics HTTP/1.1\r\n\r\n", || {
            Err("the relay is shutting down".into())
        }));
        assert!(down.starts_with("HTTP/1.1 503 "), "{down}");
        assert!(down.ends_with("shutting down\n"), "{down}");
    }

    #[test]
    fn request_heads_are_bounded() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut short: &[u8] = b"GET /metrics HTTP/1.1\r\nA: b\r\n\r\nbody";
        assert_eq!(
            read_head(&mut short, deadline).expect("a head"),
            b"GET /metrics HTTP/1.1\r\nA: b\r\n\r\n"
        );
        let mut bare: &[u8] = b"GET /metrics HTTP/1.0\n\n";
        assert!(read_head(&mut bare, deadline).is_ok());
        let mut cut: &[u8] = b"GET /metrics HTTP/1.1\r\n";
        assert_eq!(read_head(&mut cut, deadline), Err(HeadError::Closed));
        let huge = vec![b'a'; MAX_HEAD * 2];
        assert_eq!(
            read_head(&mut huge.as_slice(), deadline),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn a_scrape_over_tcp_is_answered_from_the_channel() {
        let (tx, rx) = mpsc::channel::<Pending>();
        let server = MetricsServer::start(([127, 0, 0, 1], 0).into(), tx).expect("listening");
        std::thread::spawn(move || {
            for pending in rx {
                let reply = match pending.request.command {
                    Command::Stats => Reply::Stats(Default::default()),
                    Command::Workers => Reply::Workers { workers: vec![] },
                    _ => Reply::Rules {
                        generation: 7,
                        rules: vec![],
                        waiting: vec![],
                        interfaces: vec![],
                    },
                };
                crate::control::respond(&pending.reply, Response::ok(reply));
            }
        });
        let mut stream = TcpStream::connect(server.local_addr()).expect("connects");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("request sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer read");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("\nfanout_relay_generation 7\n"), "{answer}");
        let taken = MetricsServer::start(server.local_addr(), mpsc::channel().0)
            .expect_err("the port is taken");
        assert!(taken.to_string().contains(": bind: "), "{taken}");
    }
}
