//! PACKET_FANOUT groups: modes, flags, joining, the group's steering program and rollover
//! statistics.
//!
//! A group is named by a 16-bit id inside a network namespace. Every member must use the same
//! mode, flags, bound protocol and interface; the kernel answers a bare EINVAL otherwise, so this
//! module remembers what this process joined each group with and names the property that
//! differs.

use std::fmt;
use std::ops::BitOr;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

mod mismatch;

use mismatch::GroupRecord;

use crate::bpf::{self, BpfInstruction, BpfProgram};
use crate::features::{Feature, Features};
use crate::socket::{PacketSocket, Protocol, SocketError};

/// How the kernel picks the member that receives a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FanoutMode {
    /// Symmetric flow hash: both directions of a flow go to one member.
    Hash,
    /// Round robin.
    Lb,
    /// `smp_processor_id() % members`: the CPU that took the packet picks the member.
    Cpu,
    /// Fill one member until its ring is full, then the next.
    Rollover,
    /// Random member.
    Rnd,
    /// `skb->queue_mapping % members`: the receive queue picks the member.
    Qm,
    /// A classic BPF program returns the member index (modulo members).
    Cbpf,
    /// An eBPF program (by fd) returns the member index (modulo members).
    Ebpf,
}

impl FanoutMode {
    pub(crate) fn raw(self) -> u16 {
        let raw = match self {
            Self::Hash => libc::PACKET_FANOUT_HASH,
            Self::Lb => libc::PACKET_FANOUT_LB,
            Self::Cpu => libc::PACKET_FANOUT_CPU,
            Self::Rollover => libc::PACKET_FANOUT_ROLLOVER,
            Self::Rnd => libc::PACKET_FANOUT_RND,
            Self::Qm => libc::PACKET_FANOUT_QM,
            Self::Cbpf => libc::PACKET_FANOUT_CBPF,
            Self::Ebpf => libc::PACKET_FANOUT_EBPF,
        };
        u16::try_from(raw).expect("fanout modes are 0..=7")
    }

    fn from_raw(raw: u16) -> Option<Self> {
        [
            Self::Hash,
            Self::Lb,
            Self::Cpu,
            Self::Rollover,
            Self::Rnd,
            Self::Qm,
            Self::Cbpf,
            Self::Ebpf,
        ]
        .into_iter()
        .find(|mode| mode.raw() == raw)
    }
}

/// Fanout flags, combined with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FanoutFlags(u16);

impl FanoutFlags {
    /// No flag.
    pub const NONE: Self = Self(0);
    /// Reassemble IPv4 fragments before demux, so all fragments reach one member.
    pub const DEFRAG: Self = Self(libc::PACKET_FANOUT_FLAG_DEFRAG as u16);
    /// Move a packet to another member when the chosen one's ring is full.
    pub const ROLLOVER: Self = Self(libc::PACKET_FANOUT_FLAG_ROLLOVER as u16);
    /// Let the kernel pick an unused group id (first member only; read it back).
    pub const UNIQUE_ID: Self = Self(libc::PACKET_FANOUT_FLAG_UNIQUEID as u16);
    /// Do not deliver frames this host sends (`PACKET_OUTGOING`) to the group.
    pub const IGNORE_OUTGOING: Self = Self(libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING as u16);

    /// True when every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits as passed to the kernel (bits 8..16 of `type_flags`).
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// `self` without the flags of `other`.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl BitOr for FanoutFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A fanout group id (0 is a valid id: "no group" is `Option<FanoutGroupId>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FanoutGroupId(pub u16);

impl fmt::Display for FanoutGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How to join a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutConfig {
    group: Option<FanoutGroupId>,
    mode: FanoutMode,
    flags: FanoutFlags,
    max_members: Option<u32>,
    cbpf: Option<BpfProgram>,
}

impl FanoutConfig {
    /// Join (or create) group `group` in `mode`.
    pub fn new(group: FanoutGroupId, mode: FanoutMode) -> Self {
        Self {
            group: Some(group),
            mode,
            flags: FanoutFlags::NONE,
            max_members: None,
            cbpf: None,
        }
    }

    /// Create a group with an id the kernel picks (`PACKET_FANOUT_FLAG_UNIQUEID`); read it back
    /// from the membership and let the other members join it with [`FanoutConfig::new`].
    pub fn unique(mode: FanoutMode) -> Self {
        Self {
            group: None,
            ..Self::new(FanoutGroupId(0), mode)
        }
    }

    /// Adds flags (DEFRAG, ROLLOVER, IGNORE_OUTGOING; UNIQUE_ID is set by [`FanoutConfig::unique`]).
    pub fn flags(mut self, flags: FanoutFlags) -> Self {
        self.flags = self.flags | flags.without(FanoutFlags::UNIQUE_ID);
        self
    }

    /// Raises the member limit above the legacy 256 (up to 65536) with `struct fanout_args`;
    /// every member must pass the same value.
    pub fn max_members(mut self, max: u32) -> Self {
        self.max_members = Some(max);
        self
    }

    /// The classic BPF program a `Cbpf` group runs, set right after joining. It returns the
    /// member index for each packet (modulo the member count).
    pub fn cbpf_program(mut self, program: BpfProgram) -> Self {
        self.cbpf = Some(program);
        self
    }

    pub(crate) fn program(&self) -> Option<&[BpfInstruction]> {
        self.cbpf.as_ref().map(BpfProgram::instructions)
    }
}

/// What a socket is a member of, as read back from the kernel (`getsockopt(PACKET_FANOUT)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FanoutMembership {
    /// The group id (the kernel-chosen one for unique groups).
    pub group: FanoutGroupId,
    /// The group's mode.
    pub mode: FanoutMode,
    /// The group's flags (UNIQUE_ID is never stored: it only applies to creation).
    pub flags: FanoutFlags,
}

/// Moved-packet counters of a rollover member (`PACKET_ROLLOVER_STATS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RolloverStats {
    /// Packets this socket passed on to another member.
    pub all: u64,
    /// Of those, passed on because this member was a heavy flow (huge).
    pub huge: u64,
    /// Of those, no other member had room either.
    pub failed: u64,
}

/// Failures joining a group or driving its program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FanoutError {
    /// The socket is not bound to an interface with a non-zero protocol (the kernel needs a
    /// running socket).
    #[error(
        "fanout join on {interface}: the socket must be bound to an interface with a non-zero protocol first"
    )]
    NotBound {
        /// The interface label.
        interface: String,
    },
    /// The kernel refuses mode ROLLOVER together with the ROLLOVER flag.
    #[error("fanout mode rollover cannot be combined with the rollover flag (kernel: EINVAL)")]
    RolloverModeWithRolloverFlag,
    /// `max_num_members` is at most 65536.
    #[error("max_num_members {max} is above the kernel limit 65536")]
    TooManyMembers {
        /// The value asked for.
        max: u32,
    },
    /// EINVAL from the kernel: an existing group disagrees with this socket.
    #[error(
        "setsockopt(PACKET_FANOUT) on {interface}: group {group} refused the join (EINVAL): {reason}"
    )]
    Mismatch {
        /// The group asked for.
        group: FanoutGroupId,
        /// The interface label.
        interface: String,
        /// Which property differs, as far as this process knows.
        reason: String,
    },
    /// EALREADY: the socket is already a member of a group.
    #[error(
        "setsockopt(PACKET_FANOUT) on {interface}: the socket is already in a fanout group (EALREADY)"
    )]
    AlreadyMember {
        /// The interface label.
        interface: String,
    },
    /// ENOSPC: the group has its maximum number of members.
    #[error("setsockopt(PACKET_FANOUT) on {interface}: group {group} is full (ENOSPC)")]
    GroupFull {
        /// The group.
        group: FanoutGroupId,
        /// The interface label.
        interface: String,
    },
    /// Any other errno from the join.
    #[error("setsockopt(PACKET_FANOUT) on {interface} for group {group} failed: {errno}")]
    Join {
        /// The group asked for.
        group: FanoutGroupId,
        /// The interface label.
        interface: String,
        /// The errno.
        errno: Errno,
    },
    /// `PACKET_FANOUT_DATA` failed: EINVAL when the group's mode is not cbpf/ebpf or the program
    /// is refused, EPERM when the program is locked.
    #[error("setsockopt(PACKET_FANOUT_DATA) on {interface} failed: {errno}")]
    Program {
        /// The interface label.
        interface: String,
        /// The errno.
        errno: Errno,
    },
    /// Reading back the membership or rollover statistics failed (EINVAL: not a rollover group).
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The program has a bad length.
    #[error(transparent)]
    Bpf(#[from] bpf::BpfError),
}

/// How many ids [`join_counted`] tries.
const COUNTED_IDS: u16 = 64;

/// Joins the group; the socket must be bound (the ring builders guarantee it).
pub(crate) fn join(
    socket: &PacketSocket,
    config: &FanoutConfig,
) -> Result<FanoutMembership, FanoutError> {
    if config.group.is_none() && !Features::get().has(Feature::UniqueId) {
        return join_counted(socket, config);
    }
    join_once(socket, config)
}

/// A new group without `PACKET_FANOUT_FLAG_UNIQUEID`: ids counted up from the process id, the
/// first one free or whose group matches this socket. A group another program made with the
/// same mode, flags and binding would be joined unawares: the kernel cannot tell them apart,
/// which is why it has the flag.
fn join_counted(
    socket: &PacketSocket,
    config: &FanoutConfig,
) -> Result<FanoutMembership, FanoutError> {
    let first = std::process::id() as u16;
    let mut last = None;
    for offset in 0..COUNTED_IDS {
        let config = FanoutConfig {
            group: Some(FanoutGroupId(first.wrapping_add(offset))),
            ..config.clone()
        };
        match join_once(socket, &config) {
            Err(error @ FanoutError::Mismatch { .. }) => last = Some(error),
            other => return other,
        }
    }
    Err(last.expect("COUNTED_IDS is not 0"))
}

fn join_once(
    socket: &PacketSocket,
    config: &FanoutConfig,
) -> Result<FanoutMembership, FanoutError> {
    let interface = socket.interface_label();
    let binding = socket
        .binding()
        .filter(|b| b.protocol != Protocol::NONE)
        .ok_or_else(|| FanoutError::NotBound {
            interface: interface.clone(),
        })?;
    if config.mode == FanoutMode::Rollover && config.flags.contains(FanoutFlags::ROLLOVER) {
        return Err(FanoutError::RolloverModeWithRolloverFlag);
    }
    if let Some(max) = config.max_members.filter(|&m| m > 65536) {
        return Err(FanoutError::TooManyMembers { max });
    }
    let flags = match config.group {
        Some(_) => config.flags,
        None => config.flags | FanoutFlags::UNIQUE_ID,
    };
    let id = config.group.unwrap_or(FanoutGroupId(0));
    let type_flags = config.mode.raw() | flags.bits();
    let result = match config.max_members {
        Some(max) => {
            let args = libc::fanout_args {
                id: id.0,
                type_flags,
                max_num_members: max,
            };
            socket.set_packet_option("PACKET_FANOUT", libc::PACKET_FANOUT, &args)
        }
        None => {
            let arg = libc::c_int::from(id.0) | (libc::c_int::from(type_flags) << 16);
            socket.set_packet_int("PACKET_FANOUT", libc::PACKET_FANOUT, arg)
        }
    };
    let record = GroupRecord {
        netns: mismatch::current_netns(),
        group: id.0,
        mode: config.mode,
        flags: config.flags,
        max_members: config.max_members,
        protocol: binding.protocol,
        ifindex: binding.ifindex,
    };
    match result {
        Ok(()) => {}
        Err(SocketError::SetOption { errno, .. }) => {
            return Err(match errno {
                Errno::EINVAL => FanoutError::Mismatch {
                    group: id,
                    interface,
                    reason: mismatch::explain(&record),
                },
                Errno::EALREADY => FanoutError::AlreadyMember { interface },
                Errno::ENOSPC => FanoutError::GroupFull {
                    group: id,
                    interface,
                },
                errno => FanoutError::Join {
                    group: id,
                    interface,
                    errno,
                },
            });
        }
        Err(other) => return Err(other.into()),
    }
    let joined = FanoutMembership {
        group: id,
        mode: config.mode,
        flags: config.flags,
    };
    let membership = membership_of(socket, Some(joined))?.ok_or(FanoutError::Join {
        group: id,
        interface,
        errno: Errno::ENOENT,
    })?;
    mismatch::remember(GroupRecord {
        group: membership.group.0,
        ..record
    });
    if let Some(program) = config.program() {
        set_cbpf_program(socket, program)?;
    }
    Ok(membership)
}

/// Reads back the socket's group (`getsockopt(PACKET_FANOUT)`: `id | type << 16 | flags << 24`).
pub(crate) fn membership(socket: &PacketSocket) -> Result<Option<FanoutMembership>, FanoutError> {
    let (raw, _) = socket.get_packet_option::<u32>("PACKET_FANOUT", libc::PACKET_FANOUT)?;
    Ok(decode_membership(raw))
}

/// [`membership`] for a socket known to have joined `joined` (as asked for; the group id may
/// be one the kernel chose).
///
/// The word reads 0 both for no group and for group 0 in hash mode without flags; and group 0
/// is the first id `PACKET_FANOUT_FLAG_UNIQUEID` hands out after boot (the kernel counts its
/// next free id up from 0), so a freshly booted machine's first unique hash group reads as none.
/// A socket that joined such a group is taken to be in it.
pub(crate) fn membership_of(
    socket: &PacketSocket,
    joined: Option<FanoutMembership>,
) -> Result<Option<FanoutMembership>, FanoutError> {
    let read = membership(socket)?;
    Ok(read.or_else(|| {
        joined
            .filter(|m| m.mode == FanoutMode::Hash && m.flags.bits() == 0)
            .map(|m| FanoutMembership {
                group: FanoutGroupId(0),
                ..m
            })
    }))
}

fn decode_membership(raw: u32) -> Option<FanoutMembership> {
    if raw == 0 {
        return None;
    }
    let group = FanoutGroupId((raw & 0xffff) as u16);
    let mode = FanoutMode::from_raw(((raw >> 16) & 0xff) as u16)?;
    let flags = FanoutFlags((((raw >> 24) & 0xff) as u16) << 8);
    Some(FanoutMembership { group, mode, flags })
}

/// Sets the group's classic BPF steering program (`PACKET_FANOUT_DATA`); it applies to every
/// member.
pub(crate) fn set_cbpf_program(
    socket: &PacketSocket,
    program: &[BpfInstruction],
) -> Result<(), FanoutError> {
    let fprog = bpf::as_fprog(program)?;
    socket
        .set_packet_option("PACKET_FANOUT_DATA", libc::PACKET_FANOUT_DATA, &fprog)
        .map_err(|e| program_error(socket, e))
}

/// Sets the group's eBPF steering program by its fd (`PACKET_FANOUT_DATA`).
pub(crate) fn set_ebpf_program(
    socket: &PacketSocket,
    program: BorrowedFd<'_>,
) -> Result<(), FanoutError> {
    let fd: libc::c_int = program.as_raw_fd();
    socket
        .set_packet_int("PACKET_FANOUT_DATA", libc::PACKET_FANOUT_DATA, fd)
        .map_err(|e| program_error(socket, e))
}

fn program_error(socket: &PacketSocket, error: SocketError) -> FanoutError {
    match error {
        SocketError::SetOption { errno, .. } => FanoutError::Program {
            interface: socket.interface_label(),
            errno,
        },
        other => other.into(),
    }
}

/// Reads this member's rollover counters (EINVAL unless the group rolls over).
pub(crate) fn rollover_stats(socket: &PacketSocket) -> Result<RolloverStats, FanoutError> {
    let (raw, _) = socket.get_packet_option::<libc::tpacket_rollover_stats>(
        "PACKET_ROLLOVER_STATS",
        libc::PACKET_ROLLOVER_STATS,
    )?;
    Ok(RolloverStats {
        all: raw.tp_all,
        huge: raw.tp_huge,
        failed: raw.tp_failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_decodes_id_mode_and_flags() {
        let raw = 0x1234 | (2 << 16) | (0x10 << 24);
        assert_eq!(
            decode_membership(raw),
            Some(FanoutMembership {
                group: FanoutGroupId(0x1234),
                mode: FanoutMode::Cpu,
                flags: FanoutFlags::ROLLOVER,
            })
        );
        assert_eq!(decode_membership(0), None);
    }

    #[test]
    fn flags_combine_and_unique_id_is_not_a_join_flag() {
        let flags = FanoutFlags::DEFRAG | FanoutFlags::ROLLOVER;
        assert!(flags.contains(FanoutFlags::ROLLOVER) && !flags.contains(FanoutFlags::UNIQUE_ID));
        assert_eq!(flags.bits(), 0x9000);
        let config =
            FanoutConfig::new(FanoutGroupId(1), FanoutMode::Hash).flags(FanoutFlags::UNIQUE_ID);
        assert_eq!(config.flags, FanoutFlags::NONE);
        assert_eq!(FanoutConfig::unique(FanoutMode::Lb).group, None);
    }

    #[test]
    fn every_mode_round_trips() {
        for raw in 0..8 {
            assert_eq!(FanoutMode::from_raw(raw).map(FanoutMode::raw), Some(raw));
        }
        assert_eq!(FanoutMode::from_raw(8), None);
    }
}
