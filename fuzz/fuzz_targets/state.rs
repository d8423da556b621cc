//! The state file and its journal as a start reads them (`relay_bin::supervisor::restore_state`:
//! snapshot header, TOML body, journal header and replay, damage recovery), on files made from
//! fuzzed bytes in a scratch directory.
//!
//! Input: a flag byte, two bytes giving the length of the snapshot's body, the body, then the
//! journal's body. The target writes the headers a snapshot and journal of the configuration
//! `CONFIG` carry (the digest line, the journal's ID line) unless the flags leave them to the
//! fuzzer, so that replay is reached, not only the header checks.
//!
//! It must never panic or fail on readable files, and:
//! - a state file of another configuration (wrong digest) restores nothing and touches nothing
//!   (unless it is not UTF-8: damage is kept aside whoever it belongs to);
//! - what is restored is restored again by the next start, identically, without new damage;
//! - the journal changes rules only: the settings are the snapshot's;
//! - damage is kept aside, never dropped: a state file that restores nothing is still in the
//!   directory byte for byte, and a journal whose snapshot was written afresh is too (unless its
//!   last line was cut short, which was never acknowledged and is dropped by design).

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_bin::config::ConfigFile;
use relay_bin::supervisor::restore_state;
use std::path::{Path, PathBuf};

/// The configuration the state belongs to.
const CONFIG: &str = "[relay]\nworkers = 1\n";
const ID: &str = "1f-18c2a4b2e5d1c000-7";

/// FNV-1a, 64 bits: the digest a state file records of its configuration.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn scratch() -> PathBuf {
    // tmpfs where there is one: every run writes a few files.
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_owned()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("relay-fuzz-state-{}", std::process::id()))
}

/// Every file in `dir` with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("the scratch directory lists")
        .map(|entry| {
            let path = entry.expect("an entry").path();
            let bytes = std::fs::read(&path).expect("a file written here reads");
            (path, bytes)
        })
        .collect();
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, hi, lo], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let (body, journal_body) =
        rest.split_at(usize::from(u16::from_be_bytes([hi, lo])).min(rest.len()));
    let wrong_digest = flags & 1 != 0;
    let raw_header = flags & 2 != 0;
    let names_journal = flags & 4 == 0;
    let journal_exists = flags & 8 == 0;
    let raw_journal = flags & 16 != 0;

    let mut state = Vec::new();
    if !raw_header {
        let theirs = digest(CONFIG.as_bytes()) ^ u64::from(wrong_digest);
        state.extend(
            format!("# fanout-relay state of configuration digest {theirs:016x}\n").bytes(),
        );
        if names_journal {
            state.extend(format!("# journal {ID}: later changes are in s.toml.journal\n").bytes());
        }
    }
    state.extend_from_slice(body);
    let mut journal = Vec::new();
    if !raw_journal {
        journal.extend(format!("# journal {ID}\n").bytes());
    }
    journal.extend_from_slice(journal_body);

    let dir = scratch();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let path = dir.join("s.toml");
    let journal_path = dir.join("s.toml.journal");
    std::fs::write(&path, &state).expect("write the state file");
    if journal_exists {
        std::fs::write(&journal_path, &journal).expect("write the journal");
    }
    let before = files(&dir);

    let restored = match restore_state(&path, CONFIG) {
        Ok(restored) => restored,
        Err(error) => panic!("readable files in a writable directory: {error}"),
    };
    let after = files(&dir);
    let kept = |bytes: &[u8]| after.iter().any(|(_, b)| b == bytes);

    if wrong_digest && !raw_header {
        assert_eq!(restored, None, "another configuration's state");
        // Unless it is damaged (not UTF-8: found by this target), when it is kept aside.
        if std::str::from_utf8(&state).is_ok() {
            assert_eq!(after, before, "another configuration's state is left alone");
        } else {
            assert!(kept(&state), "a damaged state file is kept");
        }
        return;
    }
    let Some(config) = restored else {
        assert!(kept(&state), "a state file that restores nothing is kept");
        if journal_exists {
            assert!(kept(&journal), "its journal is kept");
        }
        return;
    };

    // The journal changes rules only.
    let snapshot = std::str::from_utf8(&state)
        .ok()
        .and_then(|text| ConfigFile::parse(text).ok())
        .expect("a restored state file parses");
    assert_eq!(
        ConfigFile {
            rules: Vec::new(),
            ..config.clone()
        },
        ConfigFile {
            rules: Vec::new(),
            ..snapshot
        },
        "settings come from the snapshot"
    );
    // A journal the restore replaced is kept aside, unless only a cut-short last line was lost.
    let rewritten = std::fs::read(&path).ok().as_deref() != Some(&state[..]);
    if rewritten && journal_exists && journal.ends_with(b"\n") {
        assert!(kept(&journal), "a damaged journal is kept aside");
    }
    if !rewritten {
        assert_eq!(after, before, "nothing moves when nothing was damaged");
    }

    // The next start restores the same, from files that need no more recovery.
    match restore_state(&path, CONFIG) {
        Ok(Some(again)) => assert_eq!(again, config, "restored again identically"),
        other => panic!("the second start restores {other:?}"),
    }
    assert_eq!(files(&dir), after, "the second start finds no damage");
});
