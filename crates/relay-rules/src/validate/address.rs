//! What makes an address usable in a rule, for each family.

use super::Problem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Problems of an address that is neither sendable to nor receivable on, or `None`.
///
/// IPv4: the unspecified and broadcast addresses, and the link-local groups of 224.0.0.0/24.
/// IPv6: the unspecified address, IPv4-mapped addresses (`::ffff:a.b.c.d`, which never appear
/// on the wire: the IPv4 address itself is the rule's), and groups of a scope that is never
/// forwarded or reserved (0, 1 interface-local, 2 link-local, 15).
pub(super) fn unusable(address: IpAddr) -> Option<Problem> {
    match address {
        IpAddr::V4(address) => unusable_v4(address),
        IpAddr::V6(address) => unusable_v6(address),
    }
}

fn unusable_v4(address: Ipv4Addr) -> Option<Problem> {
    if address.is_unspecified() {
        Some(Problem::Unspecified)
    } else if address.is_broadcast() {
        Some(Problem::Broadcast)
    } else if address.is_multicast() && address.octets()[..3] == [224, 0, 0] {
        Some(Problem::LinkLocalGroup(address.into()))
    } else {
        None
    }
}

fn unusable_v6(address: Ipv6Addr) -> Option<Problem> {
    if address.is_unspecified() {
        Some(Problem::Unspecified)
    } else if address.to_ipv4_mapped().is_some() {
        Some(Problem::Ipv4Mapped(address))
    } else if address.is_multicast() && matches!(multicast_scope(address), 0 | 1 | 2 | 15) {
        Some(Problem::MulticastScope {
            address,
            scope: multicast_scope(address),
        })
    } else {
        None
    }
}

/// The scope nibble of an IPv6 multicast address (RFC 4291 section 2.7).
pub(super) fn multicast_scope(address: Ipv6Addr) -> u8 {
    address.octets()[1] & 0x0f
}

/// Whether `source` may be the source of a source-specific input: a unicast address.
pub(super) fn is_unicast_source(source: IpAddr) -> bool {
    match source {
        IpAddr::V4(source) => {
            !(source.is_unspecified() || source.is_broadcast() || source.is_multicast())
        }
        IpAddr::V6(source) => {
            !(source.is_unspecified() || source.is_multicast() || source.to_ipv4_mapped().is_some())
        }
    }
}

/// Whether two addresses are of one family.
pub(super) fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_scopes_and_special_addresses() {
        assert_eq!(unusable(v6("ff3e::8000:1")), None, "global SSM");
        assert_eq!(unusable(v6("ff05::1:3")), None, "site-local");
        assert_eq!(unusable(v6("ff14::1")), None, "admin-local, transient");
        assert_eq!(unusable(v6("2001:db8::1")), None, "unicast");
        for (group, scope) in [
            ("ff02::1", 2),
            ("ff01::2", 1),
            ("ff00::5", 0),
            ("ff1f::5", 15),
        ] {
            let Some(Problem::MulticastScope { scope: got, .. }) = unusable(v6(group)) else {
                panic!("{group} refused for its scope");
            };
            assert_eq!(got, scope, "{group}");
        }
        assert_eq!(unusable(v6("::")), Some(Problem::Unspecified));
        assert!(matches!(
            unusable(v6("::ffff:239.1.1.1")),
            Some(Problem::Ipv4Mapped(_))
        ));
    }

    #[test]
    fn sources_and_families() {
        assert!(is_unicast_source(v6("2001:db8::1")));
        assert!(is_unicast_source(v6("fe80::1")));
        assert!(!is_unicast_source(v6("ff3e::1")));
        assert!(!is_unicast_source(v6("::")));
        assert!(!is_unicast_source(v6("::ffff:10.0.0.1")));
        assert!(is_unicast_source("10.0.0.1".parse().unwrap()));
        assert!(same_family(v6("::1"), v6("ff3e::1")));
        assert!(!same_family(v6("::1"), "10.0.0.1".parse().unwrap()));
    }
}
