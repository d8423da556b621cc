//! `ctl add` and `ctl remove` of a rule on several input interfaces (an `[[interface_group]]`,
//! or a list given in place): the rules it stands for, one per interface (`RULE.INTERFACE`),
//! change together, those whose interfaces exist in the running set and the others among the
//! waiting rules, as a configuration file's would.

use super::World;
use crate::config::{InterfaceGroup, check_groups, inline_group_name, is_member_of, member_rules};
use crate::control::proto::{ChangeReport, Response};
use crate::control::respond;
use crate::rings;
use crate::supervisor::lifecycle::split_waiting;
use crate::supervisor::state::Change;
use relay_rules::Rule;
use std::sync::mpsc::{self, Sender};

/// What a rule of an `add` request stands for.
pub(super) enum StandsFor {
    /// The rule itself: its input names one interface.
    Itself(Rule),
    /// One rule per interface of its input.
    Members(Vec<Rule>),
}

impl World {
    /// What `rule` stands for: one rule per interface of `interfaces` (listed with the
    /// request, when `rule`'s input names none) or of the `[[interface_group]]` its input
    /// names; else itself. Refused: a list that is not one a group could have.
    pub(super) fn stands_for(
        &self,
        rule: Rule,
        interfaces: Vec<String>,
    ) -> Result<StandsFor, String> {
        let members = if !interfaces.is_empty() {
            if !rule.input.interface.is_empty() {
                return Err(format!(
                    "rule {:?}: the input names interface {:?} and lists interfaces too",
                    rule.name, rule.input.interface
                ));
            }
            let listed = InterfaceGroup {
                name: inline_group_name(&rule.name),
                interfaces,
            };
            let problems = check_groups(std::slice::from_ref(&listed), |_| false);
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
            listed.interfaces
        } else {
            match self
                .state
                .interface_groups()
                .iter()
                .find(|group| group.name == rule.input.interface)
            {
                Some(group) => group.interfaces.clone(),
                None => return Ok(StandsFor::Itself(rule)),
            }
        };
        Ok(StandsFor::Members(member_rules(&rule, &members).collect()))
    }

    /// Adds the member rules `rules`: those whose interfaces all exist start, the others wait
    /// for theirs; one answer names them all. Refused as a whole, nothing changed, when any
    /// part is.
    pub(super) fn add_members(&mut self, rules: Vec<Rule>, reply: Sender<Response>) {
        let (ready, waiting) = split_waiting(rules, |name| rings::interface_facts(name).is_some());
        let missing = waiting
            .iter()
            .flat_map(|(_, missing)| missing.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ");
        let waiting: Vec<Rule> = waiting.into_iter().map(|(rule, _)| rule).collect();
        let only = |add| Change {
            remove: Vec::new(),
            add,
        };
        if waiting.is_empty() {
            self.apply(only(ready), Some(reply));
            return;
        }
        if ready.is_empty() {
            self.change_waiting(only(waiting), &missing, reply);
            return;
        }
        // The waiting part first: it is checked and written on its own, and taken back if the
        // running part is then refused.
        let names: Vec<String> = waiting.iter().map(|rule| rule.name.clone()).collect();
        let (waited_tx, waited) = mpsc::channel();
        self.change_waiting(only(waiting), &missing, waited_tx);
        if let Ok(response) = waited.try_recv()
            && !response.ok
        {
            respond(&reply, response);
            return;
        }
        let (answer_tx, answer) = mpsc::channel();
        if !self.apply(only(ready), Some(answer_tx)) {
            let (undone_tx, undone) = mpsc::channel();
            self.change_waiting(
                Change {
                    remove: names,
                    add: Vec::new(),
                },
                "",
                undone_tx,
            );
            if let Ok(Response {
                error: Some(error), ..
            }) = undone.try_recv()
            {
                log::error!("taking back the waiting part of a refused add: {error}");
            }
            if let Ok(refusal) = answer.try_recv() {
                respond(&reply, refusal);
            }
            return;
        }
        let fallback = ChangeReport {
            generation: self.state.generation(),
            ..ChangeReport::default()
        };
        self.forward_answer(&answer, Some(reply), fallback, |report| {
            report.added.extend(names.iter().cloned());
            report.waiting.extend(names);
        });
    }

    /// Whether `name` is no rule's, running or waiting, but rules on a group's members were
    /// added under it (`name.INTERFACE`).
    pub(super) fn stands_for_members(&self, name: &str) -> bool {
        self.state.set().get(name).is_none()
            && !self.state.waiting().contains_key(name)
            && self
                .state
                .set()
                .rules()
                .iter()
                .chain(self.state.waiting().values())
                .any(|rule| is_member_of(rule, name))
    }

    /// Removes every rule on a group's members added under `name`, running and waiting; one
    /// answer names them all.
    pub(super) fn remove_members(&mut self, name: &str, reply: Sender<Response>) {
        let members = |rules: &mut dyn Iterator<Item = &Rule>| -> Vec<String> {
            rules
                .filter(|rule| is_member_of(rule, name))
                .map(|rule| rule.name.clone())
                .collect()
        };
        let running = members(&mut self.state.set().rules().iter());
        let waiting = members(&mut self.state.waiting().values());
        let only = |remove| Change {
            remove,
            add: Vec::new(),
        };
        if running.is_empty() {
            self.change_waiting(only(waiting), "", reply);
            return;
        }
        if waiting.is_empty() {
            self.apply(only(running), Some(reply));
            return;
        }
        let (answer_tx, answer) = mpsc::channel();
        if !self.apply(only(running), Some(answer_tx)) {
            if let Ok(refusal) = answer.try_recv() {
                respond(&reply, refusal);
            }
            return;
        }
        let (removed_tx, removed) = mpsc::channel();
        self.change_waiting(only(waiting.clone()), "", removed_tx);
        let removed_waiting = match removed.try_recv() {
            Ok(Response {
                error: Some(error), ..
            }) => {
                log::error!("rules {waiting:?} stay waiting: {error}");
                Vec::new()
            }
            _ => waiting,
        };
        let fallback = ChangeReport {
            generation: self.state.generation(),
            ..ChangeReport::default()
        };
        self.forward_answer(&answer, Some(reply), fallback, |report| {
            report.removed.extend(removed_waiting);
        });
    }
}
