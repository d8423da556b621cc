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

use super::World;
use crate::config::{FanoutSetting, WorkersSetting};
use crate::control::proto::{Reply, Response};
use crate::control::respond;
use crate::supervisor::decide::resize::{self, ResizeError, ResizePlan};
use crate::supervisor::inflight::Resize;
use crate::supervisor::life::Then;
use crate::supervisor::workers::WorkerSlot;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// How long the workers of a resize get to stop before they are killed.
const STOP_WITHIN: Duration = Duration::from_secs(3);
/// How long a resize waits for its workers to serve before answering anyway.
const SERVE_WITHIN: Duration = Duration::from_secs(10);

impl World {
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
                            waiting: self.waiting_rules(),
                            consume: self.consume.report(),
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
        resize::may_begin(self.resize.is_some(), self.pending.len())?;
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
        let mut joining = Vec::with_capacity(cpus.len());
        for &cpu in &cpus {
            let known = self
                .slots
                .iter()
                .position(|slot| slot.cpu == cpu && slot.class == class);
            let index = known.unwrap_or_else(|| {
                let index = self.slots.len();
                self.slots.push(WorkerSlot::joining(index, cpu, class));
                index
            });
            joining.push((index, cpu));
        }
        let serving: Vec<usize> = self.class_slots(class).map(|slot| slot.slot).collect();
        let ResizePlan {
            owners,
            affected,
            leaving,
        } = resize::plan(
            self.inputs.members(class),
            self.fanout == FanoutSetting::Cpu,
            &joining,
            &serving,
            &self.owners[class],
            |index| self.slots[index].life.in_worker_set(),
        );
        log::info!(
            "workers: cpus {current:?} -> {cpus:?}; stopping the workers on cpus {:?} to move \
             their rings",
            affected
                .iter()
                .filter(|&&index| self.slots[index].run().is_some())
                .map(|&index| self.slots[index].cpu)
                .collect::<Vec<_>>()
        );
        for &index in &affected {
            self.slots[index].stop(Then::Hold);
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
                        && slot.run().is_some()
                    {
                        log::warn!("worker on cpu {} did not stop in time: killed", slot.cpu);
                        slot.reap();
                    }
                }
            }
            if resize
                .affected
                .iter()
                .any(|&index| self.slots[index].run().is_some())
            {
                self.resize = Some(resize);
                return;
            }
            self.move_rings(&mut resize);
        }
        let serving = |slot: &WorkerSlot| !slot.life.in_worker_set() || slot.life.is_ready();
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
                waiting: self.waiting_rules(),
                consume: self.consume.report(),
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
        for &index in &resize.leaving {
            self.slots[index].retire();
        }
        resize.moved = true;
        let starting: Vec<usize> = resize
            .affected
            .iter()
            .copied()
            .filter(|index| !resize.leaving.contains(index))
            .collect();
        // The supervisor follows the worker set: off the workers' CPUs while one is spare.
        if let Some(allowed) = &self.supervisor_cpus {
            let cpus: Vec<u32> = self.active_slots().map(|slot| slot.cpu).collect();
            crate::supervisor::placement::keep_off_worker_cpus(allowed, &cpus);
        }
        for index in starting {
            self.spawn(index);
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
}
