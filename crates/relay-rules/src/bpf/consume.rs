//! The tc classifier that consumes relayed input: frames whose key a rule relays are dropped at
//! the input interface's ingress hook, after the relay's packet sockets saw them.
//!
//! Packet sockets bound to `ETH_P_ALL` are taps: the kernel hands them every frame in
//! `__netif_receive_skb_core` before it runs the ingress classifiers, so a frame this program
//! drops has already reached the relay's rings. Without it, the host's own IP stack would also
//! take every relayed frame, route it for local delivery, verify its UDP checksum and drop it
//! for want of a socket, on the CPU that received it.
//!
//! The program runs as a `cls_bpf` classifier in direct-action mode: it returns a tc action.
//! It is [`super::key_filter`]'s [`KeySense::Listed`] search with other verdicts, behind one
//! test: a frame whose VLAN tag the kernel took into metadata is never dropped, since the
//! hook runs before the kernel hands such a frame to its VLAN interface, which may belong to
//! someone else (a rule names the interface it reads from, and an interface's own ingress sees
//! only its own frames).

use super::keys::{Verdicts, key_program};
use super::{
    BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_MAXINSNS, BPF_RET, BPF_W, FilterKey, Instruction,
    KEY_FILTER_MAX_KEYS, KeyFilterError, KeySense, Program, SKF_AD_OFF, SKF_AD_VLAN_TAG_PRESENT,
};

/// `TC_ACT_SHOT`: drop the frame.
pub const TC_ACT_SHOT: u32 = 2;
/// `TC_ACT_UNSPEC` (-1): no verdict; the next classifier decides, and without one the frame
/// goes on to the stack.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

/// A classic BPF program for a direct-action `cls_bpf` classifier that returns
/// [`TC_ACT_SHOT`] for IPv4 UDP frames (whole datagrams and first fragments) whose (destination
/// address, UDP destination port) is one of `keys`, and [`TC_ACT_UNSPEC`] for every other
/// frame, including those with a VLAN tag in metadata.
///
/// A frame too short to hold its destination address or port ends the program with 0, which is
/// `TC_ACT_OK`: it goes on to the stack, and classifiers after this one do not see it.
///
/// Returns [`KeyFilterError::TooManyKeys`] when the program would not fit in `BPF_MAXINSNS`;
/// that never happens for [`KEY_FILTER_MAX_KEYS`] keys or fewer.
pub fn consume_program<K: Into<FilterKey>>(
    keys: impl IntoIterator<Item = K>,
) -> Result<Program, KeyFilterError> {
    let keys: Vec<FilterKey> = keys.into_iter().map(Into::into).collect();
    let too_many = KeyFilterError::TooManyKeys {
        keys: keys.len(),
        limit: KEY_FILTER_MAX_KEYS,
    };
    let search = key_program(
        keys,
        KeySense::Listed,
        Verdicts {
            keep: TC_ACT_SHOT,
            drop: TC_ACT_UNSPEC,
        },
        false,
    )?;
    let mut instructions = vec![
        Instruction::stmt(
            BPF_LD | BPF_W | BPF_ABS,
            SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT,
        ),
        Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
        Instruction::stmt(BPF_RET | BPF_K, TC_ACT_UNSPEC),
    ];
    if instructions.len() + search.len() > BPF_MAXINSNS {
        return Err(too_many);
    }
    instructions.extend(search.into_instructions());
    Ok(Program::new(instructions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::interp::{Interpreter, Skb, VlanTag};
    use crate::bpf::test_packets::udp_packet;
    use crate::bpf::validate_program;
    use std::net::Ipv4Addr;

    fn run(program: &Program, skb: &Skb<'_>) -> u32 {
        Interpreter::new(program)
            .expect("the program passes the checks")
            .run(skb)
            .expect("the program uses no unmodelled load")
    }

    #[test]
    fn drops_the_keys_and_leaves_everything_else_to_the_stack() {
        let group = Ipv4Addr::new(239, 1, 1, 1);
        let keys = [
            (group, 5000),
            (group, 5002),
            (Ipv4Addr::new(10, 0, 0, 1), 7000),
        ];
        let program = consume_program(keys).expect("three keys fit");
        assert_eq!(validate_program(&program), Ok(()));
        for (address, port) in keys {
            for options in [0, 3] {
                let packet = udp_packet(address, port, options);
                assert_eq!(run(&program, &Skb::received(&packet, 0x0800)), TC_ACT_SHOT);
            }
        }
        for (address, port) in [(group, 5001), (Ipv4Addr::new(239, 1, 1, 2), 5000)] {
            let packet = udp_packet(address, port, 0);
            assert_eq!(
                run(&program, &Skb::received(&packet, 0x0800)),
                TC_ACT_UNSPEC
            );
        }
        let packet = udp_packet(group, 5000, 0);
        // Not IPv4 by its EtherType.
        assert_eq!(
            run(&program, &Skb::received(&packet, 0x86dd)),
            TC_ACT_UNSPEC
        );
        // A tagged frame on its way to a VLAN interface.
        let mut tagged = Skb::received(&packet, 0x0800);
        tagged.vlan = Some(VlanTag {
            tpid: 0x8100,
            tci: 100,
        });
        assert_eq!(run(&program, &tagged), TC_ACT_UNSPEC);
        // A later fragment carries no UDP header.
        let mut fragment = packet.clone();
        fragment[7] = 1;
        assert_eq!(
            run(&program, &Skb::received(&fragment, 0x0800)),
            TC_ACT_UNSPEC
        );
        // Not UDP.
        let mut tcp = packet;
        tcp[9] = 6;
        assert_eq!(run(&program, &Skb::received(&tcp, 0x0800)), TC_ACT_UNSPEC);
    }

    #[test]
    fn no_keys_drop_nothing() {
        let program = consume_program(Vec::<FilterKey>::new()).expect("no keys fit");
        let packet = udp_packet(Ipv4Addr::new(239, 1, 1, 1), 5000, 0);
        assert_eq!(
            run(&program, &Skb::received(&packet, 0x0800)),
            TC_ACT_UNSPEC
        );
    }

    #[test]
    fn the_most_keys_that_always_fit_fit() {
        let keys = (0..KEY_FILTER_MAX_KEYS as u32)
            .map(|i| (Ipv4Addr::from(0xEF00_0000 + 3 * i), 5000 + i as u16));
        let program = consume_program(keys).expect("KEY_FILTER_MAX_KEYS keys fit");
        assert!(program.len() <= BPF_MAXINSNS);
        assert_eq!(validate_program(&program), Ok(()));
    }
}
