//! The IPv6 extension-header walk the programs share, in classic BPF.
//!
//! Classic BPF has no loops, so the walk is unrolled [`MAX_EXTENSION_HEADERS`] times, as
//! [`crate::wire::parse`] walks at most that many. It reads the packet relative to
//! `SKF_NET_OFF`, like the rest of the programs, and a load past the packet's end ends the
//! program with 0, as every classic program does.

use super::{
    BPF_ABS, BPF_ADD, BPF_ALU, BPF_B, BPF_IMM, BPF_IND, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_LDX,
    BPF_LSH, BPF_MEM, BPF_MISC, BPF_ST, BPF_TAX, BPF_X, Instruction, SKF_NET_OFF,
};
use crate::wire::{
    MAX_EXTENSION_HEADERS, NEXT_HEADER_DESTINATION_OPTIONS, NEXT_HEADER_HOP_BY_HOP,
    NEXT_HEADER_ROUTING,
};

/// `ETH_P_IPV6`, as the `SKF_AD_PROTOCOL` ancillary load returns it.
pub(super) const ETH_P_IPV6: u32 = 0x86dd;
/// Offset of the destination address in the IPv6 header.
pub(super) const DESTINATION: u32 = 24;
/// Scratch word the walk keeps the next header type in.
const SCRATCH: u32 = 1;

/// Instructions that walk the extension headers of an IPv6 packet and fall through with A =
/// the type of the first header that is not hop-by-hop, routing or destination options, and
/// X = its offset from the network header. After [`MAX_EXTENSION_HEADERS`] such headers the
/// walk stops with A still one of them, which no caller takes for UDP (17): too many headers,
/// as the parser refuses them. The block's jumps stay inside it (to its end), so it can be
/// placed anywhere; it uses scratch word 1.
pub(super) fn walk() -> Vec<Instruction> {
    let per_header = 11usize;
    let len = 2 + per_header * MAX_EXTENSION_HEADERS;
    let mut block = vec![
        Instruction::stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF + 6),
        Instruction::stmt(BPF_LDX | BPF_IMM, 40),
    ];
    for _ in 0..MAX_EXTENSION_HEADERS {
        // From the third jump's next instruction to the end of the block.
        let done = u8::try_from(len - (block.len() + 3))
            .expect("the walk is far shorter than a 255-instruction jump");
        let jump =
            |k: u8, jt, jf| Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, u32::from(k), jt, jf);
        block.push(jump(NEXT_HEADER_HOP_BY_HOP, 2, 0));
        block.push(jump(NEXT_HEADER_ROUTING, 1, 0));
        block.push(jump(NEXT_HEADER_DESTINATION_OPTIONS, 0, done));
        block.extend([
            // The type of the header after this one, kept while X moves on.
            Instruction::stmt(BPF_LD | BPF_B | BPF_IND, SKF_NET_OFF),
            Instruction::stmt(BPF_ST, SCRATCH),
            // X += (length + 1) * 8.
            Instruction::stmt(BPF_LD | BPF_B | BPF_IND, SKF_NET_OFF + 1),
            Instruction::stmt(BPF_ALU | BPF_ADD | BPF_K, 1),
            Instruction::stmt(BPF_ALU | BPF_LSH | BPF_K, 3),
            Instruction::stmt(BPF_ALU | BPF_ADD | BPF_X, 0),
            Instruction::stmt(BPF_MISC | BPF_TAX, 0),
            Instruction::stmt(BPF_LD | BPF_MEM, SCRATCH),
        ]);
    }
    debug_assert_eq!(block.len(), len);
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::interp::{Skb, run};
    use crate::bpf::{BPF_A, BPF_RET, BPF_TXA, Program};
    use crate::test_frames::{Extension, Ipv6Udp, ipv6_packet};

    /// The walk, then `ret` of (offset << 8 | type).
    fn probe() -> Program {
        let mut instructions = walk();
        instructions.extend([
            Instruction::stmt(BPF_ST, 2),
            Instruction::stmt(BPF_MISC | BPF_TXA, 0),
            Instruction::stmt(BPF_ALU | BPF_LSH | BPF_K, 8),
            Instruction::stmt(BPF_MISC | BPF_TAX, 0),
            Instruction::stmt(BPF_LD | BPF_MEM, 2),
            Instruction::stmt(BPF_ALU | crate::bpf::BPF_OR | BPF_X, 0),
            Instruction::stmt(BPF_RET | BPF_A, 0),
        ]);
        Program::new(instructions)
    }

    #[test]
    fn finds_what_the_parser_finds() {
        let program = probe();
        crate::bpf::validate_program(&program).expect("the kernel's checks pass");
        let e = |kind, len| Extension { kind, len };
        let cases: [(&[Extension], u32); 5] = [
            (&[], 40 << 8 | 17),
            (&[e(0, 8)], 48 << 8 | 17),
            (&[e(0, 16), e(43, 24), e(60, 8)], 88 << 8 | 17),
            (&[e(60, 8), e(44, 8)], 48 << 8 | 44),
            (&[e(60, 8); 4], 72 << 8 | 17),
        ];
        for (extensions, expected) in cases {
            let packet = ipv6_packet(&Ipv6Udp {
                extensions,
                ..Default::default()
            });
            assert_eq!(run(&program, &Skb::received(&packet, 0x86dd)), Ok(expected));
        }
        // A fifth header is left unwalked: A is still an extension header's type.
        let packet = ipv6_packet(&Ipv6Udp {
            extensions: &[e(60, 8); 5],
            ..Default::default()
        });
        assert_eq!(
            run(&program, &Skb::received(&packet, 0x86dd)),
            Ok(72 << 8 | 60)
        );
    }
}
