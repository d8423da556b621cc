//! The meeting point with fanout-core (feature `fanout-core`): a frame off a receive ring parsed
//! with what the ring says of it, interface facts from the kernel's, and this crate's BPF
//! programs in the form fanout-core attaches.
//!
//! Without the feature the crate depends on nothing that makes a syscall; with it, a relay
//! built on both crates needs no conversion of its own:
//!
//! ```no_run
//! use fanout_core::{InterfaceInfo, RxRingBuilder};
//! use relay_rules::{InterfaceFacts, ring_frames};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let facts = InterfaceFacts::from(&InterfaceInfo::lookup("eth0")?);
//! let mut ring = RxRingBuilder::new("eth0").build()?;
//! while let Some(block) = ring.next_block() {
//!     for frame in block.frames() {
//!         match ring_frames::parse(&frame) {
//!             Ok(datagram) => println!("{}:{} on {}", datagram.destination_addr(),
//!                                      datagram.destination_port, facts.name),
//!             Err(reason) => println!("dropped: {reason:?}"),
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

use fanout_core::{BpfError, BpfInstruction, BpfProgram, Frame, InterfaceInfo};

use crate::bpf::{Instruction, Program};
use crate::interface::InterfaceFacts;
use crate::wire::{self, Datagram, DropReason, VlanTag};

/// Parses a frame read off a receive ring, as a relay must:
///
/// - with the VLAN tag the driver took off into the ring's frame header (veth and most NICs
///   do), which the frame's bytes no longer show;
/// - with its UDP checksum cleared when the kernel says it is only partly computed
///   (`TP_STATUS_CSUMNOTREADY`: sent by this host, seen before the checksum offload filled it
///   in). [`FrameTemplate::write`](crate::FrameTemplate::write) updates a checksum
///   incrementally, which only a complete checksum allows; 0 (no checksum) is what IPv4 allows
///   instead, so the rewritten datagram is never sent with a wrong one.
pub fn parse<'a>(frame: &'a Frame<'_>) -> Result<Datagram<'a>, DropReason> {
    let mut datagram = wire::parse(frame.data(), ring_vlan(frame))?;
    if frame.checksum_partial() {
        datagram.udp_checksum = 0;
    }
    Ok(datagram)
}

/// The tag the driver took off the frame into the ring's frame header, if any (the TPID
/// defaults to 802.1Q when the kernel does not report it).
pub fn ring_vlan(frame: &Frame<'_>) -> Option<VlanTag> {
    frame.vlan_tci().map(|tci| VlanTag {
        tpid: frame.vlan_tpid().unwrap_or(wire::TPID_8021Q),
        tci,
    })
}

impl From<&InterfaceInfo> for InterfaceFacts {
    /// The facts rules need of an interface the kernel described: its addresses without their
    /// prefix lengths, the primary address first.
    fn from(info: &InterfaceInfo) -> Self {
        InterfaceFacts {
            name: info.name.clone(),
            index: info.index,
            mac: info.mac,
            mtu: info.mtu,
            ipv4: info.ipv4.iter().map(|prefix| prefix.addr).collect(),
            ipv6: info.ipv6.clone(),
        }
    }
}

impl From<Instruction> for BpfInstruction {
    fn from(instruction: Instruction) -> Self {
        BpfInstruction::jump(
            instruction.code,
            instruction.k,
            instruction.jt,
            instruction.jf,
        )
    }
}

impl Program {
    /// The program in the form fanout-core attaches (as a socket filter, or as the program of a
    /// cBPF fanout group); refused only for a length the kernel does not take (1 to 4096).
    pub fn to_kernel(&self) -> Result<BpfProgram, BpfError> {
        BpfProgram::new(
            self.instructions()
                .iter()
                .copied()
                .map(Into::into)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_core::iface::{Ipv4Prefix, LinkFlags};
    use std::net::Ipv4Addr;

    #[test]
    fn kernel_interface_facts_become_rule_facts() {
        let info = InterfaceInfo {
            index: 7,
            name: "eth1".into(),
            link_type: 1,
            mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: 9000,
            ipv4: vec![
                Ipv4Prefix {
                    addr: Ipv4Addr::new(10, 0, 0, 1),
                    prefix_len: 24,
                },
                Ipv4Prefix {
                    addr: Ipv4Addr::new(10, 0, 1, 1),
                    prefix_len: 32,
                },
            ],
            ipv6: vec!["2001:db8::1".parse().unwrap(), "fe80::1".parse().unwrap()],
            flags: LinkFlags::default(),
        };
        let facts = InterfaceFacts::from(&info);
        assert_eq!(
            facts,
            InterfaceFacts {
                name: "eth1".into(),
                index: 7,
                mac: Some([2, 0, 0, 0, 0, 1]),
                mtu: 9000,
                ipv4: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 1, 1)],
                ipv6: vec!["2001:db8::1".parse().unwrap(), "fe80::1".parse().unwrap()],
            }
        );
    }

    #[test]
    fn programs_keep_every_instruction_in_the_kernel_form() {
        let program = crate::bpf::key_filter(
            vec![(Ipv4Addr::new(239, 1, 1, 1), 5000)],
            crate::bpf::KeySense::Listed,
        )
        .expect("one key fits");
        let kernel = program.to_kernel().expect("a valid length");
        assert_eq!(kernel.instructions().len(), program.len());
        for (ours, theirs) in program.instructions().iter().zip(kernel.instructions()) {
            assert_eq!(
                (ours.code, ours.jt, ours.jf, ours.k),
                (theirs.code, theirs.jt, theirs.jf, theirs.k)
            );
        }
        assert!(Program::new(Vec::new()).to_kernel().is_err());
    }
}
