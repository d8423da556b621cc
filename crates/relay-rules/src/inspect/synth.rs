//! A synthetic MPEG-TS stream, optionally in RTP, for demonstrations, tests and benchmarks.
//!
//! Each datagram holds seven 188-byte packets, one or more of each of four PIDs, so that every
//! PID is in every datagram: a program association table (PID 0), a program map table
//! ([`PMT_PID`]), four packets of video ([`VIDEO_PID`]) and one of audio ([`AUDIO_PID`]). The
//! tables are real (with their CRC) so that a player or analyser accepts the stream's
//! structure; the video and audio payloads are filler, except that the first video packet of
//! each datagram starts with the datagram's number (from 0, big-endian u32), so that a receiver
//! can tell which datagrams it missed ([`datagram_number`]). Losing one datagram therefore
//! breaks the continuity of each of the four PIDs exactly once.

use super::mpegts::{PACKET_LEN, SYNC_BYTE};

/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the video elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the audio elementary stream.
pub const AUDIO_PID: u16 = 0x101;
/// The PIDs of each datagram, in order.
pub const LAYOUT: [u16; 7] = [
    0, PMT_PID, VIDEO_PID, VIDEO_PID, VIDEO_PID, VIDEO_PID, AUDIO_PID,
];
/// The PIDs of the stream, each once.
pub const PIDS: [u16; 4] = [0, PMT_PID, VIDEO_PID, AUDIO_PID];
/// RTP payload type of MPEG-TS (RFC 3551).
pub const RTP_PAYLOAD_TYPE: u8 = 33;
const RTP_HEADER_LEN: usize = 12;
/// Where the datagram number is, from the first TS packet: the payload of the first video
/// packet (the third packet).
const NUMBER_AT: usize = 2 * PACKET_LEN + 4;

/// The number [`TsSynth::write`] wrote into `datagram` (with an RTP header when `rtp`), or
/// `None` if it is too short to hold one.
pub fn datagram_number(datagram: &[u8], rtp: bool) -> Option<u32> {
    let at = if rtp { RTP_HEADER_LEN } else { 0 } + NUMBER_AT;
    let bytes = datagram.get(at..at + 4)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// The next datagram of the stream, from its counters.
#[derive(Debug, Clone)]
pub struct TsSynth {
    rtp: bool,
    sequence: u16,
    ssrc: u32,
    /// Continuity counter of each PID of [`PIDS`].
    cc: [u8; 4],
    /// Number of the next datagram.
    number: u32,
}

impl TsSynth {
    /// Length of the longest datagram: seven packets and an RTP header.
    pub const MAX_DATAGRAM: usize = RTP_HEADER_LEN + LAYOUT.len() * PACKET_LEN;

    /// A stream starting at sequence number 0 and continuity counter 0, with an RTP header on
    /// each datagram when `rtp`.
    pub fn new(rtp: bool) -> Self {
        TsSynth {
            rtp,
            sequence: 0,
            ssrc: 0x5eed_0001,
            cc: [0; 4],
            number: 0,
        }
    }

    /// Writes the next datagram into `out`, with `rtp_timestamp` in its RTP header, and
    /// returns its length.
    pub fn write(&mut self, out: &mut [u8; Self::MAX_DATAGRAM], rtp_timestamp: u32) -> usize {
        let mut at = 0;
        if self.rtp {
            out[0] = 0x80;
            out[1] = RTP_PAYLOAD_TYPE;
            out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
            out[4..8].copy_from_slice(&rtp_timestamp.to_be_bytes());
            out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
            self.sequence = self.sequence.wrapping_add(1);
            at = RTP_HEADER_LEN;
        }
        for pid in LAYOUT {
            let slot = &mut out[at..at + PACKET_LEN];
            self.packet(pid, slot);
            at += PACKET_LEN;
        }
        let first_video = if self.rtp { RTP_HEADER_LEN } else { 0 } + NUMBER_AT;
        out[first_video..first_video + 4].copy_from_slice(&self.number.to_be_bytes());
        self.number = self.number.wrapping_add(1);
        at
    }

    fn packet(&mut self, pid: u16, slot: &mut [u8]) {
        let index = PIDS.iter().position(|&p| p == pid).unwrap_or(0);
        let cc = self.cc[index];
        self.cc[index] = (cc + 1) & 0x0f;
        let table = pid == 0 || pid == PMT_PID;
        slot[0] = SYNC_BYTE;
        // payload_unit_start on the tables, each of which fits one packet.
        slot[1] = (u8::from(table) << 6) | (pid >> 8) as u8;
        slot[2] = pid as u8;
        slot[3] = 0x10 | cc;
        slot[4..].fill(0xff);
        if pid == 0 {
            // Pointer field, then a PAT: program 1 at PMT_PID.
            slot[4] = 0;
            section(
                &mut slot[5..],
                0x00,
                &[0x00, 0x01, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8],
            );
        } else if pid == PMT_PID {
            slot[4] = 0;
            section(
                &mut slot[5..],
                0x02,
                &[
                    0xe0 | (VIDEO_PID >> 8) as u8, // PCR PID
                    VIDEO_PID as u8,
                    0xf0, // no program info
                    0x00,
                    0x1b, // H.264 video
                    0xe0 | (VIDEO_PID >> 8) as u8,
                    VIDEO_PID as u8,
                    0xf0,
                    0x00,
                    0x0f, // AAC audio
                    0xe0 | (AUDIO_PID >> 8) as u8,
                    AUDIO_PID as u8,
                    0xf0,
                    0x00,
                ],
            );
        } else {
            for (i, byte) in slot[4..].iter_mut().enumerate() {
                *byte = i as u8;
            }
        }
    }
}

/// Writes a PSI section with table id `table_id`, id 1, version 0, current, section 0 of 0,
/// holding `body`, and its CRC.
fn section(out: &mut [u8], table_id: u8, body: &[u8]) {
    let length = 5 + body.len() + 4;
    out[0] = table_id;
    out[1] = 0xb0 | (length >> 8) as u8;
    out[2] = length as u8;
    out[3..8].copy_from_slice(&[0x00, 0x01, 0xc1, 0x00, 0x00]);
    out[8..8 + body.len()].copy_from_slice(body);
    let end = 8 + body.len();
    let crc = crc32_mpeg2(&out[..end]);
    out[end..end + 4].copy_from_slice(&crc.to_be_bytes());
}

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, initial value all ones, not reflected, no final xor.
fn crc32_mpeg2(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn a_section_checks_to_zero() {
        // A receiver runs the CRC over the section with its CRC and expects 0.
        let mut out = [0u8; 64];
        section(&mut out, 0, &[0, 1, 0xf0, 0]);
        assert_eq!(crc32_mpeg2(&out[..16]), 0);
    }

    #[test]
    fn datagrams_carry_every_pid_with_running_counters() {
        let mut synth = TsSynth::new(true);
        let mut out = [0u8; TsSynth::MAX_DATAGRAM];
        assert_eq!(synth.write(&mut out, 1234), TsSynth::MAX_DATAGRAM);
        assert_eq!(&out[..4], &[0x80, 33, 0, 0]);
        assert_eq!(synth.write(&mut out, 1234), TsSynth::MAX_DATAGRAM);
        assert_eq!(&out[2..4], &[0, 1], "the sequence number advanced");
        let headers: Vec<(u16, u8)> = out[12..]
            .chunks_exact(PACKET_LEN)
            .map(|p| {
                assert_eq!(p[0], SYNC_BYTE);
                (u16::from_be_bytes([p[1] & 0x1f, p[2]]), p[3] & 0x0f)
            })
            .collect();
        assert_eq!(
            headers,
            [
                (0, 1),
                (PMT_PID, 1),
                (VIDEO_PID, 4),
                (VIDEO_PID, 5),
                (VIDEO_PID, 6),
                (VIDEO_PID, 7),
                (AUDIO_PID, 1)
            ]
        );
        assert_eq!(datagram_number(&out, true), Some(1));
        let mut plain = TsSynth::new(false);
        assert_eq!(plain.write(&mut out, 0), 7 * PACKET_LEN);
        assert_eq!(out[0], SYNC_BYTE);
        assert_eq!(datagram_number(&out, false), Some(0));
        assert_eq!(datagram_number(&out[..300], false), None);
    }
}
