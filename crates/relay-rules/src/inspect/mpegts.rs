//! MPEG-TS (ISO/IEC 13818-1): continuity, sync and transport errors of the 188-byte packets in
//! a datagram, with a fixed table of the PIDs seen.
//!
//! The continuity counter of a PID counts its packets that carry a payload, modulo 16. It is
//! not an error when:
//! - a packet carries only an adaptation field (its counter does not advance);
//! - a packet repeats the previous one's counter once (the standard allows one duplicate);
//! - the adaptation field sets the discontinuity indicator (the counter may restart);
//! - the PID is the null PID 0x1FFF (its counter means nothing).
//!
//! Any other break in the sequence is one error for the PID, however many packets are
//! missing, so a datagram lost in transit is one error for each PID it carried (unless exactly
//! a multiple of 16 of one PID's packets went, which no counter can see). A packet whose sync
//! byte is not 0x47, or a datagram that does not end on a packet boundary, is a sync error; a
//! packet with the transport error indicator set is counted and not read further, since its
//! header may be wrong.

/// How many PIDs a rule follows; packets of further PIDs are counted as overflow.
pub const MAX_PIDS: usize = 32;
/// Length of a transport stream packet.
pub const PACKET_LEN: usize = 188;
/// The first byte of every packet.
pub const SYNC_BYTE: u8 = 0x47;
/// The null PID, whose packets are stuffing.
pub const NULL_PID: u16 = 0x1fff;

/// What the transport stream of one rule counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct TsCounters {
    /// Packets with a sync byte.
    pub packets: u64,
    /// Continuity-counter errors, over every PID.
    pub cc_errors: u64,
    /// Packets without the sync byte, and datagrams that end inside a packet.
    pub sync_errors: u64,
    /// Packets with the transport error indicator set.
    pub tei: u64,
    /// PIDs seen (at most [`MAX_PIDS`]; the null PID is not followed).
    pub pids: u32,
    /// Packets of PIDs beyond the first [`MAX_PIDS`], whose continuity is not checked.
    pub pid_overflow: u64,
}

impl TsCounters {
    /// Adds another worker's counters of the same rule: counts add, PIDs seen is the larger.
    pub fn merge(&mut self, other: &TsCounters) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.cc_errors = self.cc_errors.wrapping_add(other.cc_errors);
        self.sync_errors = self.sync_errors.wrapping_add(other.sync_errors);
        self.tei = self.tei.wrapping_add(other.tei);
        self.pids = self.pids.max(other.pids);
        self.pid_overflow = self.pid_overflow.wrapping_add(other.pid_overflow);
    }
}

/// One PID seen and its continuity errors.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PidHealth {
    /// The PID.
    pub pid: u16,
    /// Its continuity-counter errors.
    pub cc_errors: u64,
}

/// What the table remembers of one PID.
#[derive(Debug, Default, Clone, Copy)]
struct PidEntry {
    pid: u16,
    /// The counter of its last packet with a payload.
    last_cc: u8,
    /// Whether that packet was already repeated once.
    repeated: bool,
    /// Whether a packet with a payload was seen (an adaptation-only packet sets no counter).
    counting: bool,
    cc_errors: u64,
}

/// The transport stream state of one rule: counters and the PID table, fixed in size.
#[derive(Debug, Clone)]
pub struct TsState {
    counters: TsCounters,
    table: [PidEntry; MAX_PIDS],
    len: usize,
}

impl Default for TsState {
    fn default() -> Self {
        TsState::new()
    }
}

impl TsState {
    /// No PID seen yet.
    pub fn new() -> Self {
        TsState {
            counters: TsCounters::default(),
            table: [PidEntry::default(); MAX_PIDS],
            len: 0,
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> TsCounters {
        TsCounters {
            pids: self.len as u32,
            ..self.counters
        }
    }

    /// The PIDs seen, with their continuity errors, in the order first seen.
    pub fn pids(&self) -> impl Iterator<Item = PidHealth> + '_ {
        self.table[..self.len].iter().map(|entry| PidHealth {
            pid: entry.pid,
            cc_errors: entry.cc_errors,
        })
    }

    /// Counts the transport stream packets of one datagram's payload.
    pub fn inspect(&mut self, payload: &[u8]) {
        let mut packets = payload.chunks_exact(PACKET_LEN);
        for packet in &mut packets {
            self.packet(packet);
        }
        if !packets.remainder().is_empty() {
            self.counters.sync_errors += 1;
        }
    }

    fn packet(&mut self, packet: &[u8]) {
        let &[sync, b1, b2, b3, ref rest @ ..] = packet else {
            self.counters.sync_errors += 1;
            return;
        };
        if sync != SYNC_BYTE {
            self.counters.sync_errors += 1;
            return;
        }
        self.counters.packets += 1;
        if b1 & 0x80 != 0 {
            self.counters.tei += 1;
            return;
        }
        let pid = u16::from_be_bytes([b1 & 0x1f, b2]);
        let control = (b3 >> 4) & 0b11;
        if pid == NULL_PID || control == 0 {
            // Stuffing, or a reserved adaptation_field_control a decoder discards.
            return;
        }
        let cc = b3 & 0x0f;
        let has_payload = control & 0b01 != 0;
        // Adaptation field length, then flags: bit 7 is the discontinuity indicator.
        let discontinuity = control & 0b10 != 0
            && matches!(rest, [len, flags, ..] if *len > 0 && flags & 0x80 != 0);
        let Some(entry) = self.entry(pid) else {
            self.counters.pid_overflow += 1;
            return;
        };
        if !has_payload {
            return;
        }
        let expected = (entry.last_cc + 1) & 0x0f;
        let error = if !entry.counting || discontinuity || cc == expected {
            entry.repeated = false;
            false
        } else if cc == entry.last_cc && !entry.repeated {
            entry.repeated = true;
            false
        } else {
            entry.repeated = false;
            true
        };
        entry.counting = true;
        entry.last_cc = cc;
        if error {
            entry.cc_errors += 1;
            self.counters.cc_errors += 1;
        }
    }

    /// The entry of `pid`, added if there is room.
    fn entry(&mut self, pid: u16) -> Option<&mut PidEntry> {
        let found = self.table[..self.len]
            .iter()
            .position(|entry| entry.pid == pid);
        let index = match found {
            Some(index) => index,
            None if self.len < MAX_PIDS => {
                self.table[self.len] = PidEntry {
                    pid,
                    ..PidEntry::default()
                };
                self.len += 1;
                self.len - 1
            }
            None => return None,
        };
        Some(&mut self.table[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet of `pid` with counter `cc`; `control` is adaptation_field_control (1: payload
    /// only, 2: adaptation only, 3: both), `flags` the adaptation field's flags.
    fn packet(pid: u16, cc: u8, control: u8, flags: u8) -> [u8; PACKET_LEN] {
        let mut packet = [0xff; PACKET_LEN];
        packet[0] = SYNC_BYTE;
        packet[1..3].copy_from_slice(&(pid & 0x1fff).to_be_bytes());
        packet[3] = (control << 4) | (cc & 0x0f);
        if control & 0b10 != 0 {
            packet[4] = 7;
            packet[5] = flags;
        }
        packet
    }

    fn run(packets: &[[u8; PACKET_LEN]]) -> TsState {
        let mut state = TsState::new();
        for packet in packets {
            state.inspect(packet);
        }
        state
    }

    #[test]
    fn counts_continuity_breaks_per_pid() {
        let state = run(&[
            packet(0x100, 0, 1, 0),
            packet(0x100, 1, 1, 0),
            packet(0x101, 9, 1, 0),
            packet(0x100, 4, 1, 0), // 2 and 3 missing: one error
            packet(0x101, 10, 1, 0),
            packet(0x101, 12, 1, 0), // 11 missing
            packet(0x100, 5, 1, 0),
        ]);
        assert_eq!(state.counters().cc_errors, 2);
        assert_eq!(
            state.pids().collect::<Vec<_>>(),
            [
                PidHealth {
                    pid: 0x100,
                    cc_errors: 1
                },
                PidHealth {
                    pid: 0x101,
                    cc_errors: 1
                },
            ]
        );
        assert_eq!(state.counters().pids, 2);
    }

    #[test]
    fn the_counter_wraps_at_16() {
        let packets: Vec<_> = (0..40u8).map(|i| packet(0x44, i, 1, 0)).collect();
        assert_eq!(run(&packets).counters().cc_errors, 0);
    }

    #[test]
    fn adaptation_only_packets_and_one_duplicate_are_no_error() {
        let state = run(&[
            packet(0x100, 3, 1, 0),
            packet(0x100, 3, 2, 0x10), // adaptation only (a PCR): the counter stays
            packet(0x100, 9, 2, 0x10), // even with another counter in it
            packet(0x100, 4, 3, 0),
            packet(0x100, 4, 1, 0), // the one allowed duplicate
            packet(0x100, 5, 1, 0),
        ]);
        assert_eq!(state.counters().cc_errors, 0);
        let state = run(&[
            packet(0x100, 3, 1, 0),
            packet(0x100, 3, 1, 0),
            packet(0x100, 3, 1, 0), // a second duplicate is an error
        ]);
        assert_eq!(state.counters().cc_errors, 1);
    }

    #[test]
    fn a_discontinuity_indicator_restarts_the_counter() {
        let state = run(&[
            packet(0x100, 3, 1, 0),
            packet(0x100, 11, 3, 0x80),
            packet(0x100, 12, 1, 0),
        ]);
        assert_eq!(state.counters().cc_errors, 0);
    }

    #[test]
    fn null_packets_are_not_followed() {
        let state = run(&[packet(NULL_PID, 0, 1, 0), packet(NULL_PID, 0, 1, 0)]);
        assert_eq!(state.counters().cc_errors, 0);
        assert_eq!(state.counters().pids, 0);
        assert_eq!(state.counters().packets, 2);
    }

    #[test]
    fn sync_and_transport_errors() {
        let mut bad_sync = packet(0x100, 0, 1, 0);
        bad_sync[0] = 0x46;
        let mut tei = packet(0x100, 7, 1, 0);
        tei[1] |= 0x80;
        let mut state = run(&[
            packet(0x100, 0, 1, 0),
            bad_sync,
            tei,
            packet(0x100, 1, 1, 0),
        ]);
        state.inspect(&[SYNC_BYTE; 100]);
        let counters = state.counters();
        assert_eq!(
            counters.sync_errors, 2,
            "a bad sync byte and a short datagram"
        );
        assert_eq!(counters.tei, 1);
        assert_eq!(counters.packets, 3);
        assert_eq!(
            counters.cc_errors, 0,
            "the TEI packet's header is not trusted"
        );
    }

    #[test]
    fn pids_beyond_the_table_overflow() {
        let packets: Vec<_> = (0..MAX_PIDS as u16 + 3)
            .flat_map(|pid| [packet(pid, 0, 1, 0), packet(pid, 5, 1, 0)])
            .collect();
        let state = run(&packets);
        let counters = state.counters();
        assert_eq!(counters.pids as usize, MAX_PIDS);
        assert_eq!(counters.pid_overflow, 6);
        assert_eq!(counters.cc_errors, MAX_PIDS as u64);
    }
}
