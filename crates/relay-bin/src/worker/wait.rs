//! How a worker waits for frames: asleep in `poll(2)` on its rings and control socket, or, with
//! busy polling, spinning on the rings' next status word for a bounded time first.
//!
//! A sleeping worker is woken by the kernel when a frame lands: an inter-processor interrupt and
//! a context switch, tens of microseconds on a virtual machine, paid by every frame that finds
//! the worker asleep. Spinning pays with CPU time instead: the worker stays on its CPU, sees the
//! frame's status change within a cache-line transfer, and relays it at once.
//!
//! Spinning pays off only on a CPU the worker has to itself: while a spinning worker waits for
//! its CPU more than a tenth of the time, spinning pauses until other tasks leave the CPU alone
//! (see [`super::contention`]).
//!
//! Either way, while frames keep coming the loop makes no syscall to find them: a ring with
//! frames waiting is served without asking `poll`, and the control socket is looked at (with a
//! `poll` that does not sleep) at most every [`CONTROL_EVERY`].
//!
//! A ring socket's errors are taken, never spun on. When an input goes down the kernel
//! latches ENETDOWN on each of its packet sockets, and `poll` reports POLLERR for as long as an
//! error is latched: a ring is never read with `recv`, so only `SO_ERROR` clears it, and a loop
//! that ignored it would wake at once forever (a whole CPU, from the first down until the relay
//! exits). So on POLLERR the worker takes `SO_ERROR` and counts it by errno; the socket then
//! stays in the poll set, since the kernel hooks it in again when the link comes up and the
//! next block wakes it as before. A socket that still reports POLLERR or POLLHUP with no error
//! to take (a condition the worker cannot clear) is left out of `poll` for [`RING_MUTE`] and
//! then tried again: its ring is still served whenever the worker wakes for anything else, and
//! the bounded back-off costs at most that long a delay for its frames.

use super::contention::{self, Contention};
use super::errors::ErrnoCounts;
use fanout_core::RxRing;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use smallvec::SmallVec;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long the loop sleeps in `poll` when nothing arrives, so control messages are never
/// waited on for long even if their wake-up were missed.
const POLL_TIMEOUT_MS: u16 = 200;
/// Longest a control message waits while the rings keep the worker busy. Counter requests and
/// rule changes are answered within this; at full load it costs one non-sleeping `poll` per
/// this interval, a few per hundred thousand frames.
pub(super) const CONTROL_EVERY: Duration = Duration::from_millis(5);
/// How long a ring socket that reports POLLERR or POLLHUP without an error to take is left out
/// of `poll`: long enough that the worker sleeps (at most 7 wake-ups a second for it), short
/// enough that frames on a ring that recovered wait no longer than a V3 block's default retire
/// time would make them.
const RING_MUTE: Duration = Duration::from_millis(150);
/// Status checks between two readings of the clock while spinning.
const CHECKS_PER_CLOCK: u32 = 32;

/// Syscalls and wake-ups of the waiting, for the worker's exit log and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct WaitCounts {
    /// `poll` calls.
    pub(super) polls: u64,
    /// `poll` calls that could sleep (nothing was waiting in a ring).
    pub(super) sleeps: u64,
    /// Frames found by spinning, which would otherwise have cost a wake-up.
    pub(super) spin_hits: u64,
    /// Times spinning paused because other tasks used the CPU.
    pub(super) spin_pauses: u64,
}

/// What woke a wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Woken {
    /// The control socket has something to read (or reported an error or hang-up, which the
    /// read will tell).
    pub(super) control: bool,
    /// The control socket takes more bytes (asked for only while a reply waits to be written).
    pub(super) writable: bool,
}

/// The errors of one receive ring's socket, and whether it is left out of `poll` for now.
#[derive(Debug, Clone, Default)]
pub(super) struct RingHealth {
    /// Errors taken with `SO_ERROR`, by errno.
    pub(super) errors: ErrnoCounts,
    /// Until when the socket is left out of `poll` (see [`RING_MUTE`]).
    muted_until: Option<Instant>,
    /// Times it was left out.
    pub(super) mutes: u64,
}

/// Whether spinning is paused, and what decides it.
#[derive(Debug)]
struct SpinGuard {
    contention: Contention,
    paused: bool,
}

/// The waiting policy of one worker.
#[derive(Debug)]
pub(super) struct Waiter {
    cpu: u32,
    busy_poll: Option<Duration>,
    guard: Option<SpinGuard>,
    control_checked: Instant,
    counts: WaitCounts,
    /// Per receive ring, in the order of the rings waited on.
    rings: Vec<RingHealth>,
}

impl Waiter {
    /// A waiter on `cpu` that spins `busy_poll_us` microseconds (0: never) before it sleeps,
    /// while other tasks leave that CPU to it.
    pub(super) fn new(busy_poll_us: u32, cpu: u32) -> Self {
        let busy_poll = (busy_poll_us > 0).then(|| Duration::from_micros(u64::from(busy_poll_us)));
        let guard = busy_poll.and_then(|_| {
            let contention = Contention::open(cpu);
            if contention.is_none() {
                log::warn!(
                    "worker on cpu {cpu}: /proc/stat or /proc/thread-self/schedstat \
                     unreadable: busy polling goes on even while other tasks need this CPU"
                );
            }
            contention.map(|contention| SpinGuard {
                contention,
                paused: false,
            })
        });
        Waiter {
            cpu,
            busy_poll,
            guard,
            control_checked: Instant::now(),
            counts: WaitCounts::default(),
            rings: Vec::new(),
        }
    }

    /// How long to spin before sleeping: `None` without busy polling or while it is paused.
    fn spin_budget(&self) -> Option<Duration> {
        self.busy_poll
            .filter(|_| !self.guard.as_ref().is_some_and(|guard| guard.paused))
    }

    /// Pauses spinning when the worker waited too long for its CPU over the last window, and
    /// resumes it when other tasks leave the CPU alone again.
    fn check_contention(&mut self) {
        let cpu = self.cpu;
        let Some(guard) = &mut self.guard else {
            return;
        };
        let contention = &mut guard.contention;
        if guard.paused {
            let Some(others) = contention.others() else {
                return;
            };
            if others < contention::RESUME_BELOW {
                guard.paused = false;
                contention.start_waiting_window();
                log::info!(
                    "worker on cpu {cpu}: other tasks used {:.0}% of this CPU over the last \
                     second: busy polling resumes",
                    others * 100.0
                );
            }
        } else {
            let Some(waiting) = contention.waiting() else {
                return;
            };
            if waiting > contention::PAUSE_ABOVE {
                guard.paused = true;
                contention.start_share_window();
                self.counts.spin_pauses += 1;
                log::info!(
                    "worker on cpu {cpu}: waited for this CPU {:.0}% of the last {} ms while \
                     spinning: busy polling pauses until other tasks use less than {:.0}% of it",
                    waiting * 100.0,
                    contention::SPIN_WINDOW.as_millis(),
                    contention::RESUME_BELOW * 100.0
                );
            }
        }
    }

    /// What the waiting has cost so far.
    pub(super) fn counts(&self) -> WaitCounts {
        self.counts
    }

    /// The errors of each receive ring's socket, in the order of the rings waited on.
    /// The rings changed: of those waited on so far, only those `kept` stay, in order (new
    /// ones follow them).
    pub(super) fn keep_rings(&mut self, kept: &[bool]) {
        let mut index = 0;
        self.rings.retain(|_| {
            let keep = kept.get(index).copied().unwrap_or(false);
            index += 1;
            keep
        });
    }

    pub(super) fn ring_health(&self) -> &[RingHealth] {
        &self.rings
    }

    /// Waits until a ring has something or the control socket is readable (or, with
    /// `want_write`, writable); says which of the control socket's two it was. Returns at
    /// once, without a syscall, while a ring has frames waiting and the control socket was
    /// looked at less than [`CONTROL_EVERY`] ago.
    pub(super) fn wait(
        &mut self,
        control: &UnixStream,
        want_write: bool,
        rx: &[(u32, RxRing)],
    ) -> Result<Woken, Errno> {
        let mut pending = any_pending(rx);
        if !pending && let Some(budget) = self.spin_budget() {
            pending = spin(rx, budget);
            self.counts.spin_hits += u64::from(pending);
        }
        if pending && self.control_checked.elapsed() < CONTROL_EVERY {
            return Ok(Woken::default());
        }
        if self.rings.len() != rx.len() {
            self.rings.resize_with(rx.len(), RingHealth::default);
        }
        let now = Instant::now();
        let mut timeout = Duration::from_millis(u64::from(POLL_TIMEOUT_MS));
        let mut fds: SmallVec<[PollFd<'_>; 8]> = SmallVec::new();
        let mut polled: SmallVec<[usize; 8]> = SmallVec::new();
        let mut interest = PollFlags::POLLIN;
        if want_write {
            interest |= PollFlags::POLLOUT;
        }
        fds.push(PollFd::new(control.as_fd(), interest));
        for (index, ((_, ring), health)) in rx.iter().zip(&mut self.rings).enumerate() {
            if let Some(until) = health.muted_until {
                if until > now {
                    timeout = timeout.min(until - now);
                    continue;
                }
                health.muted_until = None;
            }
            fds.push(PollFd::new(ring.socket().as_fd(), PollFlags::POLLIN));
            polled.push(index);
        }
        let timeout = if pending {
            PollTimeout::ZERO
        } else {
            self.counts.sleeps += 1;
            // Rounded up, so a muted ring's wait never ends just before it is due.
            let millis = timeout.as_micros().div_ceil(1000);
            PollTimeout::from(u16::try_from(millis).unwrap_or(POLL_TIMEOUT_MS))
        };
        self.counts.polls += 1;
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno),
        }
        self.control_checked = Instant::now();
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        let woken = Woken {
            control: revents.intersects(!PollFlags::POLLOUT),
            writable: revents.contains(PollFlags::POLLOUT),
        };
        let trouble = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
        let troubled: SmallVec<[(usize, PollFlags); 8]> = fds[1..]
            .iter()
            .zip(&polled)
            .filter_map(|(fd, &index)| {
                let revents = fd.revents().unwrap_or(PollFlags::empty());
                revents.intersects(trouble).then_some((index, revents))
            })
            .collect();
        drop(fds);
        for (index, revents) in troubled {
            self.ring_trouble(index, &rx[index], revents);
        }
        self.check_contention();
        Ok(woken)
    }

    /// Takes the error a ring socket reported and counts it, or leaves the socket out of
    /// `poll` for [`RING_MUTE`] when there is no error to take (see the module's docs).
    fn ring_trouble(&mut self, index: usize, (ifindex, ring): &(u32, RxRing), revents: PollFlags) {
        let cpu = self.cpu;
        let health = &mut self.rings[index];
        let taken = ring.socket().take_error();
        if let Ok(Some(errno)) = &taken {
            health.errors.add(*errno, 1);
            log::warn!(
                "worker on cpu {cpu}: the receive ring on interface #{ifindex} reported \
                 {errno:?} ({}); counted, and served again as soon as frames arrive",
                errno.desc()
            );
        }
        let persists = revents.intersects(PollFlags::POLLHUP | PollFlags::POLLNVAL)
            || !matches!(taken, Ok(Some(_)));
        if persists {
            if health.mutes == 0 {
                log::warn!(
                    "worker on cpu {cpu}: the receive ring on interface #{ifindex} reports \
                     {revents:?} with no error to take ({taken:?}): left out of poll for {} ms \
                     at a time while it lasts",
                    RING_MUTE.as_millis()
                );
            }
            health.mutes += 1;
            health.muted_until = Some(Instant::now() + RING_MUTE);
        }
    }
}

fn any_pending(rx: &[(u32, RxRing)]) -> bool {
    rx.iter().any(|(_, ring)| ring.has_pending())
}

/// Spins on the rings' next status words for up to `budget`; true as soon as one has a frame.
fn spin(rx: &[(u32, RxRing)], budget: Duration) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..CHECKS_PER_CLOCK {
            if any_pending(rx) {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= budget {
            return any_pending(rx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_polling_is_off_at_zero_and_on_otherwise() {
        assert_eq!(Waiter::new(0, 0).busy_poll, None);
        assert!(Waiter::new(0, 0).guard.is_none());
        let spinning = Waiter::new(250, 0);
        assert_eq!(spinning.busy_poll, Some(Duration::from_micros(250)));
        assert_eq!(spinning.spin_budget(), Some(Duration::from_micros(250)));
        assert!(spinning.guard.is_some(), "/proc/stat is readable here");
    }

    #[test]
    fn without_rings_a_wait_sleeps_until_the_control_socket_is_readable() {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        std::io::Write::write_all(&mut &theirs, b"x").expect("write to the pair");
        let mut waiter = Waiter::new(100, 0);
        let woken = waiter
            .wait(&ours, false, &[])
            .expect("poll on a socket pair");
        assert!(woken.control && !woken.writable, "{woken:?}");
        // Nothing in a ring: the spin ran out and the poll was allowed to sleep.
        assert_eq!(
            waiter.counts(),
            WaitCounts {
                polls: 1,
                sleeps: 1,
                spin_hits: 0,
                spin_pauses: 0
            }
        );
    }
}
