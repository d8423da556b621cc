//! The `[autoscale]` section: the worker set follows the load.

use serde::{Deserialize, Serialize};

/// Grow the worker set by one when the workers stay busy, shrink it by one when the rest could
/// carry the load easily. The CPUs come from `relay.workers`, the relay starts with
/// `min_workers` of them, and each change is a `ctl workers set` (no loss on flows whose rings
/// have room for the moment a moved worker restarts).
///
/// Busy is the CPU time a worker process used over the last second, as a fraction of one CPU
/// (`/proc/<pid>/stat`), so it counts the relay's own work, not the kernel's softirq work on its
/// behalf, and it cannot be used with busy polling, which keeps a worker at 100 %.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleSection {
    /// Workers to start with and never to go below.
    #[serde(default = "defaults::min_workers")]
    pub min_workers: u32,
    /// Workers never to go above; by default every CPU of `relay.workers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<u32>,
    /// Add a worker when the mean busy fraction stays at or above this.
    #[serde(default = "defaults::busy_above")]
    pub busy_above: f64,
    /// Remove a worker when the load spread over one fewer worker stays below this.
    #[serde(default = "defaults::idle_below")]
    pub idle_below: f64,
    /// How many consecutive one-second samples a condition must hold.
    #[serde(default = "defaults::sustain_s")]
    pub sustain_s: u32,
    /// Seconds after a change before the next one may start.
    #[serde(default = "defaults::cooldown_s")]
    pub cooldown_s: u32,
}

mod defaults {
    pub(super) fn min_workers() -> u32 {
        1
    }
    pub(super) fn busy_above() -> f64 {
        0.75
    }
    pub(super) fn idle_below() -> f64 {
        0.25
    }
    pub(super) fn sustain_s() -> u32 {
        5
    }
    pub(super) fn cooldown_s() -> u32 {
        10
    }
}

impl AutoscaleSection {
    /// What is wrong with the section, if anything, given the CPUs `relay.workers` names and
    /// whether the ring busy-polls.
    pub fn check(&self, cpus: usize, busy_polling: bool) -> Result<(), String> {
        if busy_polling {
            return Err(
                "autoscale measures the CPU time workers use, and a busy-polling \
                        worker (ring.busy_poll_us > 0) always uses all of its CPU"
                    .into(),
            );
        }
        if self.min_workers == 0 {
            return Err("autoscale.min_workers: a relay needs at least one worker".into());
        }
        let max = self.max_workers.unwrap_or(cpus as u32);
        if max < self.min_workers || max as usize > cpus {
            return Err(format!(
                "autoscale: min_workers {} and max_workers {max} must satisfy min <= max <= {cpus} \
                 (the CPUs of relay.workers)",
                self.min_workers
            ));
        }
        let fraction = |value: f64| value.is_finite() && value > 0.0 && value <= 1.0;
        if !fraction(self.busy_above) || !fraction(self.idle_below) {
            return Err(
                "autoscale.busy_above and idle_below are fractions of a CPU in (0, 1]".into(),
            );
        }
        if self.idle_below >= self.busy_above {
            return Err(format!(
                "autoscale.idle_below ({}) must be below busy_above ({}), or the relay would \
                 add and remove workers in turn",
                self.idle_below, self.busy_above
            ));
        }
        if self.sustain_s == 0 {
            return Err("autoscale.sustain_s: at least one sample".into());
        }
        Ok(())
    }

    /// The most workers, given the CPUs of `relay.workers`.
    pub fn max(&self, cpus: usize) -> usize {
        self.max_workers.map_or(cpus, |max| max as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Result<AutoscaleSection, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_refusals() {
        let plain = section("").expect("every field has a default");
        assert_eq!((plain.min_workers, plain.busy_above), (1, 0.75));
        assert_eq!(plain.check(2, false), Ok(()));
        assert_eq!(plain.max(2), 2);
        assert!(plain.check(2, true).unwrap_err().contains("busy"));
        let flapping = section("busy_above = 0.3\nidle_below = 0.5").expect("parses");
        assert!(flapping.check(2, false).unwrap_err().contains("idle_below"));
        let too_many = section("max_workers = 3").expect("parses");
        assert!(too_many.check(2, false).is_err());
        assert!(
            section("min_workers = 0")
                .expect("parses")
                .check(2, false)
                .is_err()
        );
        assert!(
            section("busy_above = 1.5")
                .expect("parses")
                .check(2, false)
                .is_err()
        );
        assert!(
            section("surprise = 1").is_err(),
            "unknown fields are refused"
        );
    }
}
