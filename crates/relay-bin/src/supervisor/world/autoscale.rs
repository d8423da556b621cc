//! `[autoscale]`: once a second, measure how busy the workers are and let the verdict
//! (`decide::autoscale`) grow or shrink the worker set by one.

use super::World;
use crate::config::WorkersSetting;
use crate::supervisor::decide::autoscale::Verdict;
use std::time::Instant;

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
            .filter(|slot| slot.life.is_ready())
            .filter_map(|slot| slot.pid())
            .collect();
        let current: Vec<u32> = self.class_slots(0).map(|slot| slot.cpu).collect();
        let active = current.len();
        let Some(scaler) = self.autoscaler.as_mut() else {
            return;
        };
        let busy: Vec<f64> = pids
            .iter()
            .filter_map(|&pid| scaler.busy(pid, cpu_ticks(pid)?, ticks_per_second, now))
            .collect();
        // A worker starting, restarting or just started, or a change in flight: no sample.
        let interrupted = in_flight || busy.len() != active;
        scaler.keep_only(&pids, interrupted);
        if interrupted {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
