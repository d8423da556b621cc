//! The shard function: which worker holds the rule for a (group, port) key.
//!
//! Under `shard` placement every worker holds only the rules whose shard is its own index, and
//! the kernel steers each packet with a classic BPF fanout program
//! ([`crate::bpf::steering_program`]) to the worker `shard(group, port, n)` names. That only
//! works if the function here and the program the kernel runs agree on every key, bit for bit,
//! so the function is restricted to what classic BPF can compute: 32-bit wrapping add, multiply,
//! xor, shifts and modulo by a constant.

use std::net::IpAddr;

/// Multiplier that spreads the port over all 32 bits before it is mixed with the group
/// (2^32 / φ rounded to odd, the Fibonacci hashing constant).
pub const PORT_MULTIPLIER: u32 = 0x9E37_79B1;
/// First multiplier of the finalizer (MurmurHash3's `fmix32`).
pub const MIX_MULTIPLIER_1: u32 = 0x85EB_CA6B;
/// Second multiplier of the finalizer (MurmurHash3's `fmix32`).
pub const MIX_MULTIPLIER_2: u32 = 0xC2B2_AE35;
/// Multiplier that spreads the VLAN id over all 32 bits (xxHash32's fourth prime, odd).
pub const VLAN_MULTIPLIER: u32 = 0x27D4_EB2F;

/// The shard (`0..n`) that owns rules for destination `group` and UDP port `port` among `n`
/// shards.
///
/// Specified exactly, on `u32` with wrapping arithmetic, `g` being the address word
/// ([`address_word`]): an IPv4 address read as a big-endian number (`u32::from(group)`, so
/// 239.1.2.3 is `0xEF01_0203`), an IPv6 address as the xor of its four big-endian words:
///
/// ```text
/// h = g ^ (port * 0x9E37_79B1)
/// h = h ^ (h >> 16)
/// h = h * 0x85EB_CA6B
/// h = h ^ (h >> 13)
/// h = h * 0xC2B2_AE35
/// h = h ^ (h >> 16)
/// shard = h % n
/// ```
///
/// The last five steps are MurmurHash3's 32-bit finalizer, a bijection in which every input bit
/// affects every output bit, so consecutive groups or ports (the common way operators number
/// streams) spread evenly over the shards instead of landing in a few.
///
/// `n == 0` is a caller error (there is no shard of nothing); it returns 0, the same as `n == 1`,
/// rather than panicking, and [`crate::bpf::steering_program`] emits a program that agrees.
///
/// ```
/// use relay_rules::shard::shard;
/// use std::net::Ipv4Addr;
///
/// let group = Ipv4Addr::new(239, 1, 2, 3);
/// assert_eq!(shard(group, 5000, 4), 1);
/// assert!(shard(group, 5001, 4) < 4);
/// assert_eq!(shard(group, 5000, 1), 0);
/// assert_eq!(shard(group, 5000, 0), 0);
/// ```
pub fn shard(group: impl Into<IpAddr>, port: u16, n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    shard_hash(group, port) % n
}

/// The shard (`0..n`) that owns rules for `group`, `port` and VLAN `vlan` (`None`: untagged)
/// among `n` shards: [`shard`] with the VLAN id mixed in before the finalizer,
///
/// ```text
/// h = g ^ (port * 0x9E37_79B1) ^ (vid * 0x27D4_EB2F)
/// ```
///
/// `vid` being the VLAN id (its low 12 bits) or 0 for `None`, so an untagged key has the shard
/// [`shard`] gives it, and two VLANs' streams of one group and port spread like two groups'.
///
/// ```
/// use relay_rules::shard::{shard, shard_vlan};
/// use std::net::Ipv4Addr;
///
/// let group = Ipv4Addr::new(239, 1, 2, 3);
/// assert_eq!(shard_vlan(group, 5000, None, 4), shard(group, 5000, 4));
/// assert!(shard_vlan(group, 5000, Some(100), 4) < 4);
/// ```
pub fn shard_vlan(group: impl Into<IpAddr>, port: u16, vlan: Option<u16>, n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    shard_hash_vlan(group, port, vlan) % n
}

/// The 32-bit hash [`shard_vlan`] reduces modulo `n`.
pub fn shard_hash_vlan(group: impl Into<IpAddr>, port: u16, vlan: Option<u16>) -> u32 {
    let vid = u32::from(vlan.unwrap_or(0) & 0x0fff);
    finalize(
        address_word(group.into())
            ^ u32::from(port).wrapping_mul(PORT_MULTIPLIER)
            ^ vid.wrapping_mul(VLAN_MULTIPLIER),
    )
}

/// The 32-bit hash [`shard`] reduces modulo `n`: everything but the last step.
///
/// Exposed so that callers that move rules between worker counts (2 → 3 workers) can compute
/// the hash once and reduce it for each count.
pub fn shard_hash(group: impl Into<IpAddr>, port: u16) -> u32 {
    shard_hash_vlan(group, port, None)
}

/// The 32-bit word an address enters the shard hash as: an IPv4 address itself, an IPv6
/// address folded by xor of its four big-endian 32-bit words (what the steering program
/// computes from four word loads).
///
/// ```
/// use relay_rules::shard::address_word;
/// use std::net::IpAddr;
///
/// let v6: IpAddr = "ff3e::8000:1".parse().unwrap();
/// assert_eq!(address_word(v6), 0xff3e_0000 ^ 0x8000_0001);
/// assert_eq!(address_word("239.1.2.3".parse().unwrap()), 0xef01_0203);
/// ```
#[inline]
pub fn address_word(address: IpAddr) -> u32 {
    match address {
        IpAddr::V4(address) => u32::from(address),
        IpAddr::V6(address) => {
            let bits = u128::from(address);
            (bits >> 96) as u32 ^ (bits >> 64) as u32 ^ (bits >> 32) as u32 ^ bits as u32
        }
    }
}

/// MurmurHash3's 32-bit finalizer, the last five steps of [`shard`]'s specification.
fn finalize(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(MIX_MULTIPLIER_1);
    h ^= h >> 13;
    h = h.wrapping_mul(MIX_MULTIPLIER_2);
    h ^= h >> 16;
    h
}

/// Some of the `count` shards: what one worker holds when it serves several fanout members.
///
/// Under `shard` placement the steering program sends a packet to fanout member
/// `shard(group, port, count)`, and the member count stays fixed while the relay runs; a worker
/// that serves members 0 and 2 of 4 holds the rules of shards 0 and 2. Changing which worker
/// serves a member moves that shard's rules, never the program.
///
/// ```
/// use relay_rules::shard::{ShardSet, shard};
/// use std::net::Ipv4Addr;
///
/// let both = ShardSet::new(2, [0, 1]).unwrap();
/// let group = Ipv4Addr::new(239, 1, 2, 3);
/// assert!(both.holds(group, 5000));
/// let mine = ShardSet::one(shard(group, 5000, 2), 2);
/// let other = ShardSet::one(1 - shard(group, 5000, 2), 2);
/// assert!(mine.holds(group, 5000) && !other.holds(group, 5000));
/// assert!(ShardSet::new(2, [2]).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardSet {
    count: u32,
    /// Ascending, without repeats, each below `count`.
    owned: Vec<u32>,
}

impl ShardSet {
    /// The shards `owned` of `count`; `None` when one is not below `count` or none is given
    /// (a worker with no shard holds nothing and should not exist).
    pub fn new(count: u32, owned: impl IntoIterator<Item = u32>) -> Option<Self> {
        let mut owned: Vec<u32> = owned.into_iter().collect();
        owned.sort_unstable();
        owned.dedup();
        if owned.is_empty() || owned.last().is_some_and(|&last| last >= count) {
            return None;
        }
        Some(ShardSet { count, owned })
    }

    /// Shard `index` of `count` alone (`index` is reduced modulo `count`, as the kernel reduces
    /// the steering program's answer).
    pub fn one(index: u32, count: u32) -> Self {
        let count = count.max(1);
        ShardSet {
            count,
            owned: vec![index % count],
        }
    }

    /// How many shards there are in all.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shards held, ascending.
    pub fn indices(&self) -> &[u32] {
        &self.owned
    }

    /// Whether shard `index` is held.
    pub fn owns(&self, index: u32) -> bool {
        self.owned.binary_search(&index).is_ok()
    }

    /// Whether the rule for (`group`, `port`) of untagged frames belongs here.
    pub fn holds(&self, group: impl Into<IpAddr>, port: u16) -> bool {
        self.holds_vlan(group, port, None)
    }

    /// Whether the rule for (`group`, `port`) of VLAN `vlan` belongs here ([`shard_vlan`]).
    pub fn holds_vlan(&self, group: impl Into<IpAddr>, port: u16, vlan: Option<u16>) -> bool {
        self.owns(shard_vlan(group, port, vlan, self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Counts per shard of `keys`, which must all be below `n`.
    fn histogram(keys: impl Iterator<Item = (Ipv4Addr, u16)>, n: u32) -> Vec<u32> {
        let mut counts = vec![0u32; n as usize];
        for (group, port) in keys {
            counts[shard(group, port, n) as usize] += 1;
        }
        counts
    }

    /// Asserts every bucket is within `tolerance` (a fraction) of the mean.
    fn assert_balanced(counts: &[u32], total: u32, tolerance: f64, what: &str) {
        let mean = f64::from(total) / counts.len() as f64;
        for (index, &count) in counts.iter().enumerate() {
            let deviation = (f64::from(count) - mean).abs() / mean;
            assert!(
                deviation <= tolerance,
                "{what}: shard {index} of {} has {count} keys, mean {mean:.1} ({:.1}% off)",
                counts.len(),
                deviation * 100.0
            );
        }
    }

    #[test]
    fn known_values_pin_the_formula() {
        // Worked out independently of this code from the documented steps; a changed constant,
        // shift or order breaks them (and with them every deployed steering program).
        assert_eq!(shard_hash(Ipv4Addr::new(0, 0, 0, 0), 0), 0);
        assert_eq!(shard_hash(Ipv4Addr::new(239, 1, 2, 3), 5000), 0xB72C_F90D);
        assert_eq!(shard_hash(Ipv4Addr::new(224, 0, 1, 0), 1), 0x2560_01AD);
        assert_eq!(shard(Ipv4Addr::new(239, 1, 2, 3), 5000, 4), 1);
        assert_eq!(shard(Ipv4Addr::new(239, 1, 2, 3), 5000, 7), 6);
    }

    #[test]
    fn result_is_below_n_and_zero_for_degenerate_n() {
        for port in [1u16, 80, 5000, 65535] {
            let group = Ipv4Addr::new(239, 255, 0, 1);
            assert_eq!(shard(group, port, 0), 0);
            assert_eq!(shard(group, port, 1), 0);
            for n in 2..=64 {
                assert!(shard(group, port, n) < n);
            }
        }
    }

    #[test]
    fn consecutive_groups_spread_evenly() {
        let keys = 10_000u32;
        for n in [2u32, 3, 4, 5, 8, 16] {
            let base = u32::from(Ipv4Addr::new(239, 0, 0, 0));
            let counts = histogram((0..keys).map(|i| (Ipv4Addr::from(base + i), 5000)), n);
            assert_balanced(&counts, keys, 0.10, "groups 239.0.0.0 + i, port 5000");
        }
    }

    #[test]
    fn consecutive_ports_spread_evenly() {
        let keys = 10_000u32;
        for n in [2u32, 3, 4, 5, 8, 16] {
            let group = Ipv4Addr::new(239, 1, 1, 1);
            let counts = histogram((0..keys).map(|i| (group, 1024 + i as u16)), n);
            assert_balanced(&counts, keys, 0.10, "group 239.1.1.1, ports 1024 + i");
        }
    }

    #[test]
    fn group_and_port_both_matter() {
        // A grid of 100 groups x 100 ports: neither coordinate alone may decide the shard.
        let base = u32::from(Ipv4Addr::new(239, 10, 0, 0));
        let keys = (0..100u32)
            .flat_map(|g| (0..100u16).map(move |p| (Ipv4Addr::from(base + g), 2000 + p)));
        let counts = histogram(keys, 4);
        assert_balanced(&counts, 10_000, 0.10, "100 groups x 100 ports");
        let same_group: std::collections::HashSet<u32> = (0..100u16)
            .map(|p| shard(Ipv4Addr::from(base), 2000 + p, 4))
            .collect();
        assert_eq!(
            same_group.len(),
            4,
            "ports of one group must reach every shard"
        );
    }
}
