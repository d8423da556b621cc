//! The journal beside the state file: the changes made since the state file was last written,
//! one line each, so that a change costs one appended line and one `fdatasync`, not a rewrite
//! of every rule.
//!
//! The file starts with a line naming the snapshot (state file) it continues, `# journal ID`;
//! the state file names the same ID. Each further line is one change as JSON
//! (`{"remove":[names],"add":[rules]}`), written whole with one `write` and synced before the
//! change is answered. Reading it back, a journal whose ID is not the snapshot's belongs to an
//! older snapshot that already holds its changes, and is ignored; a last line without its
//! newline, or one that does not parse, is a change whose write a crash interrupted: it was
//! never answered, so it is dropped.

use super::{Change, write_atomically};
use crate::config::RuleEntry;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The first line of a journal and the line of the state file that names it.
pub(super) const ID_PREFIX: &str = "# journal ";

/// One change as the journal keeps it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    remove: Vec<String>,
    add: Vec<RuleEntry>,
}

/// An open journal, appended to at every change.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    /// Bytes written so far, header included.
    len: u64,
}

/// Where the journal of the state file `state_file` lives.
pub(super) fn path_for(state_file: &Path) -> PathBuf {
    let mut name = state_file.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

impl Journal {
    /// Starts the journal `path` of the snapshot `id`, empty, replacing any older one.
    pub(super) fn create(path: &Path, id: &str) -> io::Result<Journal> {
        let header = format!("{ID_PREFIX}{id}\n");
        write_atomically(path, header.as_bytes())?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Journal {
            file,
            len: header.len() as u64,
        })
    }

    /// Appends `change` and waits until it is on disk. On error the journal may hold part of
    /// the line (it is cut back when it can be): write a snapshot before appending again.
    pub(super) fn append(&mut self, change: &Change) -> io::Result<()> {
        let entry = Entry {
            remove: change.remove.clone(),
            add: change.add.iter().map(RuleEntry::from).collect(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(error) => {
                // A refused change must not come back from a crash: cut the line off again.
                let _ = self.file.set_len(self.len);
                Err(error)
            }
        }
    }

    /// Bytes in the journal.
    pub(super) fn len(&self) -> u64 {
        self.len
    }
}

/// Applies the journal at `path` of the snapshot `id` to `rules` (the snapshot's), and says how
/// many changes it held. No journal, or one of another snapshot, changes nothing.
pub(super) fn replay(path: &Path, id: &str, rules: &mut Vec<RuleEntry>) -> Result<usize, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(format!("{}: cannot read: {error}", path.display())),
    };
    let mut lines = text.split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some(format!("{ID_PREFIX}{id}").as_str()) {
        return Ok(0);
    }
    let mut slots: Vec<Option<RuleEntry>> = std::mem::take(rules).into_iter().map(Some).collect();
    let mut by_name: HashMap<String, usize> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| rule.as_ref().map(|rule| (rule.name.clone(), i)))
        .collect();
    let mut applied = 0;
    for (number, line) in lines.enumerate() {
        let entry = match line.strip_suffix('\n').map(serde_json::from_str::<Entry>) {
            Some(Ok(entry)) => entry,
            Some(Err(error)) => {
                log::warn!(
                    "{}: change {} does not parse ({error}); dropping it and any after it",
                    path.display(),
                    number + 1
                );
                break;
            }
            // Cut short by a crash: that change was never answered.
            None => break,
        };
        for name in &entry.remove {
            let Some(slot) = by_name.remove(name) else {
                return Err(format!(
                    "{}: change {} removes {name:?}, which no earlier change left",
                    path.display(),
                    number + 1
                ));
            };
            slots[slot] = None;
        }
        for rule in entry.add {
            by_name.insert(rule.name.clone(), slots.len());
            slots.push(Some(rule));
        }
        applied += 1;
    }
    *rules = slots.into_iter().flatten().collect();
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InputEntry, OutputEntry};

    fn entry(name: &str, port: u16) -> RuleEntry {
        RuleEntry {
            name: name.into(),
            input: InputEntry {
                interface: "in0".into(),
                destination: "239.1.1.1".parse().expect("an address"),
                port,
                source: None,
            },
            outputs: vec![OutputEntry {
                interface: "out0".into(),
                destination: "239.2.2.2".parse().expect("an address"),
                port,
                ttl: Some(4),
                source: None,
                dscp: None,
                vlan: None,
            }],
            class: None,
        }
    }

    fn change(remove: &[&str], add: &[RuleEntry]) -> Change {
        Change {
            remove: remove.iter().map(|name| (*name).to_owned()).collect(),
            add: add.iter().map(RuleEntry::to_rule).collect(),
        }
    }

    fn names(rules: &[RuleEntry]) -> Vec<&str> {
        rules.iter().map(|rule| rule.name.as_str()).collect()
    }

    #[test]
    fn changes_replay_in_order_onto_their_snapshot_only() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_for(&dir.path().join("rules.toml"));
        assert!(path.ends_with("rules.toml.journal"));
        let mut journal = Journal::create(&path, "id1").expect("created");
        journal
            .append(&change(&[], &[entry("b", 2), entry("c", 3)]))
            .expect("appended");
        journal
            .append(&change(&["a", "c"], &[entry("c", 4)]))
            .expect("appended");
        assert_eq!(
            journal.len(),
            std::fs::metadata(&path).expect("exists").len()
        );
        let snapshot = vec![entry("a", 1)];

        let mut rules = snapshot.clone();
        assert_eq!(replay(&path, "id1", &mut rules), Ok(2));
        assert_eq!(names(&rules), ["b", "c"]);
        assert_eq!(rules[1], entry("c", 4), "the second c replaced the first");

        // Another snapshot's journal, or none, leaves the snapshot's rules as they are.
        let mut rules = snapshot.clone();
        assert_eq!(replay(&path, "id2", &mut rules), Ok(0));
        assert_eq!(rules, snapshot);
        assert_eq!(replay(&dir.path().join("none"), "id1", &mut rules), Ok(0));
        assert_eq!(rules, snapshot);

        // A new journal replaces the old one.
        Journal::create(&path, "id2").expect("created");
        let mut rules = snapshot.clone();
        assert_eq!(replay(&path, "id1", &mut rules), Ok(0));
        assert_eq!(replay(&path, "id2", &mut rules), Ok(0));
    }

    #[test]
    fn a_change_cut_short_by_a_crash_is_dropped() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_for(&dir.path().join("rules.toml"));
        let mut journal = Journal::create(&path, "x").expect("created");
        journal
            .append(&change(&[], &[entry("b", 2)]))
            .expect("appended");
        let whole = std::fs::read(&path).expect("readable");
        journal
            .append(&change(&[], &[entry("c", 3)]))
            .expect("appended");
        let longer = std::fs::read(&path).expect("readable");
        // The second line without its end, as a crash in the middle of the write leaves it.
        std::fs::write(&path, &longer[..longer.len() - 5]).expect("writable");
        let mut rules = vec![entry("a", 1)];
        assert_eq!(replay(&path, "x", &mut rules), Ok(1));
        assert_eq!(names(&rules), ["a", "b"]);
        // Garbage where a change should be: dropped with what follows.
        let mut damaged = whole.clone();
        damaged.extend_from_slice(b"{\"remove\":[}\n");
        damaged.extend_from_slice(&longer[whole.len()..]);
        std::fs::write(&path, &damaged).expect("writable");
        let mut rules = vec![entry("a", 1)];
        assert_eq!(replay(&path, "x", &mut rules), Ok(1));
        assert_eq!(names(&rules), ["a", "b"]);
        // A remove of a rule that is not there: the journal does not belong to these rules.
        std::fs::write(&path, &whole).expect("writable");
        let mut journal = Journal {
            file: OpenOptions::new().append(true).open(&path).expect("opens"),
            len: whole.len() as u64,
        };
        journal.append(&change(&["zz"], &[])).expect("appended");
        let mut rules = vec![entry("a", 1)];
        let error = replay(&path, "x", &mut rules).expect_err("zz was never added");
        assert!(error.contains("\"zz\""), "{error}");
    }
}
