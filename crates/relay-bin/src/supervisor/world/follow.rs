//! What the supervisor does when a followed interface changes (see `lifecycle`): each
//! transition is logged once and counted; rules waiting for an interface start relaying when
//! it appears.

use super::World;
use crate::rings;
use crate::supervisor::lifecycle::{Transition, interfaces_of};
use crate::supervisor::links::LinkEvent;
use crate::supervisor::state::Change;

impl World {
    /// Acts on one netlink event.
    pub(super) fn link(&mut self, event: LinkEvent) {
        if event == LinkEvent::Lost {
            log::warn!(
                "netlink: interface notifications were lost (the socket's buffer overflowed); \
                 looking for the interfaces that rules wait for again"
            );
            self.activate_waiting();
            return;
        }
        for transition in self.lifecycle.observe(&event) {
            match transition {
                Transition::Down { name } => {
                    let downs = self
                        .lifecycle
                        .interfaces()
                        .get(&name)
                        .map_or(0, |f| f.downs);
                    log::warn!(
                        "interface {name} is down: nothing is received or sent on it until it \
                         returns (down {downs} time(s) since the relay started)"
                    );
                }
                Transition::Up { name } => log::info!("interface {name} is up again"),
                Transition::Appeared { name, index } => {
                    log::info!("interface {name} appeared (index {index})");
                    self.activate_waiting();
                }
                Transition::Gone { name, index } => {
                    log::warn!("interface {name} (index {index}) was deleted");
                }
                Transition::Facts { name } => {
                    log::debug!("interface {name}: facts changed");
                }
            }
        }
    }

    /// Logs the rules that wait for interfaces, naming the missing ones (a typo stands out).
    pub(super) fn log_waiting(&self) {
        for rule in self.state.waiting().values() {
            let missing: Vec<&str> = interfaces_of(rule)
                .filter(|name| rings::interface_facts(name).is_none())
                .collect();
            log::warn!(
                "rule {:?} waits for interface(s) {missing:?}, which do not exist: it starts \
                 relaying when they appear",
                rule.name
            );
        }
    }

    /// Moves the waiting rules whose interfaces all exist now into the running set, as one
    /// change; a rule the change refuses (invalid against the interface's facts) goes on
    /// waiting, and the log says why.
    pub(super) fn activate_waiting(&mut self) {
        let ready = self.state.take_waiting(|rule| {
            interfaces_of(rule).all(|name| rings::interface_facts(name).is_some())
        });
        if ready.is_empty() {
            return;
        }
        let names: Vec<&str> = ready.iter().map(|rule| rule.name.as_str()).collect();
        log::info!("rule(s) {names:?}: their interfaces exist now, starting them");
        let change = Change {
            remove: Vec::new(),
            add: ready.clone(),
        };
        if !self.apply_as(change, None, false) {
            log::error!("rule(s) {names:?} go on waiting: refused (the reason is logged above)");
            self.state.wait(ready);
        }
    }
}

impl World {
    /// The waiting rules with their missing interfaces, for `ctl list`.
    pub(super) fn waiting_rules(&self) -> Vec<crate::control::proto::WaitingRule> {
        self.state
            .waiting()
            .values()
            .map(|rule| crate::control::proto::WaitingRule {
                rule: rule.clone(),
                missing: interfaces_of(rule)
                    .filter(|name| {
                        self.lifecycle
                            .interfaces()
                            .get(*name)
                            .is_none_or(|followed| followed.index.is_none())
                    })
                    .map(str::to_owned)
                    .collect(),
            })
            .collect()
    }

    /// The followed interfaces, for `ctl list` and the metrics.
    pub(super) fn interface_states(&self) -> Vec<crate::control::proto::InterfaceState> {
        self.lifecycle
            .interfaces()
            .iter()
            .map(|(name, followed)| crate::control::proto::InterfaceState {
                name: name.clone(),
                index: followed.index,
                up: followed.is_up(),
                downs: followed.downs,
                removals: followed.removals,
            })
            .collect()
    }
}
