//! The probes: each feature tried once on scratch sockets bound to a loopback interface.
//!
//! They run on a thread of their own that first moves into a new network namespace, whose
//! loopback it sets up: the fanout groups they create and the datagrams they send exist only
//! there, and vanish with the thread's sockets. A process that may not create a namespace
//! (no CAP_SYS_ADMIN) probes on its own namespace's loopback instead: the groups use an
//! ethertype nobody sends (but ids another program's group there may hold, which would make a
//! probe report its feature missing), and the probe frames are dropped by the stack on arrival.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

use super::Feature;
use crate::bpf::BpfProgram;
use crate::fanout::{self, FanoutFlags, FanoutMode};
use crate::iface::{IfName, IfSocket};
use crate::ring::{Geometry, TxRing, TxRingBuilder, UdpSegments};
use crate::socket::{PacketSocket, Protocol};

/// The ethertype the fanout probes bind with: the IEEE's local experimental one, which no
/// traffic of this host carries.
const PROBE_ETHERTYPE: Protocol = Protocol(0x88b5);
/// How long a probe frame may take to be seen on loopback before the feature is taken as
/// missing. Loopback delivers within the sending call; the margin is for a slow machine.
const ARRIVAL: Duration = Duration::from_millis(500);

/// What the probes opened, closed only once their result is out: closing a packet socket waits
/// for the network stack's readers (`synchronize_net()`), some milliseconds each.
type Kept = Vec<Box<dyn std::any::Any>>;

/// Runs every probe; the bits of the features found.
pub(super) fn run() -> u16 {
    let (result, outcome) = std::sync::mpsc::channel();
    let probing = std::thread::Builder::new()
        .name("kernel-probe".into())
        .spawn(move || {
            // Only this thread moves: a namespace is a property of the task.
            if let Err(errno) = nix::sched::unshare(CloneFlags::CLONE_NEWNET) {
                log::debug!("kernel probes: no namespace of their own ({errno}): using this one");
            }
            if let Err(errno) = loopback_up() {
                log::debug!("kernel probes: loopback not up ({errno})");
            }
            let mut kept = Kept::new();
            let bits = Feature::ALL
                .into_iter()
                .filter(|&feature| try_feature(feature, &mut kept))
                .fold(0, |bits, feature| bits | feature.bit());
            // The caller may be gone already; the thread still closes what it opened.
            let _ = result.send(bits);
            drop(kept);
        });
    match probing.map(|_detached| outcome.recv()) {
        Ok(Ok(bits)) => bits,
        // A thread that cannot start or that panicked found nothing: every fallback is taken.
        _ => {
            log::warn!("kernel probes failed to run: every kernel feature is taken as missing");
            0
        }
    }
}

fn loopback_up() -> Result<(), nix::errno::Errno> {
    let name = IfName::new("lo").expect("\"lo\" is a valid interface name");
    IfSocket::open()?.set_up(name)
}

fn try_feature(feature: Feature, kept: &mut Kept) -> bool {
    let found = match feature {
        Feature::TxSegmentation => segmented_frame_arrives(kept),
        Feature::TxLinear => linear_frame_arrives(kept),
        Feature::IgnoreOutgoing => {
            option_is_taken(kept, |socket| socket.set_ignore_outgoing(true).is_ok())
        }
        Feature::FanoutIgnoreOutgoing => group_ignores_outgoing(kept),
        Feature::UniqueId => unique_id_is_chosen(kept),
        Feature::Rollover => joins(kept, FanoutMode::Hash, FanoutFlags::ROLLOVER),
        Feature::Defrag => joins(kept, FanoutMode::Hash, FanoutFlags::DEFRAG),
        Feature::FanoutCbpf => cbpf_program_is_taken(kept),
        Feature::FanoutEbpf => joins(kept, FanoutMode::Ebpf, FanoutFlags::NONE),
        Feature::QdiscBypass => {
            option_is_taken(kept, |socket| socket.set_qdisc_bypass(true).is_ok())
        }
    };
    log::debug!(
        "kernel feature {feature}: {}",
        if found { "found" } else { "missing" }
    );
    found
}

/// A packet socket bound to loopback with [`PROBE_ETHERTYPE`], as fanout needs.
fn bound() -> Option<PacketSocket> {
    let mut socket = PacketSocket::open().ok()?;
    socket.bind("lo", PROBE_ETHERTYPE).ok()?;
    Some(socket)
}

/// Whether `set` succeeds on a [`bound`] socket.
fn option_is_taken(kept: &mut Kept, set: impl FnOnce(&PacketSocket) -> bool) -> bool {
    let Some(socket) = bound() else {
        return false;
    };
    let taken = set(&socket);
    kept.push(Box::new(socket));
    taken
}

/// Joins a new group of `mode` with `flags` by raw `setsockopt`, so that the probe leaves no
/// record in [`fanout`]'s bookkeeping; the membership the kernel reads back, if it took it.
fn join_raw(
    socket: &PacketSocket,
    id: u16,
    mode: FanoutMode,
    flags: FanoutFlags,
) -> Option<fanout::FanoutMembership> {
    let type_flags = mode.raw() | flags.bits();
    let arg = libc::c_int::from(id) | (libc::c_int::from(type_flags) << 16);
    socket
        .set_packet_int("PACKET_FANOUT", libc::PACKET_FANOUT, arg)
        .ok()?;
    fanout::membership(socket).ok().flatten()
}

/// Whether a group of `mode` with `flags` can be made, and keeps the flags: a kernel that does
/// not know a flag may take and keep it without acting on it, which the probes of those flags
/// check otherwise.
fn joins(kept: &mut Kept, mode: FanoutMode, flags: FanoutFlags) -> bool {
    // Ids of the probes' own: each probe's group is new (and in a scratch namespace, alone).
    let id = 0x7f00 | (mode.raw() << 4) | (flags.bits() >> 12);
    option_is_taken(kept, |socket| {
        join_raw(socket, id, mode, flags)
            .is_some_and(|joined| joined.mode == mode && joined.flags.contains(flags))
    })
}

/// A group with `PACKET_FANOUT_FLAG_IGNORE_OUTGOING` on loopback gets a frame sent there once,
/// as it comes back in; without the flag's effect, also as it goes out. Earlier kernels keep the
/// flag among the group's flags and act as if it were not there, so only the copies tell.
fn group_ignores_outgoing(kept: &mut Kept) -> bool {
    let Some(mut member) = PacketSocket::open().ok() else {
        return false;
    };
    // Every protocol: the kernel copies outgoing frames only to such sockets.
    let joined = member.bind("lo", Protocol::ALL).is_ok()
        && join_raw(
            &member,
            0x7d00,
            FanoutMode::Hash,
            FanoutFlags::IGNORE_OUTGOING,
        )
        .is_some();
    let Some(mut sender) = PacketSocket::open().ok() else {
        return false;
    };
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&PROBE_ETHERTYPE.0.to_be_bytes());
    frame.extend_from_slice(b"fanout-core outgoing frame probe");
    frame.resize(64, 0);
    let sent = joined
        && sender.bind("lo", Protocol::NONE).is_ok()
        && sender.send(&frame).is_ok_and(|len| len == frame.len());
    let copies = if sent { copies(&member, &frame) } else { 0 };
    kept.push(Box::new(member));
    kept.push(Box::new(sender));
    copies == 1
}

/// How many frames equal to `frame` `socket` gets: loopback delivers both copies within the
/// sending call, so a short wait after the first suffices.
fn copies(socket: &PacketSocket, frame: &[u8]) -> usize {
    let deadline = Instant::now() + ARRIVAL;
    let mut settled = deadline;
    let mut count = 0;
    let mut buffer = [0u8; 2048];
    while count < 2 && Instant::now() < settled.min(deadline) {
        match socket.try_recv(&mut buffer) {
            Ok(Some(len)) if &buffer[..len] == frame => {
                count += 1;
                settled = Instant::now() + Duration::from_millis(20);
            }
            Ok(Some(_)) => {}
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => break,
        }
    }
    count
}

/// A kernel that knows `PACKET_FANOUT_FLAG_UNIQUEID` drops it once the group exists; one that
/// does not keeps it among the group's flags and makes group 0 as asked.
fn unique_id_is_chosen(kept: &mut Kept) -> bool {
    // Cpu mode, so that the word read back is never 0 (see `fanout::membership_of`).
    option_is_taken(kept, |socket| {
        join_raw(socket, 0, FanoutMode::Cpu, FanoutFlags::UNIQUE_ID)
            .is_some_and(|joined| !joined.flags.contains(FanoutFlags::UNIQUE_ID))
    })
}

/// A cbpf group that takes a steering program.
fn cbpf_program_is_taken(kept: &mut Kept) -> bool {
    option_is_taken(kept, |socket| {
        join_raw(socket, 0x7e00, FanoutMode::Cbpf, FanoutFlags::NONE).is_some()
            && fanout::set_cbpf_program(socket, BpfProgram::accept_all().instructions()).is_ok()
    })
}

/// Sends one frame through a linear transmit ring on loopback: a packet socket there must see
/// it as sent (a kernel whose ring ignores vnet headers sends the header as frame data).
fn linear_frame_arrives(kept: &mut Kept) -> bool {
    let Some(watch) = watcher() else {
        return false;
    };
    let Some(mut ring) = ring(false) else {
        return false;
    };
    let frame = udp_frame(b"fanout-core linear frame probe", false);
    let arrived = matches!(ring.send(&frame), Ok(true))
        && ring.flush().is_ok()
        && seen(&watch, |data| data == frame.as_slice());
    kept.push(Box::new(watch));
    kept.push(Box::new(ring));
    arrived
}

/// Sends two datagrams as one segmented frame through a transmit ring on loopback: the kernel
/// must take it (an older one marks it `TP_STATUS_WRONG_FORMAT`) and send it, whole or already
/// split, where a packet socket sees it.
fn segmented_frame_arrives(kept: &mut Kept) -> bool {
    let Some(watch) = watcher() else {
        return false;
    };
    let Some(mut ring) = ring(true) else {
        return false;
    };
    let payload = b"segment one.....segment two.....";
    let frame = udp_frame(payload, true);
    let held = ring.hold_with(|buffer| {
        buffer
            .get_mut(..frame.len())
            .map(|slot| slot.copy_from_slice(&frame))
            .ok_or(())
    });
    let Some(Ok((slot, ()))) = held else {
        return false;
    };
    let segments = UdpSegments {
        udp_offset: UDP_OFFSET as u16,
        segment_size: 16,
    };
    ring.commit_held(slot, frame.len(), Some(segments));
    let first = UDP_OFFSET + 8..UDP_OFFSET + 8 + 16;
    let arrived = ring.flush().is_ok()
        && ring.reclaim() <= 1
        && ring.counters().wrong_format == 0
        && seen(&watch, |data| {
            data.get(first.clone()) == Some(&payload[..16])
        });
    kept.push(Box::new(watch));
    kept.push(Box::new(ring));
    arrived
}

/// A packet socket on loopback that sees its IPv4 frames, those sent included.
fn watcher() -> Option<PacketSocket> {
    let mut socket = PacketSocket::open().ok()?;
    socket.bind("lo", Protocol(0x0800)).ok()?;
    Some(socket)
}

fn ring(segmentation: bool) -> Option<TxRing> {
    TxRingBuilder::new("lo")
        .geometry(Geometry::new(1 << 16, 1, 2048))
        .linear(true)
        .segmentation(segmentation)
        .populate(false)
        .build()
        .ok()
}

/// Whether `watch` gets a frame that `matches` within [`ARRIVAL`].
fn seen(watch: &PacketSocket, matches: impl Fn(&[u8]) -> bool) -> bool {
    let deadline = Instant::now() + ARRIVAL;
    let mut buffer = [0u8; 2048];
    while Instant::now() < deadline {
        match watch.try_recv(&mut buffer) {
            Ok(Some(len)) if matches(&buffer[..len]) => return true,
            Ok(Some(_)) => {}
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => return false,
        }
    }
    false
}

const UDP_OFFSET: usize = 14 + 20;

/// An Ethernet frame to loopback's all-zero address holding an IPv4 UDP datagram from and to
/// 127.0.0.1, port 9 (discard), with `payload`. (The stack drops it on arrival: a packet
/// from 127.0.0.1 that did not come through the host's own routing is a martian.) A frame to be segmented carries the folded pseudo-header
/// sum in its UDP checksum (the kernel completes each datagram's); a whole one carries none
/// (0: IPv4 UDP without a checksum).
fn udp_frame(payload: &[u8], segmented: bool) -> Vec<u8> {
    let port = 9u16;
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&Ipv4Addr::LOCALHOST.octets());
    ip[16..20].copy_from_slice(&Ipv4Addr::LOCALHOST.octets());
    let checksum = !fold(sum(&ip));
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&port.to_be_bytes());
    frame.extend_from_slice(&port.to_be_bytes());
    frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let pseudo = sum(&ip[12..20]) + 17 + udp_len as u32;
    let udp_checksum = if segmented { fold(pseudo) } else { 0 };
    frame.extend_from_slice(&udp_checksum.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The ones' complement sum of `bytes` as 16-bit big-endian words, unfolded.
fn sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_frames_have_valid_ip_checksums_and_lengths() {
        let frame = udp_frame(b"0123456789", false);
        assert_eq!(frame.len(), 14 + 20 + 8 + 10);
        assert_eq!(fold(sum(&frame[14..34])), 0xffff, "IPv4 header checksum");
        assert_eq!(&frame[UDP_OFFSET + 4..UDP_OFFSET + 6], &18u16.to_be_bytes());
        let segmented = udp_frame(b"0123456789", true);
        // 127.0.0.1 twice, protocol 17, UDP length 18.
        let expected = fold(2 * (0x7f00 + 0x0001) + 17 + 18);
        assert_eq!(
            &segmented[UDP_OFFSET + 6..UDP_OFFSET + 8],
            &expected.to_be_bytes()
        );
    }
}
