//! From a configuration file to a checked plan, and from a plan to the sockets that outlive workers.

use super::inputs::{Inputs, initial_members};
use super::state::{self, RuleState};
use super::workers::WorkerSlot;
use super::world::World;
use crate::config::{
    ConfigError, ConfigFile, FanoutSetting, PlacementSetting, RpsSetting, WorkersSetting,
};
use crate::rings;
use relay_rules::RuleSet;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Why a relay could not be set up; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Rules that fail validation, every one listed.
    #[error("{}", super::checks::InvalidList { path, errors })]
    Invalid {
        /// The configuration (or state) file.
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
        #[source]
        problem: crate::cpus::CpuChoiceError,
    },
    /// The state file or its journal cannot be read, or a damaged one cannot be moved aside.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// A socket, ring or membership of the rules' inputs could not be set up.
    #[error("setting up the inputs: {0}")]
    Inputs(#[source] super::inputs::InputError),
}

/// A configuration checked against this host: rules valid, interfaces known, CPUs chosen.
#[derive(Debug)]
pub struct Plan {
    /// The file it came from.
    pub path: PathBuf,
    /// The file's text, whose digest ties the state file to it.
    pub text: String,
    /// The file's content.
    pub config: ConfigFile,
    /// The checked rules, with the facts of every interface they name: the file's rules, or the
    /// state file's when it belongs to this configuration.
    pub set: RuleSet,
    /// Whether `set` came from the state file.
    pub restored: bool,
    /// Rules that wait for interfaces that do not exist yet, each with the missing ones: not
    /// checked until they appear.
    pub waiting: Vec<(relay_rules::Rule, Vec<String>)>,
    /// CPUs that get a worker of the default class when the relay starts, ascending: those of
    /// `relay.workers` that no `[[class]]` takes (with `[autoscale]`, the first `min_workers`).
    pub cpus: Vec<u32>,
    /// With `[autoscale]`: every CPU of the default class, which it may grow onto.
    pub pool: Vec<u32>,
    /// The named classes, in file order, with their CPUs.
    pub classes: Vec<(String, Vec<u32>)>,
}

impl Plan {
    /// Every CPU that gets a worker when the relay starts, of any class, ascending.
    pub fn worker_cpus(&self) -> Vec<u32> {
        let mut cpus: Vec<u32> = self
            .cpus
            .iter()
            .chain(self.classes.iter().flat_map(|(_, cpus)| cpus))
            .copied()
            .collect();
        cpus.sort_unstable();
        cpus
    }
}

/// Settings given on the command line, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--workers` or `--cpus`.
    pub workers: Option<WorkersSetting>,
    /// `--fanout`.
    pub fanout: Option<FanoutSetting>,
    /// `--metrics`.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--rps`.
    pub rps: Option<RpsSetting>,
}

impl Plan {
    /// Reads `path` and checks it against this host, without opening a socket. With
    /// `use_state`, the rules of the configuration's state file replace the file's own when the
    /// state file was written from this very configuration.
    pub fn load(path: &Path, overrides: &Overrides, use_state: bool) -> Result<Plan, SetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = ConfigFile::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if let Some(workers) = &overrides.workers {
            config.relay.set_workers(workers.clone());
        }
        if let Some(fanout) = overrides.fanout {
            config.relay.fanout = fanout;
        }
        if let Some(metrics) = overrides.metrics {
            config.relay.metrics = Some(metrics);
        }
        if let Some(rps) = overrides.rps {
            config.relay.rps = rps;
        }
        let mut rules_from = (path.to_owned(), config.to_rules());
        let mut restored = false;
        if use_state {
            let state_path = config.relay.state_file_for(path);
            // Damage is recovered from (and logged) inside; an error means the state could not
            // be read or kept, and starting without it would overwrite it at the first change.
            if let Some(saved) = state::restore(&state_path, &text)? {
                rules_from = (state_path, saved.to_rules());
                restored = true;
            }
        }
        if config.relay.placement == PlacementSetting::Shard
            && config.relay.fanout != FanoutSetting::Steer
        {
            return Err(SetupError::Invalid {
                path: path.to_owned(),
                errors: vec![format!(
                    "relay.placement: \"shard\" needs relay.fanout = \"steer\" (it is {:?}): a \
                     worker holds only its shard's rules, so only the steering program, which \
                     sends each packet to the worker of its shard, delivers every packet to a \
                     worker that can relay it",
                    config.relay.fanout
                )],
            });
        }
        let (rules_path, rules) = rules_from;
        // A rule naming an interface that does not exist waits for it (it may be created after
        // the relay starts: a VLAN, a tunnel); the warning names the missing interfaces, so a
        // typo is still easy to see.
        let (rules, waiting) =
            super::lifecycle::split_waiting(rules, |name| rings::interface_facts(name).is_some());
        let set = super::checks::check_rules(&rules_path, &rules)?;
        let classes = check_classes(path, &config)?;
        let taken: BTreeSet<u32> = classes.iter().flat_map(|(_, cpus)| cpus).copied().collect();
        let pool: Vec<u32> = crate::cpus::choose(&config.relay.workers)
            .map_err(|problem| SetupError::Workers {
                path: path.to_owned(),
                problem,
            })?
            .into_iter()
            .filter(|cpu| !taken.contains(cpu))
            .collect();
        let names: Vec<String> = classes.iter().map(|(name, _)| name.clone()).collect();
        let mut problems = crate::config::check_rule_classes(set.rules(), &names, !pool.is_empty());
        problems.extend(crate::config::check_groups(
            &config.interface_groups,
            |name| rings::interface_facts(name).is_some(),
        ));
        if !names.is_empty() {
            problems.extend(crate::config::check_shared_keys(set.rules()));
        }
        if !problems.is_empty() {
            return Err(SetupError::Invalid {
                path: rules_path,
                errors: problems,
            });
        }
        let cpus = match &config.autoscale {
            None => pool.clone(),
            Some(_) if pool.is_empty() => {
                return Err(SetupError::Invalid {
                    path: path.to_owned(),
                    errors: vec![
                        "autoscale: every CPU of relay.workers belongs to a [[class]], so there \
                         are no default workers to scale"
                            .into(),
                    ],
                });
            }
            Some(autoscale) => {
                autoscale
                    .check(pool.len(), config.ring.busy_poll_us > 0)
                    .map_err(|problem| SetupError::Invalid {
                        path: path.to_owned(),
                        errors: vec![problem.to_string()],
                    })?;
                pool[..autoscale.min_workers as usize].to_vec()
            }
        };
        Ok(Plan {
            path: path.to_owned(),
            text,
            config,
            set,
            restored,
            waiting,
            cpus,
            pool,
            classes,
        })
    }

    /// Opens what outlives workers: receive rings in their fanout groups, memberships, sinks;
    /// and moves the supervisor off the workers' CPUs when there is a spare one.
    pub(super) fn build(self) -> Result<World, SetupError> {
        let supervisor_cpus = super::placement::allowed_cpus();
        if let Some(allowed) = &supervisor_cpus {
            super::placement::keep_off_worker_cpus(allowed, &self.worker_cpus());
        }
        let online = fanout_core::cpu::online_cpus().map_or(self.cpus.len(), |cpus| cpus.len());
        let fanout = self.config.relay.fanout;
        // Class 0 is the default one; under `steer` a named class has one shard per CPU of its
        // own, the default class one per online CPU.
        let mut class_cpus = vec![(None, self.cpus.clone(), online)];
        class_cpus.extend(
            self.classes
                .iter()
                .map(|(name, cpus)| (Some(name.clone()), cpus.clone(), cpus.len())),
        );
        let members: Vec<u32> = class_cpus
            .iter()
            .map(|(_, cpus, online)| initial_members(fanout, cpus, *online))
            .collect();
        let names: Vec<Option<String>> = class_cpus.iter().map(|(name, ..)| name.clone()).collect();
        let mut inputs = Inputs::new(fanout, self.config.ring, names.clone(), members.clone());
        let rings = inputs
            .sync_change(&self.set, self.set.rules(), &[])
            .map_err(SetupError::Inputs)?;
        let mut slots: Vec<WorkerSlot> = Vec::new();
        let mut owners = Vec::new();
        for (class, (_, cpus, _)) in class_cpus.iter().enumerate() {
            let first = slots.len();
            let active: Vec<(usize, u32)> = (first..).zip(cpus.iter().copied()).collect();
            slots.extend(
                active
                    .iter()
                    .map(|&(index, cpu)| WorkerSlot::new(index, cpu, class)),
            );
            owners.push(super::decide::members::assign_members(
                members[class],
                fanout == FanoutSetting::Cpu,
                &active,
                &[],
            ));
        }
        for (class, member, handle) in rings {
            let Some(&owner) = owners[class].get(member as usize) else {
                continue;
            };
            if let Some(slot) = slots.get_mut(owner) {
                slot.rings.push((member, handle));
            }
        }
        let mut lifecycle = super::lifecycle::Lifecycle::default();
        for facts in self.set.interfaces().iter() {
            lifecycle.follow_known(facts);
        }
        for name in self.waiting.iter().flat_map(|(_, missing)| missing) {
            lifecycle.follow(name, None);
        }
        let state_file = self.config.relay.state_file_for(&self.path);
        let file_rules = self
            .config
            .rules
            .iter()
            .map(|rule| rule.name.clone())
            .collect();
        let autoscaler =
            self.config.autoscale.clone().map(|section| {
                super::decide::autoscale::Autoscaler::new(section, self.pool.clone())
            });
        let (ring, relay) = (self.config.ring, &self.config.relay);
        let (fanout, placement) = (relay.fanout, relay.placement);
        // After the rings: a frame is dropped at ingress only once a ring can take it.
        let mut consume = super::consume::Consume::start(relay.consume_input.0);
        consume.follow(&self.set, self.set.rules(), &[]);
        Ok(World {
            slots,
            owners,
            lifecycle,
            state: RuleState::new(self.set, self.config, Some(state_file), &self.text)
                .with_waiting(self.waiting.into_iter().map(|(rule, _)| rule)),
            config_path: self.path,
            ring,
            worker_user: None,
            fanout,
            placement,
            inputs,
            consume,
            pending: Vec::new(),
            resize: None,
            supervisor_cpus,
            classes: names,
            autoscaler,
            worker_events: None,
            rates: super::rates::RateWindow::default(),
            notices: crate::notices::Notices::default(),
            file_rules,
            removed: Default::default(),
            next_poll: None,
        })
    }
}

/// The named classes of `config` with their CPUs, checked on their own and against the online
/// CPUs.
fn check_classes(path: &Path, config: &ConfigFile) -> Result<Vec<(String, Vec<u32>)>, SetupError> {
    let mut problems = crate::config::check_classes(&config.classes);
    if !config.classes.is_empty() {
        let online = crate::cpus::online().map_err(|problem| SetupError::Workers {
            path: path.to_owned(),
            problem,
        })?;
        for class in &config.classes {
            if let Some(cpu) = class.cpus.0.iter().find(|cpu| !online.contains(cpu)) {
                problems.push(format!(
                    "class {:?}: CPU {cpu} is not online (online: {online:?})",
                    class.name
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(SetupError::Invalid {
            path: path.to_owned(),
            errors: problems,
        });
    }
    Ok(config
        .classes
        .iter()
        .map(|class| (class.name.clone(), class.cpus.0.clone()))
        .collect())
}

impl From<super::checks::InvalidRules> for SetupError {
    fn from(invalid: super::checks::InvalidRules) -> Self {
        SetupError::Invalid {
            path: invalid.path,
            errors: invalid.errors,
        }
    }
}
