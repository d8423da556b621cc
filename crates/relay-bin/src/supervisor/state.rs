//! The authoritative rule set, its generation, and the state file that keeps run-time changes.
//!
//! Every change (add, remove, reload) is validated as a whole against the running set; a refused
//! change leaves it exactly as it was. An accepted change gets the next generation and is written
//! to the state file before anyone is told, so a crash of the whole relay comes back with it.
//!
//! The state file is a configuration file (so `check-config` reads it) preceded by a comment that
//! records a digest of the configuration file it grew from. At start, the state is restored when
//! that digest still matches: an operator who edited the configuration meanwhile gets the new
//! configuration, not stale run-time changes.

use crate::config::{ConfigFile, RuleEntry};
use crate::rings;
use relay_rules::{Interfaces, Rule, RuleSet};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const DIGEST_PREFIX: &str = "# fanout-relay state of configuration digest ";

/// A change to the rule set: names to remove, then rules to add.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// Names of rules to remove.
    pub remove: Vec<String>,
    /// Rules to add.
    pub add: Vec<Rule>,
}

impl Change {
    /// Whether the change changes nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// The change that turns `old` into `new`, by rule name: a rule whose definition changed is
    /// removed and added again; rules that did not change are not touched.
    pub fn between(old: &[Rule], new: &[Rule]) -> Change {
        let old: BTreeMap<&str, &Rule> =
            old.iter().map(|rule| (rule.name.as_str(), rule)).collect();
        let new_by_name: BTreeMap<&str, &Rule> =
            new.iter().map(|rule| (rule.name.as_str(), rule)).collect();
        let mut change = Change::default();
        for (name, rule) in &old {
            if new_by_name.get(name) != Some(rule) {
                change.remove.push((*name).to_owned());
            }
        }
        for rule in new {
            if old.get(rule.name.as_str()) != Some(&rule) {
                change.add.push(rule.clone());
            }
        }
        change
    }
}

/// The running rules and what keeps them.
#[derive(Debug)]
pub(crate) struct RuleState {
    set: RuleSet,
    generation: u64,
    config: ConfigFile,
    state_file: Option<PathBuf>,
    config_digest: u64,
}

impl RuleState {
    /// The state of a relay starting from `set` (already validated), built from `config`.
    pub(crate) fn new(
        set: RuleSet,
        config: ConfigFile,
        state_file: Option<PathBuf>,
        config_text: &str,
    ) -> Self {
        RuleState {
            set,
            generation: 1,
            config,
            state_file,
            config_digest: digest(config_text.as_bytes()),
        }
    }

    /// The running set.
    pub(crate) fn set(&self) -> &RuleSet {
        &self.set
    }

    /// Its generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Checks `change` against the running set; on success returns the set it would give. The
    /// running set is not touched.
    pub(crate) fn check(&self, change: &Change) -> Result<RuleSet, String> {
        let mut interfaces: Interfaces = self.set.interfaces().clone();
        let mut learned = false;
        for rule in &change.add {
            let names = std::iter::once(rule.input.interface.as_str())
                .chain(rule.outputs.iter().map(|output| output.interface.as_str()));
            for name in names {
                if interfaces.get(name).is_none()
                    && let Some(facts) = rings::interface_facts(name)
                {
                    interfaces.insert(facts);
                    learned = true;
                }
            }
        }
        let base = if learned {
            self.set
                .with_interfaces(interfaces)
                .map_err(|errors| errors.to_string())?
        } else {
            self.set.clone()
        };
        base.with_changes(change.add.clone(), &change.remove)
            .map_err(|errors| errors.to_string())
    }

    /// Makes `set` (from [`RuleState::check`]) the running set under the next generation, and
    /// writes the state file. Returns the new generation.
    pub(crate) fn commit(&mut self, set: RuleSet) -> io::Result<u64> {
        let generation = self.generation + 1;
        let previous = std::mem::replace(&mut self.set, set);
        if let Err(error) = self.persist() {
            self.set = previous;
            return Err(error);
        }
        self.generation = generation;
        Ok(generation)
    }

    /// The running set as a configuration file: the settings it started with, today's rules.
    pub(crate) fn as_config(&self) -> ConfigFile {
        ConfigFile {
            rules: self.set.rules().iter().map(RuleEntry::from).collect(),
            ..self.config.clone()
        }
    }

    /// Ties the state to the configuration text `text` (after a reload of an edited file) and
    /// writes the state file again, so the next start with that file restores the state.
    pub(crate) fn adopt_config_text(&mut self, text: &str) -> io::Result<()> {
        self.config_digest = digest(text.as_bytes());
        self.persist()
    }

    /// Writes the running set to `path` as a configuration file, atomically.
    pub(crate) fn save(&self, path: &Path) -> io::Result<()> {
        write_atomically(path, self.as_config().to_toml().as_bytes())
    }

    fn persist(&self) -> io::Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let text = format!(
            "{DIGEST_PREFIX}{:016x}\n# Written by the relay at every change; edit the configuration file instead.\n{}",
            self.config_digest,
            self.as_config().to_toml()
        );
        write_atomically(path, text.as_bytes())
    }
}

/// The rules of the state file at `path`, if it exists and was written from a configuration
/// whose text is `config_text`; `Ok(None)` when there is none or it belongs to another
/// configuration.
pub(crate) fn restore(path: &Path, config_text: &str) -> Result<Option<ConfigFile>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{}: cannot read: {error}", path.display())),
    };
    let expected = format!("{DIGEST_PREFIX}{:016x}", digest(config_text.as_bytes()));
    if text.lines().next() != Some(expected.as_str()) {
        return Ok(None);
    }
    ConfigFile::parse(&text)
        .map(Some)
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// FNV-1a, 64 bits: stable across builds, enough to tell configurations apart.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: a
/// temporary file in the same directory, fsync, rename over the old one, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_rules::{Input, Output};
    use std::net::Ipv4Addr;

    fn rule(name: &str, port: u16) -> Rule {
        Rule {
            name: name.into(),
            input: Input {
                interface: "in0".into(),
                destination: Ipv4Addr::new(239, 1, 1, 1),
                port,
                source: None,
            },
            outputs: vec![Output {
                interface: "out0".into(),
                destination: Ipv4Addr::new(239, 2, 2, 2),
                port,
                ttl: 4,
                source: None,
                dscp: None,
                vlan: None,
            }],
        }
    }

    #[test]
    fn the_difference_touches_only_what_changed() {
        let old = vec![rule("a", 1), rule("b", 2), rule("c", 3)];
        let mut changed = rule("b", 2);
        changed.outputs[0].ttl = 9;
        let new = vec![rule("a", 1), changed.clone(), rule("d", 4)];
        let change = Change::between(&old, &new);
        assert_eq!(change.remove, vec!["b".to_owned(), "c".to_owned()]);
        assert_eq!(change.add, vec![changed, rule("d", 4)]);
        assert!(Change::between(&old, &old).is_empty());
    }

    #[test]
    fn state_files_are_written_atomically_and_restored_for_their_configuration() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state").join("rules.toml");
        write_atomically(&path, b"first").expect("written");
        write_atomically(&path, b"second").expect("replaced");
        assert_eq!(std::fs::read_to_string(&path).expect("readable"), "second");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("has a parent"))
            .expect("listable")
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");

        let config = ConfigFile {
            rules: vec![RuleEntry::from(&rule("a", 1))],
            ..ConfigFile::default()
        };
        let text = format!(
            "{DIGEST_PREFIX}{:016x}\n{}",
            digest(b"the configuration"),
            config.to_toml()
        );
        write_atomically(&path, text.as_bytes()).expect("written");
        let restored = restore(&path, "the configuration").expect("readable");
        assert_eq!(restored, Some(config));
        assert_eq!(
            restore(&path, "an edited configuration").expect("readable"),
            None
        );
        assert_eq!(
            restore(&dir.path().join("none"), "x").expect("absent is fine"),
            None
        );
    }
}
