//! Control commands, and changes to the rule set applied to every worker with acknowledgement.

use super::World;
use super::members::StandsFor;
use crate::config::ConfigFile;
use crate::control::proto::{ChangeReport, Command, KeyEntry, Reply, Response};
use crate::control::{Pending, respond};
use crate::notices::Notices;
use crate::protocol::ToWorker;
use crate::ratelimit::Kind;
use crate::rings;
use crate::supervisor::checks::check_rules;
use crate::supervisor::decide::resize;
use crate::supervisor::inflight::PendingChange;
use crate::supervisor::lifecycle::{interfaces_of, split_waiting};
use crate::supervisor::state::Change;
use fanout_core::handoff::RingHandle;
use relay_rules::InterfaceFacts;
use relay_rules::Rule;
use relay_rules::validate::Problem;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

/// Why a rule change is refused before it is tried.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// `remove` by key: no rule has it.
    #[error("no rule matches {0}")]
    NoMatch(String),
    /// `remove` names neither a rule nor a key, or both.
    #[error("remove takes either \"name\" or \"key\", not both or neither")]
    NameOrKey,
    /// A rule of that name runs or waits.
    #[error("a rule named {0:?} exists")]
    NameTaken(String),
    /// A rule that is to wait for interfaces fails the checks that need none.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<relay_rules::validate::ValidationError>),
}

/// How long a change waits for every live worker to confirm it before answering anyway.
const CONFIRM_WITHIN: Duration = Duration::from_secs(3);

impl World {
    /// Carries out one control request, unless it changes rules while the worker set changes.
    pub(super) fn control(&mut self, pending: Pending) {
        let changes_rules = matches!(
            pending.request.command,
            Command::Add { .. } | Command::Remove { .. } | Command::Reload
        );
        if changes_rules && let Err(refusal) = resize::may_change_rules(self.resize.is_some()) {
            respond(&pending.reply, Response::refused(refusal));
            return;
        }
        self.command(pending);
    }

    /// Carries out one control request and answers it (now, or once the workers confirmed).
    fn command(&mut self, pending: Pending) {
        let Pending { request, reply } = pending;
        let answer = match request.command {
            Command::List => Response::ok(Reply::Rules {
                generation: self.state.generation(),
                rules: self.state.set().rules().to_vec(),
                waiting: self.waiting_rules(),
                interfaces: self.interface_states(),
            }),
            Command::Save { path } => match self.state.save(Path::new(&path)) {
                Ok(()) => Response::ok(Reply::Saved {
                    path,
                    rules: self.state.set().len(),
                }),
                Err(error) => Response::refused(format!("cannot write {path}: {error}")),
            },
            Command::Stats => Response::ok(Reply::Stats(self.stats_report())),
            Command::Workers => Response::ok(Reply::Workers {
                workers: self.worker_reports(),
                waiting: self.waiting_rules(),
                consume: self.consume.report(),
            }),
            Command::Add { rule, interfaces } => {
                let rule = match self.stands_for(rule, interfaces) {
                    Ok(StandsFor::Itself(rule)) => rule,
                    Ok(StandsFor::Members(rules)) => return self.add_members(rules, reply),
                    Err(refusal) => {
                        respond(&reply, Response::refused(refusal));
                        return;
                    }
                };
                let missing: Vec<&str> = interfaces_of(&rule)
                    .filter(|name| rings::interface_facts(name).is_none())
                    .collect();
                if !missing.is_empty() {
                    let missing = missing.join(", ");
                    self.change_waiting(
                        Change {
                            remove: Vec::new(),
                            add: vec![rule.clone()],
                        },
                        &missing,
                        reply,
                    );
                    return;
                }
                let change = Change {
                    remove: Vec::new(),
                    add: vec![rule.clone()],
                };
                self.apply(change, Some(reply));
                return;
            }
            Command::Remove {
                name: Some(name),
                key: None,
            } if self.state.waiting().contains_key(&name) => {
                let change = Change {
                    remove: vec![name],
                    add: Vec::new(),
                };
                self.change_waiting(change, "", reply);
                return;
            }
            Command::Remove {
                name: Some(name),
                key: None,
            } if self.stands_for_members(&name) => return self.remove_members(&name, reply),
            Command::Remove { name, key } => match self.resolve(name, key) {
                Ok(name) => {
                    let change = Change {
                        remove: vec![name],
                        add: Vec::new(),
                    };
                    self.apply(change, Some(reply));
                    return;
                }
                Err(refusal) => Response::refused(refusal.to_string()),
            },
            Command::Reload => return self.reload(Some(reply)),
            Command::SetWorkers { workers, class } => {
                return self.set_workers(&workers, class.as_deref(), reply);
            }
            #[cfg(feature = "drift-test")]
            Command::DebugCorruptTable { cpu } => self.debug_request(cpu, &ToWorker::CorruptTable),
            #[cfg(feature = "drift-test")]
            Command::DebugForbiddenSyscall { cpu } => {
                self.debug_request(cpu, &ToWorker::ForbiddenSyscall)
            }
        };
        respond(&reply, answer);
    }

    /// Passes a test build's debug request to the worker on `cpu`.
    #[cfg(feature = "drift-test")]
    fn debug_request(&mut self, cpu: u32, request: &ToWorker) -> Response {
        match self.slots.iter_mut().find(|slot| slot.cpu == cpu) {
            Some(slot) => match slot.tell(request) {
                Ok(()) => Response::ok(Reply::Workers {
                    workers: Vec::new(),
                    waiting: Vec::new(),
                    consume: self.consume.report(),
                }),
                Err(error) => Response::refused(error.to_string()),
            },
            None => Response::refused(format!("no worker on cpu {cpu}")),
        }
    }

    /// Adds a rule that waits for the interfaces `missing` names, or removes a waiting rule,
    /// as `change` says: no worker holds waiting rules, so the change is answered once it is in
    /// the state file.
    pub(super) fn change_waiting(
        &mut self,
        change: Change,
        missing: &str,
        reply: Sender<Response>,
    ) {
        for rule in &change.add {
            let refusal = if self.state.set().get(&rule.name).is_some()
                || self.state.waiting().contains_key(&rule.name)
            {
                Some(Refusal::NameTaken(rule.name.clone()))
            } else {
                self.check_waiting(rule).err()
            };
            if let Some(refusal) = refusal.map(|refusal| refusal.to_string()) {
                if let Some(held) = self.notices.allow_unrepeated(Kind::Refused, &refusal) {
                    log::warn!("change refused, nothing changed: {refusal}{held}");
                }
                respond(&reply, Response::refused(refusal));
                return;
            }
        }
        let names: Vec<String> = change
            .add
            .iter()
            .map(|rule| rule.name.clone())
            .chain(change.remove.iter().cloned())
            .collect();
        match self.state.change_waiting(&change) {
            Ok(generation) => {
                if change.add.is_empty() {
                    log::info!("generation {generation}: removed waiting rule(s) {names:?}");
                } else {
                    log::warn!(
                        "generation {generation}: rule(s) {names:?} wait for interface(s) \
                         {missing}, which do not exist: they start relaying when they appear"
                    );
                }
                for rule in &change.add {
                    for name in interfaces_of(rule) {
                        self.lifecycle.follow(name, None);
                    }
                }
                respond(
                    &reply,
                    Response::ok(Reply::Changed(ChangeReport {
                        generation,
                        added: change.add.iter().map(|rule| rule.name.clone()).collect(),
                        removed: change.remove.clone(),
                        waiting: names,
                        ..ChangeReport::default()
                    })),
                );
            }
            Err(error) => respond(
                &reply,
                Response::refused(format!("cannot write the state file: {error}")),
            ),
        }
    }

    /// Checks a rule that is to wait for interfaces as far as it can be checked without them:
    /// every field, against the facts of the interfaces that exist; what depends on the missing
    /// interfaces' facts (their addresses) is checked when they appear.
    fn check_waiting(&self, rule: &Rule) -> Result<(), Refusal> {
        let missing: Vec<&str> = interfaces_of(rule)
            .filter(|name| rings::interface_facts(name).is_none())
            .collect();
        let facts: relay_rules::Interfaces = interfaces_of(rule)
            .filter_map(rings::interface_facts)
            .collect();
        let Err(errors) =
            relay_rules::RuleSet::new(vec![rule.clone()], facts, *self.state.set().limits())
        else {
            return Ok(());
        };
        let on_missing = |problem: &Problem| match problem {
            Problem::UnknownInterface(name)
            | Problem::NotMulticastOrLocal {
                interface: name, ..
            }
            | Problem::SourceNotLocal {
                interface: name, ..
            }
            | Problem::NoSourceAddress {
                interface: name, ..
            } => missing.contains(&name.as_str()),
            _ => false,
        };
        let problems: Vec<_> = errors
            .into_errors()
            .into_iter()
            .filter(|error| !on_missing(&error.problem))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Refusal::Invalid(problems))
        }
    }

    /// Re-reads the configuration file and applies the difference to the running rules: the
    /// file is the truth afterwards, so rules added at run time that it does not have are
    /// removed, and the answer and the log name them. A file that does not parse or validate
    /// changes nothing, and every such refusal is logged with its reason (for a SIGHUP the log
    /// is the only answer).
    pub(super) fn reload(&mut self, reply: Option<Sender<Response>>) {
        let path = self.config_path.clone();
        let loaded = std::fs::read_to_string(&path)
            .map_err(|error| format!("{}: cannot read: {error}", path.display()))
            .and_then(|text| {
                let config = ConfigFile::parse(&text)
                    .map_err(|error| format!("{}: {error}", path.display()))?;
                let problems = crate::config::check_groups(&config.interface_groups, |name| {
                    rings::interface_facts(name).is_some()
                });
                if !problems.is_empty() {
                    return Err(format!("{}: {}", path.display(), problems.join("; ")));
                }
                // Rules on interfaces that do not exist wait for them, as at start.
                let (rules, waiting) = split_waiting(config.to_rules(), |name| {
                    rings::interface_facts(name).is_some()
                });
                check_rules(&path, &rules).map_err(|error| error.to_string())?;
                if config.classes != self.state.classes() {
                    log::warn!(
                        "reload of {}: [[class]] changes take effect when the relay restarts; \
                         the rules are checked against the running classes",
                        path.display()
                    );
                }
                let waiting: Vec<Rule> = waiting.into_iter().map(|(rule, _)| rule).collect();
                Ok((text, rules, waiting, config.interface_groups))
            });
        let (text, rules, waiting, groups) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => return refuse_reload(reply, &error),
        };
        let change = Change::between(self.state.set().rules(), &rules);
        let file_rules: BTreeSet<String> = rules
            .iter()
            .chain(&waiting)
            .map(|rule| rule.name.clone())
            .collect();
        let runtime_only: Vec<String> = change
            .remove
            .iter()
            .chain(self.state.waiting().keys())
            .filter(|name| !file_rules.contains(*name) && !self.file_rules.contains(*name))
            .cloned()
            .collect();
        let added: Vec<String> = change.add.iter().map(|rule| rule.name.clone()).collect();
        let removed = change.remove.clone();
        // The answer goes through this channel first, to name the run-time rules in it.
        let (report_tx, report_rx) = mpsc::channel();
        if !self.apply(change, Some(report_tx)) {
            let error = report_rx
                .try_recv()
                .ok()
                .and_then(|refusal| refusal.error)
                .unwrap_or_else(|| "the change was refused".into());
            return refuse_reload(reply, &error);
        }
        self.file_rules = file_rules;
        fanout_core::heap::trim();
        for rule in &waiting {
            for name in interfaces_of(rule) {
                self.lifecycle.follow(name, None);
            }
        }
        if !waiting.is_empty() {
            let names: Vec<&str> = waiting.iter().map(|rule| rule.name.as_str()).collect();
            log::warn!(
                "reload of {}: rule(s) {names:?} wait for interfaces that do not exist",
                path.display()
            );
        }
        self.state.replace_waiting(waiting);
        self.state.replace_interface_groups(groups);
        // The state file now grew from this text (the waiting rules with it): a restart with
        // this file keeps the changes made at run time after it.
        if let Err(error) = self.state.adopt_config_text(&text) {
            log::error!("cannot write the state file: {error}");
        }
        if !runtime_only.is_empty() {
            log::warn!(
                "reload of {}: removed rule(s) {runtime_only:?} that existed only at run time \
                 (added by `ctl add`, not in the file); `ctl save FILE` before a reload keeps them",
                path.display()
            );
        }
        let fallback = ChangeReport {
            generation: self.state.generation(),
            added,
            removed,
            ..ChangeReport::default()
        };
        self.forward_answer(&report_rx, reply, fallback, |report| {
            report.runtime_only = runtime_only;
        });
    }

    /// Passes the answer to a change applied with `answer` as its reply on to `reply`, once it
    /// comes (now, or when the workers confirm), amended by `edit`; `fallback` is the report of
    /// a change that was answered neither (nothing for the workers to confirm).
    pub(super) fn forward_answer(
        &mut self,
        answer: &mpsc::Receiver<Response>,
        reply: Option<Sender<Response>>,
        fallback: ChangeReport,
        edit: impl FnOnce(&mut ChangeReport),
    ) {
        match answer.try_recv() {
            // Answered at once: no worker had to confirm.
            Ok(mut response) => {
                if let Some(Reply::Changed(report)) = &mut response.result {
                    edit(report);
                }
                if let Some(reply) = reply {
                    respond(&reply, response);
                }
            }
            // Waiting for the workers: the answer goes straight to the client when they confirm.
            Err(_) => match self
                .pending
                .iter_mut()
                .find(|pending| pending.report.generation == fallback.generation)
            {
                Some(pending) => {
                    edit(&mut pending.report);
                    pending.reply = reply;
                }
                None => {
                    let mut report = fallback;
                    edit(&mut report);
                    if let Some(reply) = reply {
                        respond(&reply, Response::ok(Reply::Changed(report)));
                    }
                }
            },
        }
    }

    /// Validates `change` as a whole, makes it the running set, tells the workers, and answers
    /// once they confirmed; says whether it was applied. A refused change leaves everything as
    /// it was.
    pub(super) fn apply(&mut self, change: Change, reply: Option<Sender<Response>>) -> bool {
        self.apply_as(change, reply, true)
    }

    /// [`World::apply`]; a change that is not `durable` only moves rules between the waiting
    /// ones and the running set, which the state file holds alike: it is not written.
    pub(super) fn apply_as(
        &mut self,
        change: Change,
        reply: Option<Sender<Response>>,
        durable: bool,
    ) -> bool {
        let refuse = |notices: &mut Notices, reply: Option<Sender<Response>>, error: String| {
            if let Some(held) = notices.allow_unrepeated(Kind::Refused, &error) {
                log::warn!("change refused, nothing changed: {error}{held}");
            }
            if let Some(reply) = reply {
                respond(&reply, Response::refused(error));
            }
        };
        let names: Vec<String> = self.classes.iter().flatten().cloned().collect();
        let default_workers = self.class_slots(0).next().is_some();
        let mut problems = crate::config::check_rule_classes(&change.add, &names, default_workers);
        problems.extend(self.shared_key(&change));
        if !problems.is_empty() {
            refuse(&mut self.notices, reply, problems.join("; "));
            return false;
        }
        // Made in place (no copy of the set), undone below if anything after it fails.
        let undo = match self.state.apply(&change) {
            Ok(undo) => undo,
            Err(error) => {
                refuse(&mut self.notices, reply, error.to_string());
                return false;
            }
        };
        let new_rings = match self
            .inputs
            .sync_change(self.state.set(), &change.add, &change.remove)
        {
            Ok(rings) => rings,
            Err(error) => {
                self.state.revert(undo);
                refuse(&mut self.notices, reply, error.to_string());
                return false;
            }
        };
        let committed = if durable {
            self.state.commit(&change)
        } else {
            Ok(self.state.commit_moved())
        };
        let generation = match committed {
            Ok(generation) => generation,
            Err(error) => {
                self.state.revert(undo);
                // Put the memberships back as they were for the set that keeps running: the
                // change's rules go, the ones it removed or replaced come back.
                let restored: Vec<Rule> = change
                    .remove
                    .iter()
                    .filter_map(|name| self.state.set().get(name).cloned())
                    .collect();
                let added: Vec<String> = change.add.iter().map(|rule| rule.name.clone()).collect();
                if let Err(error) = self.inputs.sync_change(self.state.set(), &restored, &added) {
                    log::error!("putting the inputs back after a refused change: {error}");
                }
                refuse(
                    &mut self.notices,
                    reply,
                    format!("cannot write the state file: {error}"),
                );
                return false;
            }
        };
        for facts in self.state.set().interfaces().iter() {
            self.lifecycle.follow_known(facts);
        }
        self.consume
            .follow(self.state.set(), &change.add, &change.remove);
        let report = ChangeReport {
            generation,
            added: change.add.iter().map(|rule| rule.name.clone()).collect(),
            removed: change.remove.clone(),
            runtime_only: Vec::new(),
            unconfirmed: Vec::new(),
            waiting: Vec::new(),
        };
        log::info!(
            "generation {generation}: added {:?}, removed {:?}",
            report.added,
            report.removed
        );
        // A new input interface: its rings go to the workers that own its fanout members, as
        // they serve, ahead of the rules that need them. The rings filled meanwhile.
        let mut handed: Vec<Vec<(u32, RingHandle)>> =
            self.slots.iter().map(|_| Vec::new()).collect();
        for (class, member, handle) in new_rings {
            if let Some(owner) = self.owners[class].get(member as usize).copied()
                && let Some(rings) = handed.get_mut(owner)
            {
                rings.push((member, handle));
            }
        }
        for (slot, rings) in self.slots.iter_mut().zip(handed) {
            if !rings.is_empty() {
                slot.add_rings(rings);
            }
        }
        let interfaces: Vec<InterfaceFacts> =
            self.state.set().interfaces().iter().cloned().collect();
        for index in 0..self.slots.len() {
            // A worker hears only of the rules it holds: its class's, its shards'.
            let shard = self.shard_of(index);
            let remove: Vec<String> = change
                .remove
                .iter()
                .filter(|name| {
                    undo.removed_rule(name)
                        .is_none_or(|rule| self.holds(index, rule, shard.as_ref()))
                })
                .cloned()
                .collect();
            let add: Vec<Rule> = change
                .add
                .iter()
                .filter(|rule| self.holds(index, rule, shard.as_ref()))
                .cloned()
                .collect();
            let slot = &mut self.slots[index];
            // A starting worker gets the whole table once it is ready (`decide::reports`).
            if slot.life.is_serving()
                && slot
                    .hand_outputs(self.state.set().interfaces(), &self.ring, |handed| {
                        let known = self.state.set().interfaces();
                        handed.remove(
                            remove.iter().filter_map(|name| undo.removed_rule(name)),
                            known,
                        );
                        handed.add(add.iter(), known)
                    })
                    .is_ok()
                && slot
                    .tell(&ToWorker::Update {
                        generation,
                        remove,
                        add,
                        interfaces: interfaces.clone(),
                    })
                    .is_ok()
                && let Some(run) = slot.life.run_mut()
            {
                run.sent_generation = generation;
            }
        }
        self.pending.push(PendingChange {
            report,
            reply,
            deadline: Instant::now() + CONFIRM_WITHIN,
        });
        self.settle_changes();
        true
    }

    /// Why `change` would put one (interface, group, port, VLAN) key in two classes, if it would:
    /// checked against the class key counts, so in time proportional to the change.
    fn shared_key(&self, change: &Change) -> Option<String> {
        if self.inputs.class_count() == 1 {
            return None;
        }
        fn key_of(rule: &Rule) -> (&str, crate::supervisor::inputs::ClassKey) {
            let input = &rule.input;
            (
                input.interface.as_str(),
                (input.destination, input.port, input.vlan),
            )
        }
        let removed: Vec<&Rule> = change
            .remove
            .iter()
            .filter_map(|name| self.state.set().get(name))
            .collect();
        let mut added: HashMap<(&str, crate::supervisor::inputs::ClassKey), &Rule> = HashMap::new();
        for rule in &change.add {
            let key = key_of(rule);
            if let Some(other) = added.get(&key)
                && other.class != rule.class
            {
                return Some(crate::config::shared_key_problem(rule, other));
            }
            added.entry(key).or_insert(rule);
            let class = self.inputs.class_of(rule);
            for other_class in (0..self.inputs.class_count()).filter(|&c| c != class) {
                let leaving = removed
                    .iter()
                    .filter(|r| key_of(r) == key && self.inputs.class_of(r) == other_class)
                    .count() as u32;
                if self.inputs.key_count(key.0, other_class, key.1) > leaving {
                    // Only now, on a refusal, is the set searched for the rule to name.
                    let other = self.state.set().rules().iter().find(|r| {
                        key_of(r) == key
                            && self.inputs.class_of(r) == other_class
                            && !change.remove.contains(&r.name)
                    })?;
                    return Some(crate::config::shared_key_problem(rule, other));
                }
            }
        }
        None
    }

    /// Answers every pending change that all live, ready workers have confirmed.
    pub(super) fn settle_changes(&mut self) {
        let confirmed = |world: &World, generation: u64| {
            world
                .slots
                .iter()
                .filter(|slot| slot.life.is_serving())
                .all(|slot| slot.acked_generation() >= generation)
        };
        let mut index = 0;
        let mut settled = false;
        while index < self.pending.len() {
            if confirmed(self, self.pending[index].report.generation) {
                let change = self.pending.remove(index);
                if let Some(reply) = change.reply {
                    respond(&reply, Response::ok(Reply::Changed(change.report)));
                }
                settled = true;
            } else {
                index += 1;
            }
        }
        if settled && self.pending.is_empty() {
            // What a large change needed until every worker confirmed it (its messages, the
            // rules it replaced) is free only now: give it back, or RSS keeps the high mark.
            fanout_core::heap::trim();
        }
    }

    /// Answers pending changes whose confirmation took too long, naming the workers that did not
    /// confirm (they are resynced when they next report).
    pub(super) fn expire_changes(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.pending.len() {
            if self.pending[index].deadline <= now {
                let mut change = self.pending.remove(index);
                change.report.unconfirmed = self
                    .slots
                    .iter()
                    .filter(|slot| slot.life.in_worker_set())
                    .filter(|slot| slot.acked_generation() < change.report.generation)
                    .map(|slot| slot.cpu)
                    .collect();
                log::warn!(
                    "generation {}: workers on cpus {:?} did not confirm in time; resyncing them",
                    change.report.generation,
                    change.report.unconfirmed
                );
                if let Some(reply) = change.reply {
                    respond(&reply, Response::ok(Reply::Changed(change.report)));
                }
            } else {
                index += 1;
            }
        }
    }

    /// When the loop must wake up for a pending change's deadline.
    pub(super) fn change_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.pending.iter().map(|change| change.deadline)
    }

    fn resolve(&self, name: Option<String>, key: Option<KeyEntry>) -> Result<String, Refusal> {
        match (name, key) {
            (Some(name), None) => Ok(name),
            (None, Some(key)) => self
                .state
                .set()
                .rules()
                .iter()
                .find(|rule| {
                    rule.input.interface == key.interface
                        && rule.input.destination == key.destination
                        && rule.input.port == key.port
                        && rule.input.source == key.source
                        && rule.input.vlan == key.vlan
                })
                .map(|rule| rule.name.clone())
                .ok_or_else(|| {
                    Refusal::NoMatch(
                        relay_rules::RuleKey {
                            interface: key.interface,
                            destination: key.destination,
                            port: key.port,
                            source: key.source,
                            vlan: key.vlan,
                        }
                        .to_string(),
                    )
                }),
            _ => Err(Refusal::NameOrKey),
        }
    }
}

/// Logs a refused reload with its reason (for a SIGHUP the log is the only answer) and answers
/// the client, if there is one.
fn refuse_reload(reply: Option<Sender<Response>>, error: &str) {
    log::error!("reload refused, nothing changed: {error}");
    if let Some(reply) = reply {
        respond(
            &reply,
            Response::refused(format!("reload refused: {error}")),
        );
    }
}
