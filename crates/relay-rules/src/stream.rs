//! What a rule asks of its stream beyond forwarding it: inspection ([`crate::inspect`]) and the
//! storm guard ([`crate::guard`]), and the state a worker keeps for both.
//!
//! Most rules ask for neither: their [`crate::CompiledRule::stream`] is `None`, and the data
//! path does nothing more for them than test that.

use crate::guard::TokenBucket;
use crate::inspect::{DEFAULT_RTP_CLOCK_HZ, Health, Inspect, Inspector};
use crate::rule::Rule;

/// A rule's stream options, as the data path reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// What to inspect, if anything.
    pub inspect: Option<Inspect>,
    /// RTP clock rate for the jitter.
    pub rtp_clock_hz: u32,
    /// Most datagrams per second, over all the workers serving the rule.
    pub max_pps: Option<u64>,
    /// Most payload bits per second, over all the workers serving the rule.
    pub max_bps: Option<u64>,
}

impl StreamOptions {
    /// The options of `rule`, `None` if it has none.
    pub fn of(rule: &Rule) -> Option<StreamOptions> {
        if rule.inspect.is_none() && rule.max_pps.is_none() && rule.max_bps.is_none() {
            return None;
        }
        Some(StreamOptions {
            inspect: rule.inspect,
            rtp_clock_hz: rule.rtp_clock_hz.unwrap_or(DEFAULT_RTP_CLOCK_HZ),
            max_pps: rule.max_pps,
            max_bps: rule.max_bps,
        })
    }
}

/// A worker's share of the rules' storm guard limits: `served` of the `of` fanout members that
/// may receive a rule's packets. Each worker's guard allows `served / of` of each limit, so the
/// workers together allow the whole limit when a rule's packets spread over the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Share {
    /// Members this worker serves.
    pub served: u32,
    /// Members in all.
    pub of: u32,
}

impl Share {
    /// The whole limit: one worker serves every member.
    pub const WHOLE: Share = Share { served: 1, of: 1 };

    /// This share of `limit` (at least 1, so that a share never blocks everything).
    pub fn of_limit(self, limit: u64) -> u64 {
        let share = u128::from(limit) * u128::from(self.served.max(1)) / u128::from(self.of.max(1));
        u64::try_from(share).unwrap_or(u64::MAX).max(1)
    }
}

impl Default for Share {
    fn default() -> Self {
        Share::WHOLE
    }
}

/// What the storm guard dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Datagrams dropped for exceeding `max_pps` or `max_bps`.
    pub packets: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// One worker's state for one rule with stream options: fixed in size.
#[derive(Debug, Clone)]
pub struct StreamState {
    options: StreamOptions,
    inspector: Option<Inspector>,
    packets: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    limited: Limited,
}

impl StreamState {
    /// State for `options` in a worker whose guard gets `share` of the limits.
    pub fn new(options: StreamOptions, share: Share) -> Self {
        StreamState {
            options,
            inspector: options
                .inspect
                .map(|kind| Inspector::new(kind, options.rtp_clock_hz)),
            packets: options
                .max_pps
                .map(|pps| TokenBucket::new(share.of_limit(pps))),
            bytes: options
                .max_bps
                .map(|bps| TokenBucket::new(share.of_limit(bps / 8))),
            limited: Limited::default(),
        }
    }

    /// The options it was made for.
    pub fn options(&self) -> StreamOptions {
        self.options
    }

    /// Whether the guard lets a datagram of `payload_len` bytes arriving at `now_ns` through;
    /// one it refuses is counted in [`StreamState::limited`].
    #[inline]
    pub fn admit(&mut self, payload_len: usize, now_ns: u64) -> bool {
        let pass = self
            .packets
            .as_mut()
            .is_none_or(|bucket| bucket.take(1, now_ns))
            && self
                .bytes
                .as_mut()
                .is_none_or(|bucket| bucket.take(payload_len as u64, now_ns));
        if !pass {
            self.limited.packets += 1;
            self.limited.bytes += payload_len as u64;
        }
        pass
    }

    /// Inspects a datagram's payload, if the rule asks for it.
    #[inline]
    pub fn inspect(&mut self, payload: &[u8], now_ns: u64) {
        if let Some(inspector) = &mut self.inspector {
            inspector.inspect(payload, now_ns);
        }
    }

    /// What the guard dropped so far.
    pub fn limited(&self) -> Limited {
        self.limited
    }

    /// The inspector, if the rule inspects.
    pub fn inspector(&self) -> Option<&Inspector> {
        self.inspector.as_ref()
    }

    /// The health counted so far, if the rule inspects.
    pub fn health(&self) -> Option<Health> {
        self.inspector.as_ref().map(Inspector::health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_pps: Option<u64>, max_bps: Option<u64>) -> StreamOptions {
        StreamOptions {
            inspect: Some(Inspect::MpegTs),
            rtp_clock_hz: DEFAULT_RTP_CLOCK_HZ,
            max_pps,
            max_bps,
        }
    }

    #[test]
    fn the_limit_is_split_over_the_workers() {
        // 1,000/s, this worker serving 1 of 4 members: 250/s here, a burst of 25.
        let mut state = StreamState::new(options(Some(1_000), None), Share { served: 1, of: 4 });
        let passed = (0..100).filter(|_| state.admit(100, 0)).count();
        assert_eq!(passed, 25);
        assert_eq!(
            state.limited(),
            Limited {
                packets: 75,
                bytes: 7_500
            }
        );
        // Serving 2 of 4 members: half.
        let mut half = StreamState::new(options(Some(1_000), None), Share { served: 2, of: 4 });
        assert_eq!((0..100).filter(|_| half.admit(100, 0)).count(), 50);
        assert_eq!(Share { served: 1, of: 3 }.of_limit(1), 1, "never 0");
        assert_eq!(Share { served: 7, of: 7 }.of_limit(u64::MAX), u64::MAX);
    }

    #[test]
    fn either_limit_drops() {
        // 8,000 bit/s is 1,000 bytes/s, a burst of 100 bytes: one datagram of 60 bytes.
        let mut state = StreamState::new(options(Some(1_000_000), Some(8_000)), Share::WHOLE);
        assert!(state.admit(60, 0));
        assert!(!state.admit(60, 0));
        assert_eq!(state.limited().packets, 1);
        let mut free = StreamState::new(options(None, None), Share::WHOLE);
        assert!((0..10_000).all(|_| free.admit(1500, 0)));
    }
}
