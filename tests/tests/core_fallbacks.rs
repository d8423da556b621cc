//! fanout-core's fallbacks for kernels without a probed feature, checked on this kernel with
//! every feature forced off (`features::force_off`, for the whole of this test binary): a ring
//! that ignores outgoing frames drops them in its socket filter, a unique fanout group takes an
//! id counted from the process id, and the probes themselves find what this kernel has.

mod core_rings_support;

use std::time::Duration;

use core_rings_support::{Link, collect, parse_test_frame, test_frame};
use fanout_core::features::{self, Feature, Features};
use fanout_core::ring::{RetireTimeout, RxRingBuilder};
use fanout_core::{FanoutConfig, FanoutFlags, FanoutGroupId, FanoutMode, Protocol, RxRing};

/// Forces every feature off before this process first asks (each test calls it first; the
/// first call decides, the others find it done).
fn without_features() -> Features {
    features::force_off(&Feature::ALL);
    let features = Features::get();
    for feature in Feature::ALL {
        assert!(
            features.forced_off(feature) && !features.has(feature),
            "{feature}"
        );
    }
    features
}

fn ring(link: &Link, ifname: &'static str, fanout: Option<FanoutConfig>) -> RxRing {
    link.ns
        .run(move || {
            // Every protocol: the kernel copies outgoing frames only to such sockets.
            let builder = RxRingBuilder::new(ifname)
                .protocol(Protocol::ALL)
                .block_size(1 << 16)
                .block_count(4)
                .retire_timeout(RetireTimeout::Millis(5))
                .ignore_outgoing(true);
            match fanout {
                Some(config) => builder.fanout(config).build(),
                None => builder.build(),
            }
        })
        .expect("receive ring")
}

/// Frames sent out of `va` reach `vb`; a ring on `va` that ignores outgoing frames sees only
/// those that came in from `vb`, without the kernel's `PACKET_IGNORE_OUTGOING`.
fn outgoing_frames_are_dropped_by_the_filter(fanout: Option<FanoutConfig>, name: &str) {
    without_features();
    let Some(link) = Link::new(name) else {
        return;
    };
    let mut on_va = ring(&link, "va", fanout);
    let out_of_va = link.sender("va");
    let out_of_vb = link.sender("vb");
    for seq in 0..20 {
        out_of_va
            .send(&test_frame(seq, 1, 64))
            .expect("send out of va");
        out_of_vb
            .send(&test_frame(seq, 2, 64))
            .expect("send out of vb");
    }
    let frames = collect(&mut on_va, 40, Duration::from_secs(2));
    let flows: Vec<(u32, u8)> = frames.iter().filter_map(|f| parse_test_frame(f)).collect();
    let expected: Vec<(u32, u8)> = (0..20).map(|seq| (seq, 2)).collect();
    assert_eq!(
        flows, expected,
        "the ring on va must see vb's 20 frames and none of its own"
    );
}

#[test]
fn a_ring_drops_its_outgoing_frames_in_its_filter() {
    outgoing_frames_are_dropped_by_the_filter(None, "fbout");
}

#[test]
fn a_fanout_member_drops_its_outgoing_frames_in_its_filter() {
    let config = FanoutConfig::new(FanoutGroupId(0x4401), FanoutMode::Hash);
    outgoing_frames_are_dropped_by_the_filter(Some(config), "fbfan");
}

#[test]
fn a_unique_group_takes_an_id_counted_from_the_process_id() {
    without_features();
    let Some(link) = Link::new("fbuniq") else {
        return;
    };
    let first = ring(&link, "vb", Some(FanoutConfig::unique(FanoutMode::Lb)));
    let joined = first.fanout().expect("joined a group");
    let from = std::process::id() as u16;
    assert!(
        joined.group.0.wrapping_sub(from) < 64,
        "group {} is not counted from the process id {from}",
        joined.group
    );
    assert!(
        !joined.flags.contains(FanoutFlags::IGNORE_OUTGOING),
        "the group's IGNORE_OUTGOING was forced off: {joined:?}"
    );
    // A second unique group of another mode cannot share the first one's id.
    let second = ring(&link, "vb", Some(FanoutConfig::unique(FanoutMode::Cpu)));
    let other = second.fanout().expect("joined a group");
    assert_ne!(other.group, joined.group);
    let member = ring(
        &link,
        "vb",
        Some(FanoutConfig::new(joined.group, FanoutMode::Lb)),
    );
    assert_eq!(member.fanout().map(|m| m.group), Some(joined.group));
}

#[test]
fn the_probes_find_what_this_kernel_has() {
    without_features();
    if !fanout_relay_tests::privileged("the_probes_find_what_this_kernel_has") {
        return;
    }
    // Forcing off leaves the probes themselves alone.
    let probed = Features::probe();
    for feature in [
        Feature::IgnoreOutgoing,
        Feature::UniqueId,
        Feature::Rollover,
        Feature::Defrag,
        Feature::FanoutCbpf,
        Feature::FanoutEbpf,
        Feature::QdiscBypass,
        Feature::TxLinear,
    ] {
        // Every kernel this suite runs on (6.1 and later) has these.
        assert!(probed.has(feature), "{feature} not found");
    }
    // The probes against the kernel's history, for the mainline and Debian kernels this suite
    // runs on. (A kernel with these backported would fail here, and should then be named.)
    let release = nix::sys::utsname::uname().expect("uname");
    let release = release.release().to_string_lossy().into_owned();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    // Both came with 6.2 in mainline: a 6.1 kernel takes the fanout flag and ignores it.
    let since_6_2 = (major, minor) >= (6, 2);
    for feature in [Feature::TxSegmentation, Feature::FanoutIgnoreOutgoing] {
        assert_eq!(probed.has(feature), since_6_2, "{feature} on {release}");
    }
}
