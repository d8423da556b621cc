//! How large a frame the relay's rings hold whole, and the frame size that follows an MTU.
//!
//! The kernel clamps a received frame to the room of its slot (`tpacket_rcv()` in
//! `net/packet/af_packet.c`): it places the link-layer header at `macoff` from the slot's start
//! (the frame header and a `sockaddr_ll`, aligned, plus room for a link header of up to 16
//! bytes), and captures `tp_snaplen = room - macoff` bytes of a longer frame, with `tp_len`
//! still the frame's length. The room is the frame slot under TPACKET_V2 and the block less its
//! header under V3, where frames are packed one after another. A clamped frame is counted and
//! dropped by the worker (`ring_truncated`), never relayed.
//!
//! Unless `ring.frame_size` is set, a receive ring's slots are sized for its input's MTU, and a
//! transmit ring's for its output's, so jumbo frames need no setting; [`truncation`] says when a
//! configured size is too small, for `check-config` and the start.

use crate::config::{RingSection, RingVersionSetting};
use fanout_core::ring::geometry::{FRAME_ALIGNMENT, V3_BLOCK_HEADER_LEN};

/// The frame size of a ring whose interface has a standard MTU: the size the relay always used.
pub const DEFAULT_FRAME_SIZE: u32 = 2048;

/// The largest link-layer header the relay receives: Ethernet and one 802.1Q tag left in the
/// frame (an offloaded tag takes no room).
pub const LINK_HEADER_MAX: u32 = 14 + 4;

/// `macoff` of an Ethernet frame in a V2 slot: `TPACKET_ALIGN(TPACKET2_HDRLEN + 16) - 14`, with
/// `TPACKET2_HDRLEN` = 32 + 20 (the header and a `sockaddr_ll`).
const V2_MAC_OFFSET: u32 = 80 - 14;

/// `macoff` of an Ethernet frame in a V3 block: `TPACKET_ALIGN(TPACKET3_HDRLEN + 16) - 14`, with
/// `TPACKET3_HDRLEN` = 48 + 20.
const V3_MAC_OFFSET: u32 = 96 - 14;

/// The frame slot that holds a whole frame of an `mtu`-byte IP packet in a V2 receive ring (and
/// is large enough for a transmit slot), never below [`DEFAULT_FRAME_SIZE`].
pub fn frame_size_for_mtu(mtu: u32) -> u32 {
    // No IPv4 packet is longer than 65,535 bytes, whatever an interface claims.
    let needed = mtu.min(u32::from(u16::MAX)) + LINK_HEADER_MAX + V2_MAC_OFFSET;
    needed
        .next_multiple_of(FRAME_ALIGNMENT)
        .max(DEFAULT_FRAME_SIZE)
}

/// The frame size of a ring on an interface of `mtu`: the configured one, else one for the MTU.
pub fn frame_size(ring: &RingSection, mtu: u32) -> u32 {
    ring.frame_size.unwrap_or_else(|| frame_size_for_mtu(mtu))
}

/// The longest frame (link-layer header included) a receive ring of `ring` with slots of
/// `frame_size` bytes captures whole.
pub fn rx_capture(ring: &RingSection, frame_size: u32) -> u32 {
    match ring.version {
        RingVersionSetting::V2 => frame_size.saturating_sub(V2_MAC_OFFSET),
        RingVersionSetting::V3 => ring
            .block_size
            .saturating_sub(V3_BLOCK_HEADER_LEN + V3_MAC_OFFSET),
    }
}

/// A receive ring that would clamp full-size frames of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// The interface's MTU.
    pub mtu: u32,
    /// The longest frame the ring captures whole.
    pub capture: u32,
    /// The frame of an MTU-sized packet with a tag in it.
    pub needed: u32,
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its receive rings hold frames of up to {} bytes, but an MTU of {} makes frames of \
             up to {} bytes: longer ones are counted as ring_truncated and dropped",
            self.capture, self.mtu, self.needed
        )
    }
}

/// Whether receive rings of `ring` on an input of `mtu` would clamp its largest frames.
pub fn truncation(ring: &RingSection, mtu: u32) -> Option<Truncation> {
    let capture = rx_capture(ring, frame_size(ring, mtu));
    let needed = mtu.saturating_add(LINK_HEADER_MAX);
    (capture < needed).then_some(Truncation {
        mtu,
        capture,
        needed,
    })
}

/// A warning for each input interface (name, MTU) whose frames `ring` would clamp, naming the
/// setting to change.
pub fn truncation_warnings<'a>(
    ring: &RingSection,
    inputs: impl IntoIterator<Item = (&'a str, u32)>,
) -> Vec<String> {
    let setting = match ring.version {
        RingVersionSetting::V2 => "ring.frame_size",
        RingVersionSetting::V3 => "ring.block_size",
    };
    inputs
        .into_iter()
        .filter_map(|(name, mtu)| {
            truncation(ring, mtu).map(|t| {
                format!(
                    "input {name}: {t}; raise {setting}{}",
                    if ring.version == RingVersionSetting::V2 {
                        " or leave it out, so that it follows the MTU"
                    } else {
                        ""
                    }
                )
            })
        })
        .collect()
}

/// [`truncation_warnings`] for the input interfaces of `set` (each once, with its MTU).
pub fn rule_set_warnings(ring: &RingSection, set: &relay_rules::RuleSet) -> Vec<String> {
    let inputs: std::collections::BTreeMap<&str, u32> = set
        .rules()
        .iter()
        .filter_map(|rule| {
            let facts = set.interfaces().get(&rule.input.interface)?;
            Some((facts.name.as_str(), facts.mtu))
        })
        .collect();
    truncation_warnings(ring, inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(version: RingVersionSetting, frame_size: Option<u32>) -> RingSection {
        RingSection {
            version,
            frame_size,
            ..RingSection::default()
        }
    }

    #[test]
    fn standard_mtus_keep_the_old_size_and_jumbo_ones_grow() {
        assert_eq!(frame_size_for_mtu(1500), DEFAULT_FRAME_SIZE);
        assert_eq!(frame_size_for_mtu(0), DEFAULT_FRAME_SIZE);
        // 9000 + 18 + 66 = 9084, aligned to 16.
        assert_eq!(frame_size_for_mtu(9000), 9088);
        assert_eq!(frame_size_for_mtu(u32::MAX) % FRAME_ALIGNMENT, 0);
        let v2 = ring(RingVersionSetting::V2, None);
        assert_eq!(rx_capture(&v2, frame_size(&v2, 9000)), 9022);
        assert_eq!(truncation(&v2, 9000), None);
    }

    #[test]
    fn a_configured_v2_frame_size_too_small_for_the_mtu_is_named() {
        let v2 = ring(RingVersionSetting::V2, Some(2048));
        assert_eq!(truncation(&v2, 1500), None);
        let t = truncation(&v2, 9000).expect("2048-byte slots clamp jumbo frames");
        assert_eq!(
            t,
            Truncation {
                mtu: 9000,
                capture: 1982,
                needed: 9018
            }
        );
        let warnings = truncation_warnings(&v2, [("eth0", 1500), ("eth1", 9000)]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("input eth1: "), "{warnings:?}");
        assert!(warnings[0].contains("ring.frame_size"), "{warnings:?}");
        assert!(warnings[0].contains("1982"), "{warnings:?}");
    }

    #[test]
    fn v3_rings_hold_what_their_blocks_hold() {
        let v3 = ring(RingVersionSetting::V3, Some(2048));
        assert_eq!(
            truncation(&v3, 9000),
            None,
            "V3 frames are packed in blocks"
        );
        let small = RingSection {
            block_size: 8192,
            ..v3
        };
        assert_eq!(rx_capture(&small, 2048), 8192 - 130);
        let warnings = truncation_warnings(&small, [("eth1", 9000)]);
        assert!(warnings[0].contains("ring.block_size"), "{warnings:?}");
    }
}
