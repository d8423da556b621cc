//! The lifecycle of the interfaces the rules name (absent, down, up, gone), followed from
//! netlink events, and the rules that wait for an interface that does not exist.
//!
//! [`Lifecycle::observe`] is pure: it turns one [`LinkEvent`] into the transitions of the
//! followed interfaces, which the supervisor then acts on (logs once, counts, activates waiting
//! rules). A rename is the old name's removal and the new name's appearance.

use super::links::LinkEvent;
use relay_rules::Rule;
use std::collections::BTreeMap;

/// What became of one followed interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Transition {
    /// It exists now (created, recreated under a new index, or renamed to this name).
    Appeared { name: String, index: u32 },
    /// It does not exist any more (deleted, or renamed away).
    Gone { name: String, index: u32 },
    /// It stopped running (administratively down, or lost its carrier).
    Down { name: String },
    /// It runs again.
    Up { name: String },
    /// It was set administratively up (`IFF_UP`) and does not run yet: a fanout group may be
    /// joined on it already, and frames may flow before the kernel reports it running (it does
    /// so from its link watch, up to a second later).
    Raised { name: String },
    /// Its MTU, hardware address or IPv4 addresses changed: the facts must be read again.
    Facts { name: String },
}

/// What is known of one followed interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Followed {
    /// Its kernel index while it exists.
    pub(super) index: Option<u32>,
    /// Whether it runs (`IFF_RUNNING`).
    pub(super) running: bool,
    /// Whether it is administratively up (`IFF_UP`): the kernel takes a fanout join on it.
    pub(super) admin_up: bool,
    /// Times it went down.
    pub(super) downs: u64,
    /// Times it was deleted (or renamed away).
    pub(super) removals: u64,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
}

impl Followed {
    /// Whether it exists and runs: the value of `fanout_relay_interface_up`.
    pub(super) fn is_up(&self) -> bool {
        self.index.is_some() && self.running
    }
}

/// The interfaces the rules name (running and waiting ones), by name.
#[derive(Debug, Default)]
pub(super) struct Lifecycle {
    interfaces: BTreeMap<String, Followed>,
}

impl Lifecycle {
    /// Follows `name`, which exists with `index` (and is then taken to run) or not.
    pub(super) fn follow(&mut self, name: &str, index: Option<u32>) {
        self.interfaces
            .entry(name.to_owned())
            .or_insert_with(|| Followed {
                index,
                running: index.is_some(),
                admin_up: index.is_some(),
                ..Followed::default()
            });
    }

    /// Follows the interface `facts` describes, which exists (and is taken to run), from the
    /// facts read when its rules were checked: the first netlink message that says otherwise is
    /// a change of facts.
    pub(super) fn follow_known(&mut self, facts: &relay_rules::InterfaceFacts) {
        self.interfaces
            .entry(facts.name.clone())
            .or_insert_with(|| Followed {
                index: Some(facts.index),
                running: true,
                admin_up: true,
                mtu: Some(facts.mtu),
                mac: facts.mac,
                ..Followed::default()
            });
    }

    /// The followed interfaces.
    pub(super) fn interfaces(&self) -> &BTreeMap<String, Followed> {
        &self.interfaces
    }

    fn name_of(&self, index: u32) -> Option<String> {
        self.interfaces
            .iter()
            .find(|(_, followed)| followed.index == Some(index))
            .map(|(name, _)| name.clone())
    }

    /// The transitions `event` makes.
    pub(super) fn observe(&mut self, event: &LinkEvent) -> Vec<Transition> {
        let mut out = Vec::new();
        match event {
            LinkEvent::Link(facts) => {
                // Renamed away from a followed name: that name is gone.
                if let Some(old) = self.name_of(facts.index)
                    && old != facts.name
                {
                    self.remove(&old, facts.index, &mut out);
                }
                let Some(followed) = self.interfaces.get_mut(&facts.name) else {
                    return out;
                };
                if followed.index != Some(facts.index) {
                    if let Some(index) = followed.index {
                        // A new index under the same name without a deletion seen (lost
                        // events): the old one is gone all the same.
                        followed.index = None;
                        followed.removals += 1;
                        out.push(Transition::Gone {
                            name: facts.name.clone(),
                            index,
                        });
                    }
                    *followed = Followed {
                        index: Some(facts.index),
                        running: facts.running,
                        admin_up: facts.up,
                        mtu: facts.mtu,
                        mac: facts.mac,
                        ..followed.clone()
                    };
                    out.push(Transition::Appeared {
                        name: facts.name.clone(),
                        index: facts.index,
                    });
                    if !facts.running {
                        followed.downs += 1;
                        out.push(Transition::Down {
                            name: facts.name.clone(),
                        });
                    }
                    return out;
                }
                if followed.admin_up != facts.up {
                    followed.admin_up = facts.up;
                    if facts.up && !facts.running {
                        out.push(Transition::Raised {
                            name: facts.name.clone(),
                        });
                    }
                }
                if followed.running != facts.running {
                    followed.running = facts.running;
                    if facts.running {
                        out.push(Transition::Up {
                            name: facts.name.clone(),
                        });
                    } else {
                        followed.downs += 1;
                        out.push(Transition::Down {
                            name: facts.name.clone(),
                        });
                    }
                }
                if (facts.mtu.is_some() && facts.mtu != followed.mtu)
                    || (facts.mac.is_some() && facts.mac != followed.mac)
                {
                    let first = followed.mtu.is_none() && followed.mac.is_none();
                    followed.mtu = facts.mtu.or(followed.mtu);
                    followed.mac = facts.mac.or(followed.mac);
                    // The first message only tells what the facts read at start already say.
                    if !first {
                        out.push(Transition::Facts {
                            name: facts.name.clone(),
                        });
                    }
                }
            }
            LinkEvent::Deleted { index, .. } => {
                if let Some(name) = self.name_of(*index) {
                    self.remove(&name, *index, &mut out);
                }
            }
            LinkEvent::Address { index, .. } => {
                if let Some(name) = self.name_of(*index) {
                    out.push(Transition::Facts { name });
                }
            }
            LinkEvent::Lost => {}
        }
        out
    }

    fn remove(&mut self, name: &str, index: u32, out: &mut Vec<Transition>) {
        if let Some(followed) = self.interfaces.get_mut(name) {
            followed.index = None;
            followed.running = false;
            followed.admin_up = false;
            followed.removals += 1;
            out.push(Transition::Gone {
                name: name.to_owned(),
                index,
            });
        }
    }
}

/// The interfaces `rule` names: its input's, then its outputs'.
pub(super) fn interfaces_of(rule: &Rule) -> impl Iterator<Item = &str> + '_ {
    std::iter::once(rule.input.interface.as_str())
        .chain(rule.outputs.iter().map(|output| output.interface.as_str()))
}

/// Splits `rules` into those whose interfaces all exist (`exists`) and those that wait for
/// one, with the missing interfaces of each.
pub(super) fn split_waiting(
    rules: Vec<Rule>,
    exists: impl Fn(&str) -> bool,
) -> (Vec<Rule>, Vec<(Rule, Vec<String>)>) {
    let mut ready = Vec::new();
    let mut waiting = Vec::new();
    for rule in rules {
        let mut missing: Vec<String> = interfaces_of(&rule)
            .filter(|name| !exists(name))
            .map(str::to_owned)
            .collect();
        missing.dedup();
        if missing.is_empty() {
            ready.push(rule);
        } else {
            waiting.push((rule, missing));
        }
    }
    (ready, waiting)
}

#[cfg(test)]
mod tests {
    use super::super::links::LinkFacts;
    use super::*;

    fn link(index: u32, name: &str, running: bool, mtu: u32) -> LinkEvent {
        LinkEvent::Link(LinkFacts {
            index,
            name: name.into(),
            up: running,
            running,
            mtu: Some(mtu),
            mac: Some([2, 0, 0, 0, 0, 1]),
        })
    }

    #[test]
    fn an_interface_created_down_is_raised_before_it_runs() {
        let mut lifecycle = Lifecycle::default();
        lifecycle.follow("late0", None);
        let created = |up, running| {
            LinkEvent::Link(LinkFacts {
                index: 9,
                name: "late0".into(),
                up,
                running,
                mtu: Some(1500),
                mac: Some([2, 0, 0, 0, 0, 9]),
            })
        };
        let appeared = lifecycle.observe(&created(false, false));
        assert!(appeared.contains(&Transition::Appeared {
            name: "late0".into(),
            index: 9
        }));
        assert!(!lifecycle.interfaces()["late0"].admin_up);
        assert_eq!(
            lifecycle.observe(&created(true, false)),
            vec![Transition::Raised {
                name: "late0".into()
            }]
        );
        assert!(lifecycle.interfaces()["late0"].admin_up);
        assert_eq!(
            lifecycle.observe(&created(true, true)),
            vec![Transition::Up {
                name: "late0".into()
            }]
        );
    }

    #[test]
    fn an_interface_goes_down_once_and_comes_back() {
        let mut lifecycle = Lifecycle::default();
        lifecycle.follow("in0", Some(4));
        assert_eq!(lifecycle.observe(&link(4, "in0", true, 1500)), vec![]);
        let down = vec![Transition::Down { name: "in0".into() }];
        assert_eq!(lifecycle.observe(&link(4, "in0", false, 1500)), down);
        // The kernel repeats NEWLINK for one change: no second transition.
        assert_eq!(lifecycle.observe(&link(4, "in0", false, 1500)), vec![]);
        assert_eq!(
            lifecycle.observe(&link(4, "in0", true, 1500)),
            vec![Transition::Up { name: "in0".into() }]
        );
        assert_eq!(lifecycle.interfaces()["in0"].downs, 1);
        assert_eq!(
            lifecycle.observe(&link(4, "in0", true, 1400)),
            vec![Transition::Facts { name: "in0".into() }]
        );
        // Followed from the facts read at start, the first message that differs is a change.
        let mut known = Lifecycle::default();
        known.follow_known(&relay_rules::InterfaceFacts {
            name: "out0".into(),
            index: 5,
            mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: 1500,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
        });
        assert_eq!(known.observe(&link(5, "out0", true, 1500)), vec![]);
        assert_eq!(
            known.observe(&link(5, "out0", true, 200)),
            vec![Transition::Facts {
                name: "out0".into()
            }]
        );
        // Interfaces no rule names are not followed.
        assert_eq!(lifecycle.observe(&link(9, "other", false, 1500)), vec![]);
    }

    #[test]
    fn deleted_recreated_and_renamed() {
        let mut lifecycle = Lifecycle::default();
        lifecycle.follow("in0", Some(4));
        lifecycle.follow("late0", None);
        assert!(!lifecycle.interfaces()["late0"].is_up());
        let gone = |index| Transition::Gone {
            name: "in0".into(),
            index,
        };
        let deleted = LinkEvent::Deleted {
            index: 4,
            name: "in0".into(),
        };
        assert_eq!(lifecycle.observe(&deleted), vec![gone(4)]);
        assert!(!lifecycle.interfaces()["in0"].is_up());
        assert_eq!(
            lifecycle.observe(&link(11, "in0", true, 1500)),
            vec![Transition::Appeared {
                name: "in0".into(),
                index: 11
            }]
        );
        // A new index without a deletion seen: gone, then appeared.
        assert_eq!(
            lifecycle.observe(&link(12, "in0", false, 1500)),
            vec![
                gone(11),
                Transition::Appeared {
                    name: "in0".into(),
                    index: 12
                },
                Transition::Down { name: "in0".into() },
            ]
        );
        // Renamed to a name a waiting rule wants: one gone, the other there.
        assert_eq!(
            lifecycle.observe(&link(12, "late0", true, 1500)),
            vec![
                gone(12),
                Transition::Appeared {
                    name: "late0".into(),
                    index: 12
                }
            ]
        );
        assert_eq!(lifecycle.interfaces()["in0"].removals, 3);
    }
}
