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
//! Request heads are parsed by `httparse` (module `http`): `GET` or `HEAD` of `/metrics`, an
//! answer with `Content-Length` and `Connection: close`; anything else gets 400, 404, 405 or 431.
//! Each connection is served by a thread of its own, at most 64 at once, and the whole exchange
//! must be over within 10 s of the connection (module `connections` says how both are kept):
//! slow or idle clients cost a place each, never a scraper's turn.
//!
//! The metrics tell the relay's rules, interfaces and rates to whoever can connect: the relay
//! warns at start when they are served on an address other than a loopback one.

mod connections;
pub mod exposition;
mod http;
pub mod netdev;

use crate::control::Pending;
use crate::control::proto::{Command, Reply, Request, Response, VERSION};
use connections::{Connections, Place};
use exposition::Snapshot;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

/// Time the supervisor has to answer one request (within the exchange's deadline).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait of the accepting thread between two looks at the deadlines and the stop flag.
const TICK: Duration = Duration::from_secs(1);

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `bind(2)` of the listening socket failed (the port is taken, the address is not ours).
    #[error("metrics listener on {addr}: bind: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A system call on the new listening socket failed.
    #[error("metrics listener on {addr}: {syscall}: {source}")]
    Listener {
        /// The address asked for.
        addr: SocketAddr,
        /// `getsockname` or `fcntl(O_NONBLOCK)`.
        syscall: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The accepting thread could not be started.
    #[error("metrics listener on {addr}: starting its thread: {source}")]
    Thread {
        /// The address asked for.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Why a scrape got no metrics (answered with 503 and this text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// The supervisor's control channel is closed.
    #[error("the relay is shutting down")]
    ShuttingDown,
    /// The supervisor did not answer `command` before its time or the exchange's ran out.
    #[error("the relay did not answer {command} in time")]
    NoAnswer {
        /// The request asked.
        command: &'static str,
    },
    /// The supervisor refused `command`.
    #[error("the relay refused {command}: {reason}")]
    Refused {
        /// The request asked.
        command: &'static str,
        /// What it said.
        reason: String,
    },
    /// The supervisor answered `command` with another kind of reply.
    #[error("unexpected answer to {command}")]
    Unexpected {
        /// The request asked.
        command: &'static str,
    },
}

/// The listening socket and its thread; dropping it stops the thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl MetricsServer {
    /// Listens on `addr` and serves scrapes with the answers of `requests` (the supervisor's
    /// control channel). Warns when `addr` is not a loopback address.
    pub fn start(addr: SocketAddr, requests: Sender<Pending>) -> Result<Self, MetricsError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        let failed = |syscall| {
            move |source| MetricsError::Listener {
                addr,
                syscall,
                source,
            }
        };
        let local = listener.local_addr().map_err(failed("getsockname"))?;
        // Accepting never blocks: the thread waits in poll(2), so that it can keep deadlines.
        listener
            .set_nonblocking(true)
            .map_err(failed("fcntl(O_NONBLOCK)"))?;
        if !addr.ip().is_loopback() {
            log::warn!(
                "metrics on {addr}, which is not a loopback address: anyone who can reach it                  reads the relay's rules, interfaces and counters; prefer 127.0.0.1 (or ::1)                  behind a scraper on this host, or a firewall rule"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(&listener, &requests, &stopped))
            .map_err(|source| MetricsError::Thread { addr, source })?;
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
        // Wake the thread from poll() so it sees the flag now rather than within a tick.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        // Only the wake-up matters, not the connection: if it fails, the thread still sees the
        // flag within a tick.
        if let Err(error) = TcpStream::connect_timeout(&wake, Duration::from_millis(200)) {
            log::debug!("metrics: waking the listener to stop: {error}");
        }
    }
}

/// Accepts connections until `stop`, giving each a place and a thread, and keeps the
/// deadlines.
fn accept_loop(listener: &TcpListener, requests: &Sender<Pending>, stop: &AtomicBool) {
    let connections = Arc::new(Connections::default());
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = connections
            .enforce(now)
            .map_or(TICK, |next| next.saturating_duration_since(now).min(TICK));
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        if let Err(errno) = poll(&mut fds, timeout) {
            log::debug!("metrics: poll: {errno}");
            continue;
        }
        // Every connection waiting in the backlog, so that a burst is not served a tick apart.
        loop {
            match listener.accept() {
                Ok((stream, _)) => admit(stream, &connections, requests),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Out of descriptors or memory: let it pass rather than spin.
                    log::debug!("metrics: accept: {error}");
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
}

/// Serves `stream` on a thread of its own if it gets a place, else tells it why not.
fn admit(stream: TcpStream, connections: &Arc<Connections>, requests: &Sender<Pending>) {
    let place = match connections.admit(&stream, Instant::now()) {
        Ok(Some(place)) => place,
        Ok(None) => return turn_away(stream),
        Err(error) => return log::debug!("metrics: cannot keep a connection: {error}"),
    };
    let requests = requests.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-conn".into())
        .spawn(move || serve(stream, &place, &requests));
    if let Err(error) = spawned {
        log::debug!("metrics: no thread for a connection, closing it: {error}");
    }
}

/// Answers a connection for which there is no place with 503, without waiting for it.
fn turn_away(mut stream: TcpStream) {
    let answer = http::plain(
        503,
        "Service Unavailable",
        "every metrics connection is being answered; try again
",
        true,
    );
    // A fresh socket's send buffer takes the short answer at once; a peer that cannot take it
    // does not get to hold this thread.
    if let Err(error) = stream
        .set_nonblocking(true)
        .and_then(|()| stream.write_all(&answer))
    {
        log::debug!("metrics: turning a connection away: {error}");
    }
}

/// One exchange: the request head, the answer, the close. Blocking I/O; the accepting thread
/// shuts the socket down at the deadline or to make room.
fn serve(mut stream: TcpStream, place: &Place, requests: &Sender<Pending>) {
    let answer = match http::read_head(&mut stream) {
        Ok(head) => {
            place.asked();
            let deadline = place
                .deadline()
                .unwrap_or_else(|| Instant::now() + connections::EXCHANGE_DEADLINE);
            http::respond(&head, || {
                fetch(requests, deadline).map(|s| exposition::render(&s))
            })
        }
        Err(error) => match http::refusal(&error) {
            Some(answer) => answer,
            None => return,
        },
    };
    // A scraper that went away or ran out of time misses this answer and asks again.
    if let Err(error) = stream.write_all(&answer) {
        log::debug!("metrics: the answer was not delivered: {error}");
    }
    // The stream is dropped (and closed) next anyway; shutting it down only ends it sooner.
    if let Err(error) = stream.shutdown(Shutdown::Both) {
        log::debug!("metrics: closing a connection: {error}");
    }
}

/// The answer the endpoint gives to a connection that sent `request`, with `metrics` standing in
/// for what the supervisor's counters render to: the request head's reading and routing on their
/// own, public for the fuzz target of the request head.
pub fn answer_request(mut request: &[u8], metrics: &str) -> Vec<u8> {
    match http::read_head(&mut request) {
        Ok(head) => http::respond(&head, || Ok::<_, FetchError>(metrics.to_owned())),
        Err(error) => http::refusal(&error).unwrap_or_default(),
    }
}

/// Asks the supervisor for everything a scrape shows, by `deadline`.
fn fetch(requests: &Sender<Pending>, deadline: Instant) -> Result<Snapshot, FetchError> {
    let ask = |command: Command, name: &'static str| -> Result<Reply, FetchError> {
        let (reply, answer) = mpsc::channel();
        let request = Request {
            version: VERSION,
            command,
        };
        requests
            .send(Pending { request, reply })
            .map_err(|_| FetchError::ShuttingDown)?;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(ANSWER_TIMEOUT);
        match answer.recv_timeout(wait) {
            Ok(Response {
                ok: true,
                result: Some(reply),
                ..
            }) => Ok(reply),
            Ok(Response { error, .. }) => Err(FetchError::Refused {
                command: name,
                reason: error.unwrap_or_else(|| "no reason given".into()),
            }),
            Err(_) => Err(FetchError::NoAnswer { command: name }),
        }
    };
    let Reply::Stats(stats) = ask(Command::Stats, "stats")? else {
        return Err(FetchError::Unexpected { command: "stats" });
    };
    let Reply::Workers {
        workers, consume, ..
    } = ask(Command::Workers, "workers")?
    else {
        return Err(FetchError::Unexpected { command: "workers" });
    };
    let Reply::Rules {
        generation,
        rules,
        waiting,
        interfaces: links,
    } = ask(Command::List, "list")?
    else {
        return Err(FetchError::Unexpected { command: "list" });
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
        consume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_scrape_over_tcp_is_answered_from_the_channel() {
        let (tx, rx) = mpsc::channel::<Pending>();
        let server = MetricsServer::start(([127, 0, 0, 1], 0).into(), tx).expect("listening");
        std::thread::spawn(move || {
            for pending in rx {
                let reply = match pending.request.command {
                    Command::Stats => Reply::Stats(Default::default()),
                    Command::Workers => Reply::Workers {
                        workers: vec![],
                        waiting: vec![],
                        consume: vec![],
                    },
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
