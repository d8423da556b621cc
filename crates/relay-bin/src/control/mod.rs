//! The control socket: a Unix stream socket that takes [`proto`] requests from operators.
//!
//! The socket is created owner-only (0600) in a directory only its owner can write to, and every
//! connection is checked again with the peer's credentials (`SO_PEERCRED`): only root or the
//! relay's own user may talk to it. Each connection gets a thread that reads request lines and
//! passes them to the supervisor's loop, which owns all state and answers one request at a time.

pub mod proto;

use proto::{Request, Response};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};

/// The default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/fanout-relay/control.sock";

/// A request from a connection, with where its answer goes.
#[derive(Debug)]
pub struct Pending {
    /// The request.
    pub request: Request,
    /// Where the supervisor sends the answer.
    pub reply: Sender<Response>,
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
    /// replaced.
    pub fn start(path: &Path, requests: Sender<Pending>) -> Result<Self, ControlError> {
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
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(fail(
                    "in use",
                    io::Error::new(io::ErrorKind::AddrInUse, "another relay answers there"),
                ));
            }
            std::fs::remove_file(path).map_err(|error| fail("removing a stale socket", error))?;
        }
        let listener = UnixListener::bind(path).map_err(|error| fail("bind", error))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|error| fail("chmod 0600", error))?;
        let owner = nix::unistd::geteuid().as_raw();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let requests = requests.clone();
                    let _ = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || serve(stream, owner, &requests));
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
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(stream: UnixStream, owner: u32, requests: &Sender<Pending>) {
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials);
    let allowed = peer
        .as_ref()
        .is_ok_and(|creds| creds.uid() == 0 || creds.uid() == owner);
    if !allowed {
        let who = peer.map_or_else(
            |_| "unknown".to_owned(),
            |creds| format!("uid {}", creds.uid()),
        );
        log::warn!("control: refused a connection from {who}");
        let _ = answer(
            &mut writer,
            &Response::refused(format!(
                "permission denied: only root or uid {owner} may control this relay"
            )),
        );
        return;
    }
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(proto::MAX_REQUEST as u64 + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() > proto::MAX_REQUEST && !line.ends_with(b"\n") {
            // Skip the rest of the oversized line so the next request starts clean.
            let mut rest = Vec::new();
            if reader.read_until(b'\n', &mut rest).is_err() {
                return;
            }
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let response = match proto::parse_request(line.trim_ascii_end()) {
            Err(error) => Response::refused(error),
            Ok(request) => {
                let (reply, answer_rx) = mpsc::channel();
                if requests.send(Pending { request, reply }).is_err() {
                    Response::refused("the relay is shutting down")
                } else {
                    answer_rx
                        .recv()
                        .unwrap_or_else(|_| Response::refused("the relay is shutting down"))
                }
            }
        };
        if answer(&mut writer, &response).is_err() {
            return;
        }
    }
}

fn answer(writer: &mut UnixStream, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)
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
                let _ = pending
                    .reply
                    .send(Response::ok(Reply::Workers { workers: vec![] }));
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
}
