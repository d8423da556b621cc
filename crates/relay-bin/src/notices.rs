//! The supervisor's log lines about workers, rate-limited: exits, restarts, start failures,
//! table drift and ring drop bursts each produce one line with the facts, at most one per kind
//! and worker every [`WINDOW`] (see [`crate::ratelimit`]); lines about no worker in particular
//! use [`NO_WORKER`].
//!
//! A refused change is another matter: its line is the only place the reason is told (for a
//! SIGHUP reload, the only answer there is), so it is held back only when it repeats the
//! previous refusal word for word within [`WINDOW`] ([`Notices::allow_unrepeated`]). A refused
//! reload is never held back.
//!
//! A ring drop burst is an increase of a worker's kernel drop counter (PACKET_STATISTICS: frames
//! the kernel could not put in the full receive ring) between two counter polls, one second
//! apart: it says which worker fell behind, by how much, and when.

use crate::ratelimit::{Kind, RateLimiter};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// At most one line per kind and worker in this time.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The "CPU" of lines about no worker in particular (a refused change).
pub const NO_WORKER: u32 = u32::MAX;

/// The limiter and what the drop detection remembers from the previous poll.
#[derive(Debug)]
pub struct Notices {
    limiter: RateLimiter,
    /// Per worker CPU: kernel drops and freezes at the previous poll, and when.
    last: BTreeMap<u32, (u64, u64, Instant)>,
    /// Per kind limited by its text: the last line written.
    repeats: BTreeMap<Kind, Repeat>,
}

/// A line written, and how many identical ones were held back since.
#[derive(Debug)]
struct Repeat {
    text: String,
    logged_at: Instant,
    held: u64,
}

impl Default for Notices {
    fn default() -> Self {
        Notices {
            limiter: RateLimiter::new(WINDOW),
            last: BTreeMap::new(),
            repeats: BTreeMap::new(),
        }
    }
}

impl Notices {
    /// Whether a line of `kind` about the worker on `cpu` may be written now; if so, what to
    /// append to it (the count of lines held back, if any).
    pub fn allow(&mut self, kind: Kind, cpu: u32) -> Option<String> {
        self.allow_at(kind, cpu, Instant::now())
    }

    fn allow_at(&mut self, kind: Kind, cpu: u32, now: Instant) -> Option<String> {
        self.limiter.allow(kind, cpu, now).map(|held| {
            if held == 0 {
                String::new()
            } else {
                format!(
                    " ({held} more like it suppressed in the last {} s)",
                    self.limiter.window().as_secs()
                )
            }
        })
    }

    /// Whether a line of `kind` saying `text` may be written now: always, unless it repeats the
    /// previous line of that kind word for word within [`WINDOW`]. If so, what to append to it
    /// (how many repeats were held back before it).
    pub fn allow_unrepeated(&mut self, kind: Kind, text: &str) -> Option<String> {
        self.allow_unrepeated_at(kind, text, Instant::now())
    }

    fn allow_unrepeated_at(&mut self, kind: Kind, text: &str, now: Instant) -> Option<String> {
        if let Some(last) = self.repeats.get_mut(&kind)
            && last.text == text
            && now < last.logged_at + WINDOW
        {
            last.held += 1;
            return None;
        }
        let suffix = match self.repeats.get(&kind) {
            Some(last) if last.held > 0 && last.text == text => format!(
                " ({} more like it suppressed in the last {} s)",
                last.held,
                WINDOW.as_secs()
            ),
            Some(last) if last.held > 0 => format!(
                " (the previous {} line was repeated {} more time(s))",
                kind.describe(),
                last.held
            ),
            _ => String::new(),
        };
        self.repeats.insert(
            kind,
            Repeat {
                text: text.to_owned(),
                logged_at: now,
                held: 0,
            },
        );
        Some(suffix)
    }

    /// Called after each counter poll with every worker's (CPU, kernel drops, freezes) since the
    /// relay started: logs the drop bursts and the summaries of held-back lines.
    pub fn tick(&mut self, now: Instant, workers: impl IntoIterator<Item = (u32, u64, u64)>) {
        for line in self.lines_at(now, workers) {
            log::warn!("{line}");
        }
    }

    fn lines_at(
        &mut self,
        now: Instant,
        workers: impl IntoIterator<Item = (u32, u64, u64)>,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        for (cpu, drops, freezes) in workers {
            let (last_drops, last_freezes, then) = self
                .last
                .insert(cpu, (drops, freezes, now))
                .unwrap_or((0, 0, now));
            let burst = drops.saturating_sub(last_drops);
            if burst == 0 {
                continue;
            }
            let new_freezes = freezes.saturating_sub(last_freezes);
            if let Some(held) = self.allow_at(Kind::RingDrops, cpu, now) {
                let over = now.saturating_duration_since(then).as_secs_f64();
                lines.push(format!(
                    "worker on cpu {cpu}: the kernel dropped {burst} frame(s){} because its \
                     receive ring was full ({drops} dropped and {freezes} freeze(s) since start; \
                     {new_freezes} new freeze(s)): the worker falls behind{held}",
                    if over > 0.0 {
                        format!(" in the last {over:.1} s")
                    } else {
                        String::new()
                    }
                ));
            }
        }
        for (kind, repeat) in &mut self.repeats {
            if repeat.held > 0 && now >= repeat.logged_at + WINDOW {
                lines.push(format!(
                    "{} more {} line(s) identical to the last one suppressed in the last {} s",
                    repeat.held,
                    kind.describe(),
                    WINDOW.as_secs()
                ));
                repeat.held = 0;
                repeat.logged_at = now;
            }
        }
        for (kind, cpu, held) in self.limiter.expired(now) {
            let about = if cpu == NO_WORKER {
                String::new()
            } else {
                format!(" about the worker on cpu {cpu}")
            };
            lines.push(format!(
                "{held} more {} line(s){about} suppressed in the last {} s",
                kind.describe(),
                self.limiter.window().as_secs()
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_burst_is_one_line_with_the_facts() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut notices = Notices::default();
        assert!(notices.lines_at(at(0), [(0, 0, 0), (1, 0, 0)]).is_empty());
        assert!(notices.lines_at(at(1), [(0, 0, 0), (1, 0, 0)]).is_empty());
        let lines = notices.lines_at(at(2), [(0, 0, 0), (1, 250, 3)]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0]
                .starts_with("worker on cpu 1: the kernel dropped 250 frame(s) in the last 1.0 s"),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains("250 dropped and 3 freeze(s) since start; 3 new"),
            "{}",
            lines[0]
        );
        // No increase, no line.
        assert!(notices.lines_at(at(3), [(1, 250, 3)]).is_empty());
    }

    #[test]
    fn a_drop_flood_is_one_line_per_window_and_a_summary() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut notices = Notices::default();
        let mut logged = Vec::new();
        for second in 0..=10 {
            logged.extend(notices.lines_at(at(second), [(0, 100 * (second + 1), 0)]));
        }
        // Second 0 logs; seconds 1..=9 are held back; at second 10 the window has passed, so
        // the burst is logged again, mentioning the 9 held back.
        assert_eq!(logged.len(), 2, "{logged:#?}");
        assert!(
            logged[1].ends_with("(9 more like it suppressed in the last 10 s)"),
            "{}",
            logged[1]
        );
    }

    #[test]
    fn refusals_are_held_back_only_when_they_repeat_word_for_word() {
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let mut notices = Notices::default();
        let mut allow =
            |text: &str, millis: u64| notices.allow_unrepeated_at(Kind::Refused, text, at(millis));
        assert_eq!(allow("no interface a", 0), Some(String::new()));
        // Another reason, at once: written.
        assert_eq!(allow("no interface b", 1), Some(String::new()));
        // The same reason again within the window: held back.
        assert_eq!(allow("no interface b", 2), None);
        assert_eq!(allow("no interface b", 3), None);
        // Another reason: written, and says the previous one repeated.
        assert_eq!(
            allow("no interface a", 4),
            Some(" (the previous refused change line was repeated 2 more time(s))".into())
        );
        assert_eq!(allow("no interface a", 5), None);
        // The same reason after the window: written, with the count.
        assert_eq!(
            allow("no interface a", 10_004),
            Some(" (1 more like it suppressed in the last 10 s)".into())
        );
        assert_eq!(allow("no interface a", 10_005), None);
        assert_eq!(
            notices.lines_at(at(20_005), []),
            ["1 more refused change line(s) identical to the last one suppressed in the last 10 s"]
        );
        assert!(notices.lines_at(at(40_000), []).is_empty());
    }

    #[test]
    fn held_back_lines_of_other_kinds_get_a_summary() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut notices = Notices::default();
        assert_eq!(notices.allow_at(Kind::Exit, 3, at(0)), Some(String::new()));
        assert_eq!(notices.allow_at(Kind::Exit, 3, at(1)), None);
        assert_eq!(notices.allow_at(Kind::Exit, 3, at(2)), None);
        assert!(notices.lines_at(at(5), []).is_empty());
        assert_eq!(
            notices.allow_at(Kind::Refused, NO_WORKER, at(0)),
            Some(String::new())
        );
        assert_eq!(notices.allow_at(Kind::Refused, NO_WORKER, at(1)), None);
        assert_eq!(
            notices.lines_at(at(10), []),
            [
                "2 more worker exit line(s) about the worker on cpu 3 suppressed in the last 10 s",
                "1 more refused change line(s) suppressed in the last 10 s"
            ]
        );
    }
}
