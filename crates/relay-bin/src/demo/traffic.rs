//! The demo's traffic: numbered datagrams sent at a steady rate, and receivers that count which
//! of them arrived, byte for byte.
//!
//! Sockets are made inside their namespace ([`Netns::run`]) and then used from ordinary threads:
//! a socket stays in the namespace it was made in.

use super::world::{PROBE, RECEIVERS, SENDER_ADDR, STREAMS};
use crate::netns::{Netns, NetnsError};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Bytes of UDP payload of every demo datagram.
pub(super) const PAYLOAD_LEN: usize = 200;
/// First bytes of every demo datagram.
const MAGIC: &[u8; 8] = b"frdemo\x00\x01";
/// How long a receiver blocks before it looks at its stop flag again.
const POLL: Duration = Duration::from_millis(100);

/// The payload of datagram `seq` of stream `stream`: the magic, the stream, the number, and a
/// pattern that depends on both, so a receiver can check every byte.
pub(super) fn payload(stream: u8, seq: u32) -> [u8; PAYLOAD_LEN] {
    let mut bytes = [0u8; PAYLOAD_LEN];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8] = stream;
    bytes[9..13].copy_from_slice(&seq.to_be_bytes());
    // Every byte of the header feeds the pattern, so no single damaged byte goes unnoticed.
    let salt = seq
        .to_be_bytes()
        .iter()
        .fold(stream, |salt, byte| salt ^ byte);
    for (index, byte) in bytes[13..].iter_mut().enumerate() {
        *byte = (index as u8).wrapping_mul(7) ^ salt;
    }
    bytes
}

/// The stream and number of a demo datagram, if every byte is what [`payload`] makes.
pub(super) fn decode(bytes: &[u8]) -> Option<(u8, u32)> {
    if bytes.len() != PAYLOAD_LEN || !bytes.starts_with(MAGIC) {
        return None;
    }
    let stream = bytes[8];
    let seq = u32::from_be_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]);
    (bytes == payload(stream, seq).as_slice()).then_some((stream, seq))
}

/// What one receiver socket saw.
#[derive(Debug, Default)]
pub(super) struct LegTally {
    /// Distinct datagrams of its stream.
    pub(super) received: AtomicU64,
    /// Datagrams of its stream that had arrived before.
    pub(super) duplicates: AtomicU64,
    /// Datagrams that were not a good datagram of its stream.
    pub(super) corrupt: AtomicU64,
    /// Where the first datagram came from (the relay's output address).
    pub(super) source: OnceLock<SocketAddr>,
    /// The error that ended the receiver early, if any.
    pub(super) error: Mutex<Option<String>>,
}

/// Counters shared by the sender, the receivers and the live display.
#[derive(Debug)]
pub(super) struct Tally {
    /// Datagrams sent, per stream.
    pub(super) sent: Vec<AtomicU64>,
    /// Datagrams the sender's socket refused.
    pub(super) send_errors: AtomicU64,
    /// The last refusal.
    pub(super) last_send_error: Mutex<Option<String>>,
    /// Per leg, in the order of [`super::world::legs`].
    pub(super) legs: Vec<LegTally>,
}

impl Tally {
    /// All zero.
    pub(super) fn new() -> Tally {
        Tally {
            sent: STREAMS.iter().map(|_| AtomicU64::new(0)).collect(),
            send_errors: AtomicU64::new(0),
            last_send_error: Mutex::new(None),
            legs: super::world::legs().map(|_| LegTally::default()).collect(),
        }
    }
}

/// Opens the sender's socket inside `ns`, bound to the unroutable source address.
pub(super) fn open_sender(ns: &Netns) -> Result<UdpSocket, SocketError> {
    let what = format!("UDP socket on {SENDER_ADDR} in {}", ns.name());
    ns.run(|| UdpSocket::bind(SocketAddrV4::new(SENDER_ADDR, 0)))
        .map_err(SocketError::Netns)?
        .map_err(|source| SocketError::Io { what, source })
}

/// Opens a socket in receiver `receiver`'s namespace that receives group and port `to` only.
pub(super) fn open_receiver(
    ns: &Netns,
    receiver: usize,
    to: SocketAddrV4,
) -> Result<UdpSocket, SocketError> {
    let local = RECEIVERS[receiver].addr;
    let what = format!("joining {to} on {local} in {}", ns.name());
    ns.run(|| -> std::io::Result<UdpSocket> {
        // Bound to the group itself, so that other groups on the same port never arrive here.
        let socket = UdpSocket::bind(to)?;
        socket.join_multicast_v4(to.ip(), &local)?;
        socket.set_read_timeout(Some(POLL))?;
        Ok(socket)
    })
    .map_err(SocketError::Netns)?
    .map_err(|source| SocketError::Io { what, source })
}

/// A socket could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Entering the namespace failed.
    #[error(transparent)]
    Netns(NetnsError),
    /// The socket call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being made.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Sends `packets` datagrams of every stream, `rate` per second each, until done or `stop`.
pub(super) fn send(socket: &UdpSocket, packets: u32, rate: u32, tally: &Tally, stop: &AtomicBool) {
    let interval = Duration::from_secs(1) / rate.max(1);
    let start = Instant::now();
    for seq in 0..packets {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let due = start + interval * seq;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        for (index, stream) in STREAMS.iter().enumerate() {
            let bytes = payload(index as u8, seq);
            match socket.send_to(&bytes, stream.input) {
                Ok(_) => {
                    tally.sent[index].fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    tally.send_errors.fetch_add(1, Ordering::Relaxed);
                    *tally
                        .last_send_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) =
                        Some(format!("sending to {}: {error}", stream.input));
                }
            }
        }
    }
}

/// Counts the datagrams of stream `stream` (numbered `0..packets`) arriving on `socket`, until
/// `stop`.
pub(super) fn receive(
    socket: &UdpSocket,
    stream: u8,
    packets: u32,
    tally: &LegTally,
    stop: &AtomicBool,
) {
    let mut seen = vec![false; packets as usize];
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                // The first source is the one reported; later ones are the same relay address.
                let _ = tally.source.set(from);
                let slot = match decode(&buf[..len]) {
                    Some((their_stream, seq)) if their_stream == stream => {
                        seen.get_mut(seq as usize)
                    }
                    _ => None,
                };
                let counter = match slot {
                    Some(seen) if *seen => &tally.duplicates,
                    Some(seen) => {
                        *seen = true;
                        &tally.received
                    }
                    None => &tally.corrupt,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => {
                *tally.error.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(error.to_string());
                return;
            }
        }
    }
}

/// Sends a probe through the relay every 100 ms until one arrives at `probe_rx`, `give_up`
/// says so, or `timeout` passes; returns how long it took.
pub(super) fn probe(
    sender: &UdpSocket,
    probe_rx: &UdpSocket,
    timeout: Duration,
    mut give_up: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    while start.elapsed() < timeout && !give_up() {
        // A lost probe is simply sent again.
        let _ = sender.send_to(b"probe", PROBE.input);
        if probe_rx.recv_from(&mut buf).is_ok() {
            return Some(start.elapsed());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_differ() {
        for (stream, seq) in [(0u8, 0u32), (1, 1), (1, 255), (0, 256), (1, u32::MAX)] {
            let bytes = payload(stream, seq);
            assert_eq!(decode(&bytes), Some((stream, seq)));
        }
        assert_ne!(payload(0, 1)[13..], payload(1, 1)[13..]);
        assert_ne!(payload(0, 1)[13..], payload(0, 2)[13..]);
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let good = payload(1, 4242);
        for index in 0..PAYLOAD_LEN {
            let mut bad = good;
            bad[index] ^= 0x20;
            assert_eq!(decode(&bad), None, "byte {index} flipped");
        }
        assert_eq!(decode(&good[..PAYLOAD_LEN - 1]), None);
        assert_eq!(decode(b"probe"), None);
    }

    #[test]
    fn receive_counts_new_duplicate_and_foreign_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("loopback socket");
        rx.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("loopback socket");
        let to = rx.local_addr().expect("bound");
        for bytes in [
            &payload(1, 0)[..],
            &payload(1, 3)[..],
            &payload(1, 3)[..],
            &payload(0, 1)[..],  // another stream
            &payload(1, 10)[..], // beyond the planned packets
            b"noise",
        ] {
            tx.send_to(bytes, to).expect("send on loopback");
        }
        let tally = LegTally::default();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| receive(&rx, 1, 5, &tally, &stop));
            let deadline = Instant::now() + Duration::from_secs(5);
            while tally.received.load(Ordering::Relaxed)
                + tally.duplicates.load(Ordering::Relaxed)
                + tally.corrupt.load(Ordering::Relaxed)
                < 6
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(tally.received.load(Ordering::Relaxed), 2);
        assert_eq!(tally.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(tally.corrupt.load(Ordering::Relaxed), 3);
        assert_eq!(
            tally.source.get().copied(),
            Some(tx.local_addr().expect("bound"))
        );
    }
}
