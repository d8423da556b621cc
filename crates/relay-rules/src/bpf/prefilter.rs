//! The socket filter that keeps frames no rule can match out of a relay's receive rings.

use super::ipv6::{ETH_P_IPV6, walk};
use super::{
    BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, Instruction,
    Program, SKF_AD_OFF, SKF_AD_PROTOCOL, SKF_NET_OFF,
};
use crate::wire::NEXT_HEADER_FRAGMENT;

const ETH_P_IP: u32 = 0x0800;
const ETH_P_8021Q: u32 = 0x8100;
const ETH_P_8021AD: u32 = 0x88a8;
const IPPROTO_UDP: u32 = 17;
/// Keep the whole frame (the kernel caps it at the ring's room).
const ACCEPT: u32 = u32::MAX;

/// [`udp_prefilter`] when the relay has no IPv6 rule (`ipv6` false), so that IPv6 stays out of
/// the rings as before; with one, a filter that also accepts IPv6 frames (version 6) whose
/// header after at most [`crate::wire::MAX_EXTENSION_HEADERS`] hop-by-hop, routing and
/// destination options headers is UDP or a fragment header (so that the worker counts the
/// fragment). IPv6 frames with more extension headers, or too short for the walk, are rejected
/// like ICMPv6 (neighbour discovery, MLD), TCP and the rest.
pub fn ip_prefilter(ipv6: bool) -> Program {
    if !ipv6 {
        return udp_prefilter();
    }
    let mut instructions = vec![
        Instruction::stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL),
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 4, 0),
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_8021Q, 5, 0),
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_8021AD, 4, 0),
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, 5, 0),
        Instruction::stmt(BPF_RET | BPF_K, 0),
        // IPv4: protocol UDP.
        Instruction::stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF + 9),
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 0, 1),
        Instruction::stmt(BPF_RET | BPF_K, ACCEPT),
        Instruction::stmt(BPF_RET | BPF_K, 0),
        // IPv6: version 6, then the walk.
        Instruction::stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF),
        Instruction::stmt(BPF_ALU | BPF_AND | BPF_K, 0xf0),
    ];
    let walk = walk();
    let to_reject = u8::try_from(walk.len() + 3).expect("the walk is short");
    instructions.push(Instruction::jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        0x60,
        0,
        to_reject,
    ));
    instructions.extend(walk);
    instructions.extend([
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 1, 0),
        Instruction::jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            u32::from(NEXT_HEADER_FRAGMENT),
            0,
            1,
        ),
        Instruction::stmt(BPF_RET | BPF_K, ACCEPT),
        Instruction::stmt(BPF_RET | BPF_K, 0),
    ]);
    Program::new(instructions)
}

/// A classic BPF socket filter that accepts IPv4 UDP frames and frames still carrying a VLAN
/// tag (whose inner type the relay's parser checks), and rejects the rest (ARP, IPv6, IGMP,
/// TCP, ...) before they take room in a receive ring or a worker's time.
///
/// It reads the EtherType the kernel found after removing any offloaded or leading VLAN tag
/// (`SKF_AD_PROTOCOL`) and the IPv4 protocol at `SKF_NET_OFF + 9`, so it does not depend on where
/// the packet data starts. Fragments are accepted, so that the worker counts them.
pub fn udp_prefilter() -> Program {
    // Jump offsets count instructions to skip after the jump.
    Program::new(vec![
        Instruction::stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL),
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 3, 0),
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_8021Q, 4, 0),
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_8021AD, 3, 0),
        Instruction::stmt(BPF_RET | BPF_K, 0),
        Instruction::stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF + 9),
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 0, 1),
        Instruction::stmt(BPF_RET | BPF_K, ACCEPT),
        Instruction::stmt(BPF_RET | BPF_K, 0),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::interp::{Skb, run};
    use crate::bpf::validate_program;

    fn ipv4(protocol: u8) -> Vec<u8> {
        let mut header = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, protocol, 0, 0];
        header.extend_from_slice(&[
            192, 0, 2, 10, 239, 1, 1, 1, 0x13, 0x88, 0x13, 0x88, 0, 8, 0, 0,
        ]);
        header
    }

    #[test]
    fn accepts_udp_and_tagged_frames_only() {
        let program = udp_prefilter();
        validate_program(&program).expect("the kernel's checks pass");
        let verdict = |network: &[u8], protocol: u16| {
            run(&program, &Skb::received(network, protocol)).expect("runs")
        };
        assert_eq!(verdict(&ipv4(17), 0x0800), ACCEPT);
        assert_eq!(verdict(&ipv4(6), 0x0800), 0, "TCP");
        assert_eq!(verdict(&ipv4(2), 0x0800), 0, "IGMP");
        assert_eq!(verdict(&[0; 28], 0x0806), 0, "ARP");
        assert_eq!(verdict(&[0x60; 40], 0x86dd), 0, "IPv6");
        assert_eq!(verdict(&[0; 4], 0x8100), ACCEPT, "a tag left in the frame");
        assert_eq!(verdict(&[0; 4], 0x88a8), ACCEPT, "an 802.1ad tag");
        assert_eq!(
            verdict(&ipv4(17)[..5], 0x0800),
            0,
            "too short to hold a protocol"
        );
        assert_eq!(ip_prefilter(false), program);
    }

    #[test]
    fn with_ipv6_rules_accepts_ipv6_udp_and_fragments() {
        use crate::test_frames::{Extension, Ipv6Udp, ipv6_packet};
        let program = ip_prefilter(true);
        validate_program(&program).expect("the kernel's checks pass");
        let verdict = |network: &[u8], protocol: u16| {
            run(&program, &Skb::received(network, protocol)).expect("runs")
        };
        let e = |kind, len| Extension { kind, len };
        let packet = |extensions: &[Extension]| {
            ipv6_packet(&Ipv6Udp {
                extensions,
                ..Default::default()
            })
        };
        assert_eq!(verdict(&ipv4(17), 0x0800), ACCEPT);
        assert_eq!(verdict(&ipv4(6), 0x0800), 0, "TCP");
        assert_eq!(verdict(&[0; 28], 0x0806), 0, "ARP");
        assert_eq!(verdict(&[0; 4], 0x8100), ACCEPT, "a tag left in the frame");
        assert_eq!(verdict(&packet(&[]), 0x86dd), ACCEPT);
        assert_eq!(verdict(&packet(&[e(0, 8), e(60, 16)]), 0x86dd), ACCEPT);
        assert_eq!(verdict(&packet(&[e(44, 8)]), 0x86dd), ACCEPT, "a fragment");
        assert_eq!(verdict(&packet(&[e(60, 8); 5]), 0x86dd), 0, "five headers");
        let mut icmp = packet(&[e(0, 8)]);
        icmp[40] = 58; // MLD: ICMPv6 behind a hop-by-hop header
        assert_eq!(verdict(&icmp, 0x86dd), 0, "MLD");
        let mut version = packet(&[]);
        version[0] = 0x45;
        assert_eq!(verdict(&version, 0x86dd), 0, "not version 6");
    }
}
