//! Changing the worker set while the relay runs (`ctl workers set`), and what `workers` reports.
//!
//! The fanout groups never lose a member: a member's socket leaving its group would drop what
//! waits in its ring, and under `steer` the members are the shards the program computes. What
//! changes is which worker serves which member. A resize computes the new owners, stops the
//! workers whose members change (their rings keep filling meanwhile), moves the rings, and starts
//! those workers again; each confirms its whole table, its shards' rules under `shard`
//! placement, before it reads a frame. So no packet reaches a worker without its rule, and the
//! other workers keep relaying throughout. More workers than members adds members, except under
//! `steer`, where there is one member per online CPU from the start.

use super::setup::World;
use super::workers::WorkerSlot;
use crate::config::{FanoutSetting, PlacementSetting, WorkersSetting};
use crate::control::proto::{Command, Reply, Response, WorkerReport};
use crate::control::{Pending, respond};
use std::collections::BTreeSet;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// How long the workers of a resize get to stop before they are killed.
const STOP_WITHIN: Duration = Duration::from_secs(3);
/// How long a resize waits for its workers to serve before answering anyway.
const SERVE_WITHIN: Duration = Duration::from_secs(10);

/// Why a change of the worker set is refused before it starts.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResizeError {
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
    Grow(#[from] super::inputs::InputError),
}

/// A change of the worker set in progress.
#[derive(Debug)]
pub(super) struct Resize {
    /// The class whose workers change (0: the default class).
    class: usize,
    /// The CPUs of the class's new worker set, for the log.
    cpus: Vec<u32>,
    /// The slot serving each of the class's members once the change is done.
    owners: Vec<usize>,
    /// Slots stopped by the change: their members change, or they join or leave.
    affected: BTreeSet<usize>,
    /// Slots that leave the worker set.
    leaving: BTreeSet<usize>,
    /// Rings of members added for the change, not yet given to a slot.
    parked: super::inputs::NewRings,
    reply: Option<Sender<Response>>,
    started: Instant,
    moved: bool,
}

impl World {
    /// Dispatches a control request; rule changes wait until a resize is over.
    pub(super) fn control(&mut self, pending: Pending) {
        let busy = matches!(
            pending.request.command,
            Command::Add { .. } | Command::Remove { .. } | Command::Reload
        );
        if busy && self.resize.is_some() {
            respond(
                &pending.reply,
                Response::refused(
                    "the worker set is changing; try again once `workers set` has answered",
                ),
            );
            return;
        }
        self.command(pending);
    }

    /// Starts changing the workers of class `class` (the default class for none) to `setting`;
    /// answers once every new owner serves.
    pub(super) fn set_workers(
        &mut self,
        setting: &str,
        class: Option<&str>,
        reply: Sender<Response>,
    ) {
        let class = match class {
            None => Ok(0),
            Some(name) => self
                .classes
                .iter()
                .position(|class| class.as_deref() == Some(name))
                .ok_or_else(|| {
                    let names: Vec<&String> = self.classes.iter().flatten().collect();
                    format!("no class named {name:?} (defined: {names:?})")
                }),
        };
        let begun = class.and_then(|class| {
            WorkersSetting::parse(setting)
                .map_err(|error| format!("workers: {error}"))
                .and_then(|setting| {
                    self.begin_resize(class, &setting)
                        .map_err(|error| error.to_string())
                })
        });
        match begun {
            Ok(()) => {
                if let Some(resize) = &mut self.resize {
                    resize.reply = Some(reply);
                    self.advance_resize();
                } else {
                    respond(
                        &reply,
                        Response::ok(Reply::Workers {
                            workers: self.worker_reports(),
                        }),
                    );
                }
            }
            Err(error) => {
                respond(&reply, Response::refused(error));
            }
        }
    }

    /// Starts changing class `class`'s worker set to `setting`; `Ok` with no resize in progress
    /// when the set is already that. The CPUs of other classes' workers are not available.
    pub(super) fn begin_resize(
        &mut self,
        class: usize,
        setting: &WorkersSetting,
    ) -> Result<(), ResizeError> {
        if self.resize.is_some() {
            return Err(ResizeError::InProgress);
        }
        if !self.pending.is_empty() {
            return Err(ResizeError::RulesPending);
        }
        let others: Vec<(u32, usize)> = self
            .active_slots()
            .filter(|slot| slot.class != class)
            .map(|slot| (slot.cpu, slot.class))
            .collect();
        if let WorkersSetting::Cpus(list) = setting
            && let Some(&(cpu, theirs)) = others.iter().find(|(cpu, _)| list.contains(cpu))
        {
            return Err(ResizeError::OtherClass {
                cpu,
                class: self.inputs.class_name(theirs).to_owned(),
            });
        }
        let online: Vec<u32> = crate::cpus::online()?
            .into_iter()
            .filter(|cpu| !others.iter().any(|(theirs, _)| theirs == cpu))
            .collect();
        let current: Vec<u32> = self.class_slots(class).map(|slot| slot.cpu).collect();
        let cpus = crate::cpus::resize(&current, setting, &online)?;
        if cpus == current {
            return Ok(());
        }
        let needed = match self.fanout {
            FanoutSetting::Cpu => cpus.iter().copied().max().map_or(1, |max| max + 1),
            _ => cpus.len() as u32,
        };
        let mut parked = Vec::new();
        let have = self.inputs.members(class);
        if needed > have {
            if self.fanout == FanoutSetting::Steer {
                return Err(ResizeError::SteerShards {
                    class: self.inputs.class_name(class).to_owned(),
                    have,
                });
            }
            parked = self.inputs.grow(class, needed)?;
        }
        let members = self.inputs.members(class) as usize;
        let mut joining = Vec::with_capacity(cpus.len());
        for &cpu in &cpus {
            let known = self
                .slots
                .iter()
                .position(|slot| slot.cpu == cpu && slot.class == class);
            let index = match known {
                Some(index) => index,
                None => {
                    let index = self.slots.len();
                    let mut slot = WorkerSlot::new(index, cpu, class);
                    slot.active = false;
                    self.slots.push(slot);
                    index
                }
            };
            joining.push((index, cpu));
        }
        let mut previous = self.owners[class].clone();
        previous.resize(members, usize::MAX);
        let owners = assign_members(
            members as u32,
            self.fanout == FanoutSetting::Cpu,
            &joining,
            &previous,
        );
        let staying: BTreeSet<usize> = joining.iter().map(|&(index, _)| index).collect();
        let leaving: BTreeSet<usize> = self
            .class_slots(class)
            .map(|slot| slot.slot)
            .filter(|index| !staying.contains(index))
            .collect();
        let mut affected: BTreeSet<usize> = leaving.clone();
        affected.extend(staying.iter().filter(|&&index| !self.slots[index].active));
        // A member added for this change has no previous owner (usize::MAX): it counts as moved.
        for (&before, &after) in previous.iter().zip(&owners) {
            if before != after {
                affected.extend(
                    [before, after]
                        .into_iter()
                        .filter(|&s| s < self.slots.len()),
                );
            }
        }
        log::info!(
            "workers: cpus {current:?} -> {cpus:?}; stopping the workers on cpus {:?} to move \
             their rings",
            affected
                .iter()
                .filter(|&&index| self.slots[index].process.is_some())
                .map(|&index| self.slots[index].cpu)
                .collect::<Vec<_>>()
        );
        for &index in &affected {
            let slot = &mut self.slots[index];
            slot.held = true;
            slot.restart_at = None;
            // A worker that cannot be told is already going away (`tell` kills one
            // that is stuck); its exit is handled like this stop's.
            let _ = slot.tell(&crate::protocol::ToWorker::Stop);
        }
        self.resize = Some(Resize {
            class,
            cpus,
            owners,
            affected,
            leaving,
            parked,
            reply: None,
            started: Instant::now(),
            moved: false,
        });
        Ok(())
    }

    /// Moves a resize on: once its workers are stopped, moves the rings and starts the new
    /// owners; once they serve, answers.
    pub(super) fn advance_resize(&mut self) {
        let Some(mut resize) = self.resize.take() else {
            return;
        };
        if !resize.moved {
            if resize.started.elapsed() >= STOP_WITHIN {
                for &index in &resize.affected {
                    if let Some(slot) = self.slots.get_mut(index)
                        && slot.process.is_some()
                    {
                        log::warn!("worker on cpu {} did not stop in time: killed", slot.cpu);
                        slot.reap();
                    }
                }
            }
            if resize
                .affected
                .iter()
                .any(|&index| self.slots[index].process.is_some())
            {
                self.resize = Some(resize);
                return;
            }
            self.move_rings(&mut resize);
        }
        let serving = |slot: &WorkerSlot| !slot.active || slot.state_name() == "ready";
        let all_serve = resize
            .affected
            .iter()
            .all(|&index| serving(&self.slots[index]));
        if !all_serve && resize.started.elapsed() < SERVE_WITHIN {
            self.resize = Some(resize);
            return;
        }
        let late: Vec<u32> = resize
            .affected
            .iter()
            .map(|&index| &self.slots[index])
            .filter(|slot| !serving(slot))
            .map(|slot| slot.cpu)
            .collect();
        let elapsed = resize.started.elapsed().as_millis();
        let answer = if late.is_empty() {
            log::info!("workers now on cpus {:?} ({elapsed} ms)", resize.cpus);
            Response::ok(Reply::Workers {
                workers: self.worker_reports(),
            })
        } else {
            log::warn!(
                "workers now on cpus {:?}, but those on cpus {late:?} are not serving after \
                 {elapsed} ms",
                resize.cpus
            );
            Response::refused(format!(
                "workers now on cpus {:?}, but those on cpus {late:?} are not serving after \
                 {elapsed} ms (they are restarted until they do)",
                resize.cpus
            ))
        };
        if let Some(reply) = resize.reply {
            respond(&reply, answer);
        }
    }

    fn move_rings(&mut self, resize: &mut Resize) {
        let mut loose = std::mem::take(&mut resize.parked);
        for &index in &resize.affected {
            let rings = std::mem::take(&mut self.slots[index].rings);
            loose.extend(
                rings
                    .into_iter()
                    .map(|(member, ring)| (resize.class, member, ring)),
            );
        }
        for (_, member, handle) in loose {
            if let Some(&owner) = resize.owners.get(member as usize) {
                self.slots[owner].rings.push((member, handle));
            }
        }
        self.owners[resize.class] = resize.owners.clone();
        for &index in &resize.affected {
            let leaving = resize.leaving.contains(&index);
            let slot = &mut self.slots[index];
            slot.held = false;
            slot.active = !leaving;
            if leaving {
                slot.down_since = None;
            }
        }
        resize.moved = true;
        let starting: Vec<usize> = resize
            .affected
            .iter()
            .copied()
            .filter(|&index| self.slots[index].active)
            .collect();
        // The supervisor follows the worker set: off the workers' CPUs while one is spare.
        if let Some(allowed) = &self.supervisor_cpus {
            let cpus: Vec<u32> = self.active_slots().map(|slot| slot.cpu).collect();
            super::setup::keep_off_worker_cpus(allowed, &cpus);
        }
        for index in starting {
            self.spawn_now(index);
        }
    }

    /// When a resize next needs attention.
    pub(super) fn resize_deadline(&self) -> Option<Instant> {
        self.resize.as_ref().map(|resize| {
            resize.started
                + if resize.moved {
                    SERVE_WITHIN
                } else {
                    STOP_WITHIN
                }
        })
    }

    /// The slots in the worker set, in slot order.
    pub(super) fn active_slots(&self) -> impl Iterator<Item = &WorkerSlot> + '_ {
        self.slots.iter().filter(|slot| slot.active)
    }

    /// The slots of class `class` in the worker set, in slot order.
    pub(super) fn class_slots(&self, class: usize) -> impl Iterator<Item = &WorkerSlot> + '_ {
        self.active_slots().filter(move |slot| slot.class == class)
    }

    /// Rules of the shards slot `slot` serves, under shard placement (0 otherwise).
    fn shard_rules(&self, slot: usize) -> u64 {
        if self.placement == PlacementSetting::Shard {
            self.slot_rules(slot).count() as u64
        } else {
            0
        }
    }

    /// Logs what a worker's death leaves unserved under shard placement.
    pub(super) fn report_outage(&self, slot: usize) {
        if self.placement != PlacementSetting::Shard {
            return;
        }
        let worker = &self.slots[slot];
        log::warn!(
            "shards {:?} of {} ({} rules) are not served until the worker on cpu {} is back: \
             their packets wait in its rings and are dropped by the kernel once those are full",
            worker.members(),
            self.inputs.members(worker.class),
            self.shard_rules(slot),
            worker.cpu
        );
    }

    /// What `workers` reports: the slots in the worker set.
    pub(super) fn worker_reports(&self) -> Vec<WorkerReport> {
        self.slots
            .iter()
            .filter(|slot| slot.active)
            .map(|slot| {
                let counters = slot.counters();
                let down_now = slot.down_since.map_or(Duration::ZERO, |at| at.elapsed());
                let serving = slot.state_name() == "ready";
                WorkerReport {
                    cpu: slot.cpu,
                    pid: slot.process.as_ref().map(|process| process.child.id()),
                    state: slot.state_name().into(),
                    restarts: slot.restarts,
                    restart_reasons: slot.restart_reasons.by_name(),
                    generation: slot.acked_generation,
                    drift_repairs: slot.drift_repairs,
                    received: counters.received,
                    forwarded: counters.forwarded,
                    members: slot.members(),
                    unserved_rules: if serving {
                        0
                    } else {
                        self.shard_rules(slot.slot)
                    },
                    outages: slot.outages,
                    down_ms: (slot.down_total + down_now).as_millis() as u64,
                    class: self.classes.get(slot.class).cloned().flatten(),
                }
            })
            .collect()
    }
}

/// The slot that serves each of `members` fanout members, given the `active` slots (index,
/// CPU) and each member's `previous` owner (`usize::MAX` or an index not in `active`: none);
/// `usize::MAX` for every member when no slot is active.
///
/// Under fanout `cpu` (`by_cpu`) member k carries CPU k's packets, so the worker on CPU k serves
/// it when there is one. Otherwise members stay where they were as long as that keeps the
/// shares even (no slot more than one member above another), so a resize moves few rings, and
/// the rest go to the slots with the fewest.
pub(super) fn assign_members(
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
