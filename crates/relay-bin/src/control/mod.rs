//! The control socket: a Unix stream socket that takes [`proto`] requests from operators.
//!
//! The socket is created owner-only (0600) in a directory only its owner can write to, and every
//! connection is checked again with the peer's credentials (`SO_PEERCRED`): only root or the
//! relay's own user may talk to it. Each connection gets a thread that reads request lines and
//! passes them to the supervisor's loop, which owns all state and answers one request at a time.
//!
//! What a client can cost the relay is bounded whatever it sends: at most [`MAX_CONNECTIONS`]
//! connections are served at once (the next one is told why and closed), a connection that does
//! not send a whole request line within [`IDLE_TIMEOUT`] is closed (however it trickles the
//! bytes: the time is the line's, not each read's), a request the supervisor has not answered
//! within [`ANSWER_TIMEOUT`] is answered with an error, and a line longer than
//! [`proto::MAX_REQUEST`] is refused while the rest of it is read and thrown away in small
//! chunks, never held in memory.
//!
//! A socket file left by a relay that died is replaced; anything else at the path (a regular
//! file, a directory, a link) is left alone and named in the error.

mod connection;
pub mod proto;

use connection::{Seat, serve, turn_away};
use proto::{Request, Response};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::Sender;
use std::time::Duration;

/// The default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/fanout-relay/control.sock";

/// A connection that does not send a whole request line within this long of the previous answer
/// (or of connecting), or does not take its answer for this long, is closed, so neither a
/// forgotten client nor one trickling bytes keeps a thread of the relay.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a connection waits for the supervisor's answer to a request. The supervisor
/// answers a change once every worker confirmed it, which takes seconds at worst; past this the
/// client is told that the answer did not come (the change may still be carried out).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections served at once; each costs a thread and up to [`proto::MAX_REQUEST`] bytes of
/// buffer. The next one is answered with an error saying so and closed.
pub const MAX_CONNECTIONS: usize = 64;

/// What the control socket allows its clients: [`IDLE_TIMEOUT`], [`ANSWER_TIMEOUT`] and
/// [`MAX_CONNECTIONS`] unless a test asks for less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may take to send a whole request line.
    pub idle_timeout: Duration,
    /// How long a connection waits for the supervisor's answer.
    pub answer_timeout: Duration,
    /// How many connections are served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: IDLE_TIMEOUT,
            answer_timeout: ANSWER_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// A request from a connection, with where its answer goes.
#[derive(Debug)]
pub struct Pending {
    /// The request.
    pub request: Request,
    /// Where the supervisor sends the answer.
    pub reply: Sender<Response>,
}

/// Sends `response` to the connection waiting for it. A connection that has gone (its client
/// closed it or was idle too long) has no one left to tell: that is logged, not an error.
pub fn respond(reply: &Sender<Response>, response: Response) {
    if reply.send(response).is_err() {
        log::debug!("control: the client left before its answer was ready");
    }
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("control socket {path}: {what}: {source}")]
pub struct ControlError {
    /// The socket path.
    pub path: PathBuf,
    /// What was being done.
    pub what: &'static str,
    /// The error.
    pub source: io::Error,
}

/// The listening socket; the socket file is removed on drop.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Creates the socket at `path` and starts accepting connections, whose requests are sent
    /// to `requests`. A live relay already listening there is an error; a stale socket file is
    /// replaced; anything but a socket at the path is an error, and left where it is.
    pub fn start(path: &Path, requests: Sender<Pending>) -> Result<Self, ControlError> {
        Self::start_with(path, requests, Limits::default())
    }

    /// [`ControlServer::start`] with other limits.
    pub fn start_with(
        path: &Path,
        requests: Sender<Pending>,
        limits: Limits,
    ) -> Result<Self, ControlError> {
        let fail = |what, source| ControlError {
            path: path.to_owned(),
            what,
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|error| fail("creating its directory", error))?;
        }
        remove_stale_socket(path).map_err(|error| fail("replacing what is at its path", error))?;
        let listener = UnixListener::bind(path).map_err(|error| fail("bind", error))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|error| fail("chmod 0600", error))?;
        let owner = nix::unistd::geteuid().as_raw();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let open = Arc::new(AtomicUsize::new(0));
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let Some(seat) = Seat::take(&open, limits.max_connections) else {
                        turn_away(stream, limits.max_connections);
                        continue;
                    };
                    let requests = requests.clone();
                    let spawned = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || {
                            serve(stream, owner, &requests, &limits);
                            drop(seat);
                        });
                    // The closure, with the connection and its seat, is dropped: the client
                    // sees the connection close.
                    if let Err(error) = spawned {
                        log::warn!("control: cannot start a connection's thread: {error}");
                    }
                }
            })
            .map_err(|error| fail("starting its thread", error))?;
        Ok(ControlServer {
            path: path.to_owned(),
        })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            log::warn!(
                "control socket {}: cannot remove it: {error}",
                self.path.display()
            );
        }
    }
}

/// Removes what is at `path` if it is a socket no relay answers on (one left by a relay that
/// died). A live socket, and anything that is not a socket (the path may be mistyped, or name
/// someone's file), is an error naming what is there; a link is not followed.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let kind = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata.file_type(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if !kind.is_socket() {
        let what = if kind.is_file() {
            "a regular file"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symbolic link"
        } else {
            "not a socket"
        };
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{what} is there, not a socket: it is left alone; remove it or choose another \
                 relay.control_socket"
            ),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another relay answers there",
        ));
    }
    std::fs::remove_file(path)
}

/// Sends `request` to the relay listening at `path` and returns its answer.
pub fn call(path: &Path, request: &Request) -> io::Result<Response> {
    let mut stream = UnixStream::connect(path)?;
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    // A relay that refuses the connection answers before reading and closes, so the write may
    // fail with a broken pipe while its answer waits to be read: read it anyway.
    let written = stream.write_all(&line);
    let mut reader = BufReader::new(stream);
    let mut answer = Vec::new();
    let read = reader.read_until(b'\n', &mut answer);
    if answer.is_empty() {
        written?;
        read?;
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the relay closed the connection without answering",
        ));
    }
    serde_json::from_slice(&answer)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

#[cfg(test)]
mod tests {
    use super::proto::{Command, Reply, VERSION};
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn answers_requests_and_survives_garbage() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("sub").join("control.sock");
        let (tx, rx) = mpsc::channel::<Pending>();
        let server = ControlServer::start(&path, tx).expect("socket created");
        let mode = std::fs::metadata(&path)
            .expect("socket exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::thread::spawn(move || {
            for pending in rx {
                respond(
                    &pending.reply,
                    Response::ok(Reply::Workers {
                        workers: vec![],
                        waiting: vec![],
                        consume: vec![],
                    }),
                );
            }
        });
        let mut stream = UnixStream::connect(&path).expect("connects");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut exchange = |line: &[u8]| -> Response {
            stream.write_all(line).expect("write");
            let mut answer = Vec::new();
            reader.read_until(b'\n', &mut answer).expect("answer");
            serde_json::from_slice(&answer).expect("a response")
        };
        assert!(!exchange(b"garbage\n").ok);
        let mut huge = vec![b'x'; proto::MAX_REQUEST + 10];
        huge.push(b'\n');
        let response = exchange(&huge);
        assert!(!response.ok);
        assert!(response.error.unwrap_or_default().contains("longer"));
        assert!(exchange(b"{\"version\":1,\"command\":\"workers\"}\n").ok);
        let request = Request {
            version: VERSION,
            command: Command::Workers,
        };
        assert!(call(server.path(), &request).expect("answered").ok);
        assert!(
            ControlServer::start(&path, mpsc::channel().0).is_err(),
            "in use"
        );
        drop(server);
        assert!(!path.exists());
    }

    /// A server at a fresh path whose requests are all answered with an empty worker list.
    fn answering_server(limits: Limits) -> (tempfile::TempDir, ControlServer) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (tx, rx) = mpsc::channel::<Pending>();
        let server = ControlServer::start_with(&dir.path().join("control.sock"), tx, limits)
            .expect("socket created");
        std::thread::spawn(move || {
            for pending in rx {
                respond(
                    &pending.reply,
                    Response::ok(Reply::Workers {
                        workers: vec![],
                        waiting: vec![],
                        consume: vec![],
                    }),
                );
            }
        });
        (dir, server)
    }

    /// A client connection whose reads and writes give up after 20 s instead of hanging.
    fn client(path: &Path) -> (UnixStream, BufReader<UnixStream>) {
        let stream = UnixStream::connect(path).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("SO_RCVTIMEO");
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .expect("SO_SNDTIMEO");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        (stream, reader)
    }

    fn read_response(reader: &mut BufReader<UnixStream>) -> Option<Response> {
        let mut line = Vec::new();
        reader
            .read_until(b'\n', &mut line)
            .expect("a line or the end");
        (!line.is_empty()).then(|| serde_json::from_slice(&line).expect("a response"))
    }

    const WORKERS: &[u8] = b"{\"version\":1,\"command\":\"workers\"}\n";

    #[test]
    fn a_connection_over_the_cap_is_told_why_and_closed() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let (_dir, server) = answering_server(limits);
        let mut open = Vec::new();
        for _ in 0..limits.max_connections {
            let (mut stream, mut reader) = client(server.path());
            stream.write_all(WORKERS).expect("write");
            assert!(read_response(&mut reader).is_some_and(|r| r.ok));
            open.push((stream, reader));
        }
        let (_stream, mut reader) = client(server.path());
        let refusal = read_response(&mut reader).expect("an answer before the close");
        assert!(!refusal.ok);
        let reason = refusal.error.unwrap_or_default();
        assert!(
            reason.contains("too many control connections (2 are open)"),
            "{reason}"
        );
        assert_eq!(read_response(&mut reader), None, "closed after the answer");
        let request = Request {
            version: VERSION,
            command: Command::Workers,
        };
        let answer = call(server.path(), &request).expect("answered");
        assert!(!answer.ok, "the client reads the refusal: {answer:?}");

        // The connections already served go on.
        let (stream, reader) = &mut open[0];
        stream.write_all(WORKERS).expect("write");
        assert!(read_response(reader).is_some_and(|r| r.ok));

        // A closed connection gives its seat back (once its thread saw the end of the stream).
        drop(open.pop());
        let mut served = false;
        for _ in 0..200 {
            if call(server.path(), &request).is_ok_and(|answer| answer.ok) {
                served = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(served, "no seat came free after a connection closed");
    }

    #[test]
    fn a_silent_connection_is_told_why_and_closed() {
        let (_dir, server) = answering_server(Limits {
            idle_timeout: Duration::from_millis(100),
            ..Limits::default()
        });
        let (mut stream, mut reader) = client(server.path());
        // A request answered first: the timeout is about silence, not the connection's age.
        stream.write_all(WORKERS).expect("write");
        assert!(read_response(&mut reader).is_some_and(|r| r.ok));
        let closing = read_response(&mut reader).expect("an answer before the close");
        assert!(!closing.ok);
        let reason = closing.error.unwrap_or_default();
        assert!(
            reason.contains("no whole request line within 0.1 s"),
            "{reason}"
        );
        assert_eq!(read_response(&mut reader), None, "closed after the answer");
    }

    #[test]
    fn a_client_trickling_a_line_is_closed_at_the_line_deadline() {
        let deadline = Duration::from_millis(500);
        let (_dir, server) = answering_server(Limits {
            idle_timeout: deadline,
            max_connections: 1,
            ..Limits::default()
        });
        let (mut stream, mut reader) = client(server.path());
        let start = Instant::now();
        // A byte every 100 ms, never a newline: each read finds data long before a per-read
        // timeout would fire, so only a deadline for the whole line ends it.
        let trickle = std::thread::spawn(move || {
            for _ in 0..100 {
                if stream.write_all(b"{").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let closing = read_response(&mut reader).expect("an answer before the close");
        let took = start.elapsed();
        assert!(!closing.ok);
        assert!(
            closing
                .error
                .unwrap_or_default()
                .contains("no whole request line within 0.5 s")
        );
        assert!(
            took >= deadline && took < deadline * 4,
            "closed after {took:?}"
        );
        trickle.join().expect("the trickling client ends");
        // Its seat (the only one) is free again for a client that asks properly.
        let request = Request {
            version: VERSION,
            command: Command::Workers,
        };
        let mut served = false;
        for _ in 0..100 {
            if call(server.path(), &request).is_ok_and(|answer| answer.ok) {
                served = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(served, "the seat was not given back");
    }

    #[test]
    fn the_wait_for_the_supervisors_answer_is_bounded() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (tx, rx) = mpsc::channel::<Pending>();
        let limits = Limits {
            answer_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let server = ControlServer::start_with(&dir.path().join("control.sock"), tx, limits)
            .expect("socket created");
        // A supervisor that takes requests and never answers them.
        let held = std::thread::spawn(move || rx.iter().collect::<Vec<_>>());
        let request = Request {
            version: VERSION,
            command: Command::Workers,
        };
        let start = Instant::now();
        let answer = call(server.path(), &request).expect("answered");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(!answer.ok);
        let reason = answer.error.unwrap_or_default();
        assert!(reason.contains("did not answer within 0.2 s"), "{reason}");
        drop(server);
        drop(held);
    }

    #[test]
    fn only_a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("control.sock");
        // A regular file where the socket goes: left alone, and the error says what it is.
        std::fs::write(&path, b"someone's notes\n").expect("a file");
        let error = ControlServer::start(&path, mpsc::channel().0).expect_err("not a socket");
        let text = error.to_string();
        assert!(
            text.contains("a regular file is there, not a socket: it is left alone"),
            "{text}"
        );
        assert_eq!(
            std::fs::read(&path).expect("still there"),
            b"someone's notes\n"
        );
        // A link to a socket is not followed either.
        std::fs::remove_file(&path).expect("removed");
        let target = dir.path().join("elsewhere.sock");
        let stale = UnixListener::bind(&target).expect("a socket");
        drop(stale);
        std::os::unix::fs::symlink(&target, &path).expect("a link");
        let error = ControlServer::start(&path, mpsc::channel().0).expect_err("a link");
        assert!(error.to_string().contains("a symbolic link"), "{error}");
        assert!(target.exists(), "the link's target is left alone");
        // A socket nobody answers on (its relay died) is replaced.
        std::fs::remove_file(&path).expect("removed");
        drop(UnixListener::bind(&path).expect("a socket"));
        let server = ControlServer::start(&path, mpsc::channel().0).expect("replaced");
        drop(server);
    }
}
