//! Ring statistics from `PACKET_STATISTICS`.
//!
//! The kernel clears its counters on every read, so each read is already a delta; this module
//! keeps the running total beside it. `tp_packets` counts every frame the socket was offered,
//! dropped ones included: delivered = packets - drops, never packets + drops.

use std::ops::AddAssign;

use crate::socket::{PacketSocket, SocketError};

/// Counters of one interval (or, summed, of the socket's life).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Frames the socket was offered, including dropped ones (`tp_packets`).
    pub packets: u64,
    /// Frames dropped because the ring (or receive queue) was full (`tp_drops`).
    pub drops: u64,
    /// Times the V3 ring froze with every block owned by user space (`tp_freeze_q_cnt`);
    /// always 0 on V2.
    pub freezes: u64,
}

impl RingStats {
    /// Frames that reached the ring: `packets - drops`.
    pub fn delivered(&self) -> u64 {
        self.packets.saturating_sub(self.drops)
    }
}

impl AddAssign for RingStats {
    fn add_assign(&mut self, rhs: Self) {
        self.packets += rhs.packets;
        self.drops += rhs.drops;
        self.freezes += rhs.freezes;
    }
}

/// Accumulates clear-on-read kernel counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StatsTracker {
    total: RingStats,
}

impl StatsTracker {
    /// Reads (and thereby clears) the kernel counters; returns the delta since the last read.
    pub(crate) fn read(&mut self, socket: &PacketSocket) -> Result<RingStats, SocketError> {
        // V1/V2 sockets write the first two fields (8 bytes); V3 writes all three.
        let (raw, len) = socket.get_packet_option::<libc::tpacket_stats_v3>(
            "PACKET_STATISTICS",
            libc::PACKET_STATISTICS,
        )?;
        let delta = RingStats {
            packets: u64::from(raw.tp_packets),
            drops: u64::from(raw.tp_drops),
            freezes: if len >= size_of::<libc::tpacket_stats_v3>() {
                u64::from(raw.tp_freeze_q_cnt)
            } else {
                0
            },
        };
        self.total += delta;
        Ok(delta)
    }

    /// Everything read so far.
    pub(crate) fn total(&self) -> RingStats {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_excludes_drops_and_totals_add_up() {
        let mut total = RingStats {
            packets: 10,
            drops: 3,
            freezes: 1,
        };
        assert_eq!(total.delivered(), 7);
        total += RingStats {
            packets: 5,
            drops: 5,
            freezes: 0,
        };
        assert_eq!(
            total,
            RingStats {
                packets: 15,
                drops: 8,
                freezes: 1
            }
        );
        assert_eq!(total.delivered(), 7);
    }

    #[test]
    fn reads_zero_on_a_fresh_socket() {
        let Ok(socket) = PacketSocket::open() else {
            eprintln!("skipping: no CAP_NET_RAW");
            return;
        };
        let mut tracker = StatsTracker::default();
        assert_eq!(
            tracker.read(&socket).expect("PACKET_STATISTICS"),
            RingStats::default()
        );
        assert_eq!(tracker.total(), RingStats::default());
    }
}
