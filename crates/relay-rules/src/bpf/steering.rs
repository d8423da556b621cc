//! The fanout steering program: [`crate::shard::shard_vlan`] computed by the kernel from packet
//! bytes and the VLAN tag.

use super::ipv6::{DESTINATION, ETH_P_IPV6, walk};
use super::*;
use crate::shard::{MIX_MULTIPLIER_1, MIX_MULTIPLIER_2, PORT_MULTIPLIER, VLAN_MULTIPLIER};

/// EtherType of IPv4, as the `SKF_AD_PROTOCOL` ancillary load returns it (host order).
const ETH_P_IP: u32 = 0x0800;
/// IP protocol number of UDP.
const IPPROTO_UDP: u32 = 17;

/// Emits the classic BPF program that returns `shard_vlan(destination, destination port, vlan,
/// n)` for a UDP packet over IPv4 or IPv6, for a PACKET_FANOUT_CBPF group of `n` members.
///
/// How the program reads the packet, and why:
/// - At fanout time a received skb's data starts at the network header (the MAC header was
///   pulled), but an outgoing one's starts at the MAC header. Every packet load is therefore
///   relative to `SKF_NET_OFF` (the network header, wherever the data starts), never a plain
///   absolute offset.
/// - The kernel has moved a VLAN tag into metadata before the fanout hook runs, so the
///   EtherType is checked with the `SKF_AD_PROTOCOL` ancillary load, which returns
///   `ntohs(skb->protocol)`: 0x0800 for IPv4 whether or not the frame was tagged. The VLAN
///   id comes from the tag in metadata (`SKF_AD_VLAN_TAG_PRESENT`, `SKF_AD_VLAN_TAG`, low 12
///   bits; none or id 0 counts as untagged), as [`crate::wire::vlan_key`] reads it.
/// - The first header byte must be 0x45..=0x4f (version 4, IHL 5..=15), the protocol 17 (UDP) and
///   the fragment offset 0. The header length comes from `ldxb 4*([net]&0xf)`, and the UDP
///   destination port from a half-word load at `X + SKF_NET_OFF + 2`, so IP options are skipped.
/// - The destination address is the word at `SKF_NET_OFF + 16`.
/// - IPv6 (EtherType 0x86dd, version nibble 6): the destination address is the xor of the four
///   words at `SKF_NET_OFF + 24..40` ([`crate::shard::address_word`]); the program walks at most
///   [`crate::wire::MAX_EXTENSION_HEADERS`] hop-by-hop, routing and destination options headers,
///   as the parser does, and reads the port from the UDP header after them.
///
/// Everything else returns 0, so it reaches member 0: frames of other EtherTypes, frames with a second
/// (inner) VLAN tag still in them, non-UDP packets, non-first fragments (they carry no UDP
/// header; first fragments do and are steered like whole datagrams), IPv6 frames with a
/// fragment header or more extension headers than the parser walks (all of which the parser
/// refuses), bad version/IHL, and
/// packets too short for the loads (the kernel ends the program with 0 when a load is out of
/// bounds). The worker there counts them as it would anywhere.
///
/// `n == 0` gives a program that always returns 0, matching `shard_vlan(_, _, _, 0) == 0`. For `n ≥ 1`
/// the result is already below `n`; the kernel's own `% members` then leaves it unchanged when
/// the group has exactly `n` members.
pub fn steering_program(n: u32) -> Program {
    if n == 0 {
        return Program::new(vec![Instruction::stmt(BPF_RET | BPF_K, 0)]);
    }
    let mut emitter = Emitter::default();
    // EtherType after VLAN untagging; not IPv4 goes to the IPv6 part after the IPv4 one.
    emitter.stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL);
    let to_ipv6 = emitter.instructions.len();
    emitter.raw(Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 0));
    // Version 4 and IHL 5..=15: the first byte is 0x45..=0x4f.
    emitter.stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF);
    emitter.if_gt(0x4f);
    emitter.unless_ge(0x45);
    // Protocol UDP.
    emitter.stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF + 9);
    emitter.unless_eq(IPPROTO_UDP);
    // Fragment offset 0 (flags ignored: a first fragment carries the UDP header).
    emitter.stmt(BPF_LD | BPF_H | BPF_ABS, SKF_NET_OFF + 6);
    emitter.if_set(0x1fff);
    // X = IP header length; M[0] = destination port * PORT_MULTIPLIER.
    emitter.stmt(BPF_LDX | BPF_B | BPF_MSH, SKF_NET_OFF);
    emitter.stmt(BPF_LD | BPF_H | BPF_IND, SKF_NET_OFF + 2);
    emitter.stmt(BPF_ALU | BPF_MUL | BPF_K, PORT_MULTIPLIER);
    emitter.stmt(BPF_ST, 0);
    // A = VLAN id * VLAN_MULTIPLIER, or 0 (the A the test leaves) for an untagged frame.
    emitter.stmt(
        BPF_LD | BPF_W | BPF_ABS,
        SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT,
    );
    emitter.raw(Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, 0));
    emitter.stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_VLAN_TAG);
    emitter.stmt(BPF_ALU | BPF_AND | BPF_K, 0x0fff);
    emitter.stmt(BPF_ALU | BPF_MUL | BPF_K, VLAN_MULTIPLIER);
    // A = destination address ^ (port * PORT_MULTIPLIER) ^ (VLAN id * VLAN_MULTIPLIER).
    emitter.stmt(BPF_MISC | BPF_TAX, 0);
    emitter.stmt(BPF_LD | BPF_MEM, 0);
    emitter.stmt(BPF_ALU | BPF_XOR | BPF_X, 0);
    emitter.stmt(BPF_MISC | BPF_TAX, 0);
    emitter.stmt(BPF_LD | BPF_W | BPF_ABS, SKF_NET_OFF + 16);
    emitter.stmt(BPF_ALU | BPF_XOR | BPF_X, 0);
    // The finalizer, step by step as `shard_hash` documents it.
    emitter.xor_shift_right(16);
    emitter.stmt(BPF_ALU | BPF_MUL | BPF_K, MIX_MULTIPLIER_1);
    emitter.xor_shift_right(13);
    emitter.stmt(BPF_ALU | BPF_MUL | BPF_K, MIX_MULTIPLIER_2);
    emitter.xor_shift_right(16);
    emitter.stmt(BPF_ALU | BPF_MOD | BPF_K, n);
    emitter.stmt(BPF_RET | BPF_A, 0);

    let ipv6 = emitter.instructions.len();
    emitter.instructions[to_ipv6].jf = u8::try_from(ipv6 - to_ipv6 - 1)
        .expect("the IPv4 part is far shorter than a 255-instruction jump");
    emitter.unless_eq(ETH_P_IPV6);
    // Version 6.
    emitter.stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF);
    emitter.stmt(BPF_ALU | BPF_AND | BPF_K, 0xf0);
    emitter.unless_eq(0x60);
    // X = offset of the header after the extension headers, A = its type: UDP.
    for instruction in walk() {
        emitter.raw(instruction);
    }
    emitter.unless_eq(IPPROTO_UDP);
    // M[0] = destination port * PORT_MULTIPLIER.
    emitter.stmt(BPF_LD | BPF_H | BPF_IND, SKF_NET_OFF + 2);
    emitter.stmt(BPF_ALU | BPF_MUL | BPF_K, PORT_MULTIPLIER);
    emitter.stmt(BPF_ST, 0);
    // A = VLAN id * VLAN_MULTIPLIER, or 0, as for IPv4.
    emitter.stmt(
        BPF_LD | BPF_W | BPF_ABS,
        SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT,
    );
    emitter.raw(Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, 0));
    emitter.stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_VLAN_TAG);
    emitter.stmt(BPF_ALU | BPF_AND | BPF_K, 0x0fff);
    emitter.stmt(BPF_ALU | BPF_MUL | BPF_K, VLAN_MULTIPLIER);
    emitter.stmt(BPF_MISC | BPF_TAX, 0);
    emitter.stmt(BPF_LD | BPF_MEM, 0);
    emitter.stmt(BPF_ALU | BPF_XOR | BPF_X, 0);
    // A ^= each of the destination's four words.
    for word in 0..4 {
        emitter.stmt(BPF_MISC | BPF_TAX, 0);
        emitter.stmt(
            BPF_LD | BPF_W | BPF_ABS,
            SKF_NET_OFF + DESTINATION + 4 * word,
        );
        emitter.stmt(BPF_ALU | BPF_XOR | BPF_X, 0);
    }
    emitter.xor_shift_right(16);
    emitter.stmt(BPF_ALU | BPF_MUL | BPF_K, MIX_MULTIPLIER_1);
    emitter.xor_shift_right(13);
    emitter.stmt(BPF_ALU | BPF_MUL | BPF_K, MIX_MULTIPLIER_2);
    emitter.xor_shift_right(16);
    emitter.stmt(BPF_ALU | BPF_MOD | BPF_K, n);
    emitter.stmt(BPF_RET | BPF_A, 0);
    emitter.finish()
}

/// Builds a program whose failed checks all jump to one trailing `ret #0`.
#[derive(Default)]
struct Emitter {
    instructions: Vec<Instruction>,
    /// Indices of jumps whose `jt` (true) or `jf` (false) must point at the final `ret #0`.
    to_zero: Vec<(usize, bool)>,
}

impl Emitter {
    fn stmt(&mut self, code: u16, k: u32) {
        self.instructions.push(Instruction::stmt(code, k));
    }

    /// An instruction whose jumps (if any) stay within the program as written.
    fn raw(&mut self, instruction: Instruction) {
        self.instructions.push(instruction);
    }

    /// Continue when `A == k`, else return 0.
    fn unless_eq(&mut self, k: u32) {
        self.jump_to_zero(BPF_JEQ, k, false);
    }

    /// Continue when `A >= k`, else return 0.
    fn unless_ge(&mut self, k: u32) {
        self.jump_to_zero(BPF_JGE, k, false);
    }

    /// Return 0 when `A > k`, else continue.
    fn if_gt(&mut self, k: u32) {
        self.jump_to_zero(BPF_JGT, k, true);
    }

    /// Return 0 when `A & k != 0`, else continue.
    fn if_set(&mut self, k: u32) {
        self.jump_to_zero(BPF_JSET, k, true);
    }

    fn jump_to_zero(&mut self, op: u16, k: u32, when: bool) {
        self.to_zero.push((self.instructions.len(), when));
        self.instructions
            .push(Instruction::jump(BPF_JMP | op | BPF_K, k, 0, 0));
    }

    /// `A ^= A >> shift`, through X.
    fn xor_shift_right(&mut self, shift: u32) {
        self.stmt(BPF_MISC | BPF_TAX, 0);
        self.stmt(BPF_ALU | BPF_RSH | BPF_K, shift);
        self.stmt(BPF_ALU | BPF_XOR | BPF_X, 0);
    }

    fn finish(mut self) -> Program {
        let zero = self.instructions.len();
        self.instructions
            .push(Instruction::stmt(BPF_RET | BPF_K, 0));
        for (at, when) in self.to_zero {
            let offset = u8::try_from(zero - at - 1)
                .expect("the steering program is far shorter than a 255-instruction jump");
            let jump = &mut self.instructions[at];
            if when {
                jump.jt = offset;
            } else {
                jump.jf = offset;
            }
        }
        Program::new(self.instructions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::interp::{Skb, run};
    use crate::bpf::test_packets::udp_packet;
    use crate::shard::shard;
    use std::net::Ipv4Addr;

    #[test]
    fn program_passes_the_kernel_checks() {
        for n in [0, 1, 2, 3, 64, u32::MAX] {
            let program = steering_program(n);
            assert_eq!(validate_program(&program), Ok(()), "n = {n}");
        }
    }

    #[test]
    fn agrees_with_the_function_with_and_without_options() {
        let group = Ipv4Addr::new(239, 192, 7, 9);
        for n in [1u32, 2, 3, 5, 8] {
            let program = steering_program(n);
            for options in [0, 1, 10] {
                for port in [1u16, 5004, 65535] {
                    let packet = udp_packet(group, port, options);
                    let got = run(&program, &Skb::received(&packet, 0x0800));
                    assert_eq!(got, Ok(shard(group, port, n)), "n {n} options {options}");
                }
            }
        }
    }

    #[test]
    fn a_tag_in_metadata_steers_by_its_vlan_id() {
        use crate::bpf::interp::VlanTag;
        use crate::shard::shard_vlan;
        let group = Ipv4Addr::new(239, 1, 1, 4);
        let packet = udp_packet(group, 5000, 0);
        let program = steering_program(64);
        let tagged = |tci| Skb {
            vlan: Some(VlanTag { tpid: 0x8100, tci }),
            ..Skb::received(&packet, 0x0800)
        };
        for (tci, vlan) in [
            (100, Some(100)),
            (0xe000 | 4094, Some(4094)),
            (0x6000, None),
        ] {
            assert_eq!(
                run(&program, &tagged(tci)),
                Ok(shard_vlan(group, 5000, vlan, 64)),
                "TCI {tci:#06x}"
            );
        }
        // VLAN 100 and untagged differ here, so the test above can tell them apart.
        assert_ne!(
            shard_vlan(group, 5000, Some(100), 64),
            shard_vlan(group, 5000, None, 64)
        );
    }

    #[test]
    fn ipv6_agrees_with_the_function_through_extension_headers() {
        use crate::shard::shard_vlan;
        use crate::test_frames::{Extension, Ipv6Udp, ipv6_packet};
        let e = |kind, len| Extension { kind, len };
        let group: std::net::Ipv6Addr = "ff3e::8000:7".parse().unwrap();
        for n in [1u32, 3, 8] {
            let program = steering_program(n);
            for extensions in [
                &[][..],
                &[e(0, 8)],
                &[e(0, 16), e(43, 8), e(60, 24), e(60, 8)],
            ] {
                for port in [1u16, 5004, 65535] {
                    let packet = ipv6_packet(&Ipv6Udp {
                        destination: group,
                        destination_port: port,
                        extensions,
                        ..Default::default()
                    });
                    let got = run(&program, &Skb::received(&packet, 0x86dd));
                    assert_eq!(
                        got,
                        Ok(shard_vlan(group, port, None, n)),
                        "n {n} port {port}"
                    );
                }
            }
        }
        // Frames the parser refuses go to member 0.
        let program = steering_program(64);
        let port = (1u16..)
            .find(|&p| shard_vlan(group, p, None, 64) != 0)
            .expect("some port maps elsewhere");
        for extensions in [&[e(44, 8)][..], &[e(60, 8); 5]] {
            let packet = ipv6_packet(&Ipv6Udp {
                destination: group,
                destination_port: port,
                extensions,
                ..Default::default()
            });
            assert_eq!(run(&program, &Skb::received(&packet, 0x86dd)), Ok(0));
        }
        let mut version = ipv6_packet(&Ipv6Udp::default());
        version[0] = 0x40;
        assert_eq!(run(&program, &Skb::received(&version, 0x86dd)), Ok(0));
    }

    #[test]
    fn n_zero_always_returns_zero() {
        let packet = udp_packet(Ipv4Addr::new(239, 1, 1, 1), 5000, 0);
        let got = run(&steering_program(0), &Skb::received(&packet, 0x0800));
        assert_eq!(got, Ok(0));
    }

    #[test]
    fn other_packets_return_zero() {
        let group = Ipv4Addr::new(239, 1, 1, 2);
        // Pick a port whose shard is not 0, so a 0 proves the early return.
        let port = (1u16..)
            .find(|&p| shard(group, p, 4) != 0)
            .expect("some port maps to 1..4");
        let program = steering_program(4);
        let good = udp_packet(group, port, 0);
        assert_ne!(run(&program, &Skb::received(&good, 0x0800)), Ok(0));

        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("ARP EtherType", good.clone(), 0x0806),
            ("inner VLAN tag left", good.clone(), 0x8100),
            (
                "TCP",
                {
                    let mut p = good.clone();
                    p[9] = 6;
                    p
                },
                0x0800,
            ),
            (
                "version 6",
                {
                    let mut p = good.clone();
                    p[0] = 0x65;
                    p
                },
                0x0800,
            ),
            (
                "IHL 4",
                {
                    let mut p = good.clone();
                    p[0] = 0x44;
                    p
                },
                0x0800,
            ),
            (
                "fragment offset 1",
                {
                    let mut p = good.clone();
                    p[7] = 1;
                    p
                },
                0x0800,
            ),
            (
                "offset high bits",
                {
                    let mut p = good.clone();
                    p[6] = 0x1f;
                    p
                },
                0x0800,
            ),
            ("truncated before the port", good[..22].to_vec(), 0x0800),
            ("truncated before the address", good[..18].to_vec(), 0x0800),
            ("empty", Vec::new(), 0x0800),
        ];
        for (what, packet, protocol) in cases {
            assert_eq!(
                run(&program, &Skb::received(&packet, protocol)),
                Ok(0),
                "{what}"
            );
        }
    }

    #[test]
    fn first_fragment_is_steered_like_a_whole_datagram() {
        let group = Ipv4Addr::new(239, 1, 1, 3);
        let mut packet = udp_packet(group, 6000, 0);
        packet[6] = 0x20; // MF set, offset 0
        let got = run(&steering_program(3), &Skb::received(&packet, 0x0800));
        assert_eq!(got, Ok(shard(group, 6000, 3)));
    }
}
