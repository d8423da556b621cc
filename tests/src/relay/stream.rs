//! A steady numbered stream through the relay and the arrival time of every datagram, for the
//! fault tests: how long relaying took to resume after a fault, and how much arrived.

use std::net::{SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{UdpSender, payload, payload_id};
use crate::{Netns, Topology};

/// The sender's stream and the receiver's arrivals, on two threads, until dropped.
pub struct Stream {
    stop: Arc<AtomicBool>,
    /// The sequence number the sender sends next.
    next: Arc<AtomicU32>,
    /// Arrival time and sequence number of every datagram of the stream that arrived.
    arrivals: Arc<Mutex<Vec<(Instant, u32)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Stream {
    /// Starts sending `pps` datagrams of stream `tag` per second to 239.1.1.1:5000 from the
    /// sender and receiving 239.2.2.2:6000 at the receiver. A send that fails (the input's
    /// carrier is gone while `rin0` is down) is not retried: the stream goes on as a real
    /// source's would.
    pub fn start(topo: &Topology, tag: u8, pps: u32) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU32::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let receiver = join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR);
        let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
        let mut threads = Vec::new();
        {
            let (stop, next) = (Arc::clone(&stop), Arc::clone(&next));
            threads.push(std::thread::spawn(move || {
                let destination: SocketAddrV4 = "239.1.1.1:5000".parse().expect("a literal");
                let start = Instant::now();
                let mut seq = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let due = (start.elapsed().as_secs_f64() * f64::from(pps)) as u32;
                    while seq < due {
                        let _ = sender.socket().send_to(&payload(tag, seq), destination);
                        seq += 1;
                        next.store(seq, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
            }));
        }
        {
            let (stop, arrivals) = (Arc::clone(&stop), Arc::clone(&arrivals));
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(len) = receiver.recv(&mut buf)
                        && let Some((t, seq)) = payload_id(&buf[..len])
                        && t == tag
                    {
                        arrivals
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((Instant::now(), seq));
                    }
                }
            }));
        }
        Stream {
            stop,
            next,
            arrivals,
            threads,
        }
    }

    /// The sequence number the sender sends next.
    pub fn next_seq(&self) -> u32 {
        self.next.load(Ordering::Relaxed)
    }

    /// When the first datagram numbered `from` or later arrived, if one did.
    pub fn first_arrival_from(&self, from: u32) -> Option<Instant> {
        self.arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|&&(_, seq)| seq >= from)
            .map(|&(at, _)| at)
    }

    /// Waits up to `timeout` for a datagram numbered `from` or later; returns how long after
    /// `since` it arrived.
    pub fn wait_from(&self, from: u32, since: Instant, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.first_arrival_from(from) {
                return Some(at.saturating_duration_since(since));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// When the first datagram numbered `from` or later for which `wanted` holds arrived, if
    /// one did.
    pub fn first_arrival_where(&self, from: u32, wanted: impl Fn(u32) -> bool) -> Option<Instant> {
        self.arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|&&(_, seq)| seq >= from && wanted(seq))
            .map(|&(at, _)| at)
    }

    /// Datagrams of the stream that arrived so far.
    pub fn arrived(&self) -> usize {
        self.arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A UDP socket in `ns` bound to `group` and joined to it on the interface with `local`.
fn join(ns: &Netns, group: &str, local: &str) -> UdpSocket {
    let group: SocketAddrV4 = group.parse().expect("a literal group");
    let local = local.parse().expect("a literal address");
    let socket = ns.run(|| {
        let socket = UdpSocket::bind(group)?;
        socket.join_multicast_v4(group.ip(), &local)?;
        Ok::<_, std::io::Error>(socket)
    });
    let socket = socket.unwrap_or_else(|e| panic!("join {group} on {local}: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("SO_RCVTIMEO on a UDP socket");
    socket
}
