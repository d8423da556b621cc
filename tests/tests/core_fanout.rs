//! PACKET_FANOUT groups on a real veth pair: every demux mode the tests can make deterministic,
//! the cBPF steering program, rollover, unique ids and the typed join errors.

mod core_rings_support;

use std::time::Duration;

use core_rings_support::{
    ETHERTYPE, Link, collect, parse_test_frame, pin_to, test_frame, usable_cpus,
};
use fanout_core::ring::{Readiness, RetireTimeout, RxRingBuilder};
use fanout_core::{
    BpfInstruction, BpfProgram, FanoutConfig, FanoutError, FanoutFlags, FanoutGroupId,
    FanoutMembership, FanoutMode, Protocol, RxRing,
};

fn member(link: &Link, config: FanoutConfig, protocol: Protocol, block_count: u32) -> RxRing {
    link.ns
        .run(move || {
            RxRingBuilder::new("vb")
                .protocol(protocol)
                .block_size(1 << 16)
                .block_count(block_count)
                .retire_timeout(RetireTimeout::Millis(5))
                .fanout(config)
                .build()
        })
        .expect("fanout member on vb")
}

fn seqs(frames: &[Vec<u8>]) -> Vec<(u32, u8)> {
    frames.iter().filter_map(|d| parse_test_frame(d)).collect()
}

#[test]
fn cpu_mode_delivers_the_sender_cpu_to_the_member_of_that_index() {
    let Some(link) = Link::new("fcpu") else {
        return;
    };
    let cpus = usable_cpus();
    if cpus.len() < 2 {
        fanout_relay_tests::skip("cpu fanout", "needs two usable CPUs");
        return;
    }
    let config = FanoutConfig::new(FanoutGroupId(0x4301), FanoutMode::Cpu);
    let mut members: Vec<RxRing> = (0..2)
        .map(|_| member(&link, config.clone(), Protocol(ETHERTYPE), 16))
        .collect();
    let tx = link.sender("va");
    std::thread::scope(|s| {
        for &cpu in &cpus[..2] {
            let tx = &tx;
            s.spawn(move || {
                pin_to(cpu);
                for i in 0..50 {
                    tx.send(&test_frame(i, cpu as u8, 200)).expect("send");
                }
            });
        }
    });
    for (index, ring) in members.iter_mut().enumerate() {
        let got = seqs(&collect(ring, 50, Duration::from_secs(5)));
        assert_eq!(got.len(), 50, "member {index}");
        let expected_cpu = cpus[..2].iter().find(|&&c| c % 2 == index).copied();
        assert!(
            got.iter()
                .all(|&(_, cpu)| Some(cpu as usize) == expected_cpu),
            "member {index} got frames sent from other CPUs: {got:?}"
        );
    }
}

/// An Ethernet/IPv4/UDP frame carrying a test payload (seq, flow) from port `sport`.
fn udp_frame(seq: u32, flow: u8, sport: u16) -> Vec<u8> {
    let payload = &test_frame(seq, flow, 40)[14..];
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 1, 1,
    ];
    let total = (20 + 8 + payload.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&sport.to_be_bytes());
    frame.extend_from_slice(&5000u16.to_be_bytes());
    frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

fn udp_payload(frame: &[u8]) -> Option<(u32, u8)> {
    let mut eth = frame.get(..14)?.to_vec();
    eth[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    eth.extend_from_slice(frame.get(42..)?);
    parse_test_frame(&eth)
}

#[test]
fn hash_mode_keeps_each_flow_on_one_member() {
    let Some(link) = Link::new("fhash") else {
        return;
    };
    let config = FanoutConfig::new(FanoutGroupId(0x4302), FanoutMode::Hash);
    let mut members: Vec<RxRing> = (0..2)
        .map(|_| member(&link, config.clone(), Protocol::IPV4, 16))
        .collect();
    let tx = link.sender("va");
    let flows = 16u8;
    for round in 0..10u32 {
        for flow in 0..flows {
            tx.send(&udp_frame(round, flow, 40000 + u16::from(flow)))
                .expect("send");
        }
    }
    let mut owner = vec![None; usize::from(flows)];
    let mut total = 0;
    for (index, ring) in members.iter_mut().enumerate() {
        for data in collect(ring, 160, Duration::from_millis(500)) {
            let Some((_, flow)) = udp_payload(&data) else {
                continue;
            };
            total += 1;
            let slot = &mut owner[usize::from(flow)];
            assert!(
                slot.is_none_or(|o| o == index),
                "flow {flow} seen on both members"
            );
            *slot = Some(index);
        }
    }
    assert_eq!(total, 160, "every frame delivered once");
    assert!(
        owner.contains(&Some(0)) && owner.contains(&Some(1)),
        "16 flows on one member only: {owner:?}"
    );
}

#[test]
fn lb_mode_alternates() {
    let Some(link) = Link::new("flb") else { return };
    let config = FanoutConfig::new(FanoutGroupId(0x4303), FanoutMode::Lb);
    let mut members: Vec<RxRing> = (0..2)
        .map(|_| member(&link, config.clone(), Protocol(ETHERTYPE), 16))
        .collect();
    let tx = link.sender("va");
    for i in 0..20 {
        tx.send(&test_frame(i, 0, 100)).expect("send");
    }
    let got: Vec<Vec<u32>> = members
        .iter_mut()
        .map(|ring| {
            seqs(&collect(ring, 10, Duration::from_secs(3)))
                .iter()
                .map(|p| p.0)
                .collect()
        })
        .collect();
    let parity = got[0].first().map(|s| s % 2).expect("member 0 got frames");
    let expect0: Vec<u32> = (0..20).filter(|s| s % 2 == parity).collect();
    let expect1: Vec<u32> = (0..20).filter(|s| s % 2 != parity).collect();
    assert_eq!((&got[0], &got[1]), (&expect0, &expect1));
}

#[test]
fn cbpf_program_steers_by_a_payload_byte() {
    let Some(link) = Link::new("fcbpf") else {
        return;
    };
    // ldb [8]; ret a — absolute loads start at the network header (the payload here): byte 8 of
    // the payload is the flow byte.
    let program = BpfProgram::new(vec![
        BpfInstruction::statement(0x30, 8),
        BpfInstruction::statement(0x16, 0),
    ])
    .expect("two instructions");
    let first =
        FanoutConfig::new(FanoutGroupId(0x4304), FanoutMode::Cbpf).cbpf_program(program.clone());
    let mut members = vec![member(&link, first, Protocol(ETHERTYPE), 16)];
    let second = FanoutConfig::new(FanoutGroupId(0x4304), FanoutMode::Cbpf);
    members.push(member(&link, second, Protocol(ETHERTYPE), 16));
    // Any member may replace the group's program; set it again from the second.
    members[1]
        .set_fanout_cbpf_program(&program)
        .expect("replace program");
    let tx = link.sender("va");
    for i in 0..50u32 {
        tx.send(&test_frame(i, (i % 5) as u8, 100)).expect("send");
    }
    for (index, ring) in members.iter_mut().enumerate() {
        let got = seqs(&collect(ring, 25, Duration::from_secs(3)));
        let expected: Vec<(u32, u8)> = (0..50u32)
            .map(|i| (i, (i % 5) as u8))
            .filter(|&(_, f)| usize::from(f) % 2 == index)
            .collect();
        assert_eq!(got, expected, "member {index}");
    }
}

#[test]
fn rollover_flag_moves_traffic_off_a_full_member() {
    let Some(link) = Link::new("froll") else {
        return;
    };
    let config =
        FanoutConfig::new(FanoutGroupId(0x4305), FanoutMode::Cpu).flags(FanoutFlags::ROLLOVER);
    // Member 0: one 4 KiB block (three 1000-byte frames); member 1: 1 MiB.
    let mut small = link
        .ns
        .run({
            let config = config.clone();
            move || {
                RxRingBuilder::new("vb")
                    .protocol(Protocol(ETHERTYPE))
                    .block_size(4096)
                    .block_count(1)
                    .retire_timeout(RetireTimeout::Millis(1000))
                    .fanout(config)
                    .build()
            }
        })
        .expect("small member");
    let mut large = member(&link, config, Protocol(ETHERTYPE), 16);
    let tx = link.sender("va");
    let cpu = usable_cpus()
        .into_iter()
        .find(|c| c % 2 == 0)
        .expect("an even CPU is usable");
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to(cpu);
            for i in 0..100 {
                tx.send(&test_frame(i, 0, 1000)).expect("send");
            }
        });
    });
    let rolled = small.rollover_statistics().expect("rollover stats");
    let on_small = seqs(&collect(&mut small, 100, Duration::from_millis(1500))).len();
    let on_large = seqs(&collect(&mut large, 100, Duration::from_secs(3))).len();
    let drops = small.statistics().expect("stats").drops + large.statistics().expect("stats").drops;
    assert!(
        on_small > 0 && on_small < 10,
        "the small member filled up: {on_small}"
    );
    assert!(
        on_large >= 90,
        "the rest rolled over to the large member: {on_large}"
    );
    // The frame that finds the small block full after the room check said it had room is
    // dropped there (the kernel checks room before it knows the frame will not fit).
    assert!(
        drops <= 1,
        "at most the frame in transit is dropped: {drops}"
    );
    assert_eq!(
        on_small as u64 + on_large as u64 + drops,
        100,
        "every frame accounted for"
    );
    assert!(
        rolled.all >= on_large as u64,
        "rollover stats count the moved frames: {rolled:?}"
    );
}

#[test]
fn unique_id_is_read_back_and_joined_by_others() {
    let Some(link) = Link::new("funiq") else {
        return;
    };
    let first = member(
        &link,
        FanoutConfig::unique(FanoutMode::Hash),
        Protocol(ETHERTYPE),
        4,
    );
    let membership = first.fanout().expect("joined");
    assert_eq!(
        first.read_fanout_membership().expect("getsockopt"),
        Some(membership)
    );
    assert!(
        !membership.flags.contains(FanoutFlags::UNIQUE_ID),
        "the flag is not kept"
    );
    let second = member(
        &link,
        FanoutConfig::new(membership.group, FanoutMode::Hash),
        Protocol(ETHERTYPE),
        4,
    );
    assert_eq!(second.fanout().map(|m| m.group), Some(membership.group));
}

/// Group 0 in hash mode without flags reads back from the kernel as "no group" (the word is
/// `id | mode << 16 | flags << 24`), and it is the first id a unique group gets after boot: a
/// freshly booted machine's first unique hash group. A member still knows its group.
#[test]
fn group_zero_in_hash_mode_is_read_back() {
    let Some(link) = Link::new("fzero") else {
        return;
    };
    // Group ids are per network namespace: the link's namespace has no group 0 yet.
    let first = member(
        &link,
        FanoutConfig::new(FanoutGroupId(0), FanoutMode::Hash),
        Protocol(ETHERTYPE),
        4,
    );
    let expected = FanoutMembership {
        group: FanoutGroupId(0),
        mode: FanoutMode::Hash,
        flags: FanoutFlags::NONE,
    };
    assert_eq!(first.fanout(), Some(expected));
    assert_eq!(
        first.read_fanout_membership().expect("getsockopt"),
        Some(expected)
    );
    let second = member(
        &link,
        FanoutConfig::new(FanoutGroupId(0), FanoutMode::Hash),
        Protocol(ETHERTYPE),
        4,
    );
    assert_eq!(second.fanout(), Some(expected));
}

#[test]
fn join_errors_are_typed() {
    let Some(link) = Link::new("ferr") else {
        return;
    };
    let group = FanoutGroupId(0x4306);
    let mut first = member(
        &link,
        FanoutConfig::new(group, FanoutMode::Hash),
        Protocol(ETHERTYPE),
        4,
    );
    // Mode mismatch with the existing group.
    let err = link
        .ns
        .run(move || {
            RxRingBuilder::new("vb")
                .protocol(Protocol(ETHERTYPE))
                .block_size(1 << 16)
                .block_count(4)
                .fanout(FanoutConfig::new(group, FanoutMode::Lb))
                .build()
        })
        .expect_err("mode mismatch");
    match err {
        fanout_core::RingError::Fanout(FanoutError::Mismatch {
            reason, group: g, ..
        }) => {
            assert_eq!(g, group);
            assert!(reason.contains("mode Lb (group: Hash)"), "{reason}");
        }
        other => panic!("wrong error: {other}"),
    }
    // Protocol mismatch.
    let err = link
        .ns
        .run(move || {
            RxRingBuilder::new("vb")
                .protocol(Protocol::ALL)
                .block_size(1 << 16)
                .block_count(4)
                .fanout(FanoutConfig::new(group, FanoutMode::Hash))
                .build()
        })
        .expect_err("protocol mismatch");
    assert!(
        matches!(&err, fanout_core::RingError::Fanout(FanoutError::Mismatch { reason, .. }) if reason.contains("protocol 0x0003")),
        "{err}"
    );
    // Already a member.
    let err = first
        .join_fanout(&FanoutConfig::new(FanoutGroupId(0x4307), FanoutMode::Hash))
        .expect_err("EALREADY");
    assert!(matches!(err, FanoutError::AlreadyMember { .. }), "{err}");
    // Rollover mode with the rollover flag is refused before the syscall.
    let mut plain = member(
        &link,
        FanoutConfig::new(FanoutGroupId(0x4308), FanoutMode::Hash),
        Protocol(ETHERTYPE),
        4,
    );
    let mut lone = link
        .ns
        .run(|| {
            RxRingBuilder::new("vb")
                .protocol(Protocol(ETHERTYPE))
                .block_size(1 << 16)
                .block_count(4)
                .build()
        })
        .expect("ring");
    let err = lone
        .join_fanout(
            &FanoutConfig::new(FanoutGroupId(0x4309), FanoutMode::Rollover)
                .flags(FanoutFlags::ROLLOVER),
        )
        .expect_err("rollover + rollover flag");
    assert!(matches!(err, FanoutError::RolloverModeWithRolloverFlag));
    // A program for a group that is not cbpf/ebpf, or with no group at all.
    let program =
        BpfProgram::new(vec![BpfInstruction::statement(0x06, 0)]).expect("one instruction");
    assert!(matches!(
        plain.set_fanout_cbpf_program(&program),
        Err(FanoutError::Program {
            errno: nix::errno::Errno::EINVAL,
            ..
        })
    ));
    assert!(matches!(
        lone.set_fanout_cbpf_program(&program),
        Err(FanoutError::Program { .. })
    ));
    let not_bpf = std::fs::File::open("/dev/null").expect("open /dev/null");
    assert!(matches!(
        plain.set_fanout_ebpf_program(std::os::fd::AsFd::as_fd(&not_bpf)),
        Err(FanoutError::Program { .. })
    ));
    // Rollover statistics need a rollover group.
    assert!(plain.rollover_statistics().is_err());
    // The member limit is checked before the syscall.
    let err = lone
        .join_fanout(&FanoutConfig::new(FanoutGroupId(0x430a), FanoutMode::Hash).max_members(70000))
        .expect_err("too many");
    assert!(matches!(err, FanoutError::TooManyMembers { max: 70000 }));
    // fanout_args with max_num_members works.
    lone.join_fanout(&FanoutConfig::new(FanoutGroupId(0x430b), FanoutMode::Lb).max_members(1000))
        .expect("join with fanout_args");
    let _ = plain.statistics();
}

/// The kernel unlinks every member from its fanout group when the interface goes down and links
/// them again when it comes back; each member must keep its index (the relay maps member k to
/// the worker of CPU k, and under `steer` to the worker holding shard k's rules).
#[test]
fn member_indexes_survive_the_link_going_down_and_up() {
    let Some(link) = Link::new("fdownup") else {
        return;
    };
    let program = BpfProgram::new(vec![
        BpfInstruction::statement(0x30, 8),
        BpfInstruction::statement(0x16, 0),
    ])
    .expect("two instructions");
    let config =
        FanoutConfig::new(FanoutGroupId(0x4305), FanoutMode::Cbpf).cbpf_program(program.clone());
    let mut members: Vec<RxRing> = (0..3)
        .map(|_| member(&link, config.clone(), Protocol(ETHERTYPE), 16))
        .collect();
    let tx = link.sender("va");
    let check = |members: &mut [RxRing], from: u32, when: &str| {
        for i in from..from + 30 {
            tx.send(&test_frame(i, (i % 3) as u8, 100)).expect("send");
        }
        for (index, ring) in members.iter_mut().enumerate() {
            let flows: Vec<u8> = seqs(&collect(ring, 10, Duration::from_secs(3)))
                .into_iter()
                .map(|(_, flow)| flow)
                .collect();
            assert_eq!(flows, vec![index as u8; 10], "member {index} {when}");
        }
    };
    check(&mut members, 0, "before");
    link.ns.ip(&["link", "set", "vb", "down"]);
    link.ns.ip(&["link", "set", "vb", "up"]);
    std::thread::sleep(Duration::from_millis(100));
    for ring in &mut members {
        // Each member was told once that the link went down.
        assert_eq!(
            ring.wait(Duration::ZERO).expect("wait on ring"),
            Readiness::InterfaceDown
        );
    }
    check(&mut members, 100, "after vb went down and up");
}
