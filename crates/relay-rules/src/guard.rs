//! The storm guard: a token bucket that bounds the datagrams and bits per second a rule
//! forwards, so that a misbehaving source or a loop cannot fill every output.
//!
//! Credit accrues continuously at the rate and is capped at a burst of [`BURST_NS`] worth of
//! it; a datagram passes if the credit covers it, and is dropped (and not charged) otherwise.
//! Credit is kept in units of 1/10^9 of a datagram (or of a byte), so that one nanosecond of
//! time at the rate is a whole number of units and no division happens per packet.
//!
//! Time is passed in (nanoseconds of any monotonic clock), and a clock that steps back is
//! taken as no time passing.
//!
//! ```
//! use relay_rules::guard::TokenBucket;
//!
//! let mut bucket = TokenBucket::new(1000);
//! // A burst of 1/10 s at 1,000/s: 100 pass at once, the rest wait for credit.
//! let passed = (0..500).filter(|_| bucket.take(1, 0)).count();
//! assert_eq!(passed, 100);
//! assert!(bucket.take(1, 1_000_000), "1 ms later, one more");
//! ```

/// How much credit the bucket holds at most, as time at the rate: 1/10 s.
pub const BURST_NS: u64 = 100_000_000;
const UNIT: u64 = 1_000_000_000;

/// A token bucket of `rate` units per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Units per second, at least 1.
    rate: u64,
    /// Credit now, in 1/10^9 units.
    credit: u64,
    /// Most credit: the burst.
    cap: u64,
    /// When credit was last added.
    last_ns: Option<u64>,
}

impl TokenBucket {
    /// A full bucket of `rate` units per second (0 is taken as 1).
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1);
        // A burst of BURST_NS at the rate, and never less than one unit; saturating, so a
        // rate beyond any link's is simply no limit.
        let cap = rate.saturating_mul(BURST_NS).max(UNIT);
        TokenBucket {
            rate,
            credit: cap,
            cap,
            last_ns: None,
        }
    }

    /// The rate, in units per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Takes `units` at `now_ns` if the credit covers them; `false` (and nothing taken)
    /// otherwise.
    #[inline]
    pub fn take(&mut self, units: u64, now_ns: u64) -> bool {
        if let Some(last) = self.last_ns {
            let elapsed = now_ns.saturating_sub(last);
            self.credit = self
                .credit
                .saturating_add(elapsed.saturating_mul(self.rate))
                .min(self.cap);
        }
        if self.last_ns.is_none_or(|last| now_ns > last) {
            self.last_ns = Some(now_ns);
        }
        let cost = units.saturating_mul(UNIT);
        if self.credit >= cost {
            self.credit -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams of a flow at `offered` per second that pass a bucket of `rate` per second
    /// over `seconds`.
    fn passed(rate: u64, offered: u64, seconds: u64) -> u64 {
        let mut bucket = TokenBucket::new(rate);
        let step = 1_000_000_000 / offered;
        (0..offered * seconds)
            .filter(|&i| bucket.take(1, i * step))
            .count() as u64
    }

    #[test]
    fn a_flood_is_cut_to_the_rate() {
        // 20,000/s offered to 5,000/s for 10 s: the burst of 500, then the credit of the
        // 9.99995 s up to the last offer (49,999.75 datagrams).
        assert_eq!(passed(5_000, 20_000, 10), 500 + 49_999);
    }

    #[test]
    fn a_flow_under_the_rate_passes_whole() {
        assert_eq!(passed(5_000, 4_000, 10), 40_000);
    }

    #[test]
    fn bytes_are_charged_by_size() {
        // 1,000 bytes per second: a burst of 100 bytes.
        let mut bucket = TokenBucket::new(1_000);
        assert!(bucket.take(60, 0));
        assert!(!bucket.take(60, 0), "40 left");
        assert!(bucket.take(40, 0));
        assert!(bucket.take(50, 50_000_000), "50 ms later: 50 more");
    }

    #[test]
    fn time_going_back_adds_nothing_and_huge_rates_do_not_overflow() {
        let mut bucket = TokenBucket::new(1);
        assert!(bucket.take(1, 5_000_000_000), "the burst is at least one");
        assert!(!bucket.take(1, 1_000), "back in time");
        assert!(
            !bucket.take(1, 5_500_000_000),
            "half a second after the last"
        );
        assert!(bucket.take(1, 6_000_000_000));
        let mut fast = TokenBucket::new(u64::MAX);
        assert!((0..1000).all(|i| fast.take(1500, i)));
        assert!(fast.take(u64::MAX, u64::MAX));
    }
}
