//! What the supervisor does when a followed interface changes (see `lifecycle`): each
//! transition is logged once and counted; rules waiting for an interface start relaying when
//! it appears.

use super::World;
use crate::rings;
use crate::supervisor::lifecycle::{Transition, interfaces_of};
use crate::supervisor::links::LinkEvent;
use crate::supervisor::state::Change;
use relay_rules::Rule;

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
                Transition::Up { name } => {
                    log::info!("interface {name} is up again");
                    // A rule whose input appeared down waited for this.
                    self.activate_waiting();
                }
                Transition::Raised { name } => {
                    log::debug!("interface {name} was set up; it does not run yet");
                    self.activate_waiting();
                }
                Transition::Appeared { name, index } => {
                    log::info!("interface {name} appeared (index {index})");
                    self.refresh(&name);
                    self.activate_waiting();
                }
                Transition::Gone { name, index } => {
                    log::warn!("interface {name} (index {index}) was deleted");
                    self.input_gone(&name, index);
                }
                Transition::Facts { name } => {
                    log::debug!("interface {name}: facts changed");
                    self.refresh(&name);
                }
            }
        }
    }

    /// Reads interface `name`'s facts anew (it was created anew, or its MTU, MAC or address
    /// changed) and, when running rules name it, sends every serving worker its whole table
    /// with them, as a new generation: an output gets a transmit ring or socket on the new
    /// index (the old one is closed), templates the new MAC, address and MTU (a frame too big
    /// for a lowered MTU is counted as too big, and relayed again once it is raised).
    fn refresh(&mut self, name: &str) {
        match self.state.refresh_facts(name) {
            Ok(true) => {}
            Ok(false) => return,
            Err(errors) => {
                // An interface created anew has no address at first: its rules keep the old
                // facts until the address event that follows.
                log::warn!(
                    "interface {name}: its facts now break running rules, which keep the old \
                     ones until they are valid again: {errors}"
                );
                return;
            }
        }
        let used = self
            .state
            .set()
            .rules()
            .iter()
            .any(|rule| interfaces_of(rule).any(|named| named == name));
        if !used {
            return;
        }
        // Not written: the state file holds rules, not facts.
        let generation = self.state.commit_moved();
        log::info!(
            "interface {name}: facts changed; generation {generation} gives every worker its \
             table with them"
        );
        for index in 0..self.slots.len() {
            if self.slots[index].life.is_serving() {
                self.resync(index, generation);
            }
        }
    }

    /// The rules whose input was `name` (index `index`), which was deleted, wait for it again:
    /// the kernel unbound their receive rings from it, and an interface created later under the
    /// name is a new one, which needs new rings, a new fanout group and new memberships. Their
    /// workers let the dead rings go now, and take the new ones as they serve.
    fn input_gone(&mut self, name: &str, index: u32) {
        self.inputs.drop_interface(name);
        for slot in &mut self.slots {
            slot.drop_rings(index);
        }
        let rules: Vec<Rule> = self
            .state
            .set()
            .rules()
            .iter()
            .filter(|rule| rule.input.interface == name)
            .cloned()
            .collect();
        if rules.is_empty() {
            return;
        }
        let names: Vec<String> = rules.iter().map(|rule| rule.name.clone()).collect();
        let change = Change {
            remove: names.clone(),
            add: Vec::new(),
        };
        if self.apply_as(change, None, false) {
            log::warn!(
                "rule(s) {names:?} wait for interface {name} again: they relay once it is \
                 created anew"
            );
            self.state.wait(rules);
        } else {
            log::error!(
                "rule(s) {names:?}: their input {name} was deleted, but they could not be set \
                 to wait for it (the reason is logged above)"
            );
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

    /// Moves the waiting rules whose interfaces all exist now, and whose input is up, into the
    /// running set, as one change; a rule the change refuses (invalid against the interface's
    /// facts) goes on waiting, and the log says why.
    ///
    /// An input that exists but is administratively down is waited for too: the kernel
    /// refuses a fanout join on an interface that is not up (`EINVAL`), and an interface is
    /// created down, so a rule started the moment its input appears would be refused whenever
    /// the relay sees the creation before the interface is set up. It starts when the
    /// interface is set up (`IFF_UP`), not when the kernel reports it running: frames flow as
    /// soon as the carrier is on, and the kernel's link watch may report that a second later.
    pub(super) fn activate_waiting(&mut self) {
        let followed = self.lifecycle.interfaces();
        let ready = self.state.take_waiting(|rule| {
            let input_up = followed
                .get(rule.input.interface.as_str())
                .is_none_or(|input| input.admin_up);
            input_up && interfaces_of(rule).all(|name| rings::interface_facts(name).is_some())
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
    /// The waiting rules with the interfaces they wait for, for `ctl list`: the missing ones,
    /// and the input while it exists but is down (see [`World::activate_waiting`]).
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
                            .is_none_or(|followed| {
                                followed.index.is_none()
                                    || (*name == rule.input.interface && !followed.admin_up)
                            })
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
