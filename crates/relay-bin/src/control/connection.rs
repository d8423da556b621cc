//! One control connection: its seat among the [`super::Limits::max_connections`], its
//! credentials, and its request lines, each read by a deadline into a bounded buffer and
//! answered one by one.

use super::proto::{self, Response};
use super::{Limits, Pending};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// One of the [`Limits::max_connections`] connections being served; given back on drop (also
/// when the connection's thread could not be started).
pub(super) struct Seat(Arc<AtomicUsize>);

impl Seat {
    pub(super) fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Seat> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
            (count < max).then_some(count + 1)
        })
        .ok()
        .map(|_| Seat(Arc::clone(open)))
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers a connection over the cap with the reason, and closes it. Runs on the accepting
/// thread, so the write must not wait: a fresh socket's buffer takes one short line.
pub(super) fn turn_away(mut stream: UnixStream, max: usize) {
    log::warn!("control: refused a connection: {max} connections are open already");
    if let Err(error) = stream.set_nonblocking(true) {
        // Still answer: a fresh socket's buffer takes the line without waiting.
        log::debug!("control: cannot make a refused connection non-blocking: {error}");
    }
    last_answer(
        &mut stream,
        &Response::refused(format!(
            "too many control connections ({max} are open): close one or try again later"
        )),
    );
}

/// Reads and throws away the rest of a line in the reader's own buffer-sized chunks, so a line
/// of any length costs no memory; says whether the line ended (`false`: the stream did).
fn discard_line<R: BufRead>(reader: &mut R) -> io::Result<bool> {
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if buffer.is_empty() {
            return Ok(false);
        }
        match buffer.iter().position(|&byte| byte == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(true);
            }
            None => {
                let length = buffer.len();
                reader.consume(length);
            }
        }
    }
}

/// A stream whose reads all end by one deadline, set per request line: each read waits only for
/// what is left of it, so a client that trickles a byte at a time gets no more time than one
/// that sends nothing.
struct LineDeadline {
    stream: UnixStream,
    deadline: Instant,
}

impl Read for LineDeadline {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request line's deadline passed",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buffer)
    }
}

/// Whether a read or write failed because the connection's timeout expired.
fn timed_out(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub(super) fn serve(stream: UnixStream, owner: u32, requests: &Sender<Pending>, limits: &Limits) {
    let idle = limits.idle_timeout;
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    // A client that stops reading its answers blocks the writes: they time out too.
    if stream.set_write_timeout(Some(idle)).is_err() {
        return;
    }
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
        last_answer(
            &mut writer,
            &Response::refused(format!(
                "permission denied: only root or uid {owner} may control this relay"
            )),
        );
        return;
    }
    let mut reader = BufReader::new(LineDeadline {
        stream,
        deadline: Instant::now() + idle,
    });
    loop {
        reader.get_mut().deadline = Instant::now() + idle;
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(proto::MAX_REQUEST as u64 + 1)
            .read_until(b'\n', &mut line)
            .and_then(|read| {
                if line.len() > proto::MAX_REQUEST && !line.ends_with(b"\n") {
                    // Skip the rest of the oversized line so the next request starts clean.
                    discard_line(&mut reader).map(|_| read)
                } else {
                    Ok(read)
                }
            });
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if timed_out(&error) => {
                last_answer(
                    &mut writer,
                    &Response::refused(format!(
                        "closing the connection: no whole request line within {} s",
                        idle.as_secs_f64()
                    )),
                );
                return;
            }
            Err(_) => return,
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let response = match proto::parse_request(line.trim_ascii_end()) {
            Err(error) => Response::refused(error.refusal()),
            Ok(request) => ask(requests, request, limits.answer_timeout),
        };
        if answer(&mut writer, &response).is_err() {
            return;
        }
    }
}

/// Passes `request` to the supervisor and waits at most `timeout` for its answer.
fn ask(requests: &Sender<Pending>, request: proto::Request, timeout: Duration) -> Response {
    let (reply, answer) = mpsc::channel();
    if requests.send(Pending { request, reply }).is_err() {
        return Response::refused("the relay is shutting down");
    }
    match answer.recv_timeout(timeout) {
        Ok(response) => response,
        Err(RecvTimeoutError::Timeout) => Response::refused(format!(
            "the relay did not answer within {} s; the request may still be carried out: \
             check with `ctl list` or `ctl workers`",
            timeout.as_secs_f64()
        )),
        Err(RecvTimeoutError::Disconnected) => Response::refused("the relay is shutting down"),
    }
}

/// Sends the answer the connection closes with. A client that already went cannot be told; that
/// is no fault of the relay's, so it is only logged at debug level.
fn last_answer(writer: &mut UnixStream, response: &Response) {
    if let Err(error) = answer(writer, response) {
        log::debug!("control: the closing answer was not delivered: {error}");
    }
}

fn answer(writer: &mut UnixStream, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discarding_a_line_stops_after_its_newline() {
        let mut reader = BufReader::with_capacity(4, io::Cursor::new(b"0123456789\nnext".to_vec()));
        assert!(discard_line(&mut reader).expect("a cursor does not fail"));
        let mut rest = String::new();
        reader.read_to_string(&mut rest).expect("UTF-8");
        assert_eq!(rest, "next");
        let mut reader = BufReader::with_capacity(4, io::Cursor::new(vec![b'x'; 10]));
        assert!(!discard_line(&mut reader).expect("a cursor does not fail"));
    }
}
