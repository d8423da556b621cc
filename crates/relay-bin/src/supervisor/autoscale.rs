//! `[autoscale]`: once a second, measure how busy the workers are and grow or shrink the worker
//! set by one, with hysteresis (two thresholds, a sustain window and a cooldown).

use super::setup::World;
use crate::config::AutoscaleSection;
use crate::config::WorkersSetting;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the autoscaler remembers between samples.
#[derive(Debug)]
pub(super) struct Autoscaler {
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
pub(super) enum Verdict {
    Grow,
    Shrink,
    Stay,
}

impl Autoscaler {
    /// An autoscaler over `pool`, the CPUs of `relay.workers`.
    pub(super) fn new(section: AutoscaleSection, pool: Vec<u32>) -> Self {
        Autoscaler {
            section,
            pool,
            last: BTreeMap::new(),
            streak: 0,
            changed: None,
        }
    }

    /// The busy fraction of process `pid` since its last sample; `None` on its first one or
    /// when it cannot be read (it just exited).
    fn busy(&mut self, pid: u32, ticks_per_second: u64, now: Instant) -> Option<f64> {
        let ticks = cpu_ticks(pid)?;
        let previous = self.last.insert(pid, (ticks, now))?;
        let elapsed = now.duration_since(previous.1).as_secs_f64();
        (elapsed > 0.0)
            .then(|| ticks.saturating_sub(previous.0) as f64 / ticks_per_second as f64 / elapsed)
    }

    /// Folds one sample (each serving worker's busy fraction) into the streak and says whether
    /// it is time to change, given `workers` serving now.
    pub(super) fn judge(&mut self, busy: &[f64], now: Instant) -> Verdict {
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
    fn next_set(&self, current: &[u32], verdict: Verdict) -> Option<Vec<u32>> {
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

/// User plus system time of process `pid`, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

impl World {
    /// One autoscale step, on the counters' one-second tick.
    pub(super) fn autoscale(&mut self, now: Instant) {
        let in_flight = self.resize.is_some() || !self.pending.is_empty();
        let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .map_or(100, |ticks| ticks.max(1) as u64);
        // Only the default class grows and shrinks: the named ones have the CPUs they name.
        let pids: Vec<u32> = self
            .class_slots(0)
            .filter(|slot| slot.state_name() == "ready")
            .filter_map(|slot| slot.process.as_ref().map(|p| p.child.id()))
            .collect();
        let current: Vec<u32> = self.class_slots(0).map(|slot| slot.cpu).collect();
        let active = current.len();
        let Some(scaler) = self.autoscaler.as_mut() else {
            return;
        };
        let busy: Vec<f64> = pids
            .iter()
            .filter_map(|&pid| scaler.busy(pid, ticks_per_second, now))
            .collect();
        scaler.last.retain(|pid, _| pids.contains(pid));
        if in_flight || busy.len() != active {
            // A worker starting, restarting or just started, or a change in flight: no sample.
            scaler.streak = 0;
            return;
        }
        let verdict = scaler.judge(&busy, now);
        let shares: Vec<String> = busy.iter().map(|b| format!("{:.1}%", b * 100.0)).collect();
        log::debug!("autoscale: workers busy [{}]", shares.join(", "));
        let Some(cpus) = scaler.next_set(&current, verdict) else {
            return;
        };
        log::info!(
            "autoscale: workers busy [{}]: {} to cpus {cpus:?}",
            shares.join(", "),
            if verdict == Verdict::Grow {
                "growing"
            } else {
                "shrinking"
            }
        );
        if let Err(error) = self.begin_resize(0, &WorkersSetting::Cpus(cpus)) {
            log::warn!("autoscale: cannot change the worker set: {error}");
        }
        self.advance_resize();
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

    #[test]
    fn reads_this_process_cpu_time() {
        let before = cpu_ticks(std::process::id()).expect("own /proc stat");
        let spin = Instant::now();
        let mut x = 0u64;
        let mut after = before;
        // Spinning uses CPU time: the count must rise (within 5 s even on a crowded machine).
        while after == before && spin.elapsed() < Duration::from_secs(5) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            after = cpu_ticks(std::process::id()).expect("own /proc stat");
        }
        assert!(
            after > before,
            "{before} -> {after} after {:?}",
            spin.elapsed()
        );
    }
}
