//! `[autoscale]` verdicts: fold each second's busy fractions into a streak and decide, with
//! hysteresis (two thresholds, a sustain window and a cooldown), when the default class grows
//! or shrinks by one worker.

use crate::config::AutoscaleSection;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the autoscaler remembers between samples.
#[derive(Debug)]
pub(crate) struct Autoscaler {
    section: AutoscaleSection,
    /// The CPUs it may use, in the order it adds them.
    pool: Vec<u32>,
    /// CPU ticks each worker process had used at the last sample, by pid.
    last: BTreeMap<u32, (u64, Instant)>,
    /// Consecutive samples calling for one more worker (positive) or one fewer (negative).
    streak: i32,
    /// When the last change started.
    changed: Option<Instant>,
}

/// What a sample calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// One more worker.
    Grow,
    /// One fewer.
    Shrink,
    /// No change.
    Stay,
}

impl Autoscaler {
    /// An autoscaler over `pool`, the CPUs of `relay.workers`.
    pub(crate) fn new(section: AutoscaleSection, pool: Vec<u32>) -> Self {
        Autoscaler {
            section,
            pool,
            last: BTreeMap::new(),
            streak: 0,
            changed: None,
        }
    }

    /// The busy fraction of process `pid`, which had used `ticks` of CPU time by `now`, since
    /// its last sample; `None` on its first one.
    pub(crate) fn busy(
        &mut self,
        pid: u32,
        ticks: u64,
        ticks_per_second: u64,
        now: Instant,
    ) -> Option<f64> {
        let previous = self.last.insert(pid, (ticks, now))?;
        let elapsed = now.duration_since(previous.1).as_secs_f64();
        (elapsed > 0.0)
            .then(|| ticks.saturating_sub(previous.0) as f64 / ticks_per_second as f64 / elapsed)
    }

    /// Forgets the samples of processes not in `pids` (they exited), and, with `interrupted`,
    /// the streak: a sample taken while a worker starts or a change is in flight says nothing.
    pub(crate) fn keep_only(&mut self, pids: &[u32], interrupted: bool) {
        self.last.retain(|pid, _| pids.contains(pid));
        if interrupted {
            self.streak = 0;
        }
    }

    /// Folds one sample (each serving worker's busy fraction) into the streak and says whether
    /// it is time to change, given `workers` serving now.
    pub(crate) fn judge(&mut self, busy: &[f64], now: Instant) -> Verdict {
        let workers = busy.len();
        let cooling = self.changed.is_some_and(|at| {
            now.duration_since(at) < Duration::from_secs(u64::from(self.section.cooldown_s))
        });
        let total: f64 = busy.iter().sum();
        let grow = workers < self.section.max(self.pool.len())
            && total / workers.max(1) as f64 >= self.section.busy_above;
        let shrink = workers > self.section.min_workers as usize
            && total / ((workers.max(2) - 1) as f64) < self.section.idle_below;
        self.streak = match (grow, shrink) {
            (true, _) => self.streak.max(0) + 1,
            (_, true) => self.streak.min(0) - 1,
            _ => 0,
        };
        let sustained = self.streak.unsigned_abs() >= self.section.sustain_s;
        if cooling || workers == 0 || !sustained {
            return Verdict::Stay;
        }
        let verdict = if self.streak > 0 {
            Verdict::Grow
        } else {
            Verdict::Shrink
        };
        self.streak = 0;
        self.changed = Some(now);
        verdict
    }

    /// The worker set one step from `current` in the direction of `verdict`.
    pub(crate) fn next_set(&self, current: &[u32], verdict: Verdict) -> Option<Vec<u32>> {
        let mut cpus = current.to_vec();
        match verdict {
            Verdict::Grow => cpus.push(*self.pool.iter().find(|cpu| !current.contains(cpu))?),
            Verdict::Shrink => {
                cpus.pop()?;
            }
            Verdict::Stay => return None,
        }
        Some(cpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaler(sustain: u32) -> Autoscaler {
        let section = AutoscaleSection {
            min_workers: 1,
            max_workers: None,
            busy_above: 0.75,
            idle_below: 0.25,
            sustain_s: sustain,
            cooldown_s: 10,
        };
        Autoscaler::new(section, vec![0, 1, 2])
    }

    #[test]
    fn grows_after_a_sustained_load_and_then_cools_down() {
        let mut scaler = scaler(3);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(scaler.judge(&[0.9], at(1)), Verdict::Stay);
        assert_eq!(scaler.judge(&[0.9], at(2)), Verdict::Stay);
        assert_eq!(
            scaler.judge(&[0.5], at(3)),
            Verdict::Stay,
            "a dip resets the streak"
        );
        for s in 4..6 {
            assert_eq!(scaler.judge(&[0.9], at(s)), Verdict::Stay);
        }
        assert_eq!(scaler.judge(&[0.9], at(6)), Verdict::Grow);
        // Busy again right away: the cooldown holds the next change.
        for s in 7..16 {
            assert_eq!(
                scaler.judge(&[0.8, 0.8], at(s)),
                Verdict::Stay,
                "second {s}"
            );
        }
        assert_eq!(scaler.judge(&[0.8, 0.8], at(16)), Verdict::Grow);
        assert_eq!(scaler.next_set(&[0, 1], Verdict::Grow), Some(vec![0, 1, 2]));
        assert_eq!(
            scaler.next_set(&[0, 1, 2], Verdict::Grow),
            None,
            "pool used up"
        );
    }

    #[test]
    fn shrinks_only_when_one_fewer_would_still_be_idle() {
        let mut scaler = scaler(2);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // 0.15 + 0.15 on one worker would be 0.30: above idle_below, so stay.
        for s in 1..5 {
            assert_eq!(scaler.judge(&[0.15, 0.15], at(s)), Verdict::Stay);
        }
        assert_eq!(scaler.judge(&[0.1, 0.1], at(5)), Verdict::Stay);
        assert_eq!(scaler.judge(&[0.1, 0.1], at(6)), Verdict::Shrink);
        assert_eq!(scaler.next_set(&[0, 1], Verdict::Shrink), Some(vec![0]));
        // One worker is the minimum.
        let mut lone = self::scaler(1);
        assert_eq!(lone.judge(&[0.0], at(1)), Verdict::Stay);
    }
}
