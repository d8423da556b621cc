//! Safe Linux AF_PACKET rings, fanout groups and the facts around them.
//!
//! fanout-core gets packets off the wire at line rate without unsafe code in the caller:
//! memory-mapped receive rings (TPACKET_V3 blocks for throughput, TPACKET_V2 frames for latency)
//! read in place, a transmit ring kicked once per batch, PACKET_FANOUT groups that spread one
//! interface's traffic over worker threads or processes, classic BPF filters and steering
//! programs, ring statistics, and hand-off of a ring between processes. Around them: CPU pinning
//! ([`cpu`]), interface facts ([`iface`]), the RSS, RPS and IRQ facts that decide which CPU a
//! packet lands on ([`steering`]), IGMP and MLD memberships by interface index, IPv4 and IPv6
//! groups in one set ([`igmp`]) and UDP sends to IPv4 and IPv6 destinations batched with
//! `sendmmsg` ([`udp_batch`]). What the running kernel offers of all this is probed
//! once per process, not read off its release ([`features`]); where a feature is missing the
//! builders fall back. It knows nothing of rules.
//!
//! ```text
//!                    RxRingBuilder ──build──▶ RxRing ──next_block──▶ Block ──frames──▶ Frame
//!  PacketSocket ◀──owns──┘   │ (version, ring, mmap,   │  wait (poll)     │ Drop: block back    (borrows
//!  (socket.rs: bind,         │  filter, bind, fanout)  │  statistics      │ to the kernel        the Block)
//!   options, memberships)    │                         │  into_handle ──▶ RingHandle ──send_ring/recv_ring──▶ worker: map()
//!                    TxRingBuilder ──build──▶ TxRing ──reserve──▶ TxSlot ──commit──▶ flush (one send per batch)
//!                    (linear, segmentation)     └──hold_with──▶ HeldSlot ──commit_held (UdpSegments)──┘
//!  fanout.rs: FanoutConfig/Mode/Flags   bpf.rs: BpfInstruction, filters   stats.rs: RingStats deltas
//! ```
//!
//! Unsafe code lives only in the small modules that wrap syscalls and kernel-shared memory
//! (`sys`, `ring::mmap`, `ring::v3`, `ring::v2`, `ring::tx`, `ring::tx_held`, `handoff`,
//! `iface::ioctl`, `igmp`, `udp_batch`, `alloc_count`, `heap`), each stating the invariants it
//! keeps.
//!
//! Open a ring and read frames (needs CAP_NET_RAW):
//!
//! ```no_run
//! use std::time::Duration;
//! use fanout_core::ring::{RingVersion, RxRingBuilder};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut ring = RxRingBuilder::new("eth0")
//!     .version(RingVersion::V3) // or V2 for per-frame latency
//!     .block_size(1 << 20)
//!     .block_count(16)
//!     .build()?;
//! for _ in 0..100 {
//!     ring.wait(Duration::from_millis(100))?;
//!     while let Some(block) = ring.next_block() {
//!         for frame in block.frames() {
//!             println!("{} bytes at {:?}", frame.original_len(), frame.timestamp());
//!         }
//!     } // each block goes back to the kernel here
//! }
//! # Ok(()) }
//! ```
//!
//! A relay loop in one process per CPU: every ring of a `cpu` fanout group gets the packets the
//! kernel received on its CPU, and frames go out through a transmit ring, one kick per batch.
//! On a real NIC the ring needs a link-layer membership for the groups it relays (a veth
//! delivers every frame; a NIC filters multicast MACs nobody joined):
//!
//! ```no_run
//! use std::time::Duration;
//! use fanout_core::socket::LinkMembership;
//! use fanout_core::{FanoutConfig, FanoutGroupId, FanoutMode, RxRingBuilder, TxRingBuilder};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let group = FanoutGroupId(0x4242); // the same id in every worker
//! let mut rx = RxRingBuilder::new("eth0")
//!     .fanout(FanoutConfig::new(group, FanoutMode::Cpu))
//!     .build()?;
//! rx.socket().add_membership(LinkMembership::Multicast([0x01, 0x00, 0x5e, 0x01, 0x01, 0x01]))?;
//! let mut tx = TxRingBuilder::new("eth1").build()?;
//! loop {
//!     rx.wait(Duration::from_millis(100))?;
//!     while let Some(block) = rx.next_block() {
//!         for frame in block.frames() {
//!             // A real relay rewrites headers here; this one copies the frame as it came.
//!             if let Some(mut slot) = tx.reserve() {
//!                 let len = frame.data().len().min(slot.buffer().len());
//!                 slot.buffer()[..len].copy_from_slice(&frame.data()[..len]);
//!                 slot.commit(len);
//!             }
//!         }
//!     }
//!     tx.flush()?; // one send(2) for everything committed above
//! }
//! # }
//! ```

#![deny(unsafe_code)]

pub mod alloc_count;
pub mod bpf;
pub mod cpu;
pub mod fanout;
pub mod features;
pub mod handoff;
pub mod heap;
pub mod iface;
pub mod igmp;
pub mod ring;
pub mod socket;
pub mod stats;
pub mod steering;
mod sys;
pub mod udp_batch;
pub mod vnet;

pub use bpf::{BpfError, BpfInstruction, BpfProgram};
pub use cpu::{CpuError, CpuSet};
pub use fanout::{
    FanoutConfig, FanoutError, FanoutFlags, FanoutGroupId, FanoutMembership, FanoutMode,
};
pub use features::{Feature, Features};
pub use handoff::{HandoffError, RingDescriptor, RingHandle};
pub use iface::{IfaceError, InterfaceInfo};
/// The errno that every error of this crate carries, so callers can match on it without
/// depending on `nix` themselves.
pub use nix::errno::Errno;
pub use ring::{
    Frame, RingError, RingVersion, RxRing, RxRingBuilder, TxDescriptor, TxRing, TxRingBuilder,
    TxRingHandle,
};
pub use socket::{PacketSocket, Protocol, SocketError};
pub use stats::RingStats;
pub use steering::{Steering, SteeringError, SteeringReport};
pub use vnet::VnetHeader;
