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

use super::contention::{self, Contention};
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

    /// Waits until a ring has something or the control socket is readable; returns whether the
    /// control socket is. Returns at once, without a syscall, while a ring has frames waiting
    /// and the control socket was looked at less than [`CONTROL_EVERY`] ago.
    pub(super) fn wait(
        &mut self,
        control: &UnixStream,
        rx: &[(u32, RxRing)],
    ) -> Result<bool, Errno> {
        let mut pending = any_pending(rx);
        if !pending && let Some(budget) = self.spin_budget() {
            pending = spin(rx, budget);
            self.counts.spin_hits += u64::from(pending);
        }
        if pending && self.control_checked.elapsed() < CONTROL_EVERY {
            return Ok(false);
        }
        let mut fds: SmallVec<[PollFd<'_>; 8]> = SmallVec::new();
        fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        for (_, ring) in rx {
            fds.push(PollFd::new(ring.socket().as_fd(), PollFlags::POLLIN));
        }
        let timeout = if pending {
            PollTimeout::ZERO
        } else {
            self.counts.sleeps += 1;
            PollTimeout::from(POLL_TIMEOUT_MS)
        };
        self.counts.polls += 1;
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno),
        }
        self.control_checked = Instant::now();
        let control = !fds[0].revents().unwrap_or(PollFlags::empty()).is_empty();
        self.check_contention();
        Ok(control)
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
        let readable = waiter.wait(&ours, &[]).expect("poll on a socket pair");
        assert!(readable);
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
