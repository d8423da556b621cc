//! The receive ring: blocks (V3) or runs of frames (V2) lent out as guards that hand the memory
//! back to the kernel when dropped.

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::frame::Frame;
use super::geometry::Geometry;
use super::mmap::Mapping;
use super::v3::BlockInfo;
use super::{RingError, RingVersion, v2, v3};
use crate::bpf::{self, BpfError, BpfProgram};
use crate::fanout::{self, FanoutConfig, FanoutError, FanoutMembership, RolloverStats};
use crate::socket::{PacketSocket, SocketError};
use crate::stats::{RingStats, StatsTracker};

/// Most V2 frames lent out in one [`Block`]: bounds how long frames stay out of the kernel's reach.
const V2_BATCH: u32 = 256;

/// What [`RxRing::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A block (V3) or frame (V2) is ready, or the kernel said so.
    Readable,
    /// Nothing arrived within the timeout.
    TimedOut,
    /// A signal interrupted the wait.
    Interrupted,
    /// The interface went down (the kernel set ENETDOWN on the socket); the ring receives
    /// nothing until it comes back up.
    InterfaceDown,
}

/// Things the ring noticed while lending out blocks, kept for the socket's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxCounters {
    /// Blocks (V3) or frame runs (V2) handed back.
    pub blocks: u64,
    /// Frames in those blocks.
    pub frames: u64,
    /// Blocks retired with no frame (the timer fired on an idle link), skipped.
    pub empty_blocks: u64,
    /// Frames the kernel clamped to the ring's room (`snap_len < original_len`).
    pub truncated: u64,
    /// Frame headers that pointed outside their block and were skipped with the rest of it.
    pub malformed: u64,
    /// Blocks missing from the sequence (a jump in `seq_num`).
    pub sequence_gaps: u64,
}

#[derive(Debug)]
enum Lent {
    V3(BlockInfo),
    V2(v2::Run),
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    truncated: u64,
    malformed: u64,
}

/// A receive ring: a bound packet socket with its mapped ring.
#[derive(Debug)]
pub struct RxRing {
    pub(crate) socket: PacketSocket,
    pub(crate) map: Mapping,
    pub(crate) geometry: Geometry,
    pub(crate) version: RingVersion,
    pub(crate) rx_hash: bool,
    pub(crate) cursor: u32,
    pub(crate) expected_seq: Option<u64>,
    pub(crate) counters: RxCounters,
    pub(crate) stats: StatsTracker,
    pub(crate) fanout: Option<FanoutMembership>,
    /// Its socket filter drops `PACKET_OUTGOING` frames in place of `PACKET_IGNORE_OUTGOING`,
    /// which the kernel lacks (see [`RxRingBuilder::ignore_outgoing`](super::RxRingBuilder::ignore_outgoing)).
    pub(crate) drops_outgoing: bool,
}

impl RxRing {
    /// A ring mapped by a new owner: resumes where the kernel will hand over next.
    pub(crate) fn resume(
        socket: PacketSocket,
        map: Mapping,
        geometry: Geometry,
        version: RingVersion,
        rx_hash: bool,
        fanout: Option<FanoutMembership>,
    ) -> Self {
        let cursor = match version {
            RingVersion::V3 => v3::resume_point(&map, &geometry),
            RingVersion::V2 => v2::resume_point(&map, &geometry),
        };
        Self {
            socket,
            map,
            geometry,
            version,
            rx_hash,
            cursor,
            expected_seq: None,
            counters: RxCounters::default(),
            stats: StatsTracker::default(),
            fanout,
            drops_outgoing: false,
        }
    }

    /// Lends out the next retired block (V3) or run of ready frames (V2), or `None` if the kernel
    /// has not handed one over yet. Empty V3 blocks are handed back and skipped.
    ///
    /// Frames borrow the block, so none can be used once the block went back:
    ///
    /// ```compile_fail,E0597
    /// # fn f(ring: &mut fanout_core::ring::RxRing) {
    /// let data = {
    ///     let block = ring.next_block().unwrap();
    ///     let frame = block.frames().next().unwrap();
    ///     frame.data()
    /// }; // block dropped: handed back to the kernel
    /// println!("{data:?}");
    /// # }
    /// ```
    pub fn next_block(&mut self) -> Option<Block<'_>> {
        let lent = match self.version {
            RingVersion::V3 => self.next_v3()?,
            RingVersion::V2 => self.next_v2()?,
        };
        Some(Block {
            ring: self,
            lent: Some(lent),
            tally: Cell::new(Tally::default()),
            counted: Cell::new(false),
        })
    }

    fn next_v3(&mut self) -> Option<Lent> {
        for _ in 0..self.geometry.block_count() {
            let info = v3::ready_block(&self.map, &self.geometry, self.cursor)?;
            if let Some(expected) = self.expected_seq {
                self.counters.sequence_gaps += info.seq_num.saturating_sub(expected);
            }
            self.expected_seq = Some(info.seq_num.wrapping_add(1));
            if info.num_pkts > 0 {
                return Some(Lent::V3(info));
            }
            self.counters.empty_blocks += 1;
            v3::release(&self.map, &self.geometry, info);
            self.cursor = (self.cursor + 1) % self.geometry.block_count();
        }
        None
    }

    fn next_v2(&mut self) -> Option<Lent> {
        v2::ready_run(&self.map, &self.geometry, self.cursor, V2_BATCH).map(Lent::V2)
    }

    /// True when the kernel has handed over the next block (V3) or frame (V2), so that
    /// [`RxRing::next_block`] would lend something out. One acquire load of the next status
    /// word and no syscall: cheap enough to spin on (busy polling) and to skip a `poll(2)` that
    /// would return at once.
    pub fn has_pending(&self) -> bool {
        match self.version {
            RingVersion::V3 => {
                v3::status(&self.map, &self.geometry, self.cursor) & libc::TP_STATUS_USER != 0
            }
            RingVersion::V2 => v2::is_ready(&self.map, &self.geometry, self.cursor),
        }
    }

    /// Waits up to `timeout` for the kernel to hand something over (`poll(2)`); returns at once
    /// if something is already waiting. An interface that went down is reported, not spun on.
    pub fn wait(&mut self, timeout: Duration) -> Result<Readiness, RingError> {
        if self.has_pending() {
            return Ok(Readiness::Readable);
        }
        let interface = self.socket.interface_label();
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let revents = match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => {
                return Ok(if self.has_pending() {
                    Readiness::Readable
                } else {
                    Readiness::TimedOut
                });
            }
            Ok(_) => fds[0].revents().unwrap_or(PollFlags::empty()),
            Err(Errno::EINTR) => return Ok(Readiness::Interrupted),
            Err(errno) => {
                return Err(RingError::Io {
                    syscall: "poll",
                    interface,
                    errno,
                });
            }
        };
        if revents.contains(PollFlags::POLLERR) {
            let pending =
                nix::sys::socket::getsockopt(&self.socket, nix::sys::socket::sockopt::SocketError)
                    .map_err(|errno| RingError::Io {
                        syscall: "getsockopt(SO_ERROR)",
                        interface: interface.clone(),
                        errno,
                    })?;
            return match Errno::from_raw(pending) {
                Errno::ENETDOWN => Ok(Readiness::InterfaceDown),
                Errno::UnknownErrno => Ok(Readiness::Readable),
                errno => Err(RingError::Io {
                    syscall: "poll",
                    interface,
                    errno,
                }),
            };
        }
        Ok(Readiness::Readable)
    }

    /// Kernel counters since the last call (`PACKET_STATISTICS` is clear-on-read).
    pub fn statistics(&mut self) -> Result<RingStats, SocketError> {
        self.stats.read(&self.socket)
    }

    /// Everything [`RxRing::statistics`] has returned so far.
    pub fn total_statistics(&self) -> RingStats {
        self.stats.total()
    }

    /// What the ring noticed itself (empty blocks, clamped or malformed frames, sequence gaps).
    pub fn counters(&self) -> RxCounters {
        self.counters
    }

    /// The ring version.
    pub fn version(&self) -> RingVersion {
        self.version
    }

    /// The ring layout.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The socket, for options that may change at any time (memberships, ignore-outgoing).
    pub fn socket(&self) -> &PacketSocket {
        &self.socket
    }

    /// The group joined through this handle or the builder (see also
    /// [`RxRing::read_fanout_membership`]).
    pub fn fanout(&self) -> Option<FanoutMembership> {
        self.fanout
    }

    /// Joins a fanout group now (the ring is bound, so the kernel accepts it); a worker can load
    /// its share of work first and join when ready.
    pub fn join_fanout(&mut self, config: &FanoutConfig) -> Result<FanoutMembership, FanoutError> {
        let membership = fanout::join(&self.socket, config)?;
        self.fanout = Some(membership);
        Ok(membership)
    }

    /// Asks the kernel which group the socket is in (survives hand-off between processes).
    ///
    /// The kernel's answer for group 0 in hash mode without flags is the same as for no group;
    /// a ring that joined such a group through this handle or its builder reports it.
    pub fn read_fanout_membership(&self) -> Result<Option<FanoutMembership>, FanoutError> {
        fanout::membership_of(&self.socket, self.fanout)
    }

    /// Replaces the group's classic BPF steering program (cbpf mode; applies to every member).
    pub fn set_fanout_cbpf_program(&self, program: &BpfProgram) -> Result<(), FanoutError> {
        self.require_member()?;
        fanout::set_cbpf_program(&self.socket, program.instructions())
    }

    /// Replaces the group's eBPF steering program (ebpf mode), given a loaded program's fd.
    pub fn set_fanout_ebpf_program(&self, program: BorrowedFd<'_>) -> Result<(), FanoutError> {
        self.require_member()?;
        fanout::set_ebpf_program(&self.socket, program)
    }

    /// How many packets this member passed to others (groups with the rollover flag or mode).
    pub fn rollover_statistics(&self) -> Result<RolloverStats, FanoutError> {
        fanout::rollover_stats(&self.socket)
    }

    fn require_member(&self) -> Result<(), FanoutError> {
        match fanout::membership_of(&self.socket, self.fanout)? {
            Some(_) => Ok(()),
            None => Err(FanoutError::Program {
                interface: self.socket.interface_label(),
                errno: Errno::EINVAL,
            }),
        }
    }

    /// Replaces the socket filter. The ring is bound: frames already in it were not filtered.
    ///
    /// A ring built to ignore outgoing frames on a kernel without `PACKET_IGNORE_OUTGOING` keeps
    /// dropping them: the program is prefixed as the builder did. A ring resumed from a hand-off
    /// does not know it was built so: give it [`BpfProgram::dropping_outgoing`] there.
    pub fn set_filter(&self, program: &BpfProgram) -> Result<(), BpfError> {
        if self.drops_outgoing {
            bpf::attach_filter(self.socket.as_fd(), &program.dropping_outgoing()?)
        } else {
            bpf::attach_filter(self.socket.as_fd(), program)
        }
    }

    /// Removes the socket filter.
    pub fn detach_filter(&self) -> Result<(), BpfError> {
        bpf::detach_filter(self.socket.as_fd())
    }

    /// Locks the socket filter against replacement (e.g. before dropping privileges).
    pub fn lock_filter(&self) -> Result<(), BpfError> {
        bpf::lock_filter(self.socket.as_fd())
    }
}

impl AsFd for RxRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// A block (V3) or run of frames (V2) lent out by the ring; dropping it hands the memory back
/// to the kernel (TP_STATUS_KERNEL with release ordering).
#[derive(Debug)]
pub struct Block<'r> {
    ring: &'r mut RxRing,
    /// Always `Some` until `Drop` takes it to hand the memory back.
    lent: Option<Lent>,
    tally: Cell<Tally>,
    counted: Cell<bool>,
}

impl Block<'_> {
    fn lent(&self) -> &Lent {
        self.lent
            .as_ref()
            .expect("a Block holds its lent memory until Drop")
    }

    /// The frames, in arrival order, read in place.
    pub fn frames(&self) -> Frames<'_> {
        let map = &self.ring.map;
        let geometry = &self.ring.geometry;
        let inner = match self.lent() {
            Lent::V3(info) => Inner::V3(v3::frames(map, geometry, info, self.ring.rx_hash)),
            Lent::V2(run) => Inner::V2(v2::frames(map, geometry, run)),
        };
        let tally = (!self.counted.replace(true)).then_some(&self.tally);
        Frames { inner, tally }
    }

    /// Number of frames the kernel put in the block.
    pub fn len(&self) -> usize {
        match self.lent() {
            Lent::V3(info) => info.num_pkts as usize,
            Lent::V2(run) => run.count as usize,
        }
    }

    /// Always false: empty V3 blocks are skipped and V2 runs have at least one frame.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the V3 retire timer handed the block over before it was full
    /// (TP_STATUS_BLK_TMO); always false on V2.
    pub fn retired_by_timeout(&self) -> bool {
        match self.lent() {
            Lent::V3(info) => info.status & libc::TP_STATUS_BLK_TMO != 0,
            Lent::V2(_) => false,
        }
    }

    /// The V3 block sequence number (starts at 1, rises by 1 per block); `None` on V2.
    pub fn seq_num(&self) -> Option<u64> {
        match self.lent() {
            Lent::V3(info) => Some(info.seq_num),
            Lent::V2(_) => None,
        }
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        let ring = &mut *self.ring;
        let tally = self.tally.get();
        ring.counters.truncated += tally.truncated;
        ring.counters.malformed += tally.malformed;
        ring.counters.blocks += 1;
        match self.lent.take() {
            Some(Lent::V3(info)) => {
                ring.counters.frames += u64::from(info.num_pkts);
                ring.cursor = (info.index + 1) % ring.geometry.block_count();
                v3::release(&ring.map, &ring.geometry, info);
            }
            Some(Lent::V2(run)) => {
                ring.counters.frames += u64::from(run.count);
                ring.cursor = (run.first + run.count) % v2::frame_count(&ring.geometry);
                v2::release(&ring.map, &ring.geometry, run);
            }
            None => {}
        }
    }
}

#[derive(Debug)]
enum Inner<'b> {
    V3(v3::V3Frames<'b>),
    V2(v2::V2Frames<'b>),
}

/// Iterator over the frames of a [`Block`]; malformed headers are skipped and counted in
/// [`RxCounters::malformed`] (in a V3 block, with the rest of the block).
#[derive(Debug)]
pub struct Frames<'b> {
    inner: Inner<'b>,
    tally: Option<&'b Cell<Tally>>,
}

impl<'b> Iterator for Frames<'b> {
    type Item = Frame<'b>;

    fn next(&mut self) -> Option<Frame<'b>> {
        loop {
            let next = match &mut self.inner {
                Inner::V3(frames) => frames.next()?,
                Inner::V2(frames) => frames.next()?,
            };
            let mut tally = self.tally.map(Cell::get).unwrap_or_default();
            let frame = match next {
                Ok(frame) => {
                    tally.truncated += u64::from(frame.is_truncated());
                    Some(frame)
                }
                // A V3 walk ends at a bad header (the next offset is untrusted); a V2 slot is
                // independent of its neighbours, so the walk goes on.
                Err(_) => {
                    tally.malformed += 1;
                    None
                }
            };
            if let Some(cell) = self.tally {
                cell.set(tally);
            }
            if frame.is_some() {
                return frame;
            }
        }
    }
}
