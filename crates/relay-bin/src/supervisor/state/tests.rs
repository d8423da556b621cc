//! The state file: changes, the journal, snapshots and what a restart restores.

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
        class: None,
    }
}

fn facts() -> Interfaces {
    ["in0", "out0"]
        .into_iter()
        .zip(1..)
        .map(|(name, index)| relay_rules::InterfaceFacts {
            name: name.into(),
            index,
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            mtu: 1500,
            ipv4: vec![Ipv4Addr::new(10, 0, 0, index as u8)],
        })
        .collect()
}

fn add(name: &str, port: u16) -> Change {
    Change {
        remove: Vec::new(),
        add: vec![rule(name, port)],
    }
}

/// Applies and commits `change`, as the supervisor does.
fn change(state: &mut RuleState, change: &Change) -> u64 {
    let undo = state.apply(change).expect("a valid change");
    match state.commit(change) {
        Ok(generation) => generation,
        Err(error) => {
            state.revert(undo);
            panic!("commit: {error}");
        }
    }
}

fn journal_lines(path: &Path) -> usize {
    std::fs::read_to_string(journal::path_for(path))
        .map_or(0, |text| text.lines().count().saturating_sub(1))
}

#[test]
fn changes_go_to_the_journal_and_come_back_with_the_snapshot() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("rules.toml");
    let set =
        RuleSet::new(vec![rule("base", 1)], facts(), Default::default()).expect("a valid rule");
    let mut state = RuleState::new(set, ConfigFile::default(), Some(path.clone()), "text");
    state.journal_floor = 0;
    let restored = || {
        restore(&path, "text")
            .expect("readable")
            .expect("written for this configuration")
            .rules
    };

    // The first change of a process writes a snapshot; the next ones a journal line each.
    assert_eq!(change(&mut state, &add("a", 2)), 2);
    assert_eq!(journal_lines(&path), 0);
    assert_eq!(restored(), state.as_config().rules);
    change(&mut state, &add("b", 3));
    let swap = Change {
        remove: vec!["a".into(), "base".into()],
        add: vec![rule("a", 4)],
    };
    assert_eq!(change(&mut state, &swap), 4);
    assert_eq!(journal_lines(&path), 2);
    let names: Vec<String> = restored().into_iter().map(|rule| rule.name).collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(restored(), state.as_config().rules);

    // Past the snapshot's size, the journal is folded into a new snapshot.
    for port in 10..40 {
        change(&mut state, &add(&format!("r{port}"), port));
        assert_eq!(restored(), state.as_config().rules, "after r{port}");
    }
    assert!(
        journal_lines(&path) < 30,
        "{} lines: compacted",
        journal_lines(&path)
    );
    let snapshot = std::fs::read_to_string(&path).expect("readable");
    assert!(
        snapshot
            .lines()
            .nth(1)
            .is_some_and(|line| line.starts_with(journal::ID_PREFIX))
    );

    // A refused or reverted change leaves the set and the files as they were.
    let before = state.as_config().rules;
    assert!(state.apply(&add("a", 99)).is_err(), "a exists");
    let undo = state.apply(&add("late", 98)).expect("valid");
    state.revert(undo);
    assert_eq!(state.as_config().rules, before);
    assert_eq!(restored(), before);
    assert_eq!(state.generation(), 34, "1 at start, then 33 changes");

    // A new process starts a new snapshot: the old journal no longer counts.
    let set =
        RuleSet::new(state.set().rules().to_vec(), facts(), Default::default()).expect("valid");
    let mut next = RuleState::new(set, ConfigFile::default(), Some(path.clone()), "text");
    change(&mut next, &add("z", 97));
    assert_eq!(journal_lines(&path), 0);
    assert_eq!(restored(), next.as_config().rules);
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
