//! Shared pieces of the core_rx, core_tx, core_fanout and core_handoff tests: one namespace with a
//! veth pair `va` ↔ `vb`, test frames of a private EtherType, and bounded collection from rings.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    unreachable_pub,
    reason = "shared by several test binaries through `mod`"
)]

use std::time::{Duration, Instant};

use fanout_core::ring::{Readiness, RxRing};
use fanout_core::{PacketSocket, Protocol};
use fanout_relay_tests::{Netns, Veth, privileged, veth_pair};

/// IEEE "local experimental" EtherType: nothing else on the link uses it, so rings bound to it
/// see only the test's frames.
pub const ETHERTYPE: u16 = 0x88b5;
/// Marks a test frame's payload.
pub const MAGIC: &[u8; 4] = b"FRT1";

/// A namespace holding both ends of a veth pair, IPv6 off so no stray ND/MLD frames appear.
pub struct Link {
    _veth: Veth,
    pub ns: Netns,
}

impl Link {
    /// `None` (after printing why) when namespaces are unavailable here.
    pub fn new(test: &str) -> Option<Link> {
        if !privileged(test) {
            return None;
        }
        let ns = Netns::new(test);
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        let veth = veth_pair(&ns, "va", &ns, "vb");
        Some(Link { _veth: veth, ns })
    }

    /// A plain packet socket that sends on `ifname`.
    pub fn sender(&self, ifname: &str) -> PacketSocket {
        let ifname = ifname.to_owned();
        self.ns.run(move || {
            let mut socket = PacketSocket::open().expect("packet socket");
            socket.bind(&ifname, Protocol::NONE).expect("bind sender");
            socket
        })
    }
}

/// A broadcast test frame of `len` bytes (at least 23): payload = MAGIC, seq (BE), flow, filler.
pub fn test_frame(seq: u32, flow: u8, len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&ETHERTYPE.to_be_bytes());
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&seq.to_be_bytes());
    frame.push(flow);
    let mut filler = seq.wrapping_mul(2_654_435_761);
    while frame.len() < len {
        filler = filler.rotate_left(5) ^ 0x9e37_79b9;
        frame.push(filler as u8);
    }
    frame
}

/// `(seq, flow)` of a test frame, `None` for anything else.
pub fn parse_test_frame(data: &[u8]) -> Option<(u32, u8)> {
    if data.len() < 23 || data[12..14] != ETHERTYPE.to_be_bytes() || &data[14..18] != MAGIC {
        return None;
    }
    Some((u32::from_be_bytes(data[18..22].try_into().ok()?), data[22]))
}

/// Reads frames until `want` arrived or `timeout` passed.
pub fn collect(ring: &mut RxRing, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match ring.wait(deadline - now).expect("wait on ring") {
            Readiness::Readable | Readiness::Interrupted => {}
            Readiness::TimedOut => break,
            Readiness::InterfaceDown => panic!("interface went down while collecting"),
        }
        while let Some(block) = ring.next_block() {
            out.extend(block.frames().map(|f| f.data().to_vec()));
        }
    }
    out
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("cpu index in range");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("sched_setaffinity");
}

/// Number of CPUs this process may run on.
pub fn usable_cpus() -> Vec<usize> {
    let set =
        nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("sched_getaffinity");
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}
