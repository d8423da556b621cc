//! Stream inspection: the health of the RTP and MPEG-TS streams a rule carries, counted as the
//! data path forwards them.
//!
//! A rule opts in with [`Inspect`]; its [`Inspector`] then reads the UDP payload of every
//! datagram the rule matched, after the datagram was forwarded, and counts what broadcast and
//! market-data engineers watch:
//!
//! - [`rtp`] (RFC 3550): packets lost (sequence gaps, with the 16-bit wrap), reordered,
//!   duplicated, SSRC changes, and the interarrival jitter of section 6.4.1 from the RTP
//!   timestamp and the arrival time, at the rule's clock rate.
//! - [`mpegts`] (ISO/IEC 13818-1): continuity-counter errors per PID (adaptation-only packets
//!   and the one duplicate packet the standard allows are not errors), sync-byte errors,
//!   packets with the transport error indicator, and the PIDs seen, in a fixed table of
//!   [`mpegts::MAX_PIDS`] entries whose overflow is counted.
//!
//! The state is fixed in size and lives with the rule: inspecting allocates nothing and makes no
//! syscall, and time is passed in. An inspector reads only the bytes it is given and never
//! panics on any of them (a property test feeds it arbitrary bytes).
//!
//! ```
//! use relay_rules::inspect::{Inspect, Inspector, synth::TsSynth};
//!
//! let mut synth = TsSynth::new(true);
//! let mut inspector = Inspector::new(Inspect::RtpMpegTs, 90_000);
//! let mut payload = [0u8; TsSynth::MAX_DATAGRAM];
//! for i in 0..10u64 {
//!     let len = synth.write(&mut payload, (i * 3_000) as u32);
//!     if i != 4 {
//!         // The fifth datagram is lost on the way.
//!         inspector.inspect(&payload[..len], i * 33_333_333);
//!     }
//! }
//! let health = inspector.health();
//! assert_eq!(health.rtp.lost, 1);
//! // Each of the stream's four PIDs skipped its packets of the lost datagram.
//! assert_eq!(health.ts.cc_errors, 4);
//! ```

pub mod mpegts;
pub mod rtp;
pub mod synth;

use std::fmt;
use std::str::FromStr;

/// Which streams a rule's datagrams are inspected as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Inspect {
    /// RTP (RFC 3550), whatever it carries.
    #[cfg_attr(feature = "serde", serde(rename = "rtp"))]
    Rtp,
    /// MPEG-TS packets straight in UDP (7 packets of 188 bytes a datagram is usual).
    #[cfg_attr(feature = "serde", serde(rename = "mpegts"))]
    MpegTs,
    /// MPEG-TS in RTP (RFC 2250, as `ffmpeg -f rtp_mpegts` sends): both counted.
    #[cfg_attr(feature = "serde", serde(rename = "rtp+mpegts"))]
    RtpMpegTs,
}

impl Inspect {
    /// Every kind, in the order of their names.
    pub const ALL: [Inspect; 3] = [Inspect::Rtp, Inspect::MpegTs, Inspect::RtpMpegTs];

    /// The name in a config file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Inspect::Rtp => "rtp",
            Inspect::MpegTs => "mpegts",
            Inspect::RtpMpegTs => "rtp+mpegts",
        }
    }

    /// Whether the datagrams carry an RTP header.
    pub fn rtp(self) -> bool {
        matches!(self, Inspect::Rtp | Inspect::RtpMpegTs)
    }

    /// Whether the datagrams (after the RTP header, if any) carry MPEG-TS packets.
    pub fn mpegts(self) -> bool {
        matches!(self, Inspect::MpegTs | Inspect::RtpMpegTs)
    }
}

impl fmt::Display for Inspect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inspection kind that is none of `rtp`, `mpegts` and `rtp+mpegts`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown inspection {0:?}: expected rtp, mpegts or rtp+mpegts")]
pub struct UnknownInspect(pub String);

impl FromStr for Inspect {
    type Err = UnknownInspect;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Inspect::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownInspect(text.to_owned()))
    }
}

/// The RTP clock rate of a rule that does not set one: 90 kHz, the rate of video and of
/// MPEG-TS in RTP.
pub const DEFAULT_RTP_CLOCK_HZ: u32 = 90_000;

/// Everything an inspector counted, by value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// RTP counters (all zero unless the rule inspects RTP).
    pub rtp: rtp::RtpCounters,
    /// MPEG-TS counters (all zero unless the rule inspects MPEG-TS).
    pub ts: mpegts::TsCounters,
}

/// The inspection state of one rule in one worker: fixed in size, no heap.
#[derive(Debug, Clone)]
pub struct Inspector {
    kind: Inspect,
    rtp: rtp::RtpState,
    ts: mpegts::TsState,
}

impl Inspector {
    /// An inspector of `kind` streams whose RTP clock runs at `rtp_clock_hz` (ignored without
    /// RTP; 0 turns jitter off).
    pub fn new(kind: Inspect, rtp_clock_hz: u32) -> Self {
        Inspector {
            kind,
            rtp: rtp::RtpState::new(rtp_clock_hz),
            ts: mpegts::TsState::new(),
        }
    }

    /// What it inspects.
    pub fn kind(&self) -> Inspect {
        self.kind
    }

    /// Reads one UDP payload that arrived at `now_ns` (nanoseconds of any monotonic clock).
    #[inline]
    pub fn inspect(&mut self, payload: &[u8], now_ns: u64) {
        let ts = if self.kind.rtp() {
            match self.rtp.inspect(payload, now_ns) {
                Some(rest) => rest,
                None => return,
            }
        } else {
            payload
        };
        if self.kind.mpegts() {
            self.ts.inspect(ts);
        }
    }

    /// The counters so far.
    pub fn health(&self) -> Health {
        Health {
            rtp: self.rtp.counters(),
            ts: self.ts.counters(),
        }
    }

    /// The MPEG-TS PIDs seen, with the continuity errors of each, in the order first seen.
    pub fn pids(&self) -> impl Iterator<Item = mpegts::PidHealth> + '_ {
        self.ts.pids()
    }
}

impl Health {
    /// Adds another worker's counters of the same rule into these (for totals): counts add,
    /// jitter and PIDs seen are the larger of the two.
    pub fn merge(&mut self, other: &Health) {
        self.rtp.merge(&other.rtp);
        self.ts.merge(&other.ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_round_trip() {
        for kind in Inspect::ALL {
            assert_eq!(kind.as_str().parse::<Inspect>(), Ok(kind));
        }
        assert_eq!(
            "ts".parse::<Inspect>(),
            Err(UnknownInspect("ts".into())),
            "only the three names"
        );
        assert!(Inspect::RtpMpegTs.rtp() && Inspect::RtpMpegTs.mpegts());
        assert!(!Inspect::Rtp.mpegts() && !Inspect::MpegTs.rtp());
    }

    #[test]
    fn a_clean_stream_counts_no_error() {
        for kind in [Inspect::MpegTs, Inspect::RtpMpegTs] {
            let mut synth = synth::TsSynth::new(kind.rtp());
            let mut inspector = Inspector::new(kind, DEFAULT_RTP_CLOCK_HZ);
            let mut payload = [0u8; synth::TsSynth::MAX_DATAGRAM];
            for i in 0..100_000u64 {
                let len = synth.write(&mut payload, (i * 90) as u32);
                inspector.inspect(&payload[..len], i * 1_000_000);
            }
            let health = inspector.health();
            assert_eq!(health.ts.packets, 700_000, "{kind}");
            assert_eq!(health.ts.cc_errors, 0, "{kind}");
            assert_eq!(health.ts.pids, 4, "{kind}");
            assert_eq!(health.rtp.lost, 0, "{kind}");
            assert_eq!(health.rtp.jitter, 0, "{kind}: sent and received in step");
            assert_eq!(health.rtp.packets, if kind.rtp() { 100_000 } else { 0 });
        }
    }

    #[test]
    fn every_pid_counts_each_lost_datagram_once() {
        let mut synth = synth::TsSynth::new(false);
        let mut inspector = Inspector::new(Inspect::MpegTs, 0);
        let mut payload = [0u8; synth::TsSynth::MAX_DATAGRAM];
        let mut dropped = 0;
        for i in 0..10_000u64 {
            let len = synth.write(&mut payload, 0);
            if i % 37 == 5 {
                dropped += 1;
                continue;
            }
            inspector.inspect(&payload[..len], i);
        }
        let pids: Vec<_> = inspector.pids().collect();
        assert_eq!(pids.len(), 4);
        for pid in pids {
            assert_eq!(pid.cc_errors, dropped, "PID {:#x}", pid.pid);
        }
        assert_eq!(inspector.health().ts.cc_errors, 4 * dropped);
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(
            kind in prop::sample::select(Inspect::ALL.to_vec()),
            clock in any::<u32>(),
            payloads in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 0..1500), any::<u64>()),
                0..40,
            ),
        ) {
            let mut inspector = Inspector::new(kind, clock);
            for (payload, now) in &payloads {
                inspector.inspect(payload, *now);
            }
            let health = inspector.health();
            prop_assert!(health.ts.pids as usize <= mpegts::MAX_PIDS);
            prop_assert!(health.rtp.packets <= payloads.len() as u64);
        }

        #[test]
        fn ts_shaped_payloads_never_panic(
            packets in prop::collection::vec(
                (any::<u16>(), any::<u8>(), any::<[u8; 4]>()),
                0..200,
            ),
        ) {
            // Valid sync bytes and random headers reach deeper than random bytes do.
            let mut inspector = Inspector::new(Inspect::MpegTs, 0);
            let mut payload = [0u8; 7 * 188];
            for chunk in packets.chunks(7) {
                for (slot, (pid, flags, adaptation)) in payload.chunks_exact_mut(188).zip(chunk) {
                    slot[0] = 0x47;
                    slot[1..3].copy_from_slice(&pid.to_be_bytes());
                    slot[3] = *flags;
                    slot[4..8].copy_from_slice(adaptation);
                }
                inspector.inspect(&payload[..chunk.len() * 188], 0);
            }
            let health = inspector.health();
            prop_assert_eq!(
                health.ts.packets,
                packets.len() as u64
            );
        }
    }
}
