//! The content checksum of a rule set, for comparing two processes' tables.
//!
//! Each rule is encoded canonically (below) and hashed with FNV-1a-64, the 64-bit result goes
//! through the SplitMix64 finalizer, and the rule hashes are combined by wrapping addition.
//! - FNV-1a and SplitMix64 are fixed, tiny, and defined bit for bit, so the value is the same in
//!   every process, build and architecture: the supervisor and each worker can compare it.
//!   Standard-library and ahash hashers are seeded or may change between versions.
//! - Addition is commutative, so the order of rules does not matter. Unlike xor, it does not
//!   cancel two equal rule hashes; the finalizer spreads each rule's FNV hash over all 64 bits
//!   so that sums of related rules do not collide in structured ways.
//!
//! Canonical encoding of a rule (integers big-endian, strings as a u32 length then UTF-8
//! bytes, optional values as a 0 byte or a 1 byte then the value):
//! version byte 1, name, input interface, input destination (4 bytes; every address is 4 bytes
//! for IPv4 and 16 for IPv6, so IPv4 rules keep their checksums), input port (2), input
//! source (optional 4), output count (u32), then for each output in order: interface,
//! destination (4), port (2), ttl (1: the fixed TTL, 0 for `decrement`), source (optional 4),
//! dscp (optional 1), vlan (optional 2); then, only for an input with a VLAN, the byte 2 and the
//! VLAN (2), so that the checksum of a rule without one is what it was before inputs had VLANs;
//! last, only if the rule has any stream option, a 0x5a byte, inspect (optional 1: its
//! declaration index), rtp_clock_hz (optional 4), max_pps (optional 8), max_bps (optional 8).

use crate::rule::{Rule, Ttl};
use std::net::IpAddr;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Marks the stream options, encoded after the outputs only when a rule has any, so that the
/// checksum of a rule without them is what it always was.
const STREAM_OPTIONS: u8 = 0x5a;
/// Version of the canonical encoding: bump it when the encoding changes.
const ENCODING_VERSION: u8 = 1;

/// Feeds bytes to FNV-1a-64.
struct Fnv(u64);

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
    }

    fn str(&mut self, s: &str) {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.bytes(&len.to_be_bytes());
        self.bytes(s.as_bytes());
    }

    fn address(&mut self, address: IpAddr) {
        match address {
            IpAddr::V4(address) => self.bytes(&address.octets()),
            IpAddr::V6(address) => self.bytes(&address.octets()),
        }
    }

    fn option<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.bytes(&[0]),
            Some(value) => {
                self.bytes(&[1]);
                write(self, value);
            }
        }
    }
}

/// SplitMix64's finalizer: a bijection that spreads every input bit over the output.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The checksum of one rule: its contribution to [`checksum_of`].
pub fn rule_checksum(rule: &Rule) -> u64 {
    let mut h = Fnv(FNV_OFFSET);
    h.bytes(&[ENCODING_VERSION]);
    h.str(&rule.name);
    h.str(&rule.input.interface);
    h.address(rule.input.destination);
    h.bytes(&rule.input.port.to_be_bytes());
    h.option(rule.input.source, Fnv::address);
    let count = u32::try_from(rule.outputs.len()).unwrap_or(u32::MAX);
    h.bytes(&count.to_be_bytes());
    for output in &rule.outputs {
        h.str(&output.interface);
        h.address(output.destination);
        h.bytes(&output.port.to_be_bytes());
        // `decrement` as 0, which no fixed TTL is: rules without it keep their checksums.
        h.bytes(&[match output.ttl {
            Ttl::Fixed(ttl) => ttl,
            Ttl::Decrement => 0,
        }]);
        h.option(output.source, Fnv::address);
        h.option(output.dscp, |h, dscp| h.bytes(&[dscp]));
        h.option(output.vlan, |h, vlan| h.bytes(&vlan.to_be_bytes()));
    }
    if let Some(vlan) = rule.input.vlan {
        h.bytes(&[2]);
        h.bytes(&vlan.to_be_bytes());
    }
    let stream = (rule.inspect, rule.rtp_clock_hz, rule.max_pps, rule.max_bps);
    if stream != (None, None, None, None) {
        h.bytes(&[STREAM_OPTIONS]);
        h.option(rule.inspect, |h, kind| h.bytes(&[kind as u8]));
        h.option(rule.rtp_clock_hz, |h, hz| h.bytes(&hz.to_be_bytes()));
        h.option(rule.max_pps, |h, pps| h.bytes(&pps.to_be_bytes()));
        h.option(rule.max_bps, |h, bps| h.bytes(&bps.to_be_bytes()));
    }
    finalize(h.0)
}

/// The order-independent checksum of `rules`: the wrapping sum of [`rule_checksum`]s (0 for
/// none). Equal for equal sets in any order, in any process; use it to detect a worker whose
/// table drifted from the supervisor's.
pub fn checksum_of<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> u64 {
    rules
        .into_iter()
        .map(rule_checksum)
        .fold(0, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Input, Output};
    use std::net::Ipv4Addr;

    fn rule(name: &str, port: u16) -> Rule {
        Rule {
            name: name.into(),
            input: Input {
                interface: "eth0".into(),
                destination: Ipv4Addr::new(239, 1, 1, 1).into(),
                port,
                source: None,
                vlan: None,
            },
            outputs: vec![Output {
                interface: "eth1".into(),
                destination: Ipv4Addr::new(239, 2, 2, 2).into(),
                port: 6000,
                ttl: Ttl::Fixed(16),
                source: None,
                dscp: None,
                vlan: None,
            }],
            class: None,
            inspect: None,
            rtp_clock_hz: None,
            max_pps: None,
            max_bps: None,
        }
    }

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        let hash = |bytes: &[u8]| {
            let mut h = Fnv(FNV_OFFSET);
            h.bytes(bytes);
            h.0
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn value_is_pinned_across_builds() {
        // Computed by a separate implementation of the encoding documented above. A changed
        // encoding must bump ENCODING_VERSION and this value together: processes of two
        // versions would otherwise report drift where there is none, or miss it.
        assert_eq!(rule_checksum(&rule("cam1", 5000)), 0xa7a9_7914_4682_20da);
    }

    #[test]
    fn order_does_not_matter_and_content_does() {
        let a = rule("a", 5000);
        let b = rule("b", 5001);
        assert_eq!(checksum_of([&a, &b]), checksum_of([&b, &a]));
        assert_ne!(checksum_of([&a, &b]), checksum_of([&a]));
        assert_eq!(checksum_of(std::iter::empty()), 0);
        let mut inspected = b.clone();
        inspected.inspect = Some(crate::inspect::Inspect::MpegTs);
        let mut limited = b.clone();
        limited.max_pps = Some(5000);
        let sums = [&b, &inspected, &limited].map(rule_checksum);
        assert!(
            sums[0] != sums[1] && sums[1] != sums[2] && sums[0] != sums[2],
            "stream options count"
        );
        let mut changed = b.clone();
        changed.outputs[0].ttl = Ttl::Fixed(17);
        assert_ne!(checksum_of([&a, &b]), checksum_of([&a, &changed]));
        let mut tagged = b.clone();
        tagged.outputs[0].vlan = Some(0);
        assert_ne!(
            rule_checksum(&b),
            rule_checksum(&tagged),
            "None and Some(0) differ"
        );
        // Moving bytes between adjacent strings changes the encoding (length prefixes).
        let mut shifted = a.clone();
        shifted.name = "aeth".into();
        shifted.input.interface = "0".into();
        assert_ne!(rule_checksum(&a), rule_checksum(&shifted));
    }
}
