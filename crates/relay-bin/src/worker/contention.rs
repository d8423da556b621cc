//! Whether a busy-polling worker has its CPU to itself, for it to stop spinning when it does not.
//!
//! A spinning worker never sleeps, so a task that wants the same CPU gets it only when the
//! worker's time slice ends, and then the worker waits out the other's slice before it sees its
//! ring again. With the benchmark's receiver floating onto the worker's CPU at 400k packets a
//! second, a spinning worker waited for its CPU 45 ms of every 100 ms (`run_delay` of its
//! `/proc/<pid>/schedstat`) and the relay's added p99 rose to hundreds of microseconds, where a
//! worker that sleeps in `poll` is woken ahead of such a task. At 1,000 packets a second on the
//! same machine it waited at most 1 ms in 100 ms.
//!
//! So there are two readings. While spinning, the worker's own waiting for its CPU over
//! [`SPIN_WINDOW`] (`/proc/thread-self/schedstat`, nanoseconds): more than [`PAUSE_ABOVE`] of
//! the window and spinning pauses. While paused the worker sleeps, and its own waiting no longer
//! shows the other tasks, so then it reads how much of the CPU they use: the CPU's busy time in
//! `/proc/stat` (user, nice, system, irq and softirq ticks; not idle, iowait or steal) less the
//! worker's own CPU time, over [`SHARE_WINDOW`] (ticks are 1/`_SC_CLK_TCK` s, so a shorter
//! window would be mostly rounding); below [`RESUME_BELOW`] spinning resumes.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::time::{Duration, Instant};

/// Window over which a spinning worker's waiting for its CPU is measured.
pub(super) const SPIN_WINDOW: Duration = Duration::from_millis(100);
/// Share of [`SPIN_WINDOW`] spent waiting for the CPU above which spinning pauses.
pub(super) const PAUSE_ABOVE: f64 = 0.10;
/// Window over which other tasks' use of a paused worker's CPU is measured.
pub(super) const SHARE_WINDOW: Duration = Duration::from_secs(1);
/// Other tasks' share of the CPU below which a paused worker spins again.
pub(super) const RESUME_BELOW: f64 = 0.05;
/// Bytes of `/proc/stat` read: the per-CPU lines come first, before the long `intr` line, and
/// take under 100 bytes each.
const STAT_BYTES: usize = 64 << 10;

/// A reading and when it was taken.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    value: u64,
}

/// The two readings of one worker's CPU; see the [module docs](self).
#[derive(Debug)]
pub(super) struct Contention {
    cpu: u32,
    stat: File,
    schedstat: File,
    buffer: Box<[u8]>,
    tick_ns: u64,
    /// The worker's waiting time (ns) at the start of the spinning window.
    waited: Option<Reading>,
    /// The CPU's busy ticks and the worker's CPU time (ns) at the start of the share window.
    share: Option<(Reading, u64)>,
}

impl Contention {
    /// Opens the files for the calling thread on `cpu`; `None` when one of them or the tick
    /// length cannot be read (then spinning never pauses).
    pub(super) fn open(cpu: u32) -> Option<Contention> {
        let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
        let tick_ns = 1_000_000_000u64.checked_div(u64::try_from(ticks_per_s).ok()?)?;
        let mut contention = Contention {
            cpu,
            stat: File::open("/proc/stat").ok()?,
            schedstat: File::open("/proc/thread-self/schedstat").ok()?,
            buffer: vec![0u8; STAT_BYTES].into_boxed_slice(),
            tick_ns,
            waited: None,
            share: None,
        };
        contention.start_waiting_window()?;
        contention.start_share_window()?;
        Some(contention)
    }

    /// Starts measuring the worker's waiting afresh (when spinning resumes).
    pub(super) fn start_waiting_window(&mut self) -> Option<()> {
        self.waited = Some(self.read_waited()?);
        Some(())
    }

    /// Starts measuring other tasks' use afresh (when spinning pauses).
    pub(super) fn start_share_window(&mut self) -> Option<()> {
        self.share = Some(self.read_share()?);
        Some(())
    }

    /// The share of the last [`SPIN_WINDOW`] the worker spent waiting for its CPU, once that
    /// much time has passed since the window started; `None` before, or when a read fails.
    pub(super) fn waiting(&mut self) -> Option<f64> {
        let start = self.waited?;
        if start.at.elapsed() < SPIN_WINDOW {
            return None;
        }
        let now = self.read_waited()?;
        self.waited = Some(now);
        Some(now.value.saturating_sub(start.value) as f64 / wall_ns(start.at, now.at))
    }

    /// Other tasks' share of the CPU over the last [`SHARE_WINDOW`], once that much time has
    /// passed since the window started; `None` before, or when a read fails.
    pub(super) fn others(&mut self) -> Option<f64> {
        let (start, start_own) = self.share?;
        if start.at.elapsed() < SHARE_WINDOW {
            return None;
        }
        let (now, own) = self.read_share()?;
        self.share = Some((now, own));
        let busy_ns = now.value.saturating_sub(start.value) * self.tick_ns;
        let others_ns = busy_ns.saturating_sub(own.saturating_sub(start_own));
        Some(others_ns as f64 / wall_ns(start.at, now.at))
    }

    fn read_waited(&mut self) -> Option<Reading> {
        let len = read_into(&self.schedstat, &mut self.buffer)?;
        let value = run_delay(&self.buffer[..len])?;
        Some(Reading {
            at: Instant::now(),
            value,
        })
    }

    /// The CPU's busy ticks, and the worker's own CPU time in nanoseconds.
    fn read_share(&mut self) -> Option<(Reading, u64)> {
        let own = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
        let own_ns = u64::try_from(own.tv_sec()).ok()? * 1_000_000_000
            + u64::try_from(own.tv_nsec()).ok()?;
        let len = read_into(&self.stat, &mut self.buffer)?;
        let value = busy_ticks(&self.buffer[..len], self.cpu)?;
        Some((
            Reading {
                at: Instant::now(),
                value,
            },
            own_ns,
        ))
    }
}

fn wall_ns(from: Instant, to: Instant) -> f64 {
    (to.duration_since(from).as_nanos() as f64).max(1.0)
}

/// Reads `file` from its start into `buffer` until the buffer is full or the file ends (procfs
/// hands out a read's worth at a time); the length read.
fn read_into(file: &File, buffer: &mut [u8]) -> Option<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(_) => return None,
        }
    }
    Some(filled)
}

/// The waiting time in a `schedstat` line: "run time, run delay, time slices", nanoseconds.
fn run_delay(schedstat: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(schedstat).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Busy ticks of `cpu` in `/proc/stat` text: user, nice, system, irq and softirq (fields 1-3
/// and 6-7 of its `cpuN` line). Allocates nothing: it runs in the worker.
fn busy_ticks(stat: &[u8], cpu: u32) -> Option<u64> {
    let text = std::str::from_utf8(stat).ok()?;
    let line = text.lines().find(|line| {
        line.split_whitespace()
            .next()
            .and_then(|label| label.strip_prefix("cpu"))
            .is_some_and(|number| number.parse() == Ok(cpu))
    })?;
    let mut fields = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse::<u64>());
    let mut next = || fields.next()?.ok();
    let (user, nice, system, _idle, _iowait, irq, softirq) = (
        next()?,
        next()?,
        next()?,
        next()?,
        next()?,
        next()?,
        next()?,
    );
    Some(user + nice + system + irq + softirq)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  381464 0 154862 3554054 6606 0 66861 346 0 0\n\
                        cpu0 159323 0 76687 1802113 1186 0 43488 134 0 0\n\
                        cpu1 222141 5 78175 1751940 5420 7 23373 212 0 0\n\
                        intr 1 2 3\n";

    #[test]
    fn busy_ticks_add_all_but_idle_iowait_and_steal() {
        assert_eq!(
            busy_ticks(STAT.as_bytes(), 0),
            Some(159_323 + 76_687 + 43_488)
        );
        assert_eq!(
            busy_ticks(STAT.as_bytes(), 1),
            Some(222_141 + 5 + 78_175 + 7 + 23_373)
        );
        assert_eq!(busy_ticks(STAT.as_bytes(), 2), None, "no such CPU");
        assert_eq!(busy_ticks(b"cpu0 1 2 3\n", 0), None, "too few fields");
        assert_eq!(
            busy_ticks(b"cpu10 1 2 3 4 5 6 7\n", 1),
            None,
            "cpu10 is not cpu1"
        );
    }

    #[test]
    fn run_delay_is_the_second_schedstat_field() {
        assert_eq!(run_delay(b"6380123 2155004 17\n"), Some(2_155_004));
        assert_eq!(run_delay(b"6380123\n"), None);
    }

    #[test]
    fn readings_wait_for_their_windows() {
        let cpu = nix::sched::sched_getcpu().expect("sched_getcpu") as u32;
        let Some(mut contention) = Contention::open(cpu) else {
            panic!("/proc/stat, /proc/thread-self/schedstat or CLK_TCK unreadable");
        };
        assert_eq!(
            contention.waiting(),
            None,
            "no spinning window has passed yet"
        );
        assert_eq!(contention.others(), None, "no share window has passed yet");
        std::thread::sleep(SPIN_WINDOW);
        let waiting = contention.waiting().expect("a spinning window has passed");
        assert!((0.0..=1.0).contains(&waiting), "{waiting}");
    }
}
