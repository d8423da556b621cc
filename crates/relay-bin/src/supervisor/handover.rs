//! The outputs a worker process was handed: which transmit rings and sockets it holds, counted
//! by the rules that use them, so that a change hands over only what is new.
//!
//! The count mirrors the worker's own (a ring or socket lives while a rule of its table uses
//! it). Should they part (the worker refused a rule the supervisor counted), the worker's table
//! checksum differs from the supervisor's, and the resync that follows hands everything over
//! anew.

use crate::config::RingSection;
use crate::outputs::{self, OutputKey};
use crate::protocol::{self, ToWorker};
use fanout_core::handoff::MAX_FDS;
use relay_rules::table::compile_outputs;
use relay_rules::{Interfaces, Rule};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

/// What one worker process holds, by the number of its rules' outputs that send through each.
#[derive(Debug, Default)]
pub(crate) struct HandedOutputs {
    users: HashMap<OutputKey, usize>,
}

impl HandedOutputs {
    /// Counts the outputs of `rules`; returns what they use that the process does not hold.
    pub(crate) fn add<'a>(
        &mut self,
        rules: impl Iterator<Item = &'a Rule>,
        interfaces: &Interfaces,
    ) -> Vec<OutputKey> {
        let mut new = Vec::new();
        for key in keys(rules, interfaces) {
            let users = self.users.entry(key).or_insert(0);
            if *users == 0 {
                new.push(key);
            }
            *users += 1;
        }
        new
    }

    /// Uncounts the outputs of `rules`, which leave the process's table: what no rule uses any
    /// more, the worker closes.
    pub(crate) fn remove<'a>(
        &mut self,
        rules: impl Iterator<Item = &'a Rule>,
        interfaces: &Interfaces,
    ) {
        for key in keys(rules, interfaces) {
            if let Some(users) = self.users.get_mut(&key) {
                *users -= 1;
                if *users == 0 {
                    self.users.remove(&key);
                }
            }
        }
    }

    /// Counts `rules` (the process's whole table) from nothing; returns everything they use,
    /// to be handed over again whether the process holds it or not.
    pub(crate) fn reset<'a>(
        &mut self,
        rules: impl Iterator<Item = &'a Rule>,
        interfaces: &Interfaces,
    ) -> Vec<OutputKey> {
        self.users.clear();
        self.add(rules, interfaces)
    }

    /// Forgets `key`, which could not be opened: a later change that needs it tries again.
    fn forget(&mut self, key: &OutputKey) {
        self.users.remove(key);
    }

    /// How many rings and sockets the process holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.users.len()
    }
}

/// The keys of every output of `rules` (one per output: two outputs through one ring count
/// twice). A rule that does not compile against `interfaces` uses nothing: the worker refuses
/// it too.
fn keys<'a>(rules: impl Iterator<Item = &'a Rule>, interfaces: &Interfaces) -> Vec<OutputKey> {
    rules
        .filter_map(|rule| compile_outputs(rule, interfaces).ok())
        .flat_map(|outputs| outputs.into_iter().map(|output| OutputKey::of(&output)))
        .collect()
}

/// Opens `keys` and sends them to the worker at the other end of `control`, [`MAX_FDS`] to a
/// message. What cannot be opened is logged and forgotten in `handed`: the worker counts what
/// its outputs then cannot send. An error is the socket's: the worker is stuck or gone.
pub(crate) fn hand_over(
    control: &mut UnixStream,
    handed: &mut HandedOutputs,
    keys: &[OutputKey],
    interfaces: &Interfaces,
    ring: &RingSection,
    cpu: u32,
) -> io::Result<()> {
    let mut opened = Vec::with_capacity(keys.len());
    for key in keys {
        match outputs::open(*key, interfaces, ring) {
            Ok(output) => opened.push(output),
            Err(error) => {
                log::error!("worker on cpu {cpu}: output not opened: {error}");
                handed.forget(key);
            }
        }
    }
    for batch in opened.chunks(MAX_FDS) {
        let message = ToWorker::Outputs {
            outputs: batch.iter().map(|output| output.handed).collect(),
        };
        let fds: Vec<BorrowedFd<'_>> = batch.iter().map(|output| output.fd.as_fd()).collect();
        protocol::send_with_fds(control, &message, &fds)?;
    }
    // The worker holds its own descriptors now: ours close here.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_rules::{Input, InterfaceFacts, Output};
    use std::net::Ipv4Addr;

    fn interfaces() -> Interfaces {
        ["in0", "out0", "out1"]
            .iter()
            .zip(1..)
            .map(|(name, index)| InterfaceFacts {
                name: (*name).to_owned(),
                index,
                mac: Some([2, 0, 0, 0, 0, index as u8]),
                mtu: 1500,
                ipv4: vec![Ipv4Addr::new(10, 0, index as u8, 1)],
            })
            .collect()
    }

    fn rule(name: &str, port: u16, outputs: &[&str]) -> Rule {
        Rule {
            name: name.to_owned(),
            input: Input {
                interface: "in0".to_owned(),
                destination: Ipv4Addr::new(239, 1, 1, 1),
                port,
                source: None,
            },
            outputs: outputs
                .iter()
                .map(|interface| Output {
                    interface: (*interface).to_owned(),
                    destination: Ipv4Addr::new(239, 2, 2, 2),
                    port,
                    ttl: Output::DEFAULT_TTL,
                    source: None,
                    dscp: None,
                    vlan: None,
                })
                .collect(),
            class: None,
        }
    }

    #[test]
    fn only_what_no_rule_used_yet_is_handed_and_the_last_user_releases_it() {
        let interfaces = interfaces();
        let mut handed = HandedOutputs::default();
        let a = rule("a", 5000, &["out0"]);
        let b = rule("b", 5001, &["out0", "out1"]);
        assert_eq!(
            handed.add([&a].into_iter(), &interfaces),
            vec![OutputKey::Ring { ifindex: 2 }]
        );
        assert_eq!(
            handed.add([&b].into_iter(), &interfaces),
            vec![OutputKey::Ring { ifindex: 3 }],
            "out0's ring is held already"
        );
        handed.remove([&a].into_iter(), &interfaces);
        assert_eq!(handed.len(), 2, "b still uses out0");
        handed.remove([&b].into_iter(), &interfaces);
        assert_eq!(handed.len(), 0);
        // A resync hands everything over again, held or not.
        handed.add([&a].into_iter(), &interfaces);
        let all = handed.reset([&a, &b].into_iter(), &interfaces);
        assert_eq!(all.len(), 2, "{all:?}");
    }

    #[test]
    fn a_rule_naming_an_unknown_interface_uses_nothing() {
        let mut handed = HandedOutputs::default();
        let ghost = rule("ghost", 5000, &["nowhere"]);
        assert!(handed.add([&ghost].into_iter(), &interfaces()).is_empty());
        assert_eq!(handed.len(), 0);
    }
}
