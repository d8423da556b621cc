//! Classic BPF as plain data: the instruction format, the steering program that computes
//! [`crate::shard::shard`] in the kernel, the kernel's static checks, and an interpreter.
//!
//! Under `shard` placement the fanout group runs [`steering_program`] (PACKET_FANOUT_CBPF); the
//! kernel sends each packet to member `program(skb) % members`. This module only builds and
//! checks instructions: handing them to the kernel is `fanout-core`'s job, which is why
//! [`Instruction`] has the exact layout of Linux's `struct sock_filter`.
//!
//! [`key_filter`] builds the socket filters that keep worker classes apart: a named class's
//! receive rings get only the frames of its rules' (destination, port) keys, the default class's
//! rings everything else. [`consume_program`] runs the same search as a tc classifier at an input
//! interface's ingress hook, dropping the frames the relay's rules relay once its rings took
//! them (`consume_input`).
//!
//! ```
//! use relay_rules::bpf::{interp, steering_program, validate_program};
//!
//! let program = steering_program(4);
//! validate_program(&program).expect("the emitter only writes programs the kernel accepts");
//! // 239.1.2.3:5000, a 20-byte IPv4 header followed by UDP.
//! let mut packet = [0u8; 28];
//! packet[0] = 0x45;
//! packet[9] = 17;
//! packet[16..20].copy_from_slice(&[239, 1, 2, 3]);
//! packet[22..24].copy_from_slice(&5000u16.to_be_bytes());
//! let skb = interp::Skb::received(&packet, 0x0800);
//! let expected = relay_rules::shard::shard(std::net::Ipv4Addr::new(239, 1, 2, 3), 5000, 4);
//! assert_eq!(interp::run(&program, &skb), Ok(expected));
//! ```

mod check;
mod consume;
pub mod interp;
mod ipv6;
mod keys;
mod prefilter;
mod steering;
#[cfg(test)]
mod test_packets;

pub use check::{ProgramError, validate_program};
pub use consume::{TC_ACT_SHOT, TC_ACT_UNSPEC, consume_program};
pub use keys::{
    FilterKey, KEY_FILTER_MAX_KEYS, KeyFilterError, KeySense, key_filter, key_filter_with,
};
pub use prefilter::{ip_prefilter, udp_prefilter};
pub use steering::steering_program;

// Instruction classes (`BPF_CLASS(code)`), as in `linux/bpf_common.h`.
/// Load into A.
pub const BPF_LD: u16 = 0x00;
/// Load into X.
pub const BPF_LDX: u16 = 0x01;
/// Store A into scratch memory.
pub const BPF_ST: u16 = 0x02;
/// Store X into scratch memory.
pub const BPF_STX: u16 = 0x03;
/// Arithmetic on A.
pub const BPF_ALU: u16 = 0x04;
/// Jumps.
pub const BPF_JMP: u16 = 0x05;
/// Return from the program.
pub const BPF_RET: u16 = 0x06;
/// Register transfers (TAX, TXA).
pub const BPF_MISC: u16 = 0x07;

// Load sizes (`BPF_SIZE(code)`).
/// 32-bit word.
pub const BPF_W: u16 = 0x00;
/// 16-bit half word.
pub const BPF_H: u16 = 0x08;
/// Byte.
pub const BPF_B: u16 = 0x10;

// Load modes (`BPF_MODE(code)`).
/// Immediate: the constant `k`.
pub const BPF_IMM: u16 = 0x00;
/// Packet bytes at offset `k`.
pub const BPF_ABS: u16 = 0x20;
/// Packet bytes at offset `X + k`.
pub const BPF_IND: u16 = 0x40;
/// Scratch memory word `k`.
pub const BPF_MEM: u16 = 0x60;
/// Length of the packet from where the skb data starts.
pub const BPF_LEN: u16 = 0x80;
/// `X = 4 * (packet[k] & 0xf)`, the IPv4 header length idiom (LDX byte only).
pub const BPF_MSH: u16 = 0xa0;

// ALU operations (`BPF_OP(code)`).
/// `A += operand`.
pub const BPF_ADD: u16 = 0x00;
/// `A -= operand`.
pub const BPF_SUB: u16 = 0x10;
/// `A *= operand`.
pub const BPF_MUL: u16 = 0x20;
/// `A /= operand`.
pub const BPF_DIV: u16 = 0x30;
/// `A |= operand`.
pub const BPF_OR: u16 = 0x40;
/// `A &= operand`.
pub const BPF_AND: u16 = 0x50;
/// `A <<= operand`.
pub const BPF_LSH: u16 = 0x60;
/// `A >>= operand` (logical).
pub const BPF_RSH: u16 = 0x70;
/// `A = -A`.
pub const BPF_NEG: u16 = 0x80;
/// `A %= operand`.
pub const BPF_MOD: u16 = 0x90;
/// `A ^= operand`.
pub const BPF_XOR: u16 = 0xa0;

// Jump operations (`BPF_OP(code)`).
/// Unconditional jump by `k`.
pub const BPF_JA: u16 = 0x00;
/// Jump if `A == operand`.
pub const BPF_JEQ: u16 = 0x10;
/// Jump if `A > operand` (unsigned).
pub const BPF_JGT: u16 = 0x20;
/// Jump if `A >= operand` (unsigned).
pub const BPF_JGE: u16 = 0x30;
/// Jump if `A & operand != 0`.
pub const BPF_JSET: u16 = 0x40;

// Operand source (`BPF_SRC(code)`) and return value (`BPF_RVAL(code)`).
/// The operand is the constant `k`.
pub const BPF_K: u16 = 0x00;
/// The operand is register X.
pub const BPF_X: u16 = 0x08;
/// Return register A.
pub const BPF_A: u16 = 0x10;

// MISC operations (`BPF_MISCOP(code)`).
/// `X = A`.
pub const BPF_TAX: u16 = 0x00;
/// `A = X`.
pub const BPF_TXA: u16 = 0x80;

/// Number of 32-bit scratch memory words (`BPF_MEMWORDS`).
pub const BPF_MEMWORDS: u32 = 16;
/// Most instructions the kernel accepts in one program (`BPF_MAXINSNS`).
pub const BPF_MAXINSNS: usize = 4096;

/// Base of the ancillary loads: `ld [SKF_AD_OFF + SKF_AD_*]` reads skb metadata, not bytes.
pub const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
/// Base of loads relative to the network header, wherever the skb data starts.
pub const SKF_NET_OFF: u32 = (-0x10_0000i32) as u32;
/// Base of loads relative to the link-layer (MAC) header.
pub const SKF_LL_OFF: u32 = (-0x20_0000i32) as u32;

/// Ancillary: `ntohs(skb->protocol)`, the EtherType after VLAN tags were taken out.
pub const SKF_AD_PROTOCOL: u32 = 0;
/// Ancillary: `skb->pkt_type` (host, broadcast, multicast, other host, outgoing).
pub const SKF_AD_PKTTYPE: u32 = 4;
/// Ancillary: index of the interface the packet is on.
pub const SKF_AD_IFINDEX: u32 = 8;
/// Ancillary: netlink attribute lookup (not modelled by the interpreter).
pub const SKF_AD_NLATTR: u32 = 12;
/// Ancillary: nested netlink attribute lookup (not modelled by the interpreter).
pub const SKF_AD_NLATTR_NEST: u32 = 16;
/// Ancillary: `skb->mark`.
pub const SKF_AD_MARK: u32 = 20;
/// Ancillary: `skb->queue_mapping`.
pub const SKF_AD_QUEUE: u32 = 24;
/// Ancillary: the interface's hardware type (`ARPHRD_*`).
pub const SKF_AD_HATYPE: u32 = 28;
/// Ancillary: `skb->hash`.
pub const SKF_AD_RXHASH: u32 = 32;
/// Ancillary: the CPU running the program.
pub const SKF_AD_CPU: u32 = 36;
/// Ancillary: `A ^= X` (a load that is really an ALU operation).
pub const SKF_AD_ALU_XOR_X: u32 = 40;
/// Ancillary: the VLAN TCI taken out of the frame.
pub const SKF_AD_VLAN_TAG: u32 = 44;
/// Ancillary: 1 if a VLAN tag was taken out of the frame.
pub const SKF_AD_VLAN_TAG_PRESENT: u32 = 48;
/// Ancillary: offset of the transport payload (flow dissector; not modelled).
pub const SKF_AD_PAY_OFFSET: u32 = 52;
/// Ancillary: a random number.
pub const SKF_AD_RANDOM: u32 = 56;
/// Ancillary: the TPID of the VLAN tag taken out of the frame.
pub const SKF_AD_VLAN_TPID: u32 = 60;

/// One classic BPF instruction, laid out exactly as Linux's `struct sock_filter`, so that a
/// `&[Instruction]` can be handed to the kernel in a `struct sock_fprog` without conversion.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Instruction {
    /// Opcode: class | size | mode, class | op | source, ...
    pub code: u16,
    /// Jump offset (instructions to skip) when a conditional jump's test holds.
    pub jt: u8,
    /// Jump offset when the test fails.
    pub jf: u8,
    /// Constant operand: offset, immediate, scratch index or jump length.
    pub k: u32,
}

impl Instruction {
    /// An instruction from its four fields.
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> Self {
        Instruction { code, jt, jf, k }
    }

    /// A non-jump instruction (the kernel's `BPF_STMT(code, k)`).
    pub const fn stmt(code: u16, k: u32) -> Self {
        Instruction::new(code, 0, 0, k)
    }

    /// A jump instruction (the kernel's `BPF_JUMP(code, k, jt, jf)`).
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Self {
        Instruction::new(code, jt, jf, k)
    }

    /// The class bits of the opcode (`BPF_CLASS`).
    pub const fn class(&self) -> u16 {
        self.code & 0x07
    }
}

/// A classic BPF program: the instructions in order, as the kernel takes them.
///
/// Holding a `Program` says nothing about validity: check it with [`validate_program`] (the
/// kernel would refuse it with a bare EINVAL otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Program(Vec<Instruction>);

impl Program {
    /// A program made of `instructions`.
    pub fn new(instructions: Vec<Instruction>) -> Self {
        Program(instructions)
    }

    /// The instructions, ready to be pointed at by a `struct sock_fprog`.
    pub fn instructions(&self) -> &[Instruction] {
        &self.0
    }

    /// Number of instructions (the `len` of a `struct sock_fprog`).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the program has no instruction (the kernel refuses it).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The instructions, by value.
    pub fn into_instructions(self) -> Vec<Instruction> {
        self.0
    }
}

impl From<Vec<Instruction>> for Program {
    fn from(instructions: Vec<Instruction>) -> Self {
        Program(instructions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_has_the_sock_filter_layout() {
        assert_eq!(size_of::<Instruction>(), 8);
        assert_eq!(align_of::<Instruction>(), 4);
        assert_eq!(std::mem::offset_of!(Instruction, code), 0);
        assert_eq!(std::mem::offset_of!(Instruction, jt), 2);
        assert_eq!(std::mem::offset_of!(Instruction, jf), 3);
        assert_eq!(std::mem::offset_of!(Instruction, k), 4);
    }

    #[test]
    fn special_offsets_match_the_kernel_headers() {
        assert_eq!(SKF_AD_OFF, 0xFFFF_F000);
        assert_eq!(SKF_NET_OFF, 0xFFF0_0000);
        assert_eq!(SKF_LL_OFF, 0xFFE0_0000);
        // Opcodes as tcpdump -d prints them: ldh [12] is 0x28, ret #0 is 0x06, ldxb msh 0xb1.
        assert_eq!(BPF_LD | BPF_H | BPF_ABS, 0x28);
        assert_eq!(BPF_RET | BPF_K, 0x06);
        assert_eq!(BPF_LDX | BPF_B | BPF_MSH, 0xb1);
        assert_eq!(BPF_JMP | BPF_JEQ | BPF_K, 0x15);
    }

    #[test]
    fn constructors_place_fields() {
        let jump = Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, 0x0800, 1, 2);
        assert_eq!(
            jump,
            Instruction {
                code: 0x15,
                jt: 1,
                jf: 2,
                k: 0x0800
            }
        );
        assert_eq!(jump.class(), BPF_JMP);
        let program = Program::from(vec![Instruction::stmt(BPF_RET | BPF_K, 7)]);
        assert_eq!(program.len(), 1);
        assert!(!program.is_empty());
        assert_eq!(program.instructions()[0].k, 7);
    }
}
