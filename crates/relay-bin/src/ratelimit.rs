//! Rate limiting for log lines: at most one line per kind of event and per worker in a window,
//! and a count of the lines held back, so a crash loop or a flood cannot fill the disk while
//! the first occurrence and the volume of the rest are still told.
//!
//! Pure: time is passed in, so the behaviour is tested without clocks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a rate-limited line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A worker process exited.
    Exit,
    /// A worker process was started again.
    Restart,
    /// A worker process could not start.
    StartFailure,
    /// A worker's table differed from the supervisor's and was resent.
    Drift,
    /// The kernel dropped frames on a worker's full receive ring.
    RingDrops,
    /// A change to the rules was refused.
    Refused,
}

impl Kind {
    /// How a held-back line is named in the "suppressed" summary.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Exit => "worker exit",
            Kind::Restart => "worker restart",
            Kind::StartFailure => "worker start failure",
            Kind::Drift => "table drift",
            Kind::RingDrops => "ring drop",
            Kind::Refused => "refused change",
        }
    }
}

/// Remembers, per (kind, worker CPU), when a line was last let through and how many were held
/// back since.
#[derive(Debug)]
pub struct RateLimiter {
    window: Duration,
    entries: BTreeMap<(Kind, u32), Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    logged_at: Instant,
    held: u64,
}

impl RateLimiter {
    /// At most one line per kind and worker every `window`.
    pub fn new(window: Duration) -> Self {
        RateLimiter {
            window,
            entries: BTreeMap::new(),
        }
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether a line of `kind` about worker `cpu` may be written at `now`; if so, how many such
    /// lines were held back since the last one written (to mention them in it).
    pub fn allow(&mut self, kind: Kind, cpu: u32, now: Instant) -> Option<u64> {
        match self.entries.get_mut(&(kind, cpu)) {
            Some(entry) if now < entry.logged_at + self.window => {
                entry.held += 1;
                None
            }
            Some(entry) => {
                let held = entry.held;
                *entry = Entry {
                    logged_at: now,
                    held: 0,
                };
                Some(held)
            }
            None => {
                self.entries.insert(
                    (kind, cpu),
                    Entry {
                        logged_at: now,
                        held: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// Lines held back whose window has passed, as (kind, cpu, count): the caller writes one
    /// summary line for each, which counts as that window's line.
    pub fn expired(&mut self, now: Instant) -> Vec<(Kind, u32, u64)> {
        let window = self.window;
        self.entries
            .iter_mut()
            .filter(|(_, entry)| entry.held > 0 && now >= entry.logged_at + window)
            .map(|(&(kind, cpu), entry)| {
                let held = entry.held;
                *entry = Entry {
                    logged_at: now,
                    held: 0,
                };
                (kind, cpu, held)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn one_line_per_kind_and_worker_per_window() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut limiter = RateLimiter::new(WINDOW);
        assert_eq!(limiter.allow(Kind::Exit, 0, at(0)), Some(0));
        assert_eq!(limiter.allow(Kind::Exit, 0, at(1)), None);
        assert_eq!(limiter.allow(Kind::Exit, 0, at(9)), None);
        // Another worker and another kind have their own budget.
        assert_eq!(limiter.allow(Kind::Exit, 1, at(1)), Some(0));
        assert_eq!(limiter.allow(Kind::Drift, 0, at(1)), Some(0));
        // After the window, the next line tells how many were held back.
        assert_eq!(limiter.allow(Kind::Exit, 0, at(10)), Some(2));
        assert_eq!(limiter.allow(Kind::Exit, 0, at(11)), None);
    }

    #[test]
    fn held_back_lines_are_summarised_once_their_window_passed() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut limiter = RateLimiter::new(WINDOW);
        limiter.allow(Kind::RingDrops, 2, at(0));
        for second in 1..5 {
            assert_eq!(limiter.allow(Kind::RingDrops, 2, at(second)), None);
        }
        assert_eq!(limiter.expired(at(9)), []);
        assert_eq!(limiter.expired(at(10)), [(Kind::RingDrops, 2, 4)]);
        // The summary was that window's line: nothing more to tell, and the next event waits.
        assert_eq!(limiter.expired(at(30)), []);
        assert_eq!(limiter.allow(Kind::RingDrops, 2, at(15)), None);
        assert_eq!(limiter.allow(Kind::RingDrops, 2, at(20)), Some(1));
    }
}
