//! The relay's use of the two libraries: interface facts, rule checking, ring sockets.

pub mod room;

use crate::config::{FanoutSetting, RingSection, RingVersionSetting, SEGMENTED_SLOT_BYTES};
use crate::protocol::ShardEntry;
use fanout_core::handoff::RingHandle;
use fanout_core::iface::InterfaceInfo;
use fanout_core::ring::{Geometry, RetireTimeout};
use fanout_core::{
    BpfError, BpfProgram, FanoutConfig, FanoutFlags, FanoutGroupId, FanoutMode, Feature, Features,
    RingError, RingVersion, RxRingBuilder,
};
use relay_rules::bpf::KeySense;
use relay_rules::shard::ShardSet;
use relay_rules::{InterfaceFacts, Interfaces, Limits, Rule, RuleSet, RuleTable};

/// Why a class's key filter could not be made (its rings then take every UDP frame).
#[derive(Debug, thiserror::Error)]
pub enum KeyFilterError {
    /// relay-rules refused the keys (too many for one program).
    #[error(transparent)]
    Keys(#[from] relay_rules::bpf::KeyFilterError),
    /// The kernel's form of the program was refused.
    #[error("the filter of {count} keys: {source}")]
    Kernel {
        /// How many keys the filter has.
        count: usize,
        /// Why the program is not a valid kernel program.
        source: BpfError,
    },
}

/// Why receive rings could not be opened and joined to a fanout group.
#[derive(Debug, thiserror::Error)]
pub enum FanoutMembersError {
    /// Members were asked for in an existing `steer` group.
    #[error("a steer group's members are fixed: each is a shard of the rules")]
    SteerFixed,
    /// `steer` on a kernel without the cbpf fanout mode.
    #[error(
        "fanout = \"steer\" needs the kernel's cbpf fanout mode (Linux 4.5), which this kernel \
         lacks: use another fanout"
    )]
    SteerUnsupported,
    /// One member's ring could not be built or joined.
    #[error("member {member}: {source}")]
    Ring {
        /// The member's index among those opened by this call.
        member: usize,
        /// The ring's error, with its syscall and errno.
        source: RingError,
    },
    /// A ring was built but reports no fanout group.
    #[error("member {member}: joined no fanout group")]
    NoGroup {
        /// The member's index among those opened by this call.
        member: usize,
    },
    /// No member was asked for, so no group exists.
    #[error("no member joined a fanout group on {interface}")]
    Empty {
        /// The interface.
        interface: String,
    },
}

/// The facts of interface `name` as the rules need them, or `None` when it does not exist.
pub fn interface_facts(name: &str) -> Option<InterfaceFacts> {
    let info = InterfaceInfo::lookup(name).ok()?;
    Some(InterfaceFacts {
        name: info.name,
        index: info.index,
        mac: info.mac,
        mtu: info.mtu,
        ipv4: info.ipv4.iter().map(|prefix| prefix.addr).collect(),
        ipv6: info.ipv6,
    })
}

/// Checks `rules` against `interfaces`; on refusal, one line per problem.
pub fn validate(rules: &[Rule], interfaces: &Interfaces) -> Result<RuleSet, Vec<String>> {
    RuleSet::new(rules.to_vec(), interfaces.clone(), Limits::default())
        .map_err(|errors| errors.into_iter().map(ToString::to_string).collect())
}

/// The table a worker builds: every rule, or only its shards'.
pub fn table(set: &RuleSet, generation: u64, shards: Option<&ShardSet>) -> RuleTable {
    match shards {
        None => RuleTable::build(set, generation),
        Some(shards) => RuleTable::build_shards(set, generation, shards),
    }
}

/// Whether `rule` belongs to `shard` (every rule belongs to a worker without one). The shard
/// count is that of the rule's class.
pub fn in_shard(rule: &Rule, shard: Option<&ShardEntry>) -> bool {
    shard.is_none_or(|shard| {
        let input = &rule.input;
        let theirs =
            relay_rules::shard::shard_vlan(input.destination, input.port, input.vlan, shard.count);
        shard.indices.contains(&theirs)
    })
}

/// The relay-rules pre-filter in the kernel's form: only IPv4 UDP (and still-tagged) frames
/// reach the rings, and IPv6 UDP ones too when the interface has IPv6 rules (`ipv6`).
pub fn prefilter(ipv6: bool) -> BpfProgram {
    relay_rules::bpf::ip_prefilter(ipv6)
        .to_kernel()
        .expect("the pre-filter is a fixed program within the kernel's limits")
}

/// The relay-rules key filter in the kernel's form: the UDP frames of `keys` only
/// ([`KeySense::Listed`]), or every frame the pre-filter takes but those ([`KeySense::Unlisted`]);
/// `ipv6`: the interface has IPv6 rules, whose frames an unlisted filter then takes too.
pub fn key_filter(
    keys: Vec<(std::net::IpAddr, u16, Option<u16>)>,
    sense: KeySense,
    ipv6: bool,
) -> Result<BpfProgram, KeyFilterError> {
    let count = keys.len();
    let program = relay_rules::bpf::key_filter_with(keys, sense, ipv6)?;
    program
        .to_kernel()
        .map_err(|source| KeyFilterError::Kernel { count, source })
}

/// The receive ring geometry of the configuration on an input of `mtu` (see [`room`]).
pub fn rx_geometry(ring: &RingSection, mtu: u32) -> Geometry {
    Geometry::new(
        ring.block_size,
        ring.block_count,
        room::frame_size(ring, mtu),
    )
}

/// The transmit ring geometry of the configuration on an output of `mtu`: `tx_frames` slots of
/// the frame size (configured, or for the MTU: see [`room`]) in blocks of whole pages; with
/// segmented frames (see [`tx_segmentation`]) as many slots of [`SEGMENTED_SLOT_BYTES`] as fit
/// in the same memory, and at least 64. A segmented frame stays within 15,872 bytes whatever
/// the MTU (see the worker's sinks), so on a jumbo MTU a full-size datagram fills one alone.
pub fn tx_geometry(ring: &RingSection, mtu: u32) -> Geometry {
    let slot = room::frame_size(ring, mtu);
    let (frame_size, frames) = if tx_segmentation(ring) {
        let bytes = u64::from(ring.tx_frames) * u64::from(slot);
        let slots = (bytes / u64::from(SEGMENTED_SLOT_BYTES)).max(64);
        (
            SEGMENTED_SLOT_BYTES,
            u32::try_from(slots).unwrap_or(u32::MAX),
        )
    } else {
        (slot, ring.tx_frames)
    };
    // A block is a whole number of pages; a slot that does not divide a page or a run of
    // pages evenly (9,088 bytes for a 9000 MTU) gets blocks of eight, which waste a few
    // percent instead of a third of every block.
    let page = 4096;
    let block = if page % frame_size == 0 || frame_size % page == 0 {
        frame_size.max(page)
    } else {
        frame_size.saturating_mul(8).next_multiple_of(page)
    };
    let per_block = (block / frame_size).max(1);
    let blocks = frames.div_ceil(per_block).max(1);
    Geometry::new(block, blocks, frame_size)
}

/// Whether transmit rings carry segmented frames: `tx_gso` with `tx_linear` (a segmented frame
/// is copied whole, so without it the ring keeps lending its pages, frame by frame), on a kernel
/// that takes them (probed: [`Feature::TxSegmentation`]).
pub fn tx_segmentation(ring: &RingSection) -> bool {
    ring.tx_gso
        && crate::kernel_features::tx_linear(ring)
        && Features::get().has(Feature::TxSegmentation)
}

/// A fanout group on one interface and the receive rings that joined it.
#[derive(Debug)]
pub struct FanoutMembers {
    /// The group id the kernel chose.
    pub group: FanoutGroupId,
    /// The new members' rings, in join order.
    pub rings: Vec<RingHandle>,
}

/// Creates `count` receive rings on `interface` and joins them, in order, to fanout group
/// `group`, or to a new one when `group` is `None`; returns them as handles for workers to map.
///
/// A new group gets a kernel-chosen unique id, so another program's fixed id cannot clash with
/// it (where the kernel cannot choose, fanout-core counts one up from the process id). Every
/// member ignores outgoing frames, so the relay's own output on an interface that is also an
/// input is never relayed again (by the kernel, or by the socket filter where the kernel
/// cannot); with the rollover flag, where the kernel has it, a member whose ring is full (a
/// worker that died or stalls) spills to the others instead of dropping. Under `steer`, the
/// steering program over `count` members is set once the last has joined: the group then has
/// exactly one member per shard, and it must never grow. Every ring gets the socket `filter`.
pub fn open_fanout_members(
    interface: &str,
    group: Option<FanoutGroupId>,
    count: usize,
    fanout: FanoutSetting,
    ring: &RingSection,
    filter: &BpfProgram,
) -> Result<FanoutMembers, FanoutMembersError> {
    // Without the flag (an old kernel) a full member drops instead.
    let rollover = crate::kernel_features::rollover_flag();
    let (mode, flags) = match fanout {
        FanoutSetting::Cpu => (FanoutMode::Cpu, rollover),
        FanoutSetting::Hash => (FanoutMode::Hash, rollover),
        // Rollover also lets a member that joins a live group pass frames on until it is ready.
        FanoutSetting::Lb => (FanoutMode::Lb, rollover),
        FanoutSetting::Qm => (FanoutMode::Qm, rollover),
        FanoutSetting::Rollover => (FanoutMode::Rollover, FanoutFlags::NONE),
        FanoutSetting::Rnd => (FanoutMode::Rnd, rollover),
        // No rollover: a packet must reach the worker holding its rule or be dropped there.
        FanoutSetting::Steer => (FanoutMode::Cbpf, FanoutFlags::NONE),
    };
    if fanout == FanoutSetting::Steer && group.is_some() {
        return Err(FanoutMembersError::SteerFixed);
    }
    if fanout == FanoutSetting::Steer && !Features::get().has(Feature::FanoutCbpf) {
        return Err(FanoutMembersError::SteerUnsupported);
    }
    let version = match ring.version {
        RingVersionSetting::V3 => RingVersion::V3,
        RingVersionSetting::V2 => RingVersion::V2,
    };
    // Read once for the rings opened now; one missing fails below, naming the interface.
    let mtu = InterfaceInfo::lookup(interface).map_or(1500, |info| info.mtu);
    let mut group = group;
    let mut handles = Vec::with_capacity(count);
    for member in 0..count {
        let mut config = match group {
            None => FanoutConfig::unique(mode).flags(flags),
            Some(id) => FanoutConfig::new(id, mode).flags(flags),
        };
        if fanout == FanoutSetting::Steer && member + 1 == count {
            // The program belongs to the group; set once every member has joined, it computes
            // `shard(group, port, count)`, the member index of the worker holding the rule.
            let program = relay_rules::bpf::steering_program(count as u32)
                .to_kernel()
                .expect("a steering program is a few dozen instructions");
            config = config.cbpf_program(program);
        }
        let rx = RxRingBuilder::new(interface)
            .filter(filter.clone())
            .version(version)
            .geometry(rx_geometry(ring, mtu))
            .retire_timeout(RetireTimeout::Millis(ring.retire_timeout_ms.max(1)))
            .ignore_outgoing(true)
            .populate(false)
            .fanout(config)
            .build()
            .map_err(|source| FanoutMembersError::Ring { member, source })?;
        if group.is_none() {
            let joined = rx.fanout().ok_or(FanoutMembersError::NoGroup { member })?;
            group = Some(joined.group);
        }
        handles.push(rx.into_handle());
    }
    let group = group.ok_or_else(|| FanoutMembersError::Empty {
        interface: interface.to_owned(),
    })?;
    Ok(FanoutMembers {
        group,
        rings: handles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_slots_follow_the_mtu_in_blocks_of_whole_pages() {
        // Without segmentation, so that no kernel feature is asked for.
        let ring = RingSection {
            tx_gso: false,
            ..RingSection::default()
        };
        let standard = tx_geometry(&ring, 1500);
        assert_eq!(
            (standard.block_size(), standard.frame_size()),
            (4096, 2048),
            "as before MTUs were followed"
        );
        assert_eq!(standard.frame_count(), u64::from(ring.tx_frames));
        let jumbo = tx_geometry(&ring, 9000);
        assert_eq!(jumbo.frame_size(), 9088);
        assert_eq!(jumbo.block_size() % 4096, 0);
        assert_eq!(jumbo.frames_per_block(), 8);
        assert!(jumbo.frame_count() >= u64::from(ring.tx_frames));
        let set = RingSection {
            frame_size: Some(2048),
            ..ring
        };
        assert_eq!(
            tx_geometry(&set, 9000).frame_size(),
            2048,
            "a set size wins"
        );
        assert_eq!(rx_geometry(&set, 9000).frame_size(), 2048);
        assert_eq!(rx_geometry(&ring, 9000).frame_size(), 9088);
    }
}
