//! The state file: changes, the journal, snapshots and what a restart restores.

use super::*;
use relay_rules::{Input, Output};
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;

fn rule(name: &str, port: u16) -> Rule {
    Rule {
        name: name.into(),
        input: Input {
            interface: "in0".into(),
            destination: Ipv4Addr::new(239, 1, 1, 1).into(),
            port,
            source: None,
            vlan: None,
        },
        outputs: vec![Output {
            interface: "out0".into(),
            destination: Ipv4Addr::new(239, 2, 2, 2).into(),
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
            ipv6: Vec::new(),
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
    changed.outputs[0].ttl = relay_rules::Ttl::Fixed(9);
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
        rules: vec![rule("a", 1)],
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

/// A state file of rule `base` with a journal that adds `a`, `b` and `c`, as a relay leaves it;
/// the journal's bytes.
fn state_with_three_changes(path: &Path) -> Vec<u8> {
    let set =
        RuleSet::new(vec![rule("base", 1)], facts(), Default::default()).expect("a valid rule");
    let mut state = RuleState::new(set, ConfigFile::default(), Some(path.to_owned()), "text");
    state.journal_floor = u64::MAX;
    state
        .adopt_config_text("text")
        .expect("the snapshot written");
    for (name, port) in [("a", 2), ("b", 3), ("c", 4)] {
        change(&mut state, &add(name, port));
    }
    assert_eq!(journal_lines(path), 3);
    std::fs::read(journal::path_for(path)).expect("readable")
}

fn rule_names(config: Option<ConfigFile>) -> Vec<String> {
    config
        .expect("a state to restore")
        .rules
        .into_iter()
        .map(|rule| rule.name)
        .collect()
}

/// The names in `dir` that start with `prefix`, sorted.
fn files_like(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("listable")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn a_missing_state_file_restores_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let restored = restore(&dir.path().join("rules.toml"), "text").expect("absent is fine");
    assert!(restored.is_none());
    assert!(files_like(dir.path(), "").is_empty(), "nothing written");
}

#[test]
fn a_journal_cut_short_restores_what_was_acknowledged_and_is_written_afresh() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("rules.toml");
    let journal = state_with_three_changes(&path);
    std::fs::write(journal::path_for(&path), &journal[..journal.len() - 3]).expect("writable");
    let restored = restore(&path, "text").expect("recovered");
    assert_eq!(rule_names(restored), ["base", "a", "b"]);
    // Nothing was damaged, so nothing is set aside; the fresh snapshot holds what was restored.
    assert!(files_like(dir.path(), "rules.toml.journal.damaged").is_empty());
    assert_eq!(journal_lines(&path), 0, "a new, empty journal");
    assert_eq!(
        rule_names(restore(&path, "text").expect("readable")),
        ["base", "a", "b"]
    );
}

#[test]
fn a_damaged_journal_line_restores_the_prefix_and_keeps_the_journal_aside() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("rules.toml");
    let journal = state_with_three_changes(&path);
    let journal_path = journal::path_for(&path);
    let mut lines: Vec<&[u8]> = journal.split_inclusive(|&byte| byte == b'\n').collect();
    lines[2] = b"{\"remove\":[],\"add\":[{\"name\":\"b\"\xff\n";
    let damaged = lines.concat();
    std::fs::write(&journal_path, &damaged).expect("writable");
    std::fs::set_permissions(&journal_path, std::fs::Permissions::from_mode(0o640)).expect("chmod");

    let restored = restore(&path, "text").expect("recovered");
    assert_eq!(
        rule_names(restored),
        ["base", "a"],
        "the changes before line 3"
    );
    let aside = files_like(dir.path(), "rules.toml.journal.damaged-");
    assert_eq!(aside.len(), 1, "{aside:?}");
    let aside = dir.path().join(&aside[0]);
    assert_eq!(std::fs::read(&aside).expect("readable"), damaged);
    let mode = std::fs::metadata(&aside)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "the damaged file keeps its mode");
    // The next start reads a consistent state, not the damage again.
    assert_eq!(journal_lines(&path), 0);
    assert_eq!(
        rule_names(restore(&path, "text").expect("readable")),
        ["base", "a"]
    );
    assert_eq!(
        files_like(dir.path(), "rules.toml.journal.damaged-").len(),
        1
    );
}

#[test]
fn a_damaged_state_file_is_moved_aside_with_its_journal() {
    for (what, damage) in [
        (
            "header",
            &b"# fanout-relay state of configuration digest 0bad\n"[..],
        ),
        ("non-UTF-8", b"\xfe\xff"),
        ("TOML", b"[[rule]\n"),
    ] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("rules.toml");
        state_with_three_changes(&path);
        let good = std::fs::read_to_string(&path).expect("readable");
        // The damage at the start of line 1, or (for TOML) after the comments.
        let text = if what == "TOML" {
            let comments: String = good.split_inclusive('\n').take(3).collect();
            [
                comments.as_bytes(),
                damage,
                &good.as_bytes()[comments.len()..],
            ]
            .concat()
        } else {
            [damage, good.as_bytes()].concat()
        };
        std::fs::write(&path, &text).expect("writable");
        assert_eq!(restore(&path, "text").expect("recovered"), None, "{what}");
        assert!(!path.exists(), "{what}: moved aside");
        assert!(!journal::path_for(&path).exists(), "{what}: moved aside");
        let aside = files_like(dir.path(), "rules.toml.damaged-");
        assert_eq!(aside.len(), 1, "{what}: {aside:?}");
        assert_eq!(
            std::fs::read(dir.path().join(&aside[0])).expect("readable"),
            text
        );
        assert_eq!(
            files_like(dir.path(), "rules.toml.journal.damaged-").len(),
            1
        );
    }
}

#[test]
fn damaged_state_errors_name_the_file_and_line() {
    let problem = |bytes: &[u8]| restore::read_snapshot(bytes, "text").expect_err("damaged");
    let header = format!("{DIGEST_PREFIX}{:016x}\n", digest(b"text"));
    assert_eq!(problem(b"").0, 1);
    assert!(matches!(problem(b"").1, Problem::Empty));
    let (line, found) = problem(format!("{header}# x\n[relay\n").as_bytes());
    assert_eq!(line, 3, "{found}");
    let (line, found) = problem(&[header.as_bytes(), b"# \xc3(\n"].concat());
    assert_eq!((line, found), (2, Problem::NotUtf8 { column: 3 }));
    let error = StateError::Damaged {
        path: "/var/lib/x.toml".into(),
        line: 2,
        problem: Problem::NotUtf8 { column: 3 },
    };
    assert_eq!(
        error.to_string(),
        "/var/lib/x.toml:2: not UTF-8 (byte 3 of the line)"
    );
}

#[test]
fn damaged_files_set_aside_in_the_same_second_keep_each_other() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("rules.toml");
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_663_700);
    assert_eq!(damage::utc_stamp(now), "20261207T171500Z");
    let mut aside = Vec::new();
    for content in ["first", "second", "third"] {
        std::fs::write(&path, content).expect("writable");
        aside.push(damage::move_aside(&path, now).expect("moved"));
    }
    let names: Vec<String> = aside
        .iter()
        .map(|path| {
            path.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "rules.toml.damaged-20261207T171500Z",
            "rules.toml.damaged-20261207T171500Z-1",
            "rules.toml.damaged-20261207T171500Z-2"
        ]
    );
    for (path, content) in aside.iter().zip(["first", "second", "third"]) {
        assert_eq!(std::fs::read_to_string(path).expect("readable"), content);
    }
    assert!(!path.exists());
    assert_eq!(damage::utc_stamp(std::time::UNIX_EPOCH), "19700101T000000Z");
    let leap = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
    assert_eq!(damage::utc_stamp(leap), "20000229T000000Z");
}

#[test]
fn a_refused_change_whose_line_stays_in_the_journal_is_written_over() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("rules.toml");
    let set =
        RuleSet::new(vec![rule("base", 1)], facts(), Default::default()).expect("a valid rule");
    let mut state = RuleState::new(set, ConfigFile::default(), Some(path.clone()), "text");
    state.journal_floor = u64::MAX;
    change(&mut state, &add("a", 2));
    change(&mut state, &add("b", 3));
    let before = state.as_config().rules;
    // fdatasync fails after the line was written, and it cannot be cut off: the disk holds a
    // change that the relay refuses.
    let journal = state.journal.as_mut().expect("a journal");
    journal.faults = journal::Faults {
        sync: true,
        cut: true,
    };
    let refused = add("refused", 4);
    let undo = state.apply(&refused).expect("valid");
    state.commit(&refused).expect_err("injected");
    state.revert(undo);
    assert_eq!(state.as_config().rules, before);
    assert_eq!(state.generation(), 3, "the generation stays");
    assert_eq!(
        restore(&path, "text")
            .expect("readable")
            .expect("a state")
            .rules,
        before,
        "a restart restores exactly the running state"
    );
    // The next change works and lands on disk.
    change(&mut state, &add("c", 5));
    assert_eq!(
        restore(&path, "text")
            .expect("readable")
            .expect("a state")
            .rules,
        state.as_config().rules
    );
}

#[test]
fn a_full_disk_refuses_the_change_and_a_restart_restores_the_running_state() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("rules.toml");
    let set =
        RuleSet::new(vec![rule("base", 1)], facts(), Default::default()).expect("a valid rule");
    let mut state = RuleState::new(set, ConfigFile::default(), Some(path.clone()), "text");
    state.journal_floor = u64::MAX;
    change(&mut state, &add("a", 2));
    change(&mut state, &add("b", 3));
    let before = state.as_config().rules;
    // /dev/full answers every write with ENOSPC, as a full file system does (and cannot be
    // cut back, so the relay writes the running set again, into the directory that has room).
    let journal = state.journal.as_mut().expect("a journal");
    journal.file = OpenOptions::new()
        .append(true)
        .open("/dev/full")
        .expect("/dev/full opens");
    let refused = add("refused", 4);
    let undo = state.apply(&refused).expect("valid");
    let error = state.commit(&refused).expect_err("the disk is full");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    state.revert(undo);
    assert_eq!(state.as_config().rules, before);
    assert_eq!(state.generation(), 3);
    let restored = restore(&path, "text").expect("readable").expect("a state");
    assert!(
        restored.rules == before,
        "a restart restores the running state"
    );
    // The journal of that snapshot is a real file again: the next change is appended.
    change(&mut state, &add("c", 5));
    assert_eq!(journal_lines(&path), 1);
}

#[test]
fn waiting_rules_added_and_removed_at_run_time_are_restored() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("rules.toml");
    let set =
        RuleSet::new(vec![rule("base", 1)], facts(), Default::default()).expect("a valid rule");
    let mut state = RuleState::new(set, ConfigFile::default(), Some(path.clone()), "text");
    state
        .adopt_config_text("text")
        .expect("the snapshot written");
    let mut late = rule("late", 2);
    late.input.interface = "missing0".into();
    let mut spare = rule("spare", 3);
    spare.input.interface = "missing0".into();
    let generation = state
        .change_waiting(&Change {
            remove: Vec::new(),
            add: vec![late, spare],
        })
        .expect("written");
    assert_eq!(generation, 2);
    let generation = state
        .change_waiting(&Change {
            remove: vec!["spare".into()],
            add: Vec::new(),
        })
        .expect("written");
    assert_eq!(generation, 3);
    assert_eq!(
        state.waiting().keys().collect::<Vec<_>>(),
        ["late"],
        "spare was removed"
    );
    assert_eq!(state.set().len(), 1, "the running set is untouched");
    assert_eq!(
        rule_names(restore(&path, "text").expect("readable")),
        ["base", "late"]
    );
}

#[test]
fn a_planted_link_at_a_temporary_name_is_skipped_not_followed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"keep me\n").expect("a file to protect");
    std::os::unix::fs::symlink(&victim, dir.path().join(".planted.tmp")).expect("a link");
    let names = [".planted.tmp".to_owned(), ".free.tmp".to_owned()];
    let (mut file, path) = create_first_free(dir.path(), names).expect("a free name");
    file.write_all(b"new").expect("written");
    assert_eq!(path, dir.path().join(".free.tmp"));
    assert_eq!(std::fs::read(&victim).expect("the victim"), b"keep me\n");
    // Only taken names: refused, nothing created or followed.
    let taken = create_first_free(dir.path(), [".planted.tmp".to_owned()]).expect_err("taken");
    assert_eq!(taken.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&victim).expect("the victim"), b"keep me\n");
    // And a save to a link replaces the link, leaving its target alone.
    let target = dir.path().join("saved.toml");
    std::os::unix::fs::symlink(&victim, &target).expect("a link");
    write_atomically(&target, b"saved").expect("saved");
    assert!(std::fs::symlink_metadata(&target).expect("saved").is_file());
    assert_eq!(std::fs::read(&victim).expect("the victim"), b"keep me\n");
}
