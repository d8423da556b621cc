//! The `[ring]` section: ring geometry, and how workers wait on their rings and send.

use super::RingFieldError;
use serde::{Deserialize, Serialize};

/// Receive ring version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RingVersionSetting {
    /// TPACKET_V3: blocks of frames, the fewest wake-ups (throughput).
    #[default]
    V3,
    /// TPACKET_V2: every frame handed over as it arrives (latency).
    V2,
}

/// Longest `busy_poll_us` accepted: past a second a worker would stay deaf to an idle ring's
/// first frame's wake-up for no latency gain, and a typo (`2000000`) is likelier than intent.
pub const MAX_BUSY_POLL_US: u32 = 1_000_000;

/// The `[ring]` section: geometry of every worker's rings, and how workers wait on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RingFields")]
pub struct RingSection {
    /// Receive ring version.
    pub version: RingVersionSetting,
    /// Bytes per receive block (a multiple of the page size).
    pub block_size: u32,
    /// Receive blocks per ring.
    pub block_count: u32,
    /// Bytes per frame slot (V2 receive and transmit rings; a multiple of 16). `None` (the
    /// default) sizes each ring for its interface's MTU when it is opened: 2,048 bytes up to an
    /// MTU of 1,964, more above (`crate::rings::room`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_size: Option<u32>,
    /// Milliseconds after which the kernel hands over a V3 block that is not full.
    pub retire_timeout_ms: u32,
    /// Frame slots of each transmit ring (with `tx_gso`, the same memory in slots of
    /// [`SEGMENTED_SLOT_BYTES`]).
    pub tx_frames: u32,
    /// Microseconds a worker spins on its rings' next frame before it sleeps in `poll(2)`;
    /// 0 (the default) never spins. Spinning saves the wake-up of a sleeping worker (tens of
    /// microseconds) on every frame that arrives within the window, and keeps a CPU busy for
    /// the whole window. Only with `version = "v2"`: a V3 block reaches the worker when it is
    /// full or retired, which no spinning hastens. A worker that waits for its CPU more than a
    /// tenth of 100 ms while spinning (another task wants the CPU, and gets it by time slices)
    /// pauses spinning until other tasks use less than 5 % of that CPU over a second; the log
    /// says when.
    #[serde(skip_serializing_if = "is_zero")]
    pub busy_poll_us: u32,
    /// Transmit rings bypass the interface's qdisc (`PACKET_QDISC_BYPASS`): a shorter transmit
    /// path, but no traffic shaping or qdisc backpressure on the relay's output, and packet
    /// sockets on the output interface (tcpdump) no longer see it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qdisc_bypass: bool,
    /// Transmit rings hand each frame to the kernel whole (copied into the socket buffer)
    /// instead of lending it the ring's pages (on by default). On veth, which must copy lent
    /// pages when a frame crosses into another namespace, this saves a page allocation and copy
    /// per frame (about half of a worker's CPU per 64-byte packet, see `bench/README.md`); a NIC
    /// that could send from the ring by
    /// DMA pays a copy of the frame instead. On a kernel without it (probed at start:
    /// `fanout_core::Feature::TxLinear`) it is off whatever the setting, and the log says so.
    #[serde(skip_serializing_if = "is_true")]
    pub tx_linear: bool,
    /// Datagrams of one output that leave in one batch go to the kernel as one frame it splits
    /// again (on by default; UDP segmentation: by the NIC, by the stack before a device that
    /// cannot, or across veth by the receiving socket), so a batch of N datagrams costs one socket buffer and one
    /// pass through the transmit path instead of N. Transmit slots are then
    /// [`SEGMENTED_SLOT_BYTES`] each, as many as fit in the memory `tx_frames` × `frame_size`
    /// gives. Only datagrams whose UDP checksum was verified on receipt or that carry none
    /// (`relay_rules::replicate::may_segment`) are sent so: their checksums are computed
    /// anew. Segmented frames are copied whole, so with `tx_linear = false` it is off; on a
    /// kernel without them (probed at start: `fanout_core::Feature::TxSegmentation`) too, and
    /// the log says so.
    #[serde(skip_serializing_if = "is_true")]
    pub tx_gso: bool,
}

/// Bytes of a transmit slot with `tx_gso`: room for a segmented frame of up to 15,872 bytes.
pub const SEGMENTED_SLOT_BYTES: u32 = 16_384;

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn is_true(value: &bool) -> bool {
    *value
}

/// The `[ring]` section as written, checked by [`RingSection`]'s `TryFrom`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RingFields {
    version: RingVersionSetting,
    block_size: u32,
    block_count: u32,
    frame_size: Option<u32>,
    retire_timeout_ms: u32,
    tx_frames: u32,
    busy_poll_us: u32,
    qdisc_bypass: bool,
    tx_linear: bool,
    tx_gso: bool,
}

impl Default for RingFields {
    fn default() -> Self {
        let ring = RingSection::default();
        RingFields {
            version: ring.version,
            block_size: ring.block_size,
            block_count: ring.block_count,
            frame_size: ring.frame_size,
            retire_timeout_ms: ring.retire_timeout_ms,
            tx_frames: ring.tx_frames,
            busy_poll_us: ring.busy_poll_us,
            qdisc_bypass: ring.qdisc_bypass,
            tx_linear: ring.tx_linear,
            tx_gso: ring.tx_gso,
        }
    }
}

impl TryFrom<RingFields> for RingSection {
    type Error = RingFieldError;

    fn try_from(fields: RingFields) -> Result<Self, RingFieldError> {
        let busy_poll_us = fields.busy_poll_us;
        if busy_poll_us > MAX_BUSY_POLL_US {
            return Err(RingFieldError::BusyPollTooLong { busy_poll_us });
        }
        if busy_poll_us > 0 && fields.version == RingVersionSetting::V3 {
            return Err(RingFieldError::BusyPollOnV3 { busy_poll_us });
        }
        Ok(RingSection {
            version: fields.version,
            block_size: fields.block_size,
            block_count: fields.block_count,
            frame_size: fields.frame_size,
            retire_timeout_ms: fields.retire_timeout_ms,
            tx_frames: fields.tx_frames,
            busy_poll_us: fields.busy_poll_us,
            qdisc_bypass: fields.qdisc_bypass,
            tx_linear: fields.tx_linear,
            tx_gso: fields.tx_gso,
        })
    }
}

impl Default for RingSection {
    fn default() -> Self {
        RingSection {
            version: RingVersionSetting::V3,
            // 16 MiB per ring. At a trickle every block is handed over by its timer with a few
            // frames in it, so the ring holds block_count × retire_timeout of traffic while a
            // worker is off its CPU: 64 blocks give 128 ms, 8 blocks only 16 ms.
            block_size: 1 << 18,
            block_count: 64,
            frame_size: None,
            retire_timeout_ms: 2,
            tx_frames: 4096,
            busy_poll_us: 0,
            qdisc_bypass: false,
            tx_linear: true,
            tx_gso: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigFile;

    #[test]
    fn the_low_latency_keys_parse_and_read_back() {
        let config = ConfigFile::parse(
            "[ring]\nversion = \"v2\"\nbusy_poll_us = 2000\nqdisc_bypass = true\ntx_linear = false\n\
             tx_gso = false\n",
        )
        .expect("v2 with busy polling is valid");
        assert_eq!(config.ring.version, RingVersionSetting::V2);
        assert_eq!(config.ring.busy_poll_us, 2000);
        assert!(config.ring.qdisc_bypass);
        assert!(!config.ring.tx_linear);
        assert!(!config.ring.tx_gso);
        assert_eq!(config.ring.block_count, RingSection::default().block_count);
        let text = config.to_toml();
        assert!(text.contains("busy_poll_us = 2000"), "{text}");
        assert!(text.contains("tx_linear = false"), "{text}");
        assert!(text.contains("tx_gso = false"), "{text}");
        assert_eq!(ConfigFile::parse(&text), Ok(config));
        // Defaults are not written out, so files saved without the keys stay as they were.
        let plain = ConfigFile::default().to_toml();
        assert!(!plain.contains("busy_poll_us"), "{plain}");
        assert!(!plain.contains("qdisc_bypass"), "{plain}");
        assert!(!plain.contains("tx_linear"), "{plain}");
        assert!(!plain.contains("tx_gso"), "{plain}");
        assert_eq!(ConfigFile::default().ring.busy_poll_us, 0);
        assert!(ConfigFile::default().ring.tx_linear);
        assert!(ConfigFile::default().ring.tx_gso);
    }

    #[test]
    fn busy_polling_is_refused_on_v3_and_past_a_second() {
        let error =
            ConfigFile::parse("[ring]\nbusy_poll_us = 50\n").expect_err("the default ring is V3");
        assert_eq!(error.line(), Some(1));
        let error = error.to_string();
        assert!(error.contains("busy_poll_us = 50"), "{error}");
        assert!(error.contains(r#"version = "v2""#), "{error}");
        assert!(error.contains("line 1"), "{error}");
        let error = ConfigFile::parse("[ring]\nversion = \"v2\"\nbusy_poll_us = 1000001\n")
            .expect_err("more than a second")
            .to_string();
        assert!(error.contains("busy_poll_us = 1000001"), "{error}");
        ConfigFile::parse("[ring]\nversion = \"v2\"\nbusy_poll_us = 1000000\n")
            .expect("exactly a second is allowed");
        let error = ConfigFile::parse("[ring]\nbusy_pol_us = 5\n")
            .expect_err("typo")
            .to_string();
        assert!(error.contains("busy_pol_us"), "{error}");
    }
}
