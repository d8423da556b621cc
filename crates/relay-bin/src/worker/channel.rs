//! The worker's end of its control socket: message lines in, with the descriptors of the
//! outputs the supervisor opened for it travelling beside them.
//!
//! Descriptors arrive no later than the first byte of the line that describes them
//! ([`fanout_core::handoff`]), so by the time a [`ToWorker::Outputs`] line is complete its
//! descriptors wait in the queue, in the order the line lists them.

use super::sinks::Handed;
use crate::outputs::{HandedOutput, Received};
use crate::protocol::{LineBuffer, ToWorker};
use fanout_core::handoff::RingHandle;
use fanout_core::{HandoffError, RingDescriptor};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// The control socket, read with the descriptors that come with it.
#[derive(Debug)]
pub(super) struct Channel {
    stream: UnixStream,
    lines: LineBuffer,
    fds: VecDeque<OwnedFd>,
}

impl Channel {
    /// Reads `stream`, which must be non-blocking.
    pub(super) fn new(stream: UnixStream) -> Self {
        Channel {
            stream,
            lines: LineBuffer::default(),
            fds: VecDeque::new(),
        }
    }

    /// The socket, to wait for it.
    pub(super) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Reads what is available and returns the messages it completed; `Ok(None)` at end of
    /// stream.
    pub(super) fn read(&mut self) -> io::Result<Option<Vec<ToWorker>>> {
        let mut reader = WithFds {
            stream: &self.stream,
            fds: &mut self.fds,
        };
        self.lines.read_from(&mut reader)
    }

    /// Takes the descriptors of `outputs` from the queue into `into` (replacing older ones of
    /// the same key). Fewer descriptors than the line lists means the stream is out of step
    /// with its descriptors: an error, after which nothing it says can be trusted.
    pub(super) fn take_outputs(
        &mut self,
        outputs: &[HandedOutput],
        into: &mut Handed,
    ) -> io::Result<()> {
        for handed in outputs {
            let fd = self.fds.pop_front().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no descriptor came with {:?}", handed.key),
                )
            })?;
            let received = Received::new(handed, fd).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a handed output without a valid ring layout: {handed:?}"),
                )
            })?;
            into.insert(handed.key, received);
        }
        Ok(())
    }
}

impl Channel {
    /// Takes the descriptors of `rings` (descriptions in text form) from the queue. Like
    /// [`Channel::take_outputs`], a missing descriptor is an error.
    pub(super) fn take_rings(&mut self, rings: &[String]) -> io::Result<Vec<RingHandle>> {
        rings
            .iter()
            .map(|text| {
                let descriptor: RingDescriptor = text
                    .parse()
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                let fd = self.fds.pop_front().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("no descriptor came with ring {text}"),
                    )
                })?;
                Ok(RingHandle::from_fd(fd, descriptor))
            })
            .collect()
    }
}

/// Reads a stream with `recvmsg`, queueing the descriptors that come with the bytes.
struct WithFds<'a> {
    stream: &'a UnixStream,
    fds: &'a mut VecDeque<OwnedFd>,
}

impl Read for WithFds<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut received = Vec::new();
        let result = fanout_core::handoff::recv_with_fds(self.stream.as_fd(), buf, &mut received);
        self.fds.extend(received);
        match result {
            Ok(read) => Ok(read),
            Err(HandoffError::Receive { errno }) => Err(errno.into()),
            Err(other) => Err(io::Error::new(io::ErrorKind::InvalidData, other)),
        }
    }
}
