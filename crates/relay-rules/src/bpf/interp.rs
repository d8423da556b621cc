//! A classic BPF interpreter over a modelled socket buffer, with the kernel's semantics.
//!
//! It exists so that tests can run [`super::steering_program`] on millions of packets and compare
//! with [`crate::shard::shard`] without a kernel. It implements every classic opcode and the
//! kernel's run-time rules (as `net/core/filter.c` converts classic programs):
//! - A and X start at 0; the program is checked with [`validate_program`] first.
//! - Non-negative packet offsets count from where the skb data starts ([`DataStart`]);
//!   offsets from `SKF_NET_OFF` count from the network header, from `SKF_LL_OFF` from the link
//!   header; anything else below 0 fails.
//! - A load that fails (out of bounds) ends the program with 0, as does a division or modulo by
//!   an X of 0.
//! - Shifts by X use the low five bits of X, as the kernel's 32-bit ALU does.
//! - Ancillary loads (`SKF_AD_OFF + ...`) read the [`Skb`] metadata fields; the netlink and
//!   payload-offset ones need the kernel and are refused with [`InterpError::UnsupportedAncillary`].

use super::*;
use thiserror::Error;

/// Where `skb->data` points when the program runs: non-negative load offsets count from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStart {
    /// At the network header: received packets at the fanout and socket-filter hooks.
    Network,
    /// At the link-layer header: outgoing packets seen by packet sockets.
    Link,
}

/// A VLAN tag the kernel took out of the frame into metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// Tag protocol identifier (0x8100 or 0x88a8).
    pub tpid: u16,
    /// Tag control information: priority, DEI and VLAN id.
    pub tci: u16,
}

/// The parts of a socket buffer a classic BPF program can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skb<'a> {
    /// Link-layer header bytes, immediately before `network` (may be empty).
    pub link: &'a [u8],
    /// Bytes from the network header to the end of the packet.
    pub network: &'a [u8],
    /// Where the skb data starts.
    pub data_start: DataStart,
    /// EtherType in host order (`ntohs(skb->protocol)`), VLAN tags already taken out.
    pub protocol: u16,
    /// `skb->pkt_type` (`PACKET_HOST`, `PACKET_MULTICAST`, ...).
    pub pkt_type: u8,
    /// Index of the interface.
    pub ifindex: u32,
    /// Hardware type of the interface (`ARPHRD_ETHER` is 1).
    pub hatype: u16,
    /// `skb->mark`.
    pub mark: u32,
    /// `skb->queue_mapping`.
    pub queue_mapping: u16,
    /// `skb->hash`.
    pub hash: u32,
    /// The CPU the program runs on.
    pub cpu: u32,
    /// The VLAN tag in metadata, if any.
    pub vlan: Option<VlanTag>,
    /// What `SKF_AD_RANDOM` returns (fixed here, so runs are reproducible).
    pub random: u32,
}

impl<'a> Skb<'a> {
    /// A received multicast packet as the fanout hook sees it: data at the network header, no
    /// link header bytes, other metadata zero (`hatype` Ethernet).
    pub fn received(network: &'a [u8], protocol: u16) -> Self {
        Skb {
            link: &[],
            network,
            data_start: DataStart::Network,
            protocol,
            pkt_type: 2, // PACKET_MULTICAST
            ifindex: 0,
            hatype: 1, // ARPHRD_ETHER
            mark: 0,
            queue_mapping: 0,
            hash: 0,
            cpu: 0,
            vlan: None,
            random: 0,
        }
    }

    /// An outgoing packet as a packet socket sees it: data at the link header.
    pub fn outgoing(link: &'a [u8], network: &'a [u8], protocol: u16) -> Self {
        Skb {
            link,
            data_start: DataStart::Link,
            pkt_type: 4, // PACKET_OUTGOING
            ..Skb::received(network, protocol)
        }
    }

    /// Length from the data start to the end (`skb->len`).
    fn len(&self) -> usize {
        match self.data_start {
            DataStart::Network => self.network.len(),
            DataStart::Link => self.link.len() + self.network.len(),
        }
    }

    /// `size` bytes at `offset` from the link header start, crossing into `network`.
    fn link_load(&self, offset: usize, size: usize) -> Option<u32> {
        let link = self.link.len();
        if let Some(in_network) = offset.checked_sub(link) {
            return read(self.network, in_network, size);
        }
        if offset + size <= link {
            return read(self.link, offset, size);
        }
        // Straddles the two slices: byte by byte.
        (offset..offset + size).try_fold(0u32, |acc, i| {
            let byte = match i.checked_sub(link) {
                None => self.link[i],
                Some(j) => *self.network.get(j)?,
            };
            Some((acc << 8) | u32::from(byte))
        })
    }

    /// `size` bytes at `offset` from the network header start.
    fn network_load(&self, offset: usize, size: usize) -> Option<u32> {
        read(self.network, offset, size)
    }

    /// A big-endian load of `size` bytes at the kernel's signed `offset`, or `None` where the
    /// kernel's load helper fails.
    fn load(&self, offset: u32, size: usize) -> Option<u32> {
        let signed = offset as i32;
        if signed >= 0 {
            let offset = signed as usize;
            match self.data_start {
                DataStart::Network => self.network_load(offset, size),
                DataStart::Link => self.link_load(offset, size),
            }
        } else if signed >= SKF_NET_OFF as i32 {
            self.network_load(offset.wrapping_sub(SKF_NET_OFF) as usize, size)
        } else if signed >= SKF_LL_OFF as i32 {
            self.link_load(offset.wrapping_sub(SKF_LL_OFF) as usize, size)
        } else {
            None
        }
    }
}

/// A big-endian value of `size` (1, 2 or 4) bytes at `offset` in `bytes`, if they are there.
fn read(bytes: &[u8], offset: usize, size: usize) -> Option<u32> {
    match *bytes.get(offset..offset.checked_add(size)?)? {
        [a] => Some(u32::from(a)),
        [a, b] => Some(u32::from(u16::from_be_bytes([a, b]))),
        [a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
        _ => None,
    }
}

/// Why the interpreter could not run a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InterpError {
    /// The kernel would refuse the program.
    #[error("invalid program: {0}")]
    Invalid(#[from] ProgramError),
    /// An ancillary load that needs the kernel (netlink attributes, flow dissector).
    #[error("instruction {at}: ancillary load {offset:#x} is not modelled")]
    UnsupportedAncillary {
        /// Index of the instruction.
        at: usize,
        /// The offset after `SKF_AD_OFF`.
        offset: u32,
    },
}

/// A program that passed [`validate_program`], ready to run on many packets.
#[derive(Debug, Clone, Copy)]
pub struct Interpreter<'p> {
    instructions: &'p [Instruction],
}

impl<'p> Interpreter<'p> {
    /// Checks `program` once, so that [`Interpreter::run`] need not on every packet.
    pub fn new(program: &'p Program) -> Result<Self, ProgramError> {
        validate_program(program)?;
        Ok(Interpreter {
            instructions: program.instructions(),
        })
    }

    /// Runs the program on `skb` and returns what the kernel's program would return.
    pub fn run(&self, skb: &Skb<'_>) -> Result<u32, InterpError> {
        let mut a: u32 = 0;
        let mut x: u32 = 0;
        let mut scratch = [0u32; BPF_MEMWORDS as usize];
        let mut pc = 0usize;
        // Validation made every jump forward and in range and the last instruction a return,
        // so `pc` only grows and the loop ends; `get` keeps a broken invariant from panicking.
        while let Some(insn) = self.instructions.get(pc) {
            let k = insn.k;
            let at = pc;
            pc += 1;
            let class = insn.code & 0x07;
            let size = match insn.code & 0x18 {
                BPF_W => 4,
                BPF_H => 2,
                _ => 1,
            };
            let mode = insn.code & 0xe0;
            let operand = if insn.code & BPF_X != 0 { x } else { k };
            match class {
                BPF_LD => match mode {
                    BPF_ABS if k >= SKF_AD_OFF => a = ancillary(at, k - SKF_AD_OFF, a, x, skb)?,
                    BPF_ABS => match skb.load(k, size) {
                        Some(value) => a = value,
                        None => return Ok(0),
                    },
                    BPF_IND => match skb.load(x.wrapping_add(k), size) {
                        Some(value) => a = value,
                        None => return Ok(0),
                    },
                    BPF_LEN => a = skb.len() as u32,
                    BPF_MEM => a = scratch[k as usize],
                    _ => a = k, // BPF_IMM
                },
                BPF_LDX => match mode {
                    BPF_MSH => match skb.load(k, 1) {
                        Some(value) => x = 4 * (value & 0xf),
                        None => return Ok(0),
                    },
                    BPF_LEN => x = skb.len() as u32,
                    BPF_MEM => x = scratch[k as usize],
                    _ => x = k, // BPF_IMM
                },
                BPF_ST => scratch[k as usize] = a,
                BPF_STX => scratch[k as usize] = x,
                BPF_ALU => match insn.code & 0xf0 {
                    BPF_ADD => a = a.wrapping_add(operand),
                    BPF_SUB => a = a.wrapping_sub(operand),
                    BPF_MUL => a = a.wrapping_mul(operand),
                    BPF_DIV if operand == 0 => return Ok(0),
                    BPF_DIV => a /= operand,
                    BPF_MOD if operand == 0 => return Ok(0),
                    BPF_MOD => a %= operand,
                    BPF_AND => a &= operand,
                    BPF_OR => a |= operand,
                    BPF_XOR => a ^= operand,
                    BPF_LSH => a = a.wrapping_shl(operand),
                    BPF_RSH => a = a.wrapping_shr(operand),
                    _ => a = a.wrapping_neg(), // BPF_NEG
                },
                BPF_JMP => {
                    let taken = match insn.code & 0xf0 {
                        BPF_JA => {
                            pc += k as usize;
                            continue;
                        }
                        BPF_JEQ => a == operand,
                        BPF_JGT => a > operand,
                        BPF_JGE => a >= operand,
                        _ => a & operand != 0, // BPF_JSET
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                BPF_RET => return Ok(if insn.code & BPF_A != 0 { a } else { k }),
                _ => {
                    // BPF_MISC
                    if insn.code & BPF_TXA != 0 {
                        a = x;
                    } else {
                        x = a;
                    }
                }
            }
        }
        // Unreachable for a validated program (it ends in a return); the kernel would never
        // have run it, so treat it as invalid rather than invent a result.
        Err(InterpError::Invalid(ProgramError::NoFinalReturn))
    }
}

/// Checks and runs `program` on `skb` once. For many packets, build an [`Interpreter`] once.
pub fn run(program: &Program, skb: &Skb<'_>) -> Result<u32, InterpError> {
    Interpreter::new(program)?.run(skb)
}

/// The value of the ancillary load at `SKF_AD_OFF + offset`.
fn ancillary(at: usize, offset: u32, a: u32, x: u32, skb: &Skb<'_>) -> Result<u32, InterpError> {
    let vlan = skb.vlan;
    Ok(match offset {
        SKF_AD_PROTOCOL => u32::from(skb.protocol),
        SKF_AD_PKTTYPE => u32::from(skb.pkt_type),
        SKF_AD_IFINDEX => skb.ifindex,
        SKF_AD_MARK => skb.mark,
        SKF_AD_QUEUE => u32::from(skb.queue_mapping),
        SKF_AD_HATYPE => u32::from(skb.hatype),
        SKF_AD_RXHASH => skb.hash,
        SKF_AD_CPU => skb.cpu,
        SKF_AD_ALU_XOR_X => a ^ x,
        SKF_AD_VLAN_TAG => vlan.map_or(0, |tag| u32::from(tag.tci)),
        SKF_AD_VLAN_TAG_PRESENT => u32::from(vlan.is_some()),
        SKF_AD_VLAN_TPID => vlan.map_or(0, |tag| u32::from(tag.tpid)),
        SKF_AD_RANDOM => skb.random,
        _ => return Err(InterpError::UnsupportedAncillary { at, offset }),
    })
}

#[cfg(test)]
#[path = "interp_tests.rs"]
mod tests;
