//! Explaining the kernel's bare EINVAL on a fanout join.
//!
//! `fanout_add()` answers EINVAL when a joiner's mode, flags, `max_num_members`, bound protocol
//! or interface differ from the group's, or when the socket is not running; it does not say
//! which. This process remembers what it joined each group with (per network namespace), so a
//! later refusal can name the property that differs.

use std::sync::Mutex;

use super::{FanoutFlags, FanoutMode};
use crate::socket::Protocol;

/// What this process joined a group with, to explain a later EINVAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GroupRecord {
    pub(super) netns: u64,
    pub(super) group: u16,
    pub(super) mode: FanoutMode,
    pub(super) flags: FanoutFlags,
    pub(super) max_members: Option<u32>,
    pub(super) protocol: Protocol,
    pub(super) ifindex: u32,
}

static JOINED: Mutex<Vec<GroupRecord>> = Mutex::new(Vec::new());

/// The calling thread's network namespace (groups are per namespace).
pub(super) fn current_netns() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(0)
}

pub(super) fn explain(attempt: &GroupRecord) -> String {
    let known = JOINED
        .lock()
        .map(|list| {
            list.iter()
                .rev()
                .find(|r| r.netns == attempt.netns && r.group == attempt.group)
                .copied()
        })
        .unwrap_or(None);
    let Some(known) = known else {
        return "the group exists with a different mode, flags, max_num_members, bound protocol or \
                interface, or this socket's interface is not running"
            .to_owned();
    };
    let mut diffs = Vec::new();
    if known.mode != attempt.mode {
        diffs.push(format!("mode {:?} (group: {:?})", attempt.mode, known.mode));
    }
    if known.flags != attempt.flags {
        diffs.push(format!(
            "flags {:#06x} (group: {:#06x})",
            attempt.flags.0, known.flags.0
        ));
    }
    if attempt.max_members.is_some() && known.max_members != attempt.max_members {
        diffs.push(format!(
            "max_num_members {:?} (group: {:?})",
            attempt.max_members, known.max_members
        ));
    }
    if known.protocol != attempt.protocol {
        diffs.push(format!(
            "protocol {} (group: {})",
            attempt.protocol, known.protocol
        ));
    }
    if known.ifindex != attempt.ifindex {
        diffs.push(format!(
            "interface #{} (group: #{})",
            attempt.ifindex, known.ifindex
        ));
    }
    if diffs.is_empty() {
        "same properties as this process's earlier join: the interface is probably not running"
            .to_owned()
    } else {
        format!("differs from the group in {}", diffs.join(", "))
    }
}

/// Records a successful join.
pub(super) fn remember(record: GroupRecord) {
    if let Ok(mut list) = JOINED.lock() {
        list.push(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_names_the_differing_property() {
        let base = GroupRecord {
            netns: 77,
            group: 9,
            mode: FanoutMode::Hash,
            flags: FanoutFlags::NONE,
            max_members: None,
            protocol: Protocol::ALL,
            ifindex: 3,
        };
        JOINED.lock().expect("not poisoned").push(base);
        let reason = explain(&GroupRecord {
            mode: FanoutMode::Cpu,
            ..base
        });
        assert!(reason.contains("mode Cpu (group: Hash)"), "{reason}");
        let reason = explain(&GroupRecord {
            ifindex: 4,
            protocol: Protocol::IPV4,
            ..base
        });
        assert!(
            reason.contains("interface #4") && reason.contains("protocol 0x0800"),
            "{reason}"
        );
        let reason = explain(&GroupRecord { group: 10, ..base });
        assert!(reason.contains("different mode, flags"), "{reason}");
    }
}
