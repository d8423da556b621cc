//! Counters of rules removed at run time: kept for [`KEPT_FOR`], so that every reader (`ctl
//! stats`, a metrics scrape, the summary) sees their final counts, then forgotten, so that a
//! relay that saw a million rules come and go does not keep a million counters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a removed rule's counters stay after the supervisor first finds the rule gone:
/// several scrape intervals of any usual Prometheus setup.
pub(crate) const KEPT_FOR: Duration = Duration::from_secs(300);

/// Since when each counted rule has not been running.
#[derive(Debug, Default)]
pub(crate) struct RemovedRules {
    since: HashMap<String, Instant>,
}

impl RemovedRules {
    /// Given the names of the rules that have counters but are not running (nor waiting) at
    /// `now`, returns those that have been so for [`KEPT_FOR`]: their counters go. A rule that
    /// runs again (added anew under its name) starts over.
    pub(crate) fn expired<'a>(
        &mut self,
        now: Instant,
        not_running: impl Iterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut seen: HashMap<String, Instant> = HashMap::new();
        for name in not_running {
            let since = self.since.get(name).copied().unwrap_or(now);
            seen.insert(name.to_owned(), since);
        }
        self.since = seen;
        let expired: Vec<String> = self
            .since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= KEPT_FOR)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &expired {
            self.since.remove(name);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_rule_is_forgotten_after_the_retention_and_not_before() {
        let start = Instant::now();
        let mut removed = RemovedRules::default();
        assert!(removed.expired(start, ["gone"].into_iter()).is_empty());
        let almost = start + KEPT_FOR - Duration::from_secs(1);
        assert!(removed.expired(almost, ["gone"].into_iter()).is_empty());
        assert_eq!(
            removed.expired(start + KEPT_FOR, ["gone", "later"].into_iter()),
            vec!["gone".to_owned()]
        );
        // Once forgotten it has no counters, so it is not passed in again.
        assert!(removed.expired(start + KEPT_FOR * 2, ["later"].into_iter()) == vec!["later"]);
    }

    #[test]
    fn a_rule_that_runs_again_starts_over() {
        let start = Instant::now();
        let mut removed = RemovedRules::default();
        removed.expired(start, ["back"].into_iter());
        // Running again: not among the names.
        removed.expired(start + KEPT_FOR / 2, std::iter::empty());
        assert!(
            removed
                .expired(start + KEPT_FOR, ["back"].into_iter())
                .is_empty(),
            "removed a second time, it is kept anew"
        );
    }
}
