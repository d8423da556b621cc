//! Bytes with descriptors attached, over a connected Unix stream socket.
//!
//! The kernel attaches the descriptors of one `sendmsg` to its first byte, and a `recvmsg`
//! never returns the descriptors of two such messages at once: so a receiver that reads the
//! stream with [`recv_with_fds`] gets every descriptor no later than the first byte of the
//! bytes they were sent with, in the order they were sent.
//!
//! # Safety
//!
//! Taking ownership of received descriptors is sound because the kernel installed them in this
//! process's table for this message alone.
#![allow(unsafe_code, reason = "owning descriptors received over SCM_RIGHTS")]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags};

use super::HandoffError;

/// Most descriptors one message may carry; a receiver has room for this many per `recvmsg`.
pub const MAX_FDS: usize = 32;

/// Sends `bytes` with `fds` attached (at most [`MAX_FDS`]); returns how many bytes the socket
/// took, which on a stream socket may be fewer than all: the caller writes the rest without
/// descriptors.
pub fn send_with_fds(
    channel: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<usize, HandoffError> {
    if fds.len() > MAX_FDS {
        return Err(HandoffError::TooManyDescriptors {
            count: fds.len(),
            max: MAX_FDS,
        });
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    nix::sys::socket::sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|errno| HandoffError::Send { errno })
}

/// Receives what the socket holds into `buf` (`Ok(0)`: the peer closed), appending the
/// descriptors that came with it to `fds` (close-on-exec in this process). A socket without
/// data fails with [`HandoffError::Receive`] and `EAGAIN` when non-blocking.
pub fn recv_with_fds(
    channel: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, HandoffError> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|errno| HandoffError::Receive { errno })?;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let mut received = Vec::new();
    for cmsg in msg
        .cmsgs()
        .map_err(|errno| HandoffError::Receive { errno })?
    {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            received.extend(raw);
        }
    }
    let bytes = msg.bytes;
    // SAFETY: the kernel installed these descriptors in our table for this message; nothing
    // else in the process knows their numbers, so each OwnedFd is the sole owner.
    fds.extend(
        received
            .into_iter()
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
    );
    if truncated {
        // The kernel closed what did not fit: the sender broke the limit, and the message's
        // descriptors can no longer be matched to what it says.
        return Err(HandoffError::TooManyDescriptors {
            count: MAX_FDS + 1,
            max: MAX_FDS,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn descriptors_arrive_with_their_bytes_in_order() {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let (a, mut a_peer) = UnixStream::pair().expect("socketpair");
        let (b, mut b_peer) = UnixStream::pair().expect("socketpair");
        let sent = send_with_fds(ours.as_fd(), b"one\n", &[a.as_fd(), b.as_fd()]).expect("send");
        assert_eq!(sent, 4);
        (&ours).write_all(b"two\n").expect("write");
        let mut fds = Vec::new();
        let mut buf = [0u8; 64];
        let n = recv_with_fds(theirs.as_fd(), &mut buf, &mut fds).expect("receive");
        assert_eq!(&buf[..n], b"one\n");
        assert_eq!(fds.len(), 2);
        // The received descriptors are the sent sockets: what goes in comes out of the peers.
        let mut first = UnixStream::from(fds.remove(0));
        let mut second = UnixStream::from(fds.remove(0));
        first.write_all(b"a").expect("write a");
        second.write_all(b"b").expect("write b");
        let mut byte = [0u8; 1];
        a_peer.read_exact(&mut byte).expect("read a");
        assert_eq!(&byte, b"a");
        b_peer.read_exact(&mut byte).expect("read b");
        assert_eq!(&byte, b"b");
        let n = recv_with_fds(theirs.as_fd(), &mut buf, &mut fds).expect("receive");
        assert_eq!(&buf[..n], b"two\n");
        assert!(fds.is_empty());
    }

    #[test]
    fn more_than_the_limit_is_refused_before_sending() {
        let (ours, _theirs) = UnixStream::pair().expect("socketpair");
        let fds: Vec<BorrowedFd<'_>> = (0..=MAX_FDS).map(|_| ours.as_fd()).collect();
        assert!(matches!(
            send_with_fds(ours.as_fd(), b"x", &fds),
            Err(HandoffError::TooManyDescriptors { .. })
        ));
    }
}
