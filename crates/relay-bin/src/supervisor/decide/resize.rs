//! A change of the worker set: whether it may begin, and which workers it stops.
//!
//! The fanout members never change hands while a worker serves them: a resize stops every
//! worker whose members change (and those that join or leave), moves the rings, and starts
//! them again. The fewer it stops, the fewer packets wait in rings meanwhile, so members stay
//! with their owners whenever that keeps the shares even (`members::assign_members`).

use super::members::assign_members;
use std::collections::BTreeSet;

/// Why a change of the worker set is refused before it starts.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResizeError {
    /// Another change of the worker set has not finished.
    #[error("a change of the worker set is already in progress")]
    InProgress,
    /// Rule changes wait for the workers to confirm them.
    #[error("rule changes are waiting for the workers' confirmation; try again")]
    RulesPending,
    /// A listed CPU serves another class.
    #[error("CPU {cpu} runs a worker of class {class}")]
    OtherClass {
        /// The CPU.
        cpu: u32,
        /// The class whose worker it runs.
        class: String,
    },
    /// No CPU set can be chosen for the setting.
    #[error(transparent)]
    Cpus(#[from] crate::cpus::CpuChoiceError),
    /// More workers than a `steer` class has shards.
    #[error(
        "fanout steer gives class {class} {have} shards, fixed when the relay started: at most \
         {have} workers"
    )]
    SteerShards {
        /// The class.
        class: String,
        /// Its shards (fanout members).
        have: u32,
    },
    /// The inputs' fanout groups could not get more members.
    #[error(transparent)]
    Grow(#[from] crate::supervisor::inputs::InputError),
}

/// Whether a change of the worker set may begin now: one at a time, and not while rule changes
/// wait for the workers' confirmations (the workers it stops would be confirming them).
pub(crate) fn may_begin(resizing: bool, pending_changes: usize) -> Result<(), ResizeError> {
    if resizing {
        Err(ResizeError::InProgress)
    } else if pending_changes > 0 {
        Err(ResizeError::RulesPending)
    } else {
        Ok(())
    }
}

/// Why a rule change is refused now, if it is: not while the worker set changes (the workers
/// being moved could not confirm it).
pub(crate) fn may_change_rules(resizing: bool) -> Result<(), &'static str> {
    if resizing {
        Err("the worker set is changing; try again once `workers set` has answered")
    } else {
        Ok(())
    }
}

/// What a change of one class's worker set does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResizePlan {
    /// The slot serving each of the class's members afterwards.
    pub(crate) owners: Vec<usize>,
    /// The slots it stops: their members change, or they join or leave.
    pub(crate) affected: BTreeSet<usize>,
    /// The slots that leave the worker set.
    pub(crate) leaving: BTreeSet<usize>,
}

/// The plan that gives `members` fanout members to `joining` (slot, CPU), the class's worker
/// set afterwards, when `serving` are its slots now and `previous` the owner of each member
/// (`usize::MAX`: none yet). `in_set` says whether a slot is in the worker set now.
pub(crate) fn plan(
    members: u32,
    by_cpu: bool,
    joining: &[(usize, u32)],
    serving: &[usize],
    previous: &[usize],
    in_set: impl Fn(usize) -> bool,
) -> ResizePlan {
    let mut previous = previous.to_vec();
    previous.resize(members as usize, usize::MAX);
    let owners = assign_members(members, by_cpu, joining, &previous);
    let staying: BTreeSet<usize> = joining.iter().map(|&(index, _)| index).collect();
    let leaving: BTreeSet<usize> = serving
        .iter()
        .copied()
        .filter(|index| !staying.contains(index))
        .collect();
    let mut affected = leaving.clone();
    affected.extend(staying.iter().copied().filter(|&index| !in_set(index)));
    // A member added for this change has no previous owner: it counts as moved.
    for (&before, &after) in previous.iter().zip(&owners) {
        if before != after {
            affected.extend([before, after].into_iter().filter(|&s| s != usize::MAX));
        }
    }
    ResizePlan {
        owners,
        affected,
        leaving,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_change_at_a_time_and_none_while_rules_wait_for_confirmation() {
        assert!(may_begin(false, 0).is_ok());
        assert!(matches!(may_begin(true, 0), Err(ResizeError::InProgress)));
        assert!(matches!(
            may_begin(false, 2),
            Err(ResizeError::RulesPending)
        ));
        assert!(may_change_rules(false).is_ok());
        let refused = may_change_rules(true).expect_err("a resize is in progress");
        assert!(refused.contains("workers set"), "{refused}");
    }

    #[test]
    fn growing_stops_only_the_workers_whose_members_move() {
        // Slots 0 and 1 serve four members; slot 2 joins.
        let plan = plan(
            4,
            false,
            &[(0, 0), (1, 1), (2, 2)],
            &[0, 1],
            &[0, 1, 0, 1],
            |s| s < 2,
        );
        assert!(plan.leaving.is_empty());
        let moved: Vec<usize> = (0..4)
            .filter(|&m| plan.owners[m] != [0, 1, 0, 1][m])
            .collect();
        assert_eq!(moved.len(), 1, "{plan:?}");
        let from = [0, 1, 0, 1][moved[0]];
        assert_eq!(plan.affected, BTreeSet::from([from, 2]), "{plan:?}");
    }

    #[test]
    fn shrinking_stops_the_leaving_worker_and_those_taking_its_members() {
        let plan = plan(
            4,
            false,
            &[(0, 0), (2, 2)],
            &[0, 1, 2],
            &[0, 1, 2, 0],
            |_| true,
        );
        assert_eq!(plan.leaving, BTreeSet::from([1]));
        assert!(plan.affected.contains(&1));
        assert!(!plan.owners.contains(&1), "{plan:?}");
        // Slot 1's one member went to slot 2 (slot 0 already had two): slot 0 keeps serving.
        assert_eq!(plan.affected, BTreeSet::from([1, 2]), "{plan:?}");
    }

    #[test]
    fn members_added_for_the_change_count_as_moved() {
        // Two members become three (fanout cpu, a worker on CPU 2 joins).
        let plan = plan(3, true, &[(0, 0), (1, 1), (2, 2)], &[0, 1], &[0, 1], |s| {
            s < 2
        });
        assert_eq!(plan.owners, vec![0, 1, 2]);
        assert_eq!(plan.affected, BTreeSet::from([2]), "{plan:?}");
    }
}
