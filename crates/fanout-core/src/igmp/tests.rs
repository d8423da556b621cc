//! Joins and leaves on `lo`, and the bookkeeping of which socket holds what.

use super::*;

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
        set.join(membership)
            .expect("a second join of the same is a no-op");
    }
    let mut expected = joins.clone();
    expected.sort();
    assert_eq!(set.list(), expected);
    assert_eq!(
        set.sockets(),
        3,
        "7 any-source groups + 1 SSM group over 3 per socket"
    );
    set.check_index();
    let igmp = std::fs::read_to_string("/proc/net/igmp").unwrap_or_default();
    if !igmp.is_empty() {
        // /proc/net/igmp lists groups as little-endian hex on x86; 239.77.0.7 is 07004DEF.
        assert!(igmp.contains("07004DEF"), "{igmp}");
    }
    for &membership in &joins {
        set.leave(membership).expect("leave");
        assert!(!set.contains(&membership));
        set.check_index();
    }
    assert_eq!(set.sockets(), 0);
}

impl Memberships {
    /// Sockets open.
    fn sockets(&self) -> usize {
        self.holders.iter().flatten().count()
    }

    /// Panics unless the group index and the free and with-room slots agree with what
    /// each socket holds.
    fn check_index(&self) {
        let mut indexed = 0;
        for (&key, slots) in &self.by_group {
            assert!(!slots.is_empty(), "{key:?}: an empty entry is removed");
            for (i, &slot) in slots.iter().enumerate() {
                assert!(!slots[..i].contains(&slot), "{key:?}: slot {slot} twice");
                let holder = self.holders[slot].as_ref().expect("indexed slots are live");
                assert!(
                    holder.groups.contains_key(&key),
                    "{key:?} not in slot {slot}"
                );
                indexed += 1;
            }
        }
        let mut held = 0;
        for (slot, holder) in self.holders.iter().enumerate() {
            let Some(holder) = holder else {
                assert!(self.free.contains(&slot), "slot {slot} is free");
                assert!(
                    !self.with_room.contains(&slot),
                    "free slot {slot} has no room"
                );
                continue;
            };
            assert!(!holder.groups.is_empty(), "an empty socket is closed");
            assert!(holder.groups.len() <= self.max_groups);
            assert_eq!(
                self.with_room.contains(&slot),
                holder.groups.len() < self.max_groups,
                "slot {slot}: room"
            );
            for (key, sources) in &holder.groups {
                assert!(self.by_group[key].contains(&slot));
                if let Some(sources) = sources {
                    assert!(!sources.is_empty() && sources.len() <= self.max_sources);
                }
            }
            held += holder.groups.len();
        }
        assert_eq!(indexed, held, "every (socket, group) is indexed once");
    }
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
        set.check_index();
    }
    assert_eq!(set.list(), held.iter().copied().collect::<Vec<_>>());
    // 21 any-source groups in 7 sockets; the SSM groups share sockets, two sources each.
    assert!(set.sockets() >= 7, "{} sockets", set.sockets());
    // Leave every other one, in a scrambled order, then join them again: freed room and
    // freed slots are reused.
    let order: Vec<usize> = (0..joins.len()).map(|i| (i * 7) % joins.len()).collect();
    for &i in order.iter().step_by(2) {
        set.leave(joins[i]).expect("leave");
        held.remove(&joins[i]);
        set.check_index();
        for membership in &joins {
            assert_eq!(set.contains(membership), held.contains(membership));
        }
    }
    let sockets_before = set.sockets();
    for &i in order.iter().step_by(2) {
        set.join(joins[i]).expect("join again");
        held.insert(joins[i]);
        set.check_index();
    }
    assert_eq!(set.list(), held.iter().copied().collect::<Vec<_>>());
    assert!(set.sockets() <= sockets_before + 6, "room is reused");
    for &i in &order {
        set.leave(joins[i]).expect("leave");
        set.check_index();
    }
    assert_eq!(set.sockets(), 0);
    assert!(set.by_group.is_empty() && set.with_room.is_empty());
}
