//! The `[autoscale]` section: the worker set follows the load.

use super::AutoscaleError;
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
    pub fn check(&self, cpus: usize, busy_polling: bool) -> Result<(), AutoscaleError> {
        if busy_polling {
            return Err(AutoscaleError::BusyPolling);
        }
        if self.min_workers == 0 {
            return Err(AutoscaleError::NoWorkers);
        }
        let max = self.max_workers.unwrap_or(cpus as u32);
        if max < self.min_workers || max as usize > cpus {
            return Err(AutoscaleError::Bounds {
                min: self.min_workers,
                max,
                cpus,
            });
        }
        let fraction = |value: f64| value.is_finite() && value > 0.0 && value <= 1.0;
        for (field, value) in [
            ("busy_above", self.busy_above),
            ("idle_below", self.idle_below),
        ] {
            if !fraction(value) {
                return Err(AutoscaleError::NotFraction { field, value });
            }
        }
        if self.idle_below >= self.busy_above {
            return Err(AutoscaleError::Flapping {
                idle_below: self.idle_below,
                busy_above: self.busy_above,
            });
        }
        if self.sustain_s == 0 {
            return Err(AutoscaleError::NoSample);
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

    fn section(text: &str) -> Result<AutoscaleSection, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_and_refusals() {
        let plain = section("").expect("every field has a default");
        assert_eq!((plain.min_workers, plain.busy_above), (1, 0.75));
        assert_eq!(plain.check(2, false), Ok(()));
        assert_eq!(plain.max(2), 2);
        assert_eq!(plain.check(2, true), Err(AutoscaleError::BusyPolling));
        let flapping = section("busy_above = 0.3\nidle_below = 0.5").expect("parses");
        assert_eq!(
            flapping.check(2, false),
            Err(AutoscaleError::Flapping {
                idle_below: 0.5,
                busy_above: 0.3
            })
        );
        let too_many = section("max_workers = 3").expect("parses");
        assert_eq!(
            too_many.check(2, false),
            Err(AutoscaleError::Bounds {
                min: 1,
                max: 3,
                cpus: 2
            })
        );
        assert_eq!(
            section("min_workers = 0").expect("parses").check(2, false),
            Err(AutoscaleError::NoWorkers)
        );
        let over = section("busy_above = 1.5").expect("parses").check(2, false);
        assert_eq!(
            over,
            Err(AutoscaleError::NotFraction {
                field: "busy_above",
                value: 1.5
            })
        );
        assert_eq!(
            over.expect_err("refused").to_string(),
            "autoscale.busy_above = 1.5: a fraction of a CPU in (0, 1]"
        );
        assert_eq!(
            section("sustain_s = 0").expect("parses").check(2, false),
            Err(AutoscaleError::NoSample)
        );
        assert!(
            section("surprise = 1").is_err(),
            "unknown fields are refused"
        );
    }
}
