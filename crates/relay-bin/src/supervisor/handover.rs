//! The outputs a worker process is handed: the supervisor opens them (a worker holds no
//! capability to), counts which transmit rings and sockets each process holds by the rules that
//! use them, so that a change hands over only what is new, and sends them.
//!
//! The count mirrors the worker's own (a ring or socket lives while a rule of its table uses
//! it). Should they part (the worker refused a rule the supervisor counted), the worker's table
//! checksum differs from the supervisor's, and the resync that follows hands everything over
//! anew.

use crate::config::RingSection;
use crate::outputs::{HandedOutput, OutputError, OutputKey, RingLayout};
use crate::protocol::{self, ToWorker};
use crate::rings;
use fanout_core::TxRingBuilder;
use fanout_core::handoff::MAX_FDS;
use relay_rules::table::compile_outputs;
use relay_rules::{Interfaces, Rule};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
        match open(*key, interfaces, ring) {
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

/// An output opened for a worker: what to tell it, and the descriptor to send.
#[derive(Debug)]
pub(crate) struct Opened {
    /// What the message says about it.
    pub(crate) handed: HandedOutput,
    /// The socket.
    pub(crate) fd: OwnedFd,
}

/// Opens what `key` names, set up for `ring`'s settings (a transmit ring is not mapped here).
pub(crate) fn open(
    key: OutputKey,
    interfaces: &Interfaces,
    ring: &RingSection,
) -> Result<Opened, OutputError> {
    let ifindex = key.ifindex();
    let (name, mtu) = interfaces
        .by_index(ifindex)
        .map(|facts| (facts.name.clone(), facts.mtu))
        .ok_or(OutputError::UnknownInterface { ifindex })?;
    match key {
        OutputKey::Ring { .. } => {
            let handle = TxRingBuilder::new(name.as_str())
                .geometry(rings::tx_geometry(ring, mtu))
                .qdisc_bypass(crate::kernel_features::qdisc_bypass(ring))
                .linear(crate::kernel_features::tx_linear(ring))
                .segmentation(rings::tx_segmentation(ring))
                .build_unmapped()
                .map_err(|source| OutputError::TxRing {
                    interface: name.clone(),
                    source,
                })?;
            Ok(Opened {
                handed: HandedOutput {
                    key,
                    ring: Some(RingLayout::of(&handle.descriptor())),
                },
                fd: handle.into_fd(),
            })
        }
        OutputKey::Socket {
            source, ttl, dscp, ..
        } => {
            let socket = output_socket(&name, source, ttl, dscp).map_err(|(call, error)| {
                OutputError::Socket {
                    interface: name.clone(),
                    from: source,
                    call,
                    source: error,
                }
            })?;
            Ok(Opened {
                handed: HandedOutput { key, ring: None },
                fd: OwnedFd::from(socket),
            })
        }
    }
}

/// A UDP socket sending from `source` out of interface `name` with the output's TTL and DSCP;
/// an error names the call that failed.
fn output_socket(
    name: &str,
    source: IpAddr,
    ttl: u8,
    dscp: Option<u8>,
) -> Result<UdpSocket, (&'static str, io::Error)> {
    use nix::sys::socket::{setsockopt, sockopt};
    fn call<T, E: Into<io::Error>>(
        name: &'static str,
        result: Result<T, E>,
    ) -> Result<T, (&'static str, io::Error)> {
        result.map_err(|error| (name, error.into()))
    }
    let source = match source {
        IpAddr::V6(source) => {
            let options = fanout_core::udp_batch::Ipv6SocketOptions {
                interface: name.to_owned(),
                source,
                hop_limit: ttl,
                traffic_class: dscp.map(|dscp| dscp << 2),
            };
            return fanout_core::udp_batch::ipv6_socket(&options)
                .map_err(|error| (error.call, error.errno));
        }
        IpAddr::V4(source) => source,
    };
    let socket = call("bind", UdpSocket::bind((source, 0)))?;
    call(
        "setsockopt(SO_BINDTODEVICE)",
        setsockopt(
            &socket,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(name),
        ),
    )?;
    call("setsockopt(IP_TTL)", socket.set_ttl(u32::from(ttl)))?;
    call(
        "setsockopt(IP_MULTICAST_TTL)",
        socket.set_multicast_ttl_v4(u32::from(ttl)),
    )?;
    call(
        "setsockopt(IP_MULTICAST_LOOP)",
        socket.set_multicast_loop_v4(false),
    )?;
    if let Some(dscp) = dscp {
        call(
            "setsockopt(IP_TOS)",
            setsockopt(&socket, sockopt::Ipv4Tos, &(i32::from(dscp) << 2)),
        )?;
    }
    call("fcntl(O_NONBLOCK)", socket.set_nonblocking(true))?;
    Ok(socket)
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
                ipv6: Vec::new(),
            })
            .collect()
    }

    fn rule(name: &str, port: u16, outputs: &[&str]) -> Rule {
        Rule {
            name: name.to_owned(),
            input: Input {
                interface: "in0".to_owned(),
                destination: Ipv4Addr::new(239, 1, 1, 1).into(),
                port,
                source: None,
                vlan: None,
            },
            outputs: outputs
                .iter()
                .map(|interface| Output {
                    interface: (*interface).to_owned(),
                    destination: Ipv4Addr::new(239, 2, 2, 2).into(),
                    port,
                    ttl: Output::DEFAULT_TTL,
                    source: None,
                    dscp: None,
                    vlan: None,
                })
                .collect(),
            class: None,
            inspect: None,
            rtp_clock_hz: None,
            max_pps: None,
            max_bps: None,
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
