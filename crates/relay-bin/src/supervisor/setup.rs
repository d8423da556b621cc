//! From a configuration file to a checked plan, and from a plan to the sockets that outlive workers.

use super::workers::WorkerSlot;
use crate::config::{
    ConfigError, ConfigFile, FanoutSetting, RingSection, RuleEntry, WorkersSetting,
};
use crate::protocol::InterfaceEntry;
use crate::rings;
use fanout_core::igmp::{Membership, Memberships};
use relay_rules::{Interfaces, Rule, RuleSet};
use std::collections::BTreeSet;
use std::fmt;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};

/// Why a relay could not be set up; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Rules that fail validation, every one listed.
    #[error("{}", InvalidList { path, errors })]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// One line per problem, naming the rule and the field.
        errors: Vec<String>,
    },
    /// The workers setting names no usable CPU.
    #[error("{path}: relay.workers: {problem}")]
    Workers {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A socket, ring or membership could not be set up.
    #[error("{what}: {error}")]
    System {
        /// What was being set up (interface, member, group).
        what: String,
        /// The error, with its syscall and errno.
        error: String,
    },
}

struct InvalidList<'a> {
    path: &'a Path,
    errors: &'a [String],
}

impl fmt::Display for InvalidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} invalid rule field(s):",
            self.path.display(),
            self.errors.len()
        )?;
        for error in self.errors {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

/// A configuration checked against this host: rules valid, interfaces known, CPUs chosen.
#[derive(Debug)]
pub struct Plan {
    /// The file it came from.
    pub path: PathBuf,
    /// The file's content.
    pub config: ConfigFile,
    /// The checked rules, with the facts of every interface they name.
    pub set: RuleSet,
    /// CPUs that get a worker, ascending.
    pub cpus: Vec<u32>,
}

/// Settings given on the command line, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--workers`.
    pub workers: Option<WorkersSetting>,
    /// `--fanout`.
    pub fanout: Option<FanoutSetting>,
}

impl Plan {
    /// Reads `path` and checks it against this host, without opening a socket.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Plan, SetupError> {
        let mut config = ConfigFile::load(path)?;
        if let Some(workers) = &overrides.workers {
            config.relay.workers = workers.clone();
        }
        if let Some(fanout) = overrides.fanout {
            config.relay.fanout = fanout;
        }
        let rules = config.to_rules();
        let names: BTreeSet<&str> = rules
            .iter()
            .flat_map(|rule| {
                std::iter::once(rule.input.interface.as_str())
                    .chain(rule.outputs.iter().map(|output| output.interface.as_str()))
            })
            .collect();
        // An interface that does not exist is left out of the facts: validation then names every
        // rule and field that refers to it.
        let interfaces: Interfaces = names
            .into_iter()
            .filter_map(rings::interface_facts)
            .collect();
        let set = rings::validate(&rules, &interfaces).map_err(|errors| SetupError::Invalid {
            path: path.to_owned(),
            errors,
        })?;
        let cpus = choose_cpus(&config.relay.workers).map_err(|problem| SetupError::Workers {
            path: path.to_owned(),
            problem,
        })?;
        Ok(Plan {
            path: path.to_owned(),
            config,
            set,
            cpus,
        })
    }

    /// Opens what outlives workers: receive rings in their fanout groups, memberships, sinks.
    pub(super) fn build(self) -> Result<World, SetupError> {
        let generation = 1;
        let checksum = rings::table(&self.set, generation).checksum();
        let fanout = self.config.relay.fanout;
        let ring = self.config.ring;
        let interfaces = self.set.interfaces();
        let inputs: BTreeSet<&str> = self
            .set
            .rules()
            .iter()
            .map(|rule| rule.input.interface.as_str())
            .collect();
        let members = member_cpus(fanout, &self.cpus);
        let mut slots: Vec<WorkerSlot> = self
            .cpus
            .iter()
            .enumerate()
            .map(|(index, &cpu)| WorkerSlot::new(index, cpu, Vec::new()))
            .collect();
        for &interface in &inputs {
            let handles = rings::open_fanout_members(interface, members.len(), fanout, &ring)
                .map_err(|error| SetupError::System {
                    what: format!("receive rings on {interface}"),
                    error,
                })?;
            for (member, handle) in handles.into_iter().enumerate() {
                slots[serving_slot(member, &members, &self.cpus)]
                    .rings
                    .push(handle);
            }
        }
        let mut memberships = Memberships::new();
        let mut sinks = Vec::new();
        for rule in self.set.rules() {
            let Some(facts) = interfaces.get(&rule.input.interface) else {
                continue;
            };
            if rule.input.destination.is_multicast() {
                let membership = Membership {
                    ifindex: facts.index,
                    group: rule.input.destination,
                    source: rule.input.source,
                };
                memberships
                    .join(membership)
                    .map_err(|error| SetupError::System {
                        what: format!("rule {:?}: joining {}", rule.name, rule.input.destination),
                        error: error.to_string(),
                    })?;
            } else {
                sinks.push(unicast_sink(rule)?);
            }
        }
        Ok(World {
            slots,
            rules: self.set.rules().iter().map(RuleEntry::from).collect(),
            interfaces: interfaces.iter().map(InterfaceEntry::from).collect(),
            generation,
            checksum,
            ring,
            fanout,
            _memberships: memberships,
            _sinks: sinks,
        })
    }
}

/// A socket bound to a unicast input's address and port that takes nothing: with it the kernel
/// finds a listener and does not answer the datagrams the relay takes with ICMP port-unreachable;
/// its filter drops every datagram before it is queued.
fn unicast_sink(rule: &Rule) -> Result<UdpSocket, SetupError> {
    let what = || {
        format!(
            "rule {:?}: binding {}:{}",
            rule.name, rule.input.destination, rule.input.port
        )
    };
    let socket = UdpSocket::bind((rule.input.destination, rule.input.port)).map_err(|error| {
        SetupError::System {
            what: what(),
            error: error.to_string(),
        }
    })?;
    fanout_core::bpf::attach_filter(
        std::os::fd::AsFd::as_fd(&socket),
        &fanout_core::bpf::BpfProgram::reject_all(),
    )
    .map_err(|error| SetupError::System {
        what: what(),
        error: error.to_string(),
    })?;
    Ok(socket)
}

/// The CPU whose packets each fanout member receives, in join order. With fanout `cpu` the kernel
/// picks member `cpu % members`, so there is one member per CPU number up to the highest chosen
/// CPU: member k then receives exactly CPU k's packets. Other modes need one member per worker.
fn member_cpus(fanout: FanoutSetting, cpus: &[u32]) -> Vec<u32> {
    match fanout {
        FanoutSetting::Cpu => (0..=cpus.iter().copied().max().unwrap_or(0)).collect(),
        _ => cpus.to_vec(),
    }
}

/// The worker slot that serves member `member`: the worker on that member's CPU when there is
/// one, otherwise (a CPU without a worker, under fanout `cpu`) one chosen round robin.
fn serving_slot(member: usize, members: &[u32], cpus: &[u32]) -> usize {
    let cpu = members[member];
    cpus.iter()
        .position(|&chosen| chosen == cpu)
        .unwrap_or(member % cpus.len())
}

fn choose_cpus(setting: &WorkersSetting) -> Result<Vec<u32>, String> {
    let online: Vec<u32> = fanout_core::cpu::online_cpus()
        .map_err(|error| format!("cannot list online CPUs: {error}"))?
        .iter()
        .map(|cpu| cpu as u32)
        .collect();
    match setting {
        WorkersSetting::All => Ok(online),
        WorkersSetting::Count(count) => {
            if *count as usize > online.len() {
                Err(format!(
                    "{count} workers asked for, but only {} CPUs are online",
                    online.len()
                ))
            } else {
                Ok(online[..*count as usize].to_vec())
            }
        }
        WorkersSetting::Cpus(cpus) => match cpus.iter().find(|cpu| !online.contains(cpu)) {
            Some(cpu) => Err(format!("CPU {cpu} is not online (online: {online:?})")),
            None if cpus.is_empty() => Err("no CPU listed".into()),
            None => Ok(cpus.clone()),
        },
    }
}

/// What the supervisor holds while the relay runs.
#[derive(Debug)]
pub(super) struct World {
    pub(super) slots: Vec<WorkerSlot>,
    pub(super) rules: Vec<RuleEntry>,
    pub(super) interfaces: Vec<InterfaceEntry>,
    pub(super) generation: u64,
    pub(super) checksum: u64,
    pub(super) ring: RingSection,
    pub(super) fanout: FanoutSetting,
    _memberships: Memberships,
    _sinks: Vec<UdpSocket>,
}

impl World {
    pub(super) fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fanout_has_a_member_per_cpu_number() {
        assert_eq!(member_cpus(FanoutSetting::Cpu, &[0, 1]), vec![0, 1]);
        assert_eq!(member_cpus(FanoutSetting::Cpu, &[1, 3]), vec![0, 1, 2, 3]);
        assert_eq!(member_cpus(FanoutSetting::Hash, &[1, 3]), vec![1, 3]);
        let members = member_cpus(FanoutSetting::Cpu, &[1, 3]);
        let served: Vec<usize> = (0..members.len())
            .map(|member| serving_slot(member, &members, &[1, 3]))
            .collect();
        // CPU 1's member goes to the worker on CPU 1 (slot 0), CPU 3's to slot 1, and the CPUs
        // without workers are spread over both.
        assert_eq!(served, vec![0, 0, 0, 1]);
    }
}
