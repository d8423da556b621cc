//! Joins and leaves on `lo` of both families, and the bookkeeping of which socket holds what.

use super::*;
use std::collections::BTreeSet;

fn loopback_index() -> u32 {
    nix::net::if_::if_nametoindex("lo").expect("every Linux host has lo")
}

#[test]
fn refuses_unicast_groups() {
    let mut set = Memberships::new();
    let error = set
        .join(Membership {
            ifindex: 1,
            group: Ipv4Addr::new(10, 0, 0, 1),
            source: None,
        })
        .expect_err("10.0.0.1 is unicast");
    assert!(matches!(error, IgmpError::NotMulticast { .. }));
}

#[test]
fn joins_spread_over_sockets_and_leave() {
    let ifindex = loopback_index();
    let mut set = Memberships::with_limits(3, DEFAULT_MAX_SOURCES);
    let joins: Vec<Membership> = (1..=7)
        .map(|n| Membership {
            ifindex,
            group: Ipv4Addr::new(239, 77, 0, n),
            source: None,
        })
        .chain((1..=2).map(|n| Membership {
            ifindex,
            group: Ipv4Addr::new(232, 77, 0, 1),
            source: Some(Ipv4Addr::new(192, 0, 2, n)),
        }))
        .collect();
    for &membership in &joins {
        set.join(membership).expect("join on lo");
        assert!(matches!(
            set.join(membership),
            Err(IgmpError::AlreadyJoined { membership: held }) if *held == membership.to_ip()
        ));
    }
    let mut expected: Vec<IpMembership> = joins.iter().map(IpMembership::from).collect();
    expected.sort();
    assert_eq!(set.list(), expected);
    assert_eq!(
        set.v4.sockets(),
        3,
        "7 any-source groups + 1 SSM group over 3 per socket"
    );
    set.v4.check_index();
    let igmp = std::fs::read_to_string("/proc/net/igmp").unwrap_or_default();
    if !igmp.is_empty() {
        // /proc/net/igmp lists groups as little-endian hex on x86; 239.77.0.7 is 07004DEF.
        assert!(igmp.contains("07004DEF"), "{igmp}");
    }
    for &membership in &joins {
        set.leave(membership).expect("leave");
        assert!(!set.contains(membership));
        set.v4.check_index();
    }
    assert_eq!(set.v4.sockets(), 0);
}

#[test]
fn the_index_follows_joins_and_leaves_in_any_order() {
    let ifindex = loopback_index();
    let mut set = Memberships::with_limits(3, 2);
    let mut joins: Vec<Membership> = (1..=20)
        .map(|n| Membership {
            ifindex,
            group: Ipv4Addr::new(239, 78, 0, n),
            source: None,
        })
        .collect();
    for group in 1..=2 {
        // Five sources of one group need three sockets of two sources each, and an
        // any-source join of the same group needs a socket of its own.
        joins.extend((1..=5).map(|n| Membership {
            ifindex,
            group: Ipv4Addr::new(232, 78, 0, group),
            source: Some(Ipv4Addr::new(192, 0, 2, n)),
        }));
    }
    joins.push(Membership {
        ifindex,
        group: Ipv4Addr::new(232, 78, 0, 1),
        source: None,
    });
    let mut held = BTreeSet::new();
    for &membership in &joins {
        set.join(membership).expect("join on lo");
        held.insert(membership);
        set.v4.check_index();
    }
    assert_eq!(
        set.list(),
        held.iter().map(IpMembership::from).collect::<Vec<_>>()
    );
    // 21 any-source groups in 7 sockets; the SSM groups share sockets, two sources each.
    assert!(set.v4.sockets() >= 7, "{} sockets", set.v4.sockets());
    // Leave every other one, in a scrambled order, then join them again: freed room and
    // freed slots are reused.
    let order: Vec<usize> = (0..joins.len()).map(|i| (i * 7) % joins.len()).collect();
    for &i in order.iter().step_by(2) {
        set.leave(joins[i]).expect("leave");
        held.remove(&joins[i]);
        set.v4.check_index();
        for membership in &joins {
            assert_eq!(set.contains(membership), held.contains(membership));
        }
    }
    let sockets_before = set.v4.sockets();
    for &i in order.iter().step_by(2) {
        set.join(joins[i]).expect("join again");
        held.insert(joins[i]);
        set.v4.check_index();
    }
    assert_eq!(
        set.list(),
        held.iter().map(IpMembership::from).collect::<Vec<_>>()
    );
    assert!(set.v4.sockets() <= sockets_before + 6, "room is reused");
    for &i in &order {
        set.leave(joins[i]).expect("leave");
        set.v4.check_index();
    }
    assert_eq!(set.v4.sockets(), 0);
    assert!(set.v4.index_is_empty());
}

#[test]
fn ipv6_joins_spread_over_their_own_sockets() {
    let ifindex = loopback_index();
    if iface::ipv6_state("lo").ok() != Some(Ipv6State::Enabled) {
        println!("skipped: lo has no IPv6 here");
        return;
    }
    let mut set = Memberships::with_limits(3, 2);
    let group = |n: u16| Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0x77, n);
    let mut joins: Vec<Membership6> = (1..=5)
        .map(|n| Membership6 {
            ifindex,
            group: group(n),
            source: None,
        })
        .collect();
    joins.extend((1..=3).map(|n| Membership6 {
        ifindex,
        group: Ipv6Addr::new(0xff35, 0, 0, 0, 0, 0, 0x77, 1),
        source: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n)),
    }));
    let v4 = Membership {
        ifindex,
        group: Ipv4Addr::new(239, 79, 0, 1),
        source: None,
    };
    set.join(v4).expect("IPv4 join on lo");
    for &membership in &joins {
        set.join(membership).expect("IPv6 join on lo");
        set.v6.check_index();
    }
    assert_eq!(
        set.v4.sockets(),
        1,
        "the IPv4 group has a socket of its own"
    );
    // 5 any-source groups over 3 per socket, and 3 sources over 2 per socket.
    assert_eq!(set.v6.sockets(), 3);
    let mut expected: Vec<IpMembership> = joins.iter().map(IpMembership::from).collect();
    expected.insert(0, v4.to_ip());
    expected.sort();
    assert_eq!(set.list(), expected);
    for &membership in &joins {
        set.leave(membership).expect("leave");
        assert!(!set.contains(membership));
        set.v6.check_index();
    }
    assert_eq!(set.v6.sockets(), 0);
    assert!(set.contains(v4));
}

#[test]
fn refuses_mixed_families() {
    let mut set = Memberships::new();
    let mixed = IpMembership {
        ifindex: 1,
        group: IpAddr::V6(Ipv6Addr::new(0xff35, 0, 0, 0, 0, 0, 0, 1)),
        source: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
    };
    assert!(matches!(
        set.join(mixed),
        Err(IgmpError::MixedFamilies { .. })
    ));
    assert!(!set.contains(mixed));
    set.leave(mixed).expect("nothing to leave");
}

#[test]
fn names_the_membership_in_messages() {
    let membership = Membership6 {
        ifindex: 7,
        group: Ipv6Addr::new(0xff35, 0, 0, 0, 0, 0, 0, 1),
        source: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)),
    };
    let error = IgmpError::Setsockopt {
        option: "MCAST_JOIN_SOURCE_GROUP",
        membership: Box::new(membership.to_ip()),
        source: io::Error::from_raw_os_error(libc::ENODEV),
    };
    let text = error.to_string();
    for part in [
        "MCAST_JOIN_SOURCE_GROUP",
        "ff35::1",
        "2001:db8::9",
        "#7",
        "No such device",
    ] {
        assert!(text.contains(part), "{part:?} in {text:?}");
    }
}

#[test]
fn the_error_stays_small() {
    // Callers carry it inside their own errors, which clippy wants under 128 bytes.
    assert!(size_of::<IgmpError>() <= 48, "{}", size_of::<IgmpError>());
}
