//! The journal beside the state file: the changes made since the state file was last written,
//! one line each, so that a change costs one appended line and one `fdatasync`, not a rewrite
//! of every rule.
//!
//! The file starts with a line naming the snapshot (state file) it continues, `# journal ID`;
//! the state file names the same ID. Each further line is one change as JSON
//! (`{"remove":[names],"add":[rules]}`), written whole with one `write` and synced before the
//! change is answered. Reading it back, a journal with a well-formed ID older than the
//! snapshot's belongs to an older snapshot that already holds its changes, and is ignored; a
//! last line without its newline is a change whose write a crash interrupted: it was never
//! answered, so it is dropped. Anything else that does not read (a header that is not one, a
//! whole line that does not parse or apply) is damage: [`replay`] stops before it and says
//! where, and [`super::restore`] keeps the file aside.

use super::damage::{Problem, StateError, utf8};
use super::{Change, Unwritten, write_atomically};
use relay_rules::Rule;
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
    add: Vec<Rule>,
}

/// An open journal, appended to at every change.
#[derive(Debug)]
pub(super) struct Journal {
    /// Visible to the state's tests, which swap in `/dev/full`.
    pub(super) file: File,
    /// Bytes written so far, header included.
    len: u64,
    /// The seam through which unit tests make the disk fail where it rarely does.
    #[cfg(test)]
    pub(super) faults: Faults,
}

/// Failures a unit test injects into a [`Journal`].
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Faults {
    /// `fdatasync` fails after the line was written.
    pub(super) sync: bool,
    /// Cutting the line off again fails.
    pub(super) cut: bool,
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
            #[cfg(test)]
            faults: Faults::default(),
        })
    }

    /// Appends `change` and waits until it is on disk. On error the line is cut off again when
    /// that can be done; when it cannot, [`Unwritten::left_behind`] says so, and the caller must
    /// replace the journal (write a snapshot) before a restart could read the refused change.
    pub(super) fn append(&mut self, change: &Change) -> Result<(), Unwritten> {
        let entry = Entry {
            remove: change.remove.clone(),
            add: change.add.to_vec(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(|error| Unwritten {
            error: io::Error::other(error),
            left_behind: false,
        })?;
        line.push(b'\n');
        let written = self.file.write_all(&line).and_then(|()| self.sync());
        match written {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(error) => {
                // A refused change must not come back from a crash: cut the line off again.
                let cut = self.cut_back();
                if let Err(cut) = &cut {
                    log::error!("cannot cut the refused change off the state journal again: {cut}");
                }
                Err(Unwritten {
                    error,
                    left_behind: cut.is_err(),
                })
            }
        }
    }

    /// `fdatasync`, or the failure a test injected.
    fn sync(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.sync {
            return Err(io::Error::other("injected: fdatasync failed"));
        }
        self.file.sync_data()
    }

    /// Cuts the file back to its acknowledged length, or fails as a test injected.
    fn cut_back(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.cut {
            return Err(io::Error::other("injected: ftruncate failed"));
        }
        self.file.set_len(self.len)
    }

    /// Bytes in the journal.
    pub(super) fn len(&self) -> u64 {
        self.len
    }
}

/// What [`replay`] made of a journal.
#[derive(Debug, PartialEq)]
pub(super) struct Replayed {
    /// Changes applied.
    pub(super) applied: usize,
    /// Why the replay stopped before the end of the file, if it did.
    pub(super) stopped: Option<Stop>,
}

/// Why a replay stopped before the end of the journal.
#[derive(Debug, PartialEq)]
pub(super) enum Stop {
    /// The last line has no newline. [`Journal::append`] writes a line whole and answers only
    /// after `fdatasync`, and a refused change is cut off again: a line without its end was
    /// never acknowledged, so dropping it loses nothing that anyone was told about.
    CutShort {
        /// Its line number, from 1 (the header is line 1).
        line: usize,
    },
    /// A whole line (or the header) that cannot be applied. The lines after it cannot be
    /// trusted either: each change was validated against the set that the ones before it
    /// made, so the replay keeps only what comes before the damage.
    Damaged {
        /// Its line number, from 1.
        line: usize,
        /// What is wrong with it.
        problem: Problem,
        /// Complete lines after it, set aside with it.
        later: usize,
    },
}

/// Applies the journal at `path` of the snapshot `id` to `rules` (the snapshot's), up to the
/// first line that cannot be applied. No journal, or one of another snapshot, changes nothing.
/// Only a file that cannot be read is an error: damage is reported in [`Replayed::stopped`].
pub(super) fn replay(path: &Path, id: &str, rules: &mut Vec<Rule>) -> Result<Replayed, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(Replayed {
                applied: 0,
                stopped: None,
            });
        }
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut lines = bytes.split_inclusive(|&byte| byte == b'\n').enumerate();
    let complete_after = |index: usize| {
        bytes
            .split_inclusive(|&byte| byte == b'\n')
            .skip(index + 1)
            .filter(|line| line.ends_with(b"\n"))
            .count()
    };
    let damaged = |index: usize, problem: Problem| Replayed {
        applied: 0,
        stopped: Some(Stop::Damaged {
            line: index + 1,
            problem,
            later: complete_after(index),
        }),
    };
    // The header is written whole by a rename, so even its last byte is never missing.
    let Some((_, header)) = lines.next() else {
        return Ok(damaged(0, Problem::Empty));
    };
    let header = match utf8(header) {
        Ok(header) => header.trim_end(),
        Err((_, problem)) => return Ok(damaged(0, problem)),
    };
    match header.strip_prefix(ID_PREFIX) {
        Some(theirs) if theirs == id => {}
        // An older snapshot's journal (a new one could not be started after it): the newer
        // snapshot already holds its changes. Only an ID that is well formed and older than
        // the snapshot's counts as one, so that a damaged ID is not ignored as stale.
        Some(theirs) if is_older(theirs, id) => {
            return Ok(Replayed {
                applied: 0,
                stopped: None,
            });
        }
        _ => return Ok(damaged(0, Problem::header(header, "`# journal ID`"))),
    }
    let mut slots: Vec<Option<Rule>> = std::mem::take(rules).into_iter().map(Some).collect();
    let mut by_name: HashMap<String, usize> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| rule.as_ref().map(|rule| (rule.name.clone(), i)))
        .collect();
    let mut replayed = Replayed {
        applied: 0,
        stopped: None,
    };
    for (index, line) in lines {
        let Some(line) = line.strip_suffix(b"\n") else {
            replayed.stopped = Some(Stop::CutShort { line: index + 1 });
            break;
        };
        match apply_line(line, &mut slots, &mut by_name) {
            Ok(()) => replayed.applied += 1,
            Err(problem) => {
                replayed.stopped = damaged(index, problem).stopped;
                break;
            }
        }
    }
    *rules = slots.into_iter().flatten().collect();
    Ok(replayed)
}

/// Applies one journal line to `slots`, or says what is wrong with it and changes nothing.
fn apply_line(
    line: &[u8],
    slots: &mut Vec<Option<Rule>>,
    by_name: &mut HashMap<String, usize>,
) -> Result<(), Problem> {
    let text = utf8(line).map_err(|(_, problem)| problem)?;
    let entry: Entry =
        serde_json::from_str(text).map_err(|error| Problem::Syntax(error.to_string()))?;
    // Checked before anything is removed, so that a line that does not apply leaves the rules
    // as the lines before it made them.
    let mut seen = std::collections::HashSet::new();
    if let Some(name) = entry
        .remove
        .iter()
        .find(|name| !by_name.contains_key(*name) || !seen.insert(*name))
    {
        return Err(Problem::UnknownRule(name.clone()));
    }
    for name in &entry.remove {
        if let Some(slot) = by_name.remove(name) {
            slots[slot] = None;
        }
    }
    for rule in entry.add {
        by_name.insert(rule.name.clone(), slots.len());
        slots.push(Some(rule));
    }
    Ok(())
}

/// Whether `theirs` is an ID [`super::snapshot_id`] made before it made `ours`: their clock
/// parts (the second of three hex numbers) say so.
fn is_older(theirs: &str, ours: &str) -> bool {
    let clock = |id: &str| -> Option<u128> {
        let parts: Vec<&str> = id.split('-').collect();
        let [pid, clock, generation] = parts[..] else {
            return None;
        };
        let hex = |part: &str| u128::from_str_radix(part, 16).ok();
        hex(pid).and(hex(generation)).and(hex(clock))
    };
    matches!((clock(theirs), clock(ours)), (Some(theirs), Some(ours)) if theirs < ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_rules::{Input, Output};

    fn entry(name: &str, port: u16) -> Rule {
        Rule {
            name: name.into(),
            input: Input {
                interface: "in0".into(),
                destination: "239.1.1.1".parse().expect("an address"),
                port,
                source: None,
                vlan: None,
            },
            outputs: vec![Output {
                interface: "out0".into(),
                destination: "239.2.2.2".parse().expect("an address"),
                port,
                ttl: relay_rules::Ttl::Fixed(4),
                source: None,
                dscp: None,
                vlan: None,
            }],
            class: None,
            inspect: None,
            rtp_clock_hz: None,
            max_pps: None,
            max_bps: None,
        }
    }

    fn change(remove: &[&str], add: &[Rule]) -> Change {
        Change {
            remove: remove.iter().map(|name| (*name).to_owned()).collect(),
            add: add.to_vec(),
        }
    }

    fn names(rules: &[Rule]) -> Vec<&str> {
        rules.iter().map(|rule| rule.name.as_str()).collect()
    }

    /// `replay`'s answer, for comparing.
    fn replayed(applied: usize, stopped: Option<Stop>) -> Replayed {
        Replayed { applied, stopped }
    }

    fn replay_ok(path: &Path, id: &str, rules: &mut Vec<Rule>) -> Replayed {
        replay(path, id, rules).expect("readable")
    }

    const OLD: &str = "1f-10-1";
    const NEW: &str = "1f-20-2";

    #[test]
    fn changes_replay_in_order_onto_their_snapshot_only() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_for(&dir.path().join("rules.toml"));
        assert!(path.ends_with("rules.toml.journal"));
        let mut journal = Journal::create(&path, OLD).expect("created");
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
        assert_eq!(replay_ok(&path, OLD, &mut rules), replayed(2, None));
        assert_eq!(names(&rules), ["b", "c"]);
        assert_eq!(rules[1], entry("c", 4), "the second c replaced the first");

        // An older snapshot's journal, or none, leaves the snapshot's rules as they are.
        let mut rules = snapshot.clone();
        assert_eq!(replay_ok(&path, NEW, &mut rules), replayed(0, None));
        assert_eq!(rules, snapshot);
        let none = dir.path().join("none");
        assert_eq!(replay_ok(&none, OLD, &mut rules), replayed(0, None));
        assert_eq!(rules, snapshot);

        // A new journal replaces the old one.
        Journal::create(&path, NEW).expect("created");
        let mut rules = snapshot.clone();
        assert_eq!(replay_ok(&path, NEW, &mut rules), replayed(0, None));
    }

    /// A journal of `OLD` with the lines `b`, `c`, `d` after the snapshot's `a`.
    fn three_lines(path: &Path) -> Vec<u8> {
        let mut journal = Journal::create(path, OLD).expect("created");
        for (name, port) in [("b", 2), ("c", 3), ("d", 4)] {
            journal
                .append(&change(&[], &[entry(name, port)]))
                .expect("appended");
        }
        std::fs::read(path).expect("readable")
    }

    /// `bytes` with line `number` (from 1) replaced by `line`.
    fn with_line(bytes: &[u8], number: usize, line: &[u8]) -> Vec<u8> {
        let mut lines: Vec<&[u8]> = bytes.split_inclusive(|&byte| byte == b'\n').collect();
        lines[number - 1] = line;
        lines.concat()
    }

    #[test]
    fn a_change_cut_short_by_a_crash_is_dropped_as_never_acknowledged() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_for(&dir.path().join("rules.toml"));
        let whole = three_lines(&path);
        // The last line without its end, as a crash in the middle of the write leaves it.
        std::fs::write(&path, &whole[..whole.len() - 5]).expect("writable");
        let mut rules = vec![entry("a", 1)];
        let got = replay_ok(&path, OLD, &mut rules);
        assert_eq!(got, replayed(2, Some(Stop::CutShort { line: 4 })));
        assert_eq!(names(&rules), ["a", "b", "c"]);
    }

    #[test]
    fn a_damaged_line_keeps_the_changes_before_it_and_counts_those_after() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_for(&dir.path().join("rules.toml"));
        let whole = three_lines(&path);
        std::fs::write(&path, with_line(&whole, 3, b"{\"remove\":[}\n")).expect("writable");
        let mut rules = vec![entry("a", 1)];
        let got = replay_ok(&path, OLD, &mut rules);
        assert_eq!(names(&rules), ["a", "b"], "only the change before line 3");
        let Some(Stop::Damaged {
            line: 3,
            problem: Problem::Syntax(_),
            later: 1,
        }) = got.stopped
        else {
            panic!("{got:?}");
        };
        assert_eq!(got.applied, 1);

        // Bytes that are not UTF-8 in a line: damage at that line, not a panic.
        std::fs::write(&path, with_line(&whole, 2, b"{\"remove\xff\":[]}\n")).expect("writable");
        let mut rules = vec![entry("a", 1)];
        let got = replay_ok(&path, OLD, &mut rules);
        let expected = Stop::Damaged {
            line: 2,
            problem: Problem::NotUtf8 { column: 9 },
            later: 2,
        };
        assert_eq!(got, replayed(0, Some(expected)));
        assert_eq!(names(&rules), ["a"]);

        // A remove of a rule that is not there: the journal does not fit these rules.
        let remove = br#"{"remove":["zz"],"add":[]}"#.to_vec();
        std::fs::write(&path, with_line(&whole, 3, &[&remove[..], b"\n"].concat()))
            .expect("writable");
        let mut rules = vec![entry("a", 1)];
        let got = replay_ok(&path, OLD, &mut rules);
        let expected = Stop::Damaged {
            line: 3,
            problem: Problem::UnknownRule("zz".into()),
            later: 1,
        };
        assert_eq!(got, replayed(1, Some(expected)));
    }

    #[test]
    fn a_damaged_header_is_damage_not_another_snapshots_journal() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_for(&dir.path().join("rules.toml"));
        let whole = three_lines(&path);
        for header in [
            &b"# jorunal 1f-10-1\n"[..],
            b"# journal 1f-1\xff-1\n",
            b"# journal 1f-30-1\n",
            b"\n",
        ] {
            std::fs::write(&path, with_line(&whole, 1, header)).expect("writable");
            let mut rules = vec![entry("a", 1)];
            let got = replay_ok(&path, NEW, &mut rules);
            let Some(Stop::Damaged {
                line: 1, later: 3, ..
            }) = got.stopped
            else {
                panic!("{:?}: {got:?}", String::from_utf8_lossy(header));
            };
            assert_eq!(names(&rules), ["a"]);
        }
        std::fs::write(&path, b"").expect("writable");
        let got = replay_ok(&path, NEW, &mut vec![entry("a", 1)]);
        let expected = Stop::Damaged {
            line: 1,
            problem: Problem::Empty,
            later: 0,
        };
        assert_eq!(got, replayed(0, Some(expected)));
    }

    #[test]
    fn a_change_whose_sync_fails_is_cut_off_again() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_for(&dir.path().join("rules.toml"));
        let mut journal = Journal::create(&path, OLD).expect("created");
        let before = std::fs::read(&path).expect("readable");
        journal.faults.sync = true;
        let failed = journal
            .append(&change(&[], &[entry("b", 2)]))
            .expect_err("injected");
        assert!(!failed.left_behind);
        assert_eq!(std::fs::read(&path).expect("readable"), before);
        journal.faults.cut = true;
        let failed = journal
            .append(&change(&[], &[entry("b", 2)]))
            .expect_err("injected");
        assert!(failed.left_behind, "the line could not be cut off");
    }
}
