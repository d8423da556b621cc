//! Which worker serves which fanout member: spread evenly, moved as little as possible.

/// The slot that serves each of `members` fanout members, given the `active` slots (index,
/// CPU) and each member's `previous` owner (`usize::MAX` or an index not in `active`: none);
/// `usize::MAX` for every member when no slot is active.
///
/// Under fanout `cpu` (`by_cpu`) member k carries CPU k's packets, so the worker on CPU k serves
/// it when there is one. Otherwise members stay where they were as long as that keeps the
/// shares even (no slot more than one member above another), so a resize moves few rings, and
/// the rest go to the slots with the fewest.
pub(crate) fn assign_members(
    members: u32,
    by_cpu: bool,
    active: &[(usize, u32)],
    previous: &[usize],
) -> Vec<usize> {
    let members = members as usize;
    let Some(&(first, _)) = active.first() else {
        // No worker (a class without CPUs): nobody serves the members.
        return vec![usize::MAX; members];
    };
    let floor = members / active.len();
    let mut extra = members % active.len();
    let mut load = vec![0usize; active.len()];
    let mut owners: Vec<Option<usize>> = vec![None; members];
    let position = |slot: usize| active.iter().position(|&(index, _)| index == slot);
    if by_cpu {
        for (member, owner) in owners.iter_mut().enumerate() {
            if let Some(at) = active.iter().position(|&(_, cpu)| cpu as usize == member) {
                *owner = Some(at);
                load[at] += 1;
            }
        }
    }
    // Keep previous owners while they hold less than the even share, then up to one more for
    // as many slots as the remainder allows.
    for allow_extra in [false, true] {
        for (member, owner) in owners.iter_mut().enumerate() {
            if owner.is_some() {
                continue;
            }
            let Some(at) = previous.get(member).and_then(|&slot| position(slot)) else {
                continue;
            };
            if load[at] < floor {
                *owner = Some(at);
                load[at] += 1;
            } else if allow_extra && load[at] == floor && extra > 0 {
                *owner = Some(at);
                load[at] += 1;
                extra -= 1;
            }
        }
    }
    for owner in owners.iter_mut().filter(|owner| owner.is_none()) {
        let at = (0..active.len())
            .min_by_key(|&at| load[at])
            .unwrap_or_default();
        *owner = Some(at);
        load[at] += 1;
    }
    owners
        .into_iter()
        .map(|owner| owner.map_or(first, |at| active[at].0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_spread_evenly_and_stay_where_they_can() {
        let fresh = assign_members(4, false, &[(0, 0), (1, 1)], &[]);
        assert_eq!(fresh, vec![0, 1, 0, 1]);
        // One more slot: one member moves to it, the others stay.
        let grown = assign_members(4, false, &[(0, 0), (1, 1), (2, 2)], &fresh);
        let moved = fresh.iter().zip(&grown).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 1, "{fresh:?} -> {grown:?}");
        for slot in 0..3 {
            let held = grown.iter().filter(|&&owner| owner == slot).count();
            assert!((1..=2).contains(&held), "{grown:?}");
        }
        // Slot 1 leaves: its members go to slot 0 and 2, which keep theirs.
        let shrunk = assign_members(4, false, &[(0, 0), (2, 2)], &grown);
        for (member, (&before, &after)) in grown.iter().zip(&shrunk).enumerate() {
            if before != 1 {
                assert_eq!(
                    before, after,
                    "member {member} moved needlessly: {shrunk:?}"
                );
            }
        }
        assert_eq!(shrunk.iter().filter(|&&owner| owner == 0).count(), 2);
    }

    #[test]
    fn by_cpu_a_member_goes_to_its_cpus_worker() {
        // Workers on CPUs 1 and 3 of 4 members: members 1 and 3 are theirs, 0 and 2 shared.
        let owners = assign_members(4, true, &[(0, 1), (1, 3)], &[]);
        assert_eq!(owners[1], 0);
        assert_eq!(owners[3], 1);
        assert_ne!(owners[0], owners[2], "the CPUs without a worker are spread");
        // One worker serves every member.
        assert_eq!(assign_members(2, true, &[(5, 0)], &[]), vec![5, 5]);
    }
}
