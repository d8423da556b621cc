//! Numbered datagrams: sending them at a steady rate from a namespace, and collecting what arrives
//! (through a UDP socket, or a packet socket that sees every frame) until a deadline.

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fanout_core::{PacketSocket, Protocol, VnetHeader};
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrLike as _, SockaddrStorage, recvmsg, setsockopt, sockopt,
};

use crate::Netns;

/// How long a collector waits in one receive call, so it notices its deadline and `stop`.
const TICK: Duration = Duration::from_millis(100);
/// How long a collector keeps listening after the expected count arrived, to see extras.
const LINGER: Duration = Duration::from_millis(500);

/// The payload of datagram `seq` of stream `tag`: `FR`, the tag, `0xa5`, the sequence number
/// (big endian) and filler derived from both. Lengths vary with `seq` (24 to 423 bytes), so a
/// relay that mixes up lengths or bytes cannot produce a payload that still matches.
pub fn payload(tag: u8, seq: u32) -> Vec<u8> {
    let len = 24 + (seq as usize * 37) % 400;
    let mut bytes = vec![b'F', b'R', tag, 0xa5];
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes.extend((8..len).map(|i| (i as u32 * 7 + seq * 31 + u32::from(tag)) as u8));
    bytes
}

/// The (tag, sequence number) of a payload made by [`payload`], or `None` for anything else.
pub fn payload_id(bytes: &[u8]) -> Option<(u8, u32)> {
    match bytes {
        [b'F', b'R', tag, 0xa5, a, b, c, d, ..] => {
            Some((*tag, u32::from_be_bytes([*a, *b, *c, *d])))
        }
        _ => None,
    }
}

fn addr(text: &str) -> SocketAddrV4 {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an IPv4 address and port: {e}"))
}

fn any_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an address and port: {e}"))
}

/// The index of interface `ifname` in `ns`.
fn ifindex(ns: &Netns, ifname: &str) -> u32 {
    ns.run(|| nix::net::if_::if_nametoindex(ifname))
        .unwrap_or_else(|e| panic!("no interface {ifname} in {}: {e}", ns.name()))
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an IPv4 address: {e}"))
}

/// A UDP socket in a namespace that sends numbered datagrams.
#[derive(Debug)]
pub struct UdpSender {
    socket: UdpSocket,
}

impl UdpSender {
    /// A socket in `ns` bound to `source` (an address of the namespace), sending with `ttl`
    /// (unicast and multicast). Multicast leaves by the namespace's route for 224.0.0.0/4.
    pub fn new(ns: &Netns, source: &str, ttl: u32) -> UdpSender {
        let source = ip(source);
        let socket = ns.run(|| UdpSocket::bind((source, 0)));
        let socket = socket.unwrap_or_else(|e| panic!("bind {source}:0 in {}: {e}", ns.name()));
        socket.set_ttl(ttl).expect("IP_TTL on a UDP socket");
        socket
            .set_multicast_ttl_v4(ttl)
            .expect("IP_MULTICAST_TTL on a UDP socket");
        socket
            .set_multicast_loop_v4(false)
            .expect("IP_MULTICAST_LOOP on a UDP socket");
        UdpSender { socket }
    }

    /// An IPv6 socket in `ns` bound to `source` (an address of the namespace), sending with
    /// hop limit `hops` (unicast and multicast); a `tclass` sets the traffic class of
    /// everything it sends. Multicast leaves by the kernel's `ff00::/8` route of the namespace's
    /// interface, so the namespace should have one that is up besides `lo`.
    pub fn new_v6(ns: &Netns, source: &str, hops: u32, tclass: Option<u8>) -> UdpSender {
        let source: Ipv6Addr = source
            .parse()
            .unwrap_or_else(|e| panic!("{source:?} is not an IPv6 address: {e}"));
        let socket = ns.run(|| UdpSocket::bind((source, 0)));
        let socket = socket.unwrap_or_else(|e| panic!("bind [{source}]:0 in {}: {e}", ns.name()));
        let hops = i32::try_from(hops).expect("a hop limit");
        setsockopt(&socket, sockopt::Ipv6Ttl, &hops).expect("IPV6_UNICAST_HOPS");
        setsockopt(&socket, sockopt::Ipv6MulticastHops, &hops).expect("IPV6_MULTICAST_HOPS");
        socket
            .set_multicast_loop_v6(false)
            .expect("IPV6_MULTICAST_LOOP on a UDP socket");
        if let Some(tclass) = tclass {
            setsockopt(&socket, sockopt::Ipv6TClass, &i32::from(tclass)).expect("IPV6_TCLASS");
        }
        UdpSender { socket }
    }

    /// The socket, e.g. to `connect` it.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Sends [`payload`]`(tag, seq)` for each `seq` to `destination`, `pps` per second (paced by
    /// the clock, not by sleeps that add up). Panics if a send fails.
    pub fn send_numbered(&self, destination: &str, tag: u8, seqs: Range<u32>, pps: u32) {
        if let Err((seq, e)) = self.try_send_numbered(destination, tag, seqs, pps) {
            panic!("send datagram {seq} to {destination}: {e}");
        }
    }

    /// Like [`UdpSender::send_numbered`], but stops at the first failed send and returns its
    /// sequence number and error (a connected socket reports an ICMP error this way).
    pub fn try_send_numbered(
        &self,
        destination: &str,
        tag: u8,
        seqs: Range<u32>,
        pps: u32,
    ) -> Result<(), (u32, std::io::Error)> {
        let destination = any_addr(destination);
        let start = Instant::now();
        for (i, seq) in seqs.enumerate() {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(pps.max(1)));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            self.socket
                .send_to(&payload(tag, seq), destination)
                .map_err(|e| (seq, e))?;
        }
        Ok(())
    }

    /// Like [`UdpSender::send_numbered`], from a thread pinned to `cpu` (a frame sent on veth is
    /// received on the sending CPU, so this chooses the CPU the relay receives it on).
    pub fn send_numbered_on_cpu(
        &self,
        cpu: usize,
        destination: &str,
        tag: u8,
        seqs: Range<u32>,
        pps: u32,
    ) {
        std::thread::scope(|s| {
            s.spawn(|| {
                fanout_core::cpu::pin_current_thread(cpu)
                    .unwrap_or_else(|e| panic!("pin the sending thread to cpu {cpu}: {e}"));
                self.send_numbered(destination, tag, seqs, pps);
            });
        });
    }
}

/// A datagram as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The UDP payload.
    pub payload: Vec<u8>,
    /// The IPv4 TTL or IPv6 hop limit it arrived with, when known.
    pub ttl: Option<u8>,
    /// The IPv4 type of service byte or IPv6 traffic class (DSCP and ECN) it arrived with, when
    /// known.
    pub tos: Option<u8>,
    /// The sender's address and port, when known.
    pub from: Option<SocketAddr>,
}

/// A UDP socket in a namespace that receives datagrams with their TTL and TOS (`IP_RECVTTL`,
/// `IP_RECVTOS`).
#[derive(Debug)]
pub struct UdpReceiver {
    socket: UdpSocket,
    label: String,
}

/// Receive buffer of a test receiver's socket.
const RECEIVE_BUFFER: usize = 16 << 20;

impl UdpReceiver {
    /// A socket in `ns` bound to `group` (`"239.2.2.2:6000"`) and joined to it on the interface
    /// that has address `local`. Bound to the group, it receives no other group's datagrams.
    pub fn join(ns: &Netns, group: &str, local: &str) -> UdpReceiver {
        let (group, local) = (addr(group), ip(local));
        let socket = ns.run(|| {
            let socket = UdpSocket::bind(group)?;
            socket.join_multicast_v4(group.ip(), &local)?;
            Ok::<_, std::io::Error>(socket)
        });
        let socket = socket.unwrap_or_else(|e| panic!("join {group} on {local}: {e}"));
        Self::ready(socket, format!("receiver of {group} in {}", ns.name()))
    }

    /// An IPv6 socket in `ns` bound to `group` (`"[ff3e::8000:2]:6000"`) and joined to it on
    /// `ifname`.
    pub fn join_v6(ns: &Netns, group: &str, ifname: &str) -> UdpReceiver {
        let group = any_addr(group);
        let SocketAddr::V6(group) = group else {
            panic!("{group} is not an IPv6 group");
        };
        let index = ifindex(ns, ifname);
        let socket = ns.run(|| {
            let socket = UdpSocket::bind(group)?;
            socket.join_multicast_v6(group.ip(), index)?;
            Ok::<_, std::io::Error>(socket)
        });
        let socket = socket.unwrap_or_else(|e| panic!("join {group} on {ifname}: {e}"));
        Self::ready(socket, format!("receiver of {group} in {}", ns.name()))
    }

    /// A socket in `ns` bound to the unicast `address` (`"203.0.113.2:7000"`,
    /// `"[2001:db8:3::2]:7000"`).
    pub fn bind(ns: &Netns, address: &str) -> UdpReceiver {
        let address = any_addr(address);
        let socket = ns.run(|| UdpSocket::bind(address));
        let socket = socket.unwrap_or_else(|e| panic!("bind {address} in {}: {e}", ns.name()));
        Self::ready(socket, format!("receiver on {address} in {}", ns.name()))
    }

    fn ready(socket: UdpSocket, label: String) -> UdpReceiver {
        let local = socket.local_addr().expect("a bound socket's address");
        if local.is_ipv4() {
            setsockopt(&socket, sockopt::Ipv4RecvTtl, &true).expect("IP_RECVTTL on a UDP socket");
            setsockopt(&socket, sockopt::IpRecvTos, &true).expect("IP_RECVTOS on a UDP socket");
        } else {
            setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).expect("IPV6_RECVHOPLIMIT");
            setsockopt(&socket, sockopt::Ipv6RecvTClass, &true).expect("IPV6_RECVTCLASS");
        }
        // Room for a burst: a relay worker that restarts sends what queued in its ring at once,
        // faster than this test thread reads, and the default buffer holds only a few hundred
        // datagrams. Forced past rmem_max, as root.
        if setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            let _ = setsockopt(&socket, sockopt::RcvBuf, &RECEIVE_BUFFER);
        }
        socket
            .set_read_timeout(Some(TICK))
            .expect("SO_RCVTIMEO on a UDP socket");
        UdpReceiver { socket, label }
    }

    /// Receives on a thread until `expect` datagrams arrived (and then a little longer, to
    /// catch extras) or `timeout` passed.
    pub fn collect(self, expect: usize, timeout: Duration) -> Collector {
        let label = self.label.clone();
        Collector::spawn(label, expect, timeout, move || {
            self.next().into_iter().collect()
        })
    }

    fn next(&self) -> Option<Datagram> {
        let mut buf = vec![0u8; 65_536];
        let mut cmsg = nix::cmsg_space!(libc::c_int, libc::c_int);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (len, ttl, tos, from) = match recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) {
            Ok(msg) => {
                let (mut ttl, mut tos) = (None, None);
                for c in msg.cmsgs().into_iter().flatten() {
                    match c {
                        ControlMessageOwned::Ipv4Ttl(value)
                        | ControlMessageOwned::Ipv6HopLimit(value) => {
                            ttl = u8::try_from(value).ok();
                        }
                        ControlMessageOwned::Ipv4Tos(value) => tos = Some(value),
                        ControlMessageOwned::Ipv6TClass(value) => tos = u8::try_from(value).ok(),
                        _ => {}
                    }
                }
                let from = msg.address.and_then(|a| match a.family() {
                    Some(nix::sys::socket::AddressFamily::Inet) => a
                        .as_sockaddr_in()
                        .map(|a| SocketAddr::from(SocketAddrV4::from(*a))),
                    Some(nix::sys::socket::AddressFamily::Inet6) => a
                        .as_sockaddr_in6()
                        .map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a))),
                    _ => None,
                });
                (msg.bytes, ttl, tos, from)
            }
            Err(Errno::EAGAIN | Errno::EINTR) => return None,
            Err(e) => panic!("{}: recvmsg: {e}", self.label),
        };
        Some(Datagram {
            payload: buf[..len].to_vec(),
            ttl,
            tos,
            from,
        })
    }
}

/// A packet socket on an interface of a namespace that picks out the UDP datagrams sent to one
/// destination, whether or not the host would accept them (no group membership needed).
///
/// A packet socket sees a frame before the stack splits it, so a segmented frame (several
/// datagrams of one flow that a relay sent as one, for the kernel to split later) arrives here
/// whole. The socket reads each frame's `virtio_net_hdr` and splits such frames at the segment
/// size it names, as the kernel will, so that every datagram is checked on its own.
#[derive(Debug)]
pub struct Capture {
    socket: PacketSocket,
    destination: SocketAddrV4,
    label: String,
}

impl Capture {
    /// Captures IPv4 frames on `ifname` in `ns` (both directions) addressed to `destination`.
    pub fn open(ns: &Netns, ifname: &str, destination: &str) -> Capture {
        let destination = addr(destination);
        let socket = ns.run(|| {
            let mut socket = PacketSocket::open()?;
            socket.set_vnet_header(true)?;
            socket.bind(ifname, Protocol::IPV4)?;
            Ok::<_, fanout_core::SocketError>(socket)
        });
        let socket = socket.unwrap_or_else(|e| panic!("capture on {ifname}: {e}"));
        // Room for a burst, as for `UdpReceiver`: the capture sees both directions of a link,
        // and a slow machine (the tests under emulation) reads more slowly than the relay
        // sends; with the default buffer the socket dropped up to 160 of 500 frames there
        // that the link had delivered.
        if setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            let _ = setsockopt(&socket, sockopt::RcvBuf, &RECEIVE_BUFFER);
        }
        let label = format!("capture of {destination} on {ifname} in {}", ns.name());
        Capture {
            socket,
            destination,
            label,
        }
    }

    /// Collects on a thread, like [`UdpReceiver::collect`].
    pub fn collect(self, expect: usize, timeout: Duration) -> Collector {
        let label = self.label.clone();
        Collector::spawn(label, expect, timeout, move || self.next())
    }

    fn next(&self) -> Vec<Datagram> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&self.socket),
            PollFlags::POLLIN,
        )];
        // A timeout or EINTR both mean: look at the deadline, then try again.
        let _ = poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16));
        let mut frame = vec![0u8; VnetHeader::LEN + 65_536];
        let len = match self.socket.try_recv(&mut frame) {
            Ok(Some(len)) => len,
            Ok(None) => return Vec::new(),
            Err(e) => panic!("{}: {e}", self.label),
        };
        let Some(vnet) = VnetHeader::parse(&frame[..len]) else {
            panic!("{}: {len} bytes cannot hold a virtio_net_hdr", self.label)
        };
        datagrams_in_frame(&vnet, &frame[VnetHeader::LEN..len], self.destination)
    }
}

/// The UDP datagrams to `destination` in an Ethernet frame that arrived with `vnet`: one for a
/// plain frame, each piece of a segmented one, none if it holds anything else.
fn datagrams_in_frame(vnet: &VnetHeader, frame: &[u8], destination: SocketAddrV4) -> Vec<Datagram> {
    let Some(whole) = udp_in_frame(frame, destination) else {
        return Vec::new();
    };
    match vnet.udp_segment_size() {
        None => vec![whole],
        Some(size) => whole
            .payload
            .chunks(usize::from(size))
            .map(|piece| Datagram {
                payload: piece.to_vec(),
                ..whole.clone()
            })
            .collect(),
    }
}

/// The UDP datagram to `destination` in an Ethernet frame, or `None` if it holds anything else.
fn udp_in_frame(frame: &[u8], destination: SocketAddrV4) -> Option<Datagram> {
    let ip = frame.get(14..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    if ip[0] >> 4 != 4 || *ip.get(9)? != 17 || ihl < 20 || total < ihl + 8 {
        return None;
    }
    // Every index below is inside `ip[..total]`, which this checks is there.
    let udp = ip.get(ihl..total)?;
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    if SocketAddrV4::new(dst, dst_port) != destination {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    Some(Datagram {
        payload: udp[8..].to_vec(),
        ttl: Some(ip[8]),
        tos: Some(ip[1]),
        from: Some(SocketAddr::from(SocketAddrV4::new(
            src,
            u16::from_be_bytes([udp[0], udp[1]]),
        ))),
    })
}

/// A thread collecting datagrams; [`Collector::finish`] waits for it, [`Collector::stop`] ends it.
#[derive(Debug)]
pub struct Collector {
    handle: JoinHandle<Vec<Datagram>>,
    stop: Arc<AtomicBool>,
}

impl Collector {
    fn spawn(
        label: String,
        expect: usize,
        timeout: Duration,
        mut next: impl FnMut() -> Vec<Datagram> + Send + 'static,
    ) -> Collector {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(label)
            .spawn(move || {
                let deadline = Instant::now() + timeout;
                let mut got = Vec::new();
                let mut complete_at = None;
                while !stopped.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now >= deadline || complete_at.is_some_and(|at| now >= at + LINGER) {
                        break;
                    }
                    let arrived = next();
                    if !arrived.is_empty() {
                        got.extend(arrived);
                        if got.len() >= expect && complete_at.is_none() {
                            complete_at = Some(Instant::now());
                        }
                    }
                }
                got
            })
            .expect("start a collector thread");
        Collector { handle, stop }
    }

    /// Waits until the expected count arrived (plus a short linger) or the deadline passed.
    pub fn finish(self) -> Vec<Datagram> {
        self.handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Ends collecting now and returns what arrived.
    pub fn stop(self) -> Vec<Datagram> {
        self.stop.store(true, Ordering::Relaxed);
        self.finish()
    }
}

/// Checks that `got` holds stream `tag` complete: every `seq` in `seqs` exactly once, each
/// payload byte for byte as [`payload`] made it, and nothing else of that tag. Datagrams of
/// other tags are ignored. The error lists what is wrong.
pub fn check_stream(got: &[Datagram], tag: u8, seqs: Range<u32>) -> Result<(), String> {
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for datagram in got {
        match payload_id(&datagram.payload) {
            Some((t, seq)) if t == tag => {
                *seen.entry(seq).or_default() += 1;
                if !seqs.contains(&seq) {
                    problems.push(format!("unexpected seq {seq}"));
                } else if datagram.payload != payload(tag, seq) {
                    problems.push(format!(
                        "seq {seq}: payload differs ({} bytes, expected {})",
                        datagram.payload.len(),
                        payload(tag, seq).len()
                    ));
                }
            }
            _ => {}
        }
    }
    let missing: Vec<u32> = seqs.clone().filter(|s| !seen.contains_key(s)).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} of {} missing (first: {:?})",
            missing.len(),
            seqs.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    if duplicated > 0 {
        problems.push(format!("{duplicated} seqs arrived more than once"));
    }
    problems.truncate(20);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("stream {tag}: {}", problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(bytes: Vec<u8>) -> Datagram {
        Datagram {
            payload: bytes,
            ttl: None,
            tos: None,
            from: None,
        }
    }

    #[test]
    fn payloads_carry_their_id_and_differ() {
        assert_eq!(payload_id(&payload(7, 123_456)), Some((7, 123_456)));
        assert_ne!(payload(1, 5)[8..], payload(2, 5)[8..]);
        assert_eq!(payload(1, 0).len(), 24);
        assert_eq!(payload_id(b"FR"), None);
    }

    #[test]
    fn stream_check_finds_loss_damage_and_duplicates() {
        let good: Vec<Datagram> = (0..5).map(|s| datagram(payload(1, s))).collect();
        assert_eq!(check_stream(&good, 1, 0..5), Ok(()));
        assert!(check_stream(&good[1..], 1, 0..5).is_err_and(|e| e.contains("1 of 5 missing")));
        let mut damaged = good.clone();
        damaged[2].payload[10] ^= 1;
        assert!(check_stream(&damaged, 1, 0..5).is_err_and(|e| e.contains("seq 2")));
        let mut twice = good.clone();
        twice.push(datagram(payload(1, 3)));
        assert!(check_stream(&twice, 1, 0..5).is_err_and(|e| e.contains("more than once")));
        // Another tag is not this stream's business.
        twice.pop();
        twice.push(datagram(payload(2, 3)));
        assert_eq!(check_stream(&twice, 1, 0..5), Ok(()));
    }

    #[test]
    fn frames_are_picked_by_destination() {
        let body = payload(3, 9);
        let total = 20 + 8 + body.len();
        let mut frame = vec![0u8; 14];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 7, 17]);
        frame.extend_from_slice(&[0, 0, 10, 0, 0, 1, 239, 2, 2, 2]);
        frame.extend_from_slice(&[0x13, 0x88, 0x17, 0x70]);
        frame.extend_from_slice(&[((8 + body.len()) >> 8) as u8, (8 + body.len()) as u8, 0, 0]);
        frame.extend_from_slice(&body);
        let got = udp_in_frame(&frame, addr("239.2.2.2:6000")).expect("the frame matches");
        assert_eq!(got.payload, body);
        assert_eq!(got.ttl, Some(7));
        assert_eq!(got.from, Some(any_addr("10.0.0.1:5000")));
        assert_eq!(udp_in_frame(&frame, addr("239.2.2.2:6001")), None);
    }

    /// An Ethernet frame carrying `body` from 10.0.0.1:5000 to 239.1.1.1:5000, TTL 9, with a
    /// valid IPv4 header checksum and no UDP checksum.
    fn input_frame(body: &[u8]) -> Vec<u8> {
        let total = 20 + 8 + body.len();
        let mut frame = vec![0x01, 0x00, 0x5e, 1, 1, 1, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        frame.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 9, 17]);
        frame.extend_from_slice(&[0, 0, 10, 0, 0, 1, 239, 1, 1, 1]);
        let sum: u32 = frame[14..34]
            .chunks(2)
            .map(|word| u32::from(u16::from_be_bytes([word[0], word[1]])))
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
        frame[24..26].copy_from_slice(&checksum.to_be_bytes());
        frame.extend_from_slice(&[0x13, 0x88, 0x13, 0x88]);
        frame.extend_from_slice(&[((8 + body.len()) >> 8) as u8, (8 + body.len()) as u8, 0, 0]);
        frame.extend_from_slice(body);
        frame
    }

    /// A segmented frame as the relay builds it (relay-rules' templates), with the
    /// `virtio_net_hdr` a capture reads with it, splits into the datagrams the relay would have
    /// sent one by one: same payloads, TTL and sender, in order.
    #[test]
    fn segmented_frames_split_into_the_datagrams_sent_one_by_one() {
        use relay_rules::replicate::{FrameTemplate, TemplateSpec, multicast_mac};

        let group = Ipv4Addr::new(239, 2, 2, 2);
        let template = FrameTemplate::new(&TemplateSpec {
            src_mac: [0x02, 0, 0, 0, 0, 0x02],
            dst_mac: multicast_mac(group),
            vlan: None,
            source: Ipv4Addr::new(10, 1, 0, 1).into(),
            destination: group.into(),
            source_port: None,
            destination_port: 6000,
            ttl: relay_rules::Ttl::Fixed(7),
            dscp: None,
            mtu: 9000,
        });
        // Three full datagrams and a shorter last one, as a burst of one flow would be.
        let bodies: Vec<Vec<u8>> = [(1, 300), (2, 300), (3, 300), (4, 120)]
            .into_iter()
            .map(|(seq, len)| {
                let mut body = payload(5, seq);
                body.resize(len, seq as u8);
                body
            })
            .collect();
        let inputs: Vec<Vec<u8>> = bodies.iter().map(|b| input_frame(b)).collect();
        let parsed: Vec<_> = inputs
            .iter()
            .map(|f| relay_rules::wire::parse(f, None).expect("a valid input frame"))
            .collect();

        let mut slot = vec![0u8; 16_384];
        let first = template
            .write(&parsed[0], 1, &mut slot)
            .expect("the first datagram fits");
        let mut segments = template.segments(&parsed[0], first);
        for input in &parsed[1..] {
            assert!(template.append_segment(&mut segments, input, &mut slot));
        }
        let split = segments
            .finish(&mut slot)
            .expect("four datagrams: segmented");
        let frame = &slot[..segments.len()];
        let vnet = VnetHeader::udp_segments(frame.len(), split.udp_offset, split.segment_size);
        let destination = addr("239.2.2.2:6000");

        // Read whole, the frame is one long datagram: the flake this splitting prevents.
        let whole = datagrams_in_frame(&VnetHeader::plain(frame.len()), frame, destination);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].payload.len(), 3 * 300 + 120);

        let got = datagrams_in_frame(&vnet, frame, destination);
        let one_by_one: Vec<Datagram> = parsed
            .iter()
            .map(|input| {
                let mut plain = vec![0u8; 2048];
                let len = template.write(input, 1, &mut plain).expect("fits");
                udp_in_frame(&plain[..len], destination).expect("the relay's frame")
            })
            .collect();
        assert_eq!(got, one_by_one);
        assert_eq!(
            got.iter().map(|d| d.payload.clone()).collect::<Vec<_>>(),
            bodies
        );
        let ids: Vec<_> = got.iter().map(|d| payload_id(&d.payload)).collect();
        assert_eq!(ids, [1, 2, 3, 4].map(|seq| Some((5, seq))));
    }
}
