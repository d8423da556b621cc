//! RTP (RFC 3550): sequence accounting and interarrival jitter of one stream.
//!
//! Sequence numbers are 16 bits and wrap; a packet is placed by its distance from the highest
//! sequence number seen, as in the RFC's appendix A.1:
//! - ahead by 1..[`MAX_DROPOUT`]: in order, and the numbers skipped are counted `lost`;
//! - equal, or behind by less than [`WINDOW`] and already seen: `duplicated`;
//! - behind by less than [`WINDOW`] and not seen: `reordered`, and no longer `lost`;
//! - anything else is a jump (a restarted sender, or a late packet from long ago): the packet
//!   is set aside, and the stream restarts at it only if the next packet follows it.
//!
//! Jitter is the RFC's section 6.4.1 estimate `J += (|D| - J) / 16`, where `D` is the change in
//! transit time (arrival time in timestamp units minus the RTP timestamp) between consecutive
//! packets, kept in fixed point as appendix A.8 does.

/// Largest forward jump still taken as loss rather than a restart (RFC 3550 appendix A.1).
pub const MAX_DROPOUT: u16 = 3000;
/// How far behind the highest sequence number a late packet is still placed as a duplicate or
/// a reordered packet: one bit each in a 64-bit window.
pub const WINDOW: u16 = 64;

/// What one RTP stream counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct RtpCounters {
    /// Valid RTP packets.
    pub packets: u64,
    /// Datagrams that are not RTP version 2 or whose header does not fit (not inspected further).
    pub invalid: u64,
    /// Sequence numbers skipped and never received late.
    pub lost: u64,
    /// Packets that arrived after a packet with a higher sequence number.
    pub reordered: u64,
    /// Packets whose sequence number was seen already.
    pub duplicated: u64,
    /// Times the synchronization source changed (the stream restarted from another sender).
    pub ssrc_changes: u64,
    /// Sequence jumps the stream was restarted at.
    pub restarts: u64,
    /// Interarrival jitter now, in RTP timestamp units (0 without a clock rate).
    pub jitter: u32,
    /// The clock rate the jitter is in, in Hz.
    pub clock_hz: u32,
}

impl RtpCounters {
    /// The jitter in microseconds (0 without a clock rate).
    pub fn jitter_us(&self) -> u64 {
        if self.clock_hz == 0 {
            return 0;
        }
        u64::from(self.jitter) * 1_000_000 / u64::from(self.clock_hz)
    }

    /// Adds another worker's counters of the same rule: counts add, the jitter is the larger.
    pub fn merge(&mut self, other: &RtpCounters) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.invalid = self.invalid.wrapping_add(other.invalid);
        self.lost = self.lost.wrapping_add(other.lost);
        self.reordered = self.reordered.wrapping_add(other.reordered);
        self.duplicated = self.duplicated.wrapping_add(other.duplicated);
        self.ssrc_changes = self.ssrc_changes.wrapping_add(other.ssrc_changes);
        self.restarts = self.restarts.wrapping_add(other.restarts);
        if other.jitter >= self.jitter {
            self.jitter = other.jitter;
            self.clock_hz = other.clock_hz;
        }
    }
}

/// The fixed RTP header of a datagram, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
    /// Where the payload starts (after CSRCs and any header extension).
    pub payload_offset: usize,
    /// Where the payload ends (before any padding).
    pub payload_end: usize,
}

/// Reads the RTP header of `datagram`: `None` unless it is version 2 and its CSRC list,
/// extension and padding fit.
pub fn parse(datagram: &[u8]) -> Option<RtpHeader> {
    let fixed: &[u8; 12] = datagram.get(..12)?.try_into().ok()?;
    if fixed[0] >> 6 != 2 {
        return None;
    }
    let mut offset = 12 + 4 * usize::from(fixed[0] & 0x0f);
    if fixed[0] & 0x10 != 0 {
        let words = datagram.get(offset + 2..offset + 4)?;
        offset += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = datagram.len();
    if fixed[0] & 0x20 != 0 {
        let padding = usize::from(*datagram.last()?);
        end = end.checked_sub(padding).filter(|_| padding > 0)?;
    }
    if offset > end {
        return None;
    }
    Some(RtpHeader {
        sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
        timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        payload_offset: offset,
        payload_end: end,
    })
}

/// The sequence and jitter state of one RTP stream.
#[derive(Debug, Clone)]
pub struct RtpState {
    counters: RtpCounters,
    started: bool,
    ssrc: u32,
    highest: u16,
    /// Bit `i`: sequence number `highest - i` arrived.
    seen: u64,
    /// The sequence number that would confirm a jump (the jumped-to number plus one).
    jump_to: Option<u16>,
    /// Transit time of the previous packet, in timestamp units (wrapping).
    transit: Option<u32>,
    /// Jitter times 16 (appendix A.8).
    jitter_q4: u32,
}

impl RtpState {
    /// A stream not yet seen, whose timestamps run at `clock_hz` (0: no jitter).
    pub fn new(clock_hz: u32) -> Self {
        RtpState {
            counters: RtpCounters {
                clock_hz,
                ..RtpCounters::default()
            },
            started: false,
            ssrc: 0,
            highest: 0,
            seen: 0,
            jump_to: None,
            transit: None,
            jitter_q4: 0,
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> RtpCounters {
        RtpCounters {
            jitter: self.jitter_q4 >> 4,
            ..self.counters
        }
    }

    /// Counts the RTP packet `datagram` that arrived at `now_ns`; returns its payload, or `None`
    /// when it is not RTP (counted `invalid`).
    pub fn inspect<'a>(&mut self, datagram: &'a [u8], now_ns: u64) -> Option<&'a [u8]> {
        let Some(header) = parse(datagram) else {
            self.counters.invalid += 1;
            return None;
        };
        self.counters.packets += 1;
        if !self.started || header.ssrc != self.ssrc {
            if self.started {
                self.counters.ssrc_changes += 1;
            }
            self.restart(&header);
            self.jitter(&header, now_ns);
            return datagram.get(header.payload_offset..header.payload_end);
        }
        let ahead = header.sequence.wrapping_sub(self.highest);
        let behind = self.highest.wrapping_sub(header.sequence);
        if ahead > 0 && ahead < MAX_DROPOUT {
            self.counters.lost += u64::from(ahead - 1);
            self.seen = if ahead >= WINDOW {
                1
            } else {
                (self.seen << ahead) | 1
            };
            self.highest = header.sequence;
            self.jump_to = None;
        } else if behind < WINDOW {
            let bit = 1u64 << behind;
            if self.seen & bit != 0 {
                self.counters.duplicated += 1;
                return datagram.get(header.payload_offset..header.payload_end);
            }
            self.seen |= bit;
            self.counters.reordered += 1;
            self.counters.lost = self.counters.lost.saturating_sub(1);
        } else if self.jump_to == Some(header.sequence) {
            self.counters.restarts += 1;
            self.restart(&header);
        } else {
            self.jump_to = Some(header.sequence.wrapping_add(1));
            return datagram.get(header.payload_offset..header.payload_end);
        }
        self.jitter(&header, now_ns);
        datagram.get(header.payload_offset..header.payload_end)
    }

    fn restart(&mut self, header: &RtpHeader) {
        self.started = true;
        self.ssrc = header.ssrc;
        self.highest = header.sequence;
        self.seen = 1;
        self.jump_to = None;
        self.transit = None;
    }

    /// Updates the jitter with a packet stamped `header.timestamp` that arrived at `now_ns`.
    fn jitter(&mut self, header: &RtpHeader, now_ns: u64) {
        let clock = self.counters.clock_hz;
        if clock == 0 {
            return;
        }
        let arrival = arrival_units(now_ns, clock);
        let transit = arrival.wrapping_sub(header.timestamp);
        if let Some(previous) = self.transit {
            let d = transit.wrapping_sub(previous) as i32;
            let d = d.unsigned_abs();
            // J += (|D| - J) / 16, in units of 1/16 (RFC 3550 appendix A.8).
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d.min(u32::MAX >> 5))
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }
}

/// `now_ns` in ticks of a `clock_hz` clock, modulo 2^32 (only differences matter): exactly
/// `now_ns * clock_hz / 10^9`, computed as whole seconds times the rate plus the ticks of the
/// fraction, so that no 128-bit division runs per packet (the fraction's product stays below
/// 2^63, and a division by a constant is a multiplication).
#[inline]
fn arrival_units(now_ns: u64, clock_hz: u32) -> u32 {
    const NS: u64 = 1_000_000_000;
    let clock = u64::from(clock_hz);
    let whole = (now_ns / NS).wrapping_mul(clock);
    let fraction = (now_ns % NS) * clock / NS;
    whole.wrapping_add(fraction) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet: version 2, payload type 33, `payload` after the fixed header.
    fn packet(sequence: u16, timestamp: u32, ssrc: u32) -> Vec<u8> {
        let mut packet = vec![0x80, 33];
        packet.extend_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(b"payload");
        packet
    }

    fn feed(state: &mut RtpState, sequences: &[u16]) {
        for &sequence in sequences {
            assert_eq!(
                state.inspect(&packet(sequence, 0, 7), 0),
                Some(&b"payload"[..])
            );
        }
    }

    #[test]
    fn reads_every_header_field() {
        let mut bytes = vec![0xb1, 0xa1, 0x12, 0x34, 0, 1, 0, 2, 0xde, 0xad, 0xbe, 0xef];
        bytes.extend_from_slice(&[1, 1, 1, 1]); // one CSRC
        bytes.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // a one-word extension
        bytes.extend_from_slice(b"data");
        bytes.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let header = parse(&bytes).expect("valid");
        assert_eq!(
            header,
            RtpHeader {
                sequence: 0x1234,
                timestamp: 0x0001_0002,
                ssrc: 0xdead_beef,
                payload_offset: 24,
                payload_end: 28,
            }
        );
    }

    #[test]
    fn refuses_what_is_not_rtp() {
        assert_eq!(parse(&[0x80; 11]), None, "short");
        assert_eq!(parse(&[0x40; 12]), None, "version 1");
        assert_eq!(parse(&[0x8f; 20]), None, "15 CSRCs do not fit");
        assert_eq!(
            parse(&[0x90; 14]),
            None,
            "the extension header does not fit"
        );
        let mut padded = vec![0xa0; 12];
        padded.push(0);
        assert_eq!(parse(&padded), None, "padding of 0");
        let mut state = RtpState::new(90_000);
        assert_eq!(state.inspect(&[0x47; 188], 0), None);
        assert_eq!(state.counters().invalid, 1);
        assert_eq!(state.counters().packets, 0);
    }

    #[test]
    fn gaps_are_lost_across_the_wrap() {
        let mut state = RtpState::new(0);
        feed(&mut state, &[65_533, 65_534, 1, 2, 5]);
        let counters = state.counters();
        assert_eq!(
            (counters.packets, counters.lost),
            (5, 4),
            "65535, 0, 3 and 4"
        );
        assert_eq!((counters.reordered, counters.duplicated), (0, 0));
    }

    #[test]
    fn late_packets_are_reordered_and_not_lost() {
        let mut state = RtpState::new(0);
        feed(&mut state, &[10, 12, 11, 13, 13, 11]);
        let counters = state.counters();
        assert_eq!(counters.lost, 0);
        assert_eq!(counters.reordered, 1, "11");
        assert_eq!(counters.duplicated, 2, "13 and 11 again");
    }

    #[test]
    fn a_jump_restarts_only_when_confirmed() {
        let mut state = RtpState::new(0);
        feed(&mut state, &[100, 101, 40_000, 102, 30_000, 30_001, 30_002]);
        let counters = state.counters();
        assert_eq!(counters.restarts, 1, "30000 then 30001");
        assert_eq!(counters.lost, 0, "a lone stray is no loss");
        assert_eq!(counters.packets, 7);
    }

    #[test]
    fn a_new_ssrc_restarts_the_stream() {
        let mut state = RtpState::new(0);
        feed(&mut state, &[1, 2]);
        state.inspect(&packet(50_000, 0, 8), 0);
        state.inspect(&packet(50_001, 0, 8), 0);
        let counters = state.counters();
        assert_eq!((counters.ssrc_changes, counters.lost), (1, 0));
    }

    #[test]
    fn arrival_ticks_are_the_exact_product() {
        for now in [
            0,
            1,
            999_999_999,
            1_000_000_000,
            123_456_789_012_345,
            u64::MAX,
        ] {
            for clock in [1, 8_000, 90_000, 27_000_000, u32::MAX] {
                let exact = (u128::from(now) * u128::from(clock) / 1_000_000_000) as u32;
                assert_eq!(arrival_units(now, clock), exact, "{now} ns at {clock} Hz");
            }
        }
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        // 90 kHz, one packet every 10 ms (900 units), arriving alternately 1 ms early and late:
        // every |D| is 180 units, so J converges to 180.
        let mut state = RtpState::new(90_000);
        for i in 0..400u32 {
            let offset_ns: i64 = if i % 2 == 0 { 1_000_000 } else { -1_000_000 };
            let arrival = 1_000_000_000 + i64::from(i) * 10_000_000 + offset_ns;
            state.inspect(&packet(i as u16, i * 900, 1), arrival as u64);
        }
        let counters = state.counters();
        assert!(
            (175..=180).contains(&counters.jitter),
            "jitter {}",
            counters.jitter
        );
        assert_eq!(
            counters.jitter_us(),
            u64::from(counters.jitter) * 1_000_000 / 90_000
        );
        let mut steady = RtpState::new(90_000);
        for i in 0..100u32 {
            steady.inspect(&packet(i as u16, i * 900, 1), u64::from(i) * 10_000_000);
        }
        assert_eq!(steady.counters().jitter, 0);
    }
}
