//! IPv6 joins in a namespace of their own: each shows in `/proc/net/igmp6` (and a
//! source-specific one in `/proc/net/mcfilter6`) for its interface while held, leaves an MLDv2
//! report on the wire, and is gone after a leave or a drop; refusals are typed.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use fanout_core::iface::{self, Ipv6State};
use fanout_core::igmp::{IgmpError, Membership6, Memberships};
use fanout_core::{PacketSocket, Protocol};
use fanout_relay_tests::{Netns, privileged};

/// The interface joins are made on, and its veth peer, which sees the reports.
const JOIN_IF: &str = "mld0";
const PEER_IF: &str = "mld1";

/// A namespace with a veth pair, both ends up; `None` (after saying why) when `test` cannot
/// run here.
fn topology(test: &str) -> Option<Netns> {
    if !privileged(test) {
        return None;
    }
    let ns = Netns::new("fcmld");
    ns.ip(&[
        "link", "add", JOIN_IF, "type", "veth", "peer", "name", PEER_IF,
    ]);
    ns.ip(&["link", "set", JOIN_IF, "up"]);
    ns.ip(&["link", "set", PEER_IF, "up"]);
    ns.wait_running(JOIN_IF);
    ns.wait_running(PEER_IF);
    Some(ns)
}

/// An address as `/proc/net/igmp6` and `/proc/net/mcfilter6` print it (`%pi6`).
fn hex(address: Ipv6Addr) -> String {
    address
        .octets()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The calling thread's namespace's `/proc/net/<file>`.
fn proc_net(file: &str) -> String {
    std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))
        .unwrap_or_else(|e| panic!("read /proc/thread-self/net/{file}: {e}"))
}

/// The groups `/proc/net/igmp6` lists for `ifname` (columns: index, name, group, users, ...).
fn igmp6_groups(ifname: &str) -> Vec<String> {
    proc_net("igmp6")
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&ifname)).then(|| fields[2].to_owned())
        })
        .collect()
}

/// The (group, source) pairs `/proc/net/mcfilter6` lists for `ifname` in include mode.
fn mcfilter6_sources(ifname: &str) -> Vec<(String, String)> {
    proc_net("mcfilter6")
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 6 && fields[1] == ifname && fields[4] != "0")
                .then(|| (fields[2].to_owned(), fields[3].to_owned()))
        })
        .collect()
}

/// Waits (at most two seconds) for an MLDv2 report (ICMPv6 type 143) that names `group` to
/// arrive on `peer`.
fn report_arrives(peer: &PacketSocket, group: Ipv6Addr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut frame = [0u8; 2048];
    for _ in 0..2000 {
        if Instant::now() > deadline {
            break;
        }
        match peer.try_recv(&mut frame) {
            Ok(Some(len)) if is_report_for(&frame[..len], group) => return true,
            Ok(Some(_)) => {}
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => panic!("receive on {PEER_IF}: {error}"),
        }
    }
    false
}

/// Whether `frame` is an Ethernet frame carrying an MLDv2 report with a record for `group`.
fn is_report_for(frame: &[u8], group: Ipv6Addr) -> bool {
    // Ethernet (14), IPv6 (40) whose next header is hop-by-hop (0, for the router alert).
    let Some(ip) = frame.get(14..54) else {
        return false;
    };
    if ip[6] != 0 {
        return false;
    }
    let hop_by_hop = 54;
    let Some(&hbh_len) = frame.get(hop_by_hop + 1) else {
        return false;
    };
    let icmp = hop_by_hop + 8 * (usize::from(hbh_len) + 1);
    if frame.get(hop_by_hop) != Some(&58) || frame.get(icmp) != Some(&143) {
        return false;
    }
    // Records start after type, code, checksum, reserved and the record count (8 bytes); each
    // is type, aux length, source count, group, sources.
    let Some(&[hi, lo]) = frame.get(icmp + 6..icmp + 8) else {
        return false;
    };
    let mut at = icmp + 8;
    for _ in 0..u16::from_be_bytes([hi, lo]) {
        let Some(record) = frame.get(at..at + 20) else {
            return false;
        };
        if record[4..20] == group.octets() {
            return true;
        }
        let sources = usize::from(u16::from_be_bytes([record[2], record[3]]));
        at += 20 + 16 * sources + 4 * usize::from(record[1]);
    }
    false
}

fn peer_socket() -> PacketSocket {
    let mut peer = PacketSocket::open().expect("packet socket");
    peer.bind(PEER_IF, Protocol::IPV6)
        .expect("bind to the peer");
    peer
}

#[test]
fn an_any_source_join_is_listed_and_reported_while_held() {
    let Some(ns) = topology("an_any_source_join_is_listed_and_reported_while_held") else {
        return;
    };
    ns.run(|| {
        let ifindex = iface::index_of(JOIN_IF).expect("the veth exists");
        let group = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x77, 1);
        let membership = Membership6 {
            ifindex,
            group,
            source: None,
        };
        let peer = peer_socket();
        let mut set = Memberships::new();
        assert!(!igmp6_groups(JOIN_IF).contains(&hex(group)));
        set.join(membership).expect("join");
        assert!(
            igmp6_groups(JOIN_IF).contains(&hex(group)),
            "{}",
            proc_net("igmp6")
        );
        assert!(
            !igmp6_groups(PEER_IF).contains(&hex(group)),
            "joined on {JOIN_IF} only"
        );
        assert!(
            report_arrives(&peer, group),
            "an MLDv2 report for {group} reaches {PEER_IF}"
        );
        set.leave(membership).expect("leave");
        assert!(!igmp6_groups(JOIN_IF).contains(&hex(group)));
        assert!(!set.contains(membership));

        set.join(membership).expect("join again");
        assert!(igmp6_groups(JOIN_IF).contains(&hex(group)));
        drop(set);
        assert!(
            !igmp6_groups(JOIN_IF).contains(&hex(group)),
            "dropping the set leaves its groups"
        );
    });
}

#[test]
fn a_source_specific_join_filters_its_sources() {
    let Some(ns) = topology("a_source_specific_join_filters_its_sources") else {
        return;
    };
    ns.run(|| {
        let ifindex = iface::index_of(JOIN_IF).expect("the veth exists");
        let group = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x77, 2);
        let source = |n| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n);
        let joins: Vec<Membership6> = (1..=2)
            .map(|n| Membership6 {
                ifindex,
                group,
                source: Some(source(n)),
            })
            .collect();
        let peer = peer_socket();
        let mut set = Memberships::new();
        for &membership in &joins {
            set.join(membership).expect("join");
        }
        assert!(igmp6_groups(JOIN_IF).contains(&hex(group)));
        let mut filtered = mcfilter6_sources(JOIN_IF);
        filtered.sort();
        assert_eq!(
            filtered,
            vec![(hex(group), hex(source(1))), (hex(group), hex(source(2)))],
            "{}",
            proc_net("mcfilter6")
        );
        assert!(report_arrives(&peer, group), "an MLDv2 report for {group}");

        set.leave(joins[0]).expect("leave one source");
        assert_eq!(
            mcfilter6_sources(JOIN_IF),
            vec![(hex(group), hex(source(2)))]
        );
        assert!(
            igmp6_groups(JOIN_IF).contains(&hex(group)),
            "one source left"
        );
        set.leave(joins[1]).expect("leave the other");
        assert!(mcfilter6_sources(JOIN_IF).is_empty());
        assert!(!igmp6_groups(JOIN_IF).contains(&hex(group)));

        set.join(joins[0]).expect("join again");
        assert_eq!(mcfilter6_sources(JOIN_IF).len(), 1);
        drop(set);
        assert!(mcfilter6_sources(JOIN_IF).is_empty());
        assert!(!igmp6_groups(JOIN_IF).contains(&hex(group)));
    });
}

#[test]
fn refusals_are_typed() {
    let Some(ns) = topology("refusals_are_typed") else {
        return;
    };
    ns.run(|| {
        let ifindex = iface::index_of(JOIN_IF).expect("the veth exists");
        let group = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x77, 3);
        let membership = Membership6 {
            ifindex,
            group,
            source: None,
        };
        let mut set = Memberships::new();
        set.join(membership).expect("join");
        let error = set.join(membership).expect_err("a second join");
        assert!(
            matches!(&error, IgmpError::AlreadyJoined { membership: m } if **m == membership.into()),
            "{error}"
        );
        assert!(error.to_string().contains("ff3e::77:3"), "{error}");

        let unicast = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let error = set
            .join(Membership6 {
                ifindex,
                group: unicast,
                source: None,
            })
            .expect_err("a unicast group");
        assert!(
            matches!(error, IgmpError::NotMulticast { group } if group == unicast),
            "{error}"
        );

        let missing = 999_999;
        assert!(iface::name_of(missing).is_err(), "no interface #{missing}");
        let error = set
            .join(Membership6 {
                ifindex: missing,
                group,
                source: None,
            })
            .expect_err("a missing interface");
        assert!(
            matches!(&error, IgmpError::NoInterface { membership } if membership.ifindex == missing),
            "{error}"
        );

        // The kernel itself would take this join and then send no report.
        std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{PEER_IF}/disable_ipv6"),
            "1",
        )
        .expect("disable IPv6 on the peer");
        let peer_index = iface::index_of(PEER_IF).expect("the peer exists");
        let error = set
            .join(Membership6 {
                ifindex: peer_index,
                group,
                source: None,
            })
            .expect_err("an interface without IPv6");
        assert!(
            matches!(
                &error,
                IgmpError::NoIpv6 { interface, state: Ipv6State::Disabled, .. } if interface == PEER_IF
            ),
            "{error}"
        );
        assert!(error.to_string().contains("disable_ipv6"), "{error}");
        assert!(!igmp6_groups(PEER_IF).contains(&hex(group)));

        // Below IPv6's minimum MTU the kernel drops the interface's IPv6 altogether.
        std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{PEER_IF}/disable_ipv6"),
            "0",
        )
        .expect("enable IPv6 on the peer again");
        assert_eq!(iface::ipv6_state(PEER_IF).ok(), Some(Ipv6State::Enabled));
        let status = std::process::Command::new("ip")
            .args(["link", "set", PEER_IF, "mtu", "1200"])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip link set {PEER_IF} mtu 1200");
        let error = set
            .join(Membership6 {
                ifindex: peer_index,
                group,
                source: None,
            })
            .expect_err("an interface whose MTU is below 1280");
        assert!(
            matches!(
                error,
                IgmpError::NoIpv6 {
                    state: Ipv6State::NoConfiguration,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(set.list(), vec![membership.into()], "only the first join is held");
    });
}
