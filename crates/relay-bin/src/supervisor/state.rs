//! The authoritative rule set, its generation, and the state file that keeps run-time changes.
//!
//! Every change (add, remove, reload) is validated as a whole against the running set; a refused
//! change leaves it exactly as it was. An accepted change gets the next generation and is on
//! disk before anyone is told, so a crash of the whole relay comes back with it.
//!
//! On disk the state is a snapshot and a journal. The snapshot (the state file) is a
//! configuration file (so `check-config` reads it) preceded by comments that record a digest of
//! the configuration file it grew from and the ID of its journal. The journal (`STATE.journal`,
//! module [`journal`]) holds the changes made since, one appended line each: a change costs one
//! short write and one `fdatasync` however many rules run, where rewriting the snapshot costs a
//! serialisation of every rule and two syncs. The snapshot is written again (and the journal
//! started anew) at the first change after a start and whenever the journal has grown past the
//! snapshot's size, so that on average a change still costs O(1) and a restart reads at most
//! about twice the rules.
//!
//! At start, the state is restored when the digest still matches: an operator who edited the
//! configuration meanwhile gets the new configuration, not stale run-time changes. A damaged
//! state file or journal is kept aside and the relay starts from what was valid before the
//! damage (module [`restore`]). A change whose write fails is refused and reverted, and if the
//! failed write may have left it on disk, the running set is written over it
//! ([`RuleState::revert`]). `ctl save` writes the running rules as one configuration file.

mod damage;
mod journal;
mod restore;

use crate::config::ConfigFile;
use crate::rings;
pub use damage::{Problem, StateError};
use journal::Journal;
use relay_rules::validate::AppliedChange;
use relay_rules::{Interfaces, Rule, RuleSet};
pub(crate) use restore::restore;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const DIGEST_PREFIX: &str = "# fanout-relay state of configuration digest ";
/// The snapshot is written again once the journal is larger than it and than this.
const JOURNAL_FLOOR: u64 = 64 * 1024;

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
    /// The journal of the latest snapshot this process wrote; `None` before the first (a
    /// process never appends to a journal it did not start) and after a failed append.
    journal: Option<Journal>,
    /// Bytes of the latest snapshot written.
    snapshot_len: u64,
    /// The journal may grow to the larger of this and the snapshot's size.
    journal_floor: u64,
    /// The latest commit failed but may have left its change on disk; see [`RuleState::revert`].
    disk_ahead: bool,
    /// Rules of the configuration that wait for an interface that does not exist, by name.
    /// They are not in `set` (which only holds rules checked against an interface's facts),
    /// but they are in the state file, so a restart keeps them waiting.
    waiting: BTreeMap<String, Rule>,
}

/// A write that failed, and whether its bytes may be on disk all the same.
#[derive(Debug)]
pub(super) struct Unwritten {
    /// Why it failed.
    pub(super) error: io::Error,
    /// Whether the file may hold the new bytes (they could not be taken back, or the rename was
    /// done but not synced).
    pub(super) left_behind: bool,
}

/// How to undo a change [`RuleState::apply`] made to the running set.
#[derive(Debug)]
pub(crate) enum Undo {
    /// The change was made in place.
    InPlace(AppliedChange),
    /// The set was replaced (the change named interfaces the set did not know): the old one.
    Replaced(Box<RuleSet>),
}

impl Undo {
    /// The rule called `name` that the change removed.
    pub(crate) fn removed_rule(&self, name: &str) -> Option<&Rule> {
        match self {
            Undo::InPlace(change) => change.removed_rule(name),
            Undo::Replaced(set) => set.get(name),
        }
    }
}

impl RuleState {
    /// The state of a relay starting from `set` (already validated), built from `config`, whose
    /// own rules are not kept.
    pub(crate) fn new(
        set: RuleSet,
        config: ConfigFile,
        state_file: Option<PathBuf>,
        config_text: &str,
    ) -> Self {
        RuleState {
            set,
            generation: 1,
            // Only the settings: the rules are `set`'s, and a second copy would only cost memory.
            config: ConfigFile {
                rules: Vec::new(),
                ..config
            },
            state_file,
            config_digest: digest(config_text.as_bytes()),
            journal: None,
            snapshot_len: 0,
            journal_floor: JOURNAL_FLOOR,
            disk_ahead: false,
            waiting: BTreeMap::new(),
        }
    }

    /// The same state, with `waiting` rules that wait for their interfaces.
    pub(crate) fn with_waiting(mut self, waiting: impl IntoIterator<Item = Rule>) -> Self {
        self.waiting = waiting
            .into_iter()
            .map(|rule| (rule.name.clone(), rule))
            .collect();
        self
    }

    /// The rules that wait for an interface, by name.
    pub(crate) fn waiting(&self) -> &BTreeMap<String, Rule> {
        &self.waiting
    }

    /// Takes the waiting rules for which `ready` holds out of the waiting ones.
    pub(crate) fn take_waiting(&mut self, ready: impl Fn(&Rule) -> bool) -> Vec<Rule> {
        let names: Vec<String> = self
            .waiting
            .values()
            .filter(|rule| ready(rule))
            .map(|rule| rule.name.clone())
            .collect();
        names
            .iter()
            .filter_map(|name| self.waiting.remove(name))
            .collect()
    }

    /// The `[[interface_group]]`s of the configuration it runs (a reload's, after one), which
    /// `ctl add` expands a rule on a group by.
    pub(crate) fn interface_groups(&self) -> &[crate::config::InterfaceGroup] {
        &self.config.interface_groups
    }

    /// Makes `groups` the groups of [`RuleState::interface_groups`] (a reload's), in memory:
    /// the caller writes the state.
    pub(crate) fn replace_interface_groups(&mut self, groups: Vec<crate::config::InterfaceGroup>) {
        self.config.interface_groups = groups;
    }

    /// Makes `rules` the waiting ones (a reload's), in memory: the caller writes the state.
    pub(crate) fn replace_waiting(&mut self, rules: Vec<Rule>) {
        self.waiting.clear();
        self.wait(rules);
    }

    /// Puts `rules` (back) among the waiting ones.
    pub(crate) fn wait(&mut self, rules: impl IntoIterator<Item = Rule>) {
        for rule in rules {
            self.waiting.insert(rule.name.clone(), rule);
        }
    }

    /// Gives the applied `change`, which only moved rules between the waiting ones and the
    /// running set (or a change of interface facts), the next generation without writing it:
    /// the state file holds both sets of rules and no facts, so it is already on disk.
    pub(crate) fn commit_moved(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// The running set.
    pub(crate) fn set(&self) -> &RuleSet {
        &self.set
    }

    /// The worker classes the relay started with.
    pub(crate) fn classes(&self) -> &[crate::config::ClassEntry] {
        &self.config.classes
    }

    /// Its generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Makes `change` in the running set if it is valid, or says why not and changes nothing.
    /// The change is not durable yet and keeps the generation: [`RuleState::commit`] it, or
    /// [`RuleState::revert`] it with what this returns.
    ///
    /// Costs what the change adds and removes, not what the set holds, unless the change names
    /// an interface the set has no facts of: then every rule is checked against the new facts.
    pub(crate) fn apply(&mut self, change: &Change) -> Result<Undo, relay_rules::ValidationErrors> {
        let mut interfaces: Option<Interfaces> = None;
        for rule in &change.add {
            let names = std::iter::once(rule.input.interface.as_str())
                .chain(rule.outputs.iter().map(|output| output.interface.as_str()));
            for name in names {
                let known = interfaces.as_ref().unwrap_or(self.set.interfaces());
                if known.get(name).is_none()
                    && let Some(facts) = rings::interface_facts(name)
                {
                    interfaces
                        .get_or_insert_with(|| self.set.interfaces().clone())
                        .insert(facts);
                }
            }
        }
        match interfaces {
            None => self
                .set
                .apply(change.add.clone(), &change.remove)
                .map(Undo::InPlace),
            Some(interfaces) => {
                let mut set = self.set.with_interfaces(interfaces)?;
                let _in_new_set = set.apply(change.add.clone(), &change.remove)?;
                Ok(Undo::Replaced(Box::new(std::mem::replace(
                    &mut self.set,
                    set,
                ))))
            }
        }
    }

    /// Takes the facts of interface `name` as they are now, if the set knows it and they
    /// changed (an interface created anew under the name has a new index, and may have a new
    /// address, MTU and MAC); says whether they changed. Facts that break a running rule are
    /// refused, and the set keeps the old ones.
    pub(crate) fn refresh_facts(
        &mut self,
        name: &str,
    ) -> Result<bool, relay_rules::ValidationErrors> {
        let Some(current) = rings::interface_facts(name) else {
            return Ok(false);
        };
        if self
            .set
            .interfaces()
            .get(name)
            .is_none_or(|known| *known == current)
        {
            return Ok(false);
        }
        let mut interfaces = self.set.interfaces().clone();
        interfaces.insert(current);
        self.set = self.set.with_interfaces(interfaces)?;
        Ok(true)
    }

    /// Makes `change` to the waiting rules (adding rules whose interfaces do not exist yet,
    /// removing waiting ones) and makes it durable as the next generation, which it returns:
    /// the state file holds waiting rules like running ones. On error nothing changed.
    pub(crate) fn change_waiting(&mut self, change: &Change) -> io::Result<u64> {
        let before = self.waiting.clone();
        for name in &change.remove {
            self.waiting.remove(name);
        }
        self.wait(change.add.iter().cloned());
        self.commit(change).inspect_err(|_| {
            self.waiting = before;
            self.write_over_refused();
        })
    }

    /// Undoes the latest [`RuleState::apply`], which was not committed.
    pub(crate) fn revert(&mut self, undo: Undo) {
        match undo {
            Undo::InPlace(change) => self.set.revert(change),
            Undo::Replaced(set) => self.set = *set,
        }
        self.write_over_refused();
    }

    /// After a failed commit: writes the state as it runs again over what the commit may have
    /// left on disk.
    fn write_over_refused(&mut self) {
        // The failed commit may have left the change on disk (a journal line that could not be
        // cut off, a snapshot renamed into place whose directory could not be synced): a
        // restart would bring back a change that was refused. A snapshot of the set as it runs
        // again replaces both. If that fails too, the disk is full or failing: say so.
        if std::mem::take(&mut self.disk_ahead)
            && let Some(path) = self.state_file.clone()
            && let Err(error) = self.snapshot(&path)
        {
            log::error!(
                "{}: may hold a change that was refused, and cannot be written again: {}",
                path.display(),
                error.error
            );
        }
    }

    /// Makes the applied `change` durable and gives it the next generation, which it returns.
    /// On error the generation stays; the caller reverts the change.
    pub(crate) fn commit(&mut self, change: &Change) -> io::Result<u64> {
        self.persist(Some(change)).map_err(|failed| {
            self.disk_ahead = failed.left_behind;
            failed.error
        })?;
        self.generation += 1;
        Ok(self.generation)
    }

    /// The running set as a configuration file: the settings it started with, today's rules.
    pub(crate) fn as_config(&self) -> ConfigFile {
        ConfigFile {
            rules: self
                .set
                .rules()
                .iter()
                .chain(self.waiting.values())
                .cloned()
                .collect(),
            ..self.config.clone()
        }
    }

    /// Ties the state to the configuration text `text` (after a reload of an edited file) and
    /// writes the state file again, so the next start with that file restores the state.
    pub(crate) fn adopt_config_text(&mut self, text: &str) -> io::Result<()> {
        self.config_digest = digest(text.as_bytes());
        // Nothing to revert: whatever of the snapshot reached the disk holds the running set.
        self.persist(None).map_err(|failed| failed.error)
    }

    /// Writes the running set to `path` as a configuration file, atomically.
    pub(crate) fn save(&self, path: &Path) -> io::Result<()> {
        write_atomically(path, self.as_config().to_toml().as_bytes())
    }

    /// Puts the running set on disk: `change` (which made it) appended to the journal when
    /// there is one and it is still small, else a new snapshot.
    fn persist(&mut self, change: Option<&Change>) -> Result<(), Unwritten> {
        let Some(path) = self.state_file.clone() else {
            return Ok(());
        };
        let limit = self.snapshot_len.max(self.journal_floor);
        if let (Some(change), Some(journal)) = (change, self.journal.as_mut())
            && journal.len() <= limit
        {
            let appended = journal.append(change);
            if appended.is_err() {
                self.journal = None;
            }
            return appended;
        }
        self.snapshot(&path)
    }

    /// Writes the running set as a new snapshot with a new, empty journal.
    fn snapshot(&mut self, path: &Path) -> Result<(), Unwritten> {
        self.journal = None;
        let (len, journal) =
            write_snapshot(path, self.config_digest, self.generation, &self.as_config())?;
        self.snapshot_len = len;
        self.journal = journal;
        Ok(())
    }
}

/// Writes `config` to `path` as the snapshot of generation `generation` of the configuration
/// whose digest is `config_digest`, starts its empty journal, and returns the snapshot's size
/// and the journal (`None` if it could not be started).
fn write_snapshot(
    path: &Path,
    config_digest: u64,
    generation: u64,
    config: &ConfigFile,
) -> Result<(u64, Option<Journal>), Unwritten> {
    let id = snapshot_id(generation);
    let journal_path = journal::path_for(path);
    let text = format!(
        "{DIGEST_PREFIX}{config_digest:016x}\n{}{id}: later changes are in {}\n# Written by the \
         relay; edit the configuration file instead (`ctl save FILE` writes the running \
         rules).\n{}",
        journal::ID_PREFIX,
        journal_path
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
        config.to_toml()
    );
    replace_file(path, text.as_bytes())?;
    // The snapshot holds every change now, so it is durable whatever happens to the journal
    // (another snapshot's journal is ignored): without one, the next change writes a snapshot
    // again.
    let journal = match Journal::create(&journal_path, &id) {
        Ok(journal) => Some(journal),
        Err(error) => {
            log::warn!(
                "cannot start the journal {}: {error}; the next change rewrites the state file",
                journal_path.display()
            );
            None
        }
    };
    Ok((text.len() as u64, journal))
}

/// A new snapshot's ID, different from every earlier one's: the process, the clock, the
/// generation.
fn snapshot_id(generation: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{:x}-{nanos:x}-{generation:x}", std::process::id())
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
    replace_file(path, bytes).map_err(|failed| failed.error)
}

/// [`write_atomically`], saying on error whether the new file took the old one's place.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), Unwritten> {
    let before = |error: io::Error| Unwritten {
        error,
        left_behind: false,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(before)?;
    let name = path.file_name().ok_or_else(|| {
        before(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let (mut file, temporary) = create_temporary(&dir, &name.to_string_lossy()).map_err(before)?;
    let written = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        // Best effort: the write's error is the one to report, and a temporary file left
        // behind is harmless (hidden, and replaced by the next write of this process).
        let _ = std::fs::remove_file(&temporary);
        return Err(before(error));
    }
    std::fs::File::open(&dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| Unwritten {
            error,
            left_behind: true,
        })
}

/// A new, empty temporary file in `dir` for the file `name`. Its name is not predictable from
/// outside (process, clock, a counter), and a name taken meanwhile is skipped.
fn create_temporary(dir: &Path, name: &str) -> io::Result<(std::fs::File, PathBuf)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let names = (0..16).map(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        format!(
            ".{name}.{}.{}.{nanos:x}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    });
    create_first_free(dir, names)
}

/// Creates the first of `names` in `dir` that does not exist, opened with `O_EXCL|O_NOFOLLOW`:
/// whatever anyone put at a name (a link to a file elsewhere, say, in a directory others may
/// write to) is neither followed nor written through, only skipped.
fn create_first_free(
    dir: &Path,
    names: impl IntoIterator<Item = String>,
) -> io::Result<(std::fs::File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut last = None;
    for name in names {
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

#[cfg(test)]
mod tests;
