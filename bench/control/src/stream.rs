//! A steady, numbered, timestamped UDP stream through the relay, and what arrived of it.
//!
//! The sender writes its sequence number and the wall-clock time of sending into every
//! datagram; the receiver records the kernel's receive timestamp (`SO_TIMESTAMPNS`, taken when
//! the frame reached the receiver's namespace, not when the thread read it), so gaps and
//! latencies are the relay's, not the receiving thread's scheduling.

use std::io::IoSliceMut;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fanout_relay_tests::Netns;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt, sockopt};

/// Bytes of every datagram: magic, sequence number, send time, padding.
const SIZE: usize = 64;
const MAGIC: [u8; 4] = *b"CBV1";

/// Nanoseconds since the Unix epoch, the clock `SO_TIMESTAMPNS` uses.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn datagram(seq: u64, sent_ns: u64) -> [u8; SIZE] {
    let mut bytes = [0u8; SIZE];
    bytes[..4].copy_from_slice(&MAGIC);
    bytes[4..12].copy_from_slice(&seq.to_be_bytes());
    bytes[12..20].copy_from_slice(&sent_ns.to_be_bytes());
    bytes
}

fn parse(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != SIZE || bytes[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_be_bytes(bytes[4..12].try_into().ok()?);
    let sent = u64::from_be_bytes(bytes[12..20].try_into().ok()?);
    Some((seq, sent))
}

/// What the sender did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    /// Datagrams sent (sequence numbers 0..count).
    pub count: u64,
    /// Sends the kernel refused (ENOBUFS and the like); their numbers were skipped.
    pub failed: u64,
}

/// A sender thread, pinned to a CPU, sending `pps` datagrams per second until stopped.
#[derive(Debug)]
pub struct Sender {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Sent>,
}

impl Sender {
    /// Starts sending from `source` in `ns` to `destination`, from a thread on `cpu` (a frame
    /// sent on veth is received on the sending CPU, so this picks the relay worker with fanout
    /// `cpu`). Datagrams go out in small bursts paced by the clock.
    pub fn start(
        ns: &Netns,
        source: &str,
        destination: SocketAddrV4,
        cpu: usize,
        pps: u32,
    ) -> Sender {
        let source: Ipv4Addr = source.parse().expect("an IPv4 source address");
        let socket = ns
            .run(|| UdpSocket::bind((source, 0)))
            .unwrap_or_else(|e| panic!("bind {source}:0 in {}: {e}", ns.name()));
        socket.set_multicast_ttl_v4(8).expect("IP_MULTICAST_TTL");
        socket
            .set_multicast_loop_v4(false)
            .expect("IP_MULTICAST_LOOP");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("bench-sender".into())
            .spawn(move || {
                fanout_core::cpu::pin_current_thread(cpu)
                    .unwrap_or_else(|e| panic!("pin the sender to cpu {cpu}: {e}"));
                let start = Instant::now();
                let mut sent = Sent::default();
                let mut seq = 0u64;
                while !stopped.load(Ordering::Relaxed) {
                    let due = (start.elapsed().as_secs_f64() * f64::from(pps)) as u64;
                    while seq < due {
                        match socket.send_to(&datagram(seq, now_ns()), destination) {
                            Ok(_) => sent.count += 1,
                            Err(_) => sent.failed += 1,
                        }
                        seq += 1;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                sent.count = seq;
                sent
            })
            .expect("start the sender thread");
        Sender { stop, handle }
    }

    /// Stops sending and says what was sent.
    pub fn stop(self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .expect("the sender thread does not panic")
    }
}

/// One datagram as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Its sequence number.
    pub seq: u64,
    /// When it was sent (ns since the epoch).
    pub sent_ns: u64,
    /// When the receiver's kernel received it (ns since the epoch).
    pub received_ns: u64,
}

/// A receiver thread collecting arrivals of one group until stopped.
#[derive(Debug)]
pub struct Receiver {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Arrival>>,
}

impl Receiver {
    /// Joins `group` on the interface with address `local` in `ns` and collects.
    pub fn start(ns: &Netns, group: SocketAddrV4, local: &str) -> Receiver {
        let local: Ipv4Addr = local.parse().expect("an IPv4 address");
        let socket = ns
            .run(|| {
                let socket = UdpSocket::bind(group)?;
                socket.join_multicast_v4(group.ip(), &local)?;
                Ok::<_, std::io::Error>(socket)
            })
            .unwrap_or_else(|e| panic!("join {group} on {local}: {e}"));
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
        // Room for seconds of traffic, so a slow receiving thread loses nothing.
        let _ = setsockopt(&socket, sockopt::RcvBufForce, &(64 << 20));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("SO_RCVTIMEO");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("bench-receiver".into())
            .spawn(move || receive(&socket, &stopped))
            .expect("start the receiver thread");
        Receiver { stop, handle }
    }

    /// Stops collecting (after draining what is queued) and returns the arrivals in order.
    pub fn stop(self) -> Vec<Arrival> {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .expect("the receiver thread does not panic")
    }
}

fn receive(socket: &UdpSocket, stop: &AtomicBool) -> Vec<Arrival> {
    let mut arrivals = Vec::with_capacity(1 << 20);
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<SockaddrIn>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) else {
            continue;
        };
        let received_ns = msg
            .cmsgs()
            .ok()
            .and_then(|mut cmsgs| {
                cmsgs.find_map(|c| match c {
                    ControlMessageOwned::ScmTimestampns(ts) => {
                        Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
                    }
                    _ => None,
                })
            })
            .unwrap_or_else(now_ns);
        let len = msg.bytes;
        if let Some((seq, sent_ns)) = parse(&buf[..len]) {
            arrivals.push(Arrival {
                seq,
                sent_ns,
                received_ns,
            });
        }
    }
    arrivals
}

/// Gaps, loss and latency of the arrivals received within `[from_ns, to_ns)`.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Arrivals in the window.
    pub arrivals: usize,
    /// Longest time between two consecutive arrivals (ms), and when it ended (ns).
    pub max_gap_ms: f64,
    /// When the longest gap ended.
    pub max_gap_end_ns: u64,
    /// 99.9th percentile of the gaps (ms).
    pub p999_gap_ms: f64,
    /// Median and maximum of receive time minus send time (ms).
    pub latency_p50_ms: f64,
    /// 99.9th percentile of the latency (ms).
    pub latency_p999_ms: f64,
    /// Highest latency (ms): the longest a datagram waited, in the relay's ring above all.
    pub latency_max_ms: f64,
    /// Gaps longer than 10 ms: (end of the gap in ns, length in ms).
    pub long_gaps: Vec<(u64, f64)>,
}

/// Measures the arrivals whose receive time is in `[from_ns, to_ns)`.
pub fn window(arrivals: &[Arrival], from_ns: u64, to_ns: u64) -> Window {
    let mut inside: Vec<&Arrival> = arrivals
        .iter()
        .filter(|a| a.received_ns >= from_ns && a.received_ns < to_ns)
        .collect();
    inside.sort_by_key(|a| a.received_ns);
    let mut result = Window {
        arrivals: inside.len(),
        ..Window::default()
    };
    let mut gaps: Vec<u64> = Vec::with_capacity(inside.len());
    for pair in inside.windows(2) {
        let gap = pair[1].received_ns.saturating_sub(pair[0].received_ns);
        gaps.push(gap);
        let ms = gap as f64 / 1e6;
        if ms > result.max_gap_ms {
            result.max_gap_ms = ms;
            result.max_gap_end_ns = pair[1].received_ns;
        }
        if ms > 10.0 {
            result.long_gaps.push((pair[1].received_ns, ms));
        }
    }
    gaps.sort_unstable();
    if let Some(&p) = gaps.get(gaps.len().saturating_sub(1) * 999 / 1000) {
        result.p999_gap_ms = p as f64 / 1e6;
    }
    let mut latencies: Vec<u64> = inside
        .iter()
        .map(|a| a.received_ns.saturating_sub(a.sent_ns))
        .collect();
    latencies.sort_unstable();
    if let Some(&p) = latencies.get(latencies.len() / 2) {
        result.latency_p50_ms = p as f64 / 1e6;
    }
    if let Some(&p) = latencies.get(latencies.len().saturating_sub(1) * 999 / 1000) {
        result.latency_p999_ms = p as f64 / 1e6;
    }
    if let Some(&p) = latencies.last() {
        result.latency_max_ms = p as f64 / 1e6;
    }
    result
}

/// Sequence numbers below `sent` that never arrived, and numbers that arrived more than once.
pub fn loss(arrivals: &[Arrival], sent: u64) -> (u64, u64) {
    let mut seen = vec![0u8; sent as usize];
    let mut duplicates = 0;
    for arrival in arrivals {
        if let Some(slot) = seen.get_mut(arrival.seq as usize) {
            if *slot > 0 {
                duplicates += 1;
            }
            *slot = slot.saturating_add(1);
        }
    }
    let missing = seen.iter().filter(|&&n| n == 0).count() as u64;
    (missing, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, received_ms: u64) -> Arrival {
        Arrival {
            seq,
            sent_ns: received_ms * 1_000_000 - 500_000,
            received_ns: received_ms * 1_000_000,
        }
    }

    #[test]
    fn datagrams_round_trip() {
        assert_eq!(parse(&datagram(7, 99)), Some((7, 99)));
        assert_eq!(parse(&[0u8; SIZE]), None);
    }

    #[test]
    fn windows_find_the_longest_gap_and_loss() {
        let arrivals = [at(0, 1), at(1, 2), at(3, 40), at(4, 41), at(4, 42)];
        let w = window(&arrivals, 0, 100_000_000);
        assert_eq!(w.arrivals, 5);
        assert!((w.max_gap_ms - 38.0).abs() < 1e-9, "{w:?}");
        assert_eq!(w.max_gap_end_ns, 40_000_000);
        assert_eq!(w.long_gaps.len(), 1);
        assert!((w.latency_max_ms - 0.5).abs() < 1e-9);
        assert_eq!(loss(&arrivals, 6), (2, 1));
        assert_eq!(window(&arrivals, 0, 30_000_000).arrivals, 2);
    }
}
