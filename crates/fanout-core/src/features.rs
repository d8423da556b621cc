//! What the running kernel offers, found by trying each feature once, not by its release.
//!
//! Distribution kernels backport features, so a release string says little about them. Each
//! [`Feature`] is tried once per process on scratch sockets (see [`Features::get`]): in a network
//! namespace of its own where the process may create one, on its loopback interface, so the
//! probes send nothing anywhere else. What is refused is taken as missing, and the code that
//! uses a feature falls back (each [`Feature`] says how).
//!
//! ```no_run
//! use fanout_core::features::{Feature, Features};
//!
//! let features = Features::get();
//! if !features.has(Feature::TxSegmentation) {
//!     println!("datagrams leave one frame each: {}", Feature::TxSegmentation.without());
//! }
//! ```

use std::fmt;
use std::sync::OnceLock;

mod probe;

/// A kernel feature fanout-core uses where the kernel has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// UDP segmentation of transmit ring frames (`VIRTIO_NET_HDR_GSO_UDP_L4` in a vnet header;
    /// [`TxRingBuilder::segmentation`](crate::TxRingBuilder::segmentation)).
    TxSegmentation,
    /// Vnet headers on transmit ring frames, so that a frame is copied whole
    /// ([`TxRingBuilder::linear`](crate::TxRingBuilder::linear)).
    TxLinear,
    /// The socket option `PACKET_IGNORE_OUTGOING`, for a socket outside a fanout group
    /// ([`RxRingBuilder::ignore_outgoing`](crate::RxRingBuilder::ignore_outgoing)).
    IgnoreOutgoing,
    /// The fanout flag `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`, which a group needs for the same:
    /// inside a group the socket option has no effect. Kernels before it take the flag and
    /// ignore it, so its probe sends a frame and counts the copies.
    FanoutIgnoreOutgoing,
    /// Fanout group ids chosen by the kernel (`PACKET_FANOUT_FLAG_UNIQUEID`).
    UniqueId,
    /// The fanout flag `PACKET_FANOUT_FLAG_ROLLOVER`.
    Rollover,
    /// The fanout flag `PACKET_FANOUT_FLAG_DEFRAG`.
    Defrag,
    /// The fanout mode `PACKET_FANOUT_CBPF` (a classic BPF program picks the member).
    FanoutCbpf,
    /// The fanout mode `PACKET_FANOUT_EBPF` (an eBPF program picks the member).
    FanoutEbpf,
    /// `PACKET_QDISC_BYPASS` on transmit sockets.
    QdiscBypass,
}

impl Feature {
    /// Every feature, in the order they are reported.
    pub const ALL: [Feature; 10] = [
        Feature::TxSegmentation,
        Feature::TxLinear,
        Feature::IgnoreOutgoing,
        Feature::FanoutIgnoreOutgoing,
        Feature::UniqueId,
        Feature::Rollover,
        Feature::Defrag,
        Feature::FanoutCbpf,
        Feature::FanoutEbpf,
        Feature::QdiscBypass,
    ];

    /// The feature's short name (`tx_gso`, `ignore_outgoing`, ...), as [`Feature::parse`] reads it.
    pub const fn name(self) -> &'static str {
        match self {
            Feature::TxSegmentation => "tx_gso",
            Feature::TxLinear => "tx_linear",
            Feature::IgnoreOutgoing => "ignore_outgoing",
            Feature::FanoutIgnoreOutgoing => "fanout_ignore_outgoing",
            Feature::UniqueId => "unique_id",
            Feature::Rollover => "rollover",
            Feature::Defrag => "defrag",
            Feature::FanoutCbpf => "fanout_cbpf",
            Feature::FanoutEbpf => "fanout_ebpf",
            Feature::QdiscBypass => "qdisc_bypass",
        }
    }

    /// The mainline release that brought the feature, from the kernel's history; a
    /// distribution kernel may have it earlier (backported), which is why it is probed.
    pub const fn since(self) -> &'static str {
        match self {
            Feature::TxSegmentation => "6.2",
            Feature::TxLinear => "4.11",
            Feature::IgnoreOutgoing => "4.20",
            Feature::FanoutIgnoreOutgoing => "6.2",
            Feature::UniqueId => "4.12",
            Feature::Rollover => "3.10",
            Feature::Defrag => "3.1",
            Feature::FanoutCbpf | Feature::FanoutEbpf => "4.5",
            Feature::QdiscBypass => "3.14",
        }
    }

    /// What fanout-core does without the feature.
    pub const fn without(self) -> &'static str {
        match self {
            Feature::TxSegmentation => {
                "frames are not segmented: every datagram leaves as a frame of its own"
            }
            Feature::TxLinear => {
                "transmit rings lend their pages to the kernel instead of having frames copied \
                 whole (a copy more per frame across veth)"
            }
            Feature::IgnoreOutgoing => {
                "receive rings outside a fanout group drop the frames the host sends \
                 (PACKET_OUTGOING) in their socket filter instead"
            }
            Feature::FanoutIgnoreOutgoing => {
                "receive rings in a fanout group drop the frames the host sends \
                 (PACKET_OUTGOING) in their socket filter instead"
            }
            Feature::UniqueId => {
                "groups take a free id counted from the process id instead of one the kernel \
                 picks"
            }
            Feature::Rollover => {
                "groups do not roll over: a member whose ring is full drops its frames"
            }
            Feature::Defrag => "fragments are spread like other frames (not used by the relay)",
            Feature::FanoutCbpf => "no classic BPF steering: fanout = \"steer\" is refused",
            Feature::FanoutEbpf => "no eBPF steering (not used by the relay)",
            Feature::QdiscBypass => "frames go through the qdisc (ring.qdisc_bypass is ignored)",
        }
    }

    /// Reads a [`Feature::name`].
    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The features the running kernel offers (minus those forced off, see [`force_off`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    available: u16,
    forced_off: u16,
}

static PROBED: OnceLock<Features> = OnceLock::new();
static FORCED_OFF: OnceLock<u16> = OnceLock::new();

impl Features {
    /// The features of the running kernel, probed on the first call in this process and
    /// remembered; those passed to [`force_off`] read as missing.
    pub fn get() -> Features {
        *PROBED.get_or_init(|| {
            let forced_off = FORCED_OFF.get().copied().unwrap_or(0);
            let features = Features::probe();
            let features = Features {
                available: features.available & !forced_off,
                forced_off,
            };
            for feature in Feature::ALL {
                if features.forced_off(feature) {
                    log::info!("kernel feature {feature}: forced off");
                } else if !features.has(feature) {
                    log::info!("kernel feature {feature}: missing ({})", feature.without());
                }
            }
            features
        })
    }

    /// Tries every feature now (on scratch sockets; see the module documentation), ignoring
    /// [`force_off`] and the remembered result.
    pub fn probe() -> Features {
        Features {
            available: probe::run(),
            forced_off: 0,
        }
    }

    /// Every feature, as if the kernel had them all.
    pub const fn all() -> Features {
        let mut available = 0;
        let mut i = 0;
        while i < Feature::ALL.len() {
            available |= Feature::ALL[i].bit();
            i += 1;
        }
        Features {
            available,
            forced_off: 0,
        }
    }

    /// Whether the feature is there (and not forced off).
    pub const fn has(self, feature: Feature) -> bool {
        self.available & feature.bit() != 0
    }

    /// Whether [`force_off`] took the feature away.
    pub const fn forced_off(self, feature: Feature) -> bool {
        self.forced_off & feature.bit() != 0
    }

    /// No feature at all.
    pub const fn none() -> Features {
        Features {
            available: 0,
            forced_off: 0,
        }
    }

    /// These features and `feature`.
    pub const fn with(self, feature: Feature) -> Features {
        Features {
            available: self.available | feature.bit(),
            forced_off: self.forced_off & !feature.bit(),
        }
    }

    /// These features without `feature`.
    pub const fn without(self, feature: Feature) -> Features {
        Features {
            available: self.available & !feature.bit(),
            forced_off: self.forced_off,
        }
    }

    /// These features with `feature` forced off (see [`force_off`]).
    pub const fn with_forced_off(self, feature: Feature) -> Features {
        Features {
            available: self.available & !feature.bit(),
            forced_off: self.forced_off | feature.bit(),
        }
    }
}

/// Makes `features` this process's answer to [`Features::get`] without probing: for a child
/// process given what its parent found (probing costs some milliseconds, a process start
/// that matters when a replaced worker must resume). False, and nothing changes, when
/// [`Features::get`] has answered already.
pub fn adopt(features: Features) -> bool {
    PROBED.set(features).is_ok()
}

/// Makes [`Features::get`] report `features` as missing, so that the fallbacks can be tested
/// on a kernel that has them. For tests only. It must be called before the first
/// [`Features::get`] of the process, and only once: false (and nothing changes) otherwise.
pub fn force_off(features: &[Feature]) -> bool {
    let bits = features.iter().fold(0, |bits, f| bits | f.bit());
    PROBED.get().is_none() && FORCED_OFF.set(bits).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_every_feature_says_its_fallback() {
        for feature in Feature::ALL {
            assert_eq!(Feature::parse(feature.name()), Some(feature));
            assert!(!feature.without().is_empty() && !feature.since().is_empty());
        }
        assert_eq!(Feature::parse("tx_tso"), None);
        let all = Features::all();
        assert!(Feature::ALL.into_iter().all(|f| all.has(f)));
        let fewer = all.without(Feature::Rollover);
        assert!(!fewer.has(Feature::Rollover) && fewer.has(Feature::Defrag));
    }
}
