//! The messages between the supervisor and its workers, one JSON object per line.
//!
//! Each worker's standard input is one end of a Unix stream socket pair; the supervisor holds the
//! other. The receive ring sockets travel over the same socket with `SCM_RIGHTS` before the first
//! line, so the supervisor keeps them (and with them the fanout group's membership order) while
//! workers come and go; the transmit rings and sockets of outputs travel attached to the
//! [`ToWorker::Outputs`] lines that describe them, before the start or change that needs them.

use crate::counters::WorkerCounters;
use relay_rules::{InterfaceFacts, Rule};
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, Read, Write};

/// Longest line either side accepts: a table of 100,000 rules fits with room to spare.
pub const MAX_LINE: usize = 256 << 20;

/// Supervisor to worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Everything a worker needs before it may serve a packet; answered with [`FromWorker::Ready`].
    Start(Box<WorkerStart>),
    /// Apply a change to the table; answered with [`FromWorker::Applied`].
    Update {
        /// Generation of the set after the change.
        generation: u64,
        /// Names of rules to remove.
        remove: Vec<String>,
        /// Rules to add.
        add: Vec<Rule>,
        /// Facts of interfaces the worker may not know yet.
        interfaces: Vec<InterfaceFacts>,
    },
    /// Replace the whole table (a resync after drift); answered with [`FromWorker::Applied`].
    Table {
        /// Generation of the set.
        generation: u64,
        /// Every rule the worker holds.
        rules: Vec<Rule>,
        /// Facts of every interface the rules name.
        interfaces: Vec<InterfaceFacts>,
    },
    /// Transmit rings and sockets for outputs of rules the worker is about to hold, one
    /// descriptor each attached to the line in this order (see [`send_with_fds`]). Not
    /// answered: the change that needs them follows.
    Outputs {
        /// What each descriptor is.
        outputs: Vec<crate::outputs::HandedOutput>,
    },
    /// Receive rings to serve from now on, one descriptor each attached to the line in this
    /// order (a new input interface), and the interfaces whose rings to let go (deleted ones).
    /// Not answered: the change that needs them follows.
    Rings {
        /// Each ring's [`fanout_core::RingDescriptor`] in its text form.
        rings: Vec<String>,
        /// Indices of interfaces whose rings the worker closes.
        drop: Vec<u32>,
    },
    /// Send the counters now; answered with [`FromWorker::Counters`].
    Counters,
    /// Finish the batch in hand, send the final counters and exit.
    Stop,
    /// Damage the table without changing its generation, to test drift repair. Only obeyed by
    /// workers built with the `drift-test` feature.
    CorruptTable,
    /// Make a system call outside the worker's seccomp allow list, to test that the kernel
    /// kills it and the supervisor replaces it. Only obeyed by workers built with the
    /// `drift-test` feature.
    ForbiddenSyscall,
}

/// Worker to supervisor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The table is built and the rings are mapped: the worker serves traffic from now on.
    Ready {
        /// Generation of the table the worker built.
        generation: u64,
        /// Content checksum of that table, for the supervisor to compare with its own.
        checksum: u64,
    },
    /// The table now has `generation` and `checksum` (after an update or a resync).
    Applied {
        /// Generation of the table.
        generation: u64,
        /// Content checksum of the table.
        checksum: u64,
    },
    /// The worker's counters since it started, and the table it serves.
    Counters(Box<WorkerCounters>),
    /// The worker could not start; it exits after this message.
    Failed {
        /// What went wrong, for the log.
        error: String,
    },
}

/// The start message: the worker's identity, its share of the rules, the interface facts the
/// rules were checked against, and the geometry of the rings it is handed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerStart {
    /// The CPU the worker pins itself to.
    pub cpu: u32,
    /// Generation of the rule set.
    pub generation: u64,
    /// The rules this worker holds.
    pub rules: Vec<Rule>,
    /// Facts of every interface the rules name.
    pub interfaces: Vec<InterfaceFacts>,
    /// Geometry of the rings.
    pub ring: crate::config::RingSection,
    /// Under shard placement, this worker's shards: it holds only the rules whose
    /// `relay_rules::shard(group, port, count)` is one of `indices`.
    #[serde(default)]
    pub shard: Option<ShardEntry>,
    /// This worker's share of each rule's storm guard limits: under replicate placement the
    /// fanout members it serves of those of its class (any of them may receive a rule's
    /// packets), under shard placement the whole (only the rule's shard does).
    #[serde(default)]
    pub guard_share: relay_rules::stream::Share,
    /// The user the worker becomes before it serves; `None`: it keeps the supervisor's (which
    /// is then not root, or cannot switch users).
    #[serde(default)]
    pub user: Option<WorkerUser>,
}

/// A user a worker runs as, resolved by the supervisor (the worker cannot read the user
/// database once boxed in).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerUser {
    /// Its name, for messages.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid, the worker's only group.
    pub gid: u32,
}

/// One worker's shards of the rules: the fanout members it serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardEntry {
    /// The shards (fanout members) this worker serves, ascending.
    pub indices: Vec<u32>,
    /// How many shards (fanout members) there are.
    pub count: u32,
}

impl ShardEntry {
    /// The shards as relay-rules takes them; `None` if the entry names no shard or one past
    /// `count` (a message the supervisor would never send).
    pub fn to_set(&self) -> Option<relay_rules::shard::ShardSet> {
        relay_rules::shard::ShardSet::new(self.count, self.indices.iter().copied())
    }
}

/// Writes one message as a line.
pub fn send<W: Write, M: Serialize>(writer: &mut W, message: &M) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.flush()
}

/// Writes one message as a line with `fds` attached to its first byte (at most
/// [`fanout_core::handoff::MAX_FDS`]). `stream` may have a write timeout: like `write_all`, an
/// expired one is an error, and the line may then be half written.
pub fn send_with_fds<M: Serialize>(
    stream: &mut std::os::unix::net::UnixStream,
    message: &M,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    use std::os::fd::AsFd;
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    let sent = loop {
        match fanout_core::handoff::send_with_fds(stream.as_fd(), &line, fds) {
            Ok(sent) => break sent,
            Err(fanout_core::HandoffError::Send {
                errno: nix::errno::Errno::EINTR,
            }) => {}
            Err(fanout_core::HandoffError::Send { errno }) => return Err(errno.into()),
            Err(other) => return Err(io::Error::other(other)),
        }
    };
    stream.write_all(&line[sent..])?;
    stream.flush()
}

/// Reads one message; `Ok(None)` at end of stream. A line that is too long or not a message is
/// an error that says so.
pub fn receive<R: BufRead, M: for<'de> Deserialize<'de>>(reader: &mut R) -> io::Result<Option<M>> {
    let mut line = Vec::new();
    let read = reader
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message longer than {MAX_LINE} bytes"),
        ));
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Most bytes of replies an [`Outbox`] holds unwritten: two of the longest lines. Past it the
/// reader is not reading, and the writer says so instead of growing without bound.
pub const MAX_OUTBOX: usize = 2 * MAX_LINE;

/// Messages waiting to be written to a non-blocking stream, so that a reply of any size gets
/// through without the writer ever blocking: [`Outbox::push`] queues a line and
/// [`Outbox::write_to`] writes what the stream takes now; the writer calls it again when the
/// stream is writable (`poll` with POLLOUT) until [`Outbox::is_empty`].
#[derive(Debug)]
pub struct Outbox {
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    written: usize,
    /// Most bytes held unwritten.
    limit: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::with_limit(MAX_OUTBOX)
    }
}

impl Outbox {
    /// An outbox that holds at most `limit` bytes unwritten.
    pub fn with_limit(limit: usize) -> Self {
        Outbox {
            pending: Vec::new(),
            written: 0,
            limit,
        }
    }

    /// Queues `message` as a line.
    pub fn push<M: Serialize>(&mut self, message: &M) -> io::Result<()> {
        if self.written == self.pending.len() {
            self.pending.clear();
            self.written = 0;
        }
        let before = self.pending.len();
        serde_json::to_writer(&mut self.pending, message).map_err(io::Error::other)?;
        self.pending.push(b'\n');
        if self.pending.len() - self.written > self.limit {
            self.pending.truncate(before);
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("more than {} bytes of messages wait unread", self.limit),
            ));
        }
        Ok(())
    }

    /// Writes what `writer` takes without blocking; `Ok` also when some is left for later.
    pub fn write_to<W: Write>(&mut self, writer: &mut W) -> io::Result<()> {
        while self.written < self.pending.len() {
            match writer.write(&self.pending[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.pending.clear();
        self.written = 0;
        Ok(())
    }

    /// Whether everything queued was written.
    pub fn is_empty(&self) -> bool {
        self.written == self.pending.len()
    }
}

/// Collects bytes from a non-blocking stream and hands out the complete lines as messages.
#[derive(Debug, Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Reads what is available from `reader` and returns the messages completed by it (possibly
    /// none); `Ok(None)` at end of stream.
    pub fn read_from<R: Read, M: for<'de> Deserialize<'de>>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<Option<Vec<M>>> {
        let mut chunk = [0u8; 4096];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    self.pending.extend_from_slice(&chunk[..n]);
                    if self.pending.len() > MAX_LINE {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("message longer than {MAX_LINE} bytes"),
                        ));
                    }
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        let mut messages = Vec::new();
        while let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let message = serde_json::from_slice(&line)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            messages.push(message);
        }
        Ok(Some(messages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_lines() {
        let mut buffer = Vec::new();
        send(&mut buffer, &ToWorker::Counters).expect("write to a Vec");
        send(
            &mut buffer,
            &FromWorker::Ready {
                generation: 7,
                checksum: 0xfeed,
            },
        )
        .expect("write to a Vec");
        let mut reader = io::Cursor::new(buffer);
        let first: Option<ToWorker> = receive(&mut reader).expect("valid line");
        assert_eq!(first, Some(ToWorker::Counters));
        let second: Option<FromWorker> = receive(&mut reader).expect("valid line");
        assert_eq!(
            second,
            Some(FromWorker::Ready {
                generation: 7,
                checksum: 0xfeed
            })
        );
        let end: Option<FromWorker> = receive(&mut reader).expect("end of stream");
        assert_eq!(end, None);
    }

    #[test]
    fn line_buffer_waits_for_whole_lines() {
        let mut buffer = LineBuffer::default();
        let mut first = io::Cursor::new(b"{\"type\":\"counters\"}\n{\"type\":".to_vec());
        let messages: Vec<ToWorker> = buffer.read_from(&mut first).expect("valid").expect("data");
        assert_eq!(messages, vec![ToWorker::Counters]);
        let mut second = io::Cursor::new(b"\"stop\"}\n".to_vec());
        let messages: Vec<ToWorker> = buffer.read_from(&mut second).expect("valid").expect("data");
        assert_eq!(messages, vec![ToWorker::Stop]);
        let mut end = io::Cursor::new(Vec::new());
        let messages: Option<Vec<ToWorker>> = buffer.read_from(&mut end).expect("end");
        assert_eq!(messages, None);
    }

    /// A counters reply many times larger than the socket's send buffer, over a non-blocking
    /// stream: `send` (a `write_all`) fails with WouldBlock part way, the outbox gets all of it
    /// through without blocking.
    #[test]
    fn a_reply_larger_than_the_socket_buffer_gets_through() {
        use crate::counters::{RuleCount, WorkerCounters};
        use std::os::unix::net::UnixStream;
        let mut counters = WorkerCounters::default();
        for rule in 0..20_000 {
            counters.rules.insert(
                format!("rule-{rule:05}"),
                RuleCount {
                    packets: rule,
                    bytes: 100 * rule,
                    stream: None,
                },
            );
        }
        let reply = FromWorker::Counters(Box::new(counters));
        let small = |stream: &UnixStream| {
            nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::SndBuf, &4096)
                .expect("SO_SNDBUF on a socket pair");
        };

        let (mut ours, _theirs) = UnixStream::pair().expect("a socket pair");
        small(&ours);
        ours.set_nonblocking(true).expect("non-blocking");
        let error = send(&mut ours, &reply).expect_err("nobody reads: the buffer fills");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);

        let (mut ours, theirs) = UnixStream::pair().expect("a socket pair");
        small(&ours);
        ours.set_nonblocking(true).expect("non-blocking");
        let mut outbox = Outbox::default();
        outbox.push(&reply).expect("queued");
        // Nobody reads yet: what the buffer takes is written, the rest waits, nothing blocks.
        outbox
            .write_to(&mut ours)
            .expect("written or left for later");
        assert!(
            !outbox.is_empty(),
            "the reply fit the buffer at once: no test"
        );
        let reader = std::thread::spawn(move || {
            let mut reader = io::BufReader::new(theirs);
            receive::<_, FromWorker>(&mut reader)
        });
        while !outbox.is_empty() {
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&ours),
                nix::poll::PollFlags::POLLOUT,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)).expect("poll");
            outbox
                .write_to(&mut ours)
                .expect("written or left for later");
        }
        let got = reader
            .join()
            .expect("the reader thread")
            .expect("a valid line");
        assert_eq!(got, Some(reply));
    }

    #[test]
    fn an_outbox_refuses_to_grow_past_its_bound() {
        let mut outbox = Outbox::with_limit(100);
        let line = "x".repeat(20);
        for _ in 0..4 {
            outbox.push(&line).expect("within the bound");
        }
        let error = outbox.push(&line).expect_err("past the bound");
        assert_eq!(error.kind(), io::ErrorKind::OutOfMemory);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut reader = io::Cursor::new(b"{\"type\":\"nonsense\"}\n".to_vec());
        let result: io::Result<Option<ToWorker>> = receive(&mut reader);
        assert_eq!(
            result.expect_err("unknown type").kind(),
            io::ErrorKind::InvalidData
        );
    }
}
