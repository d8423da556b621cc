//! The socket filter that keeps frames no rule can match out of a relay's receive rings.

use super::{
    BPF_ABS, BPF_B, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, Instruction, Program,
    SKF_AD_OFF, SKF_AD_PROTOCOL, SKF_NET_OFF,
};

const ETH_P_IP: u32 = 0x0800;
const ETH_P_8021Q: u32 = 0x8100;
const ETH_P_8021AD: u32 = 0x88a8;
const IPPROTO_UDP: u32 = 17;
/// Keep the whole frame (the kernel caps it at the ring's room).
const ACCEPT: u32 = u32::MAX;

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
    }
}
