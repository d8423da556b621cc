//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are kept unfolded in a `u64` while they are being added to, and folded to 16 bits once at
//! the end: adding 16-bit words into 64 bits cannot overflow for any IPv4 packet, so the hot loop
//! has no carry handling.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The one's complement sum of `data` as big-endian 16-bit words, unfolded.
///
/// An odd trailing byte is padded with a zero byte, as RFC 768 and RFC 791 specify. Combine sums
/// by adding them, then [`fold`].
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut acc: u64 = 0;
    for word in &mut chunks {
        acc += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds an unfolded sum into 16 bits with end-around carry (the sum, not yet complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves at most 16 significant bits.
    acc as u16
}

/// The unfolded sum of the UDP/TCP pseudo-header (RFC 768 for IPv4, RFC 8200 section 8.1 for
/// IPv6): addresses, protocol (next header) and the transport length.
///
/// IPv6's pseudo-header holds the length in 32 bits and the next header in the low byte of a
/// 32-bit word, but for lengths below 64 KiB both sum to the same words as IPv4's, so one
/// function serves both families (and a pseudo-header may even mix them, which the relay's
/// checksum updates across families rely on: only the address words differ).
pub fn pseudo_header_sum(
    source: impl Into<IpAddr>,
    destination: impl Into<IpAddr>,
    protocol: u8,
    length: u16,
) -> u64 {
    ip_sum(source.into()) + ip_sum(destination.into()) + u64::from(protocol) + u64::from(length)
}

/// Updates `checksum` after 16-bit words summing to `removed` were replaced by words summing to
/// `added`, without touching the rest of the data: RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`.
///
/// Equation 3 (not the `HC - m + m'` of RFC 1141) is the one that gives the same result as a
/// full recomputation in all cases, including the two representations of zero. The result is the
/// raw one's complement checksum: a UDP caller maps 0x0000 to 0xffff itself, because 0 means
/// "no checksum" there.
///
/// ```
/// use relay_rules::wire::{adjust, fold, sum};
///
/// let mut data = [0x45u8, 0x00, 0x12, 0x34, 0xab, 0xcd];
/// let before = !fold(sum(&data));
/// let removed = sum(&data[2..4]);
/// data[2..4].copy_from_slice(&[0x56, 0x78]);
/// let after = adjust(before, removed, sum(&data[2..4]));
/// assert_eq!(after, !fold(sum(&data)));
/// ```
#[inline]
pub fn adjust(checksum: u16, removed: u64, added: u64) -> u16 {
    let acc = u64::from(!checksum) + u64::from(!fold(removed)) + added;
    !fold(acc)
}

/// The sum of an address's two 16-bit words.
#[inline]
pub(crate) fn addr_sum(addr: Ipv4Addr) -> u64 {
    let o = addr.octets();
    u64::from(u16::from_be_bytes([o[0], o[1]])) + u64::from(u16::from_be_bytes([o[2], o[3]]))
}

/// The sum of an IPv6 address's eight 16-bit words.
#[inline]
pub(crate) fn addr6_sum(addr: Ipv6Addr) -> u64 {
    addr.segments().iter().map(|&word| u64::from(word)).sum()
}

/// The sum of the 16-bit words of an address as a [`super::Datagram`] holds it: the low 32
/// bits for IPv4 (no match on an `IpAddr`, and the IPv4-mapped prefix is not summed), all 128
/// for IPv6.
#[inline]
pub(crate) fn bits_sum(bits: u128, ipv6: bool) -> u64 {
    let low = bits as u64;
    let words = |x: u64| (x & 0xffff) + (x >> 16 & 0xffff) + (x >> 32 & 0xffff) + (x >> 48);
    if ipv6 {
        words(low) + words((bits >> 64) as u64)
    } else {
        (low & 0xffff) + (low >> 16 & 0xffff)
    }
}

/// The sum of an address's 16-bit words, of either family.
#[inline]
pub(crate) fn ip_sum(addr: IpAddr) -> u64 {
    match addr {
        IpAddr::V4(addr) => addr_sum(addr),
        IpAddr::V6(addr) => addr6_sum(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2 after folding.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0x0002_ddf0);
        assert_eq!(fold(sum(&data)), 0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn fold_carries_repeatedly() {
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_ffff), 0x0001);
        assert_eq!(fold(0xffff_ffff_ffff), 0xffff);
    }

    #[test]
    fn pseudo_header() {
        let sum = pseudo_header_sum(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(239, 1, 2, 3),
            17,
            20,
        );
        assert_eq!(sum, 0x0a00 + 0x0001 + 0xef01 + 0x0203 + 17 + 20);
        let v6 = pseudo_header_sum(
            "2001:db8::1".parse::<Ipv6Addr>().unwrap(),
            "ff3e::1:2".parse::<Ipv6Addr>().unwrap(),
            17,
            20,
        );
        assert_eq!(v6, 0x2001 + 0x0db8 + 1 + 0xff3e + 1 + 2 + 17 + 20);
    }

    #[test]
    fn bits_sum_matches_the_address_sums() {
        use super::super::Datagram;
        let v4 = Ipv4Addr::new(239, 1, 0xfe, 0xff);
        assert_eq!(
            bits_sum(Datagram::address_bits(v4.into()), false),
            addr_sum(v4)
        );
        let v6 = "2001:db8:ffff::8000:fe01".parse::<Ipv6Addr>().unwrap();
        assert_eq!(
            bits_sum(Datagram::address_bits(v6.into()), true),
            addr6_sum(v6)
        );
        // An IPv4-mapped address over IPv6 sums its 0xffff word too.
        let mapped = v4.to_ipv6_mapped();
        assert_eq!(
            bits_sum(Datagram::address_bits(mapped.into()), true),
            addr6_sum(mapped)
        );
    }

    /// RFC 1624 section 4: eqn. 3 keeps 0xffff where eqn. 2 (RFC 1141) would give 0x0000.
    #[test]
    fn rfc1624_negative_zero_case() {
        // Header words sum to 0xcd7a except one word 0x5555 that becomes 0x3285.
        // The old checksum is ~(0xcd7a + 0x5555) = ~0x22d0 (with carry) = 0xdd2f.
        let old = !fold(0xcd7a + 0x5555);
        assert_eq!(old, 0xdd2f);
        let new = adjust(old, 0x5555, 0x3285);
        assert_eq!(new, !fold(0xcd7a + 0x3285));
        assert_eq!(new, 0x0000);
    }

    #[test]
    fn adjust_matches_recomputation() {
        let mut data: Vec<u8> = (0u8..40).map(|b| b.wrapping_mul(37)).collect();
        let before = !fold(sum(&data));
        let removed = sum(&data[8..16]);
        data[8..16].copy_from_slice(&[0xff, 0xee, 0x00, 0x01, 0x80, 0x00, 0x12, 0x34]);
        let after = adjust(before, removed, sum(&data[8..16]));
        assert_eq!(after, !fold(sum(&data)));
    }
}
