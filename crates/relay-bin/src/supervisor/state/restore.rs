//! What a start restores from the state file and its journal, and what it does with damage.
//!
//! The state restored is always the longest valid prefix of what was acknowledged: the snapshot
//! and the journal's lines before the first one that does not apply. What cannot be used is
//! kept aside ([`super::damage`]), never dropped, and the log says at error level what was
//! damaged, where, and what the relay starts from instead. When the journal was damaged or cut
//! short, a fresh snapshot of what was restored is written at once, so that the next start,
//! whatever happens to this one, reads a consistent state and not the damage again.

use super::damage::{self, Problem, StateError, utf8};
use super::journal::{self, Stop};
use super::{DIGEST_PREFIX, digest, write_snapshot};
use crate::config::ConfigFile;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The state of the state file at `path` and its journal if it was written from a configuration
/// whose text is `config_text`, recovering from damage as the module says; `None` when there
/// is no state of this configuration, or when its state file was damaged and moved aside.
///
/// Errors only when a file cannot be read or a damaged file cannot be kept aside: starting
/// then would risk overwriting the only copy of the state.
pub(crate) fn restore(path: &Path, config_text: &str) -> Result<Option<ConfigFile>, StateError> {
    let now = SystemTime::now();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let journal_path = journal::path_for(path);
    let (mut config, id) = match read_snapshot(&bytes, config_text) {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return Ok(None),
        Err((line, problem)) => {
            // The journal continues this snapshot and means nothing without it: both go, and
            // the relay starts from the configuration file as if there were no state.
            let mut set_aside = vec![damage::move_aside(path, now)?];
            if journal_path.exists() {
                set_aside.push(damage::move_aside(&journal_path, now)?);
            }
            let error = StateError::Damaged {
                path: path.to_owned(),
                line,
                problem,
            };
            log::error!(
                "{error}; moved it (and its journal) aside to {}; starting from the rules of the \
                 configuration file: the changes made at run time are not restored",
                names(&set_aside)
            );
            return Ok(None);
        }
    };
    let Some(id) = id else {
        return Ok(Some(config));
    };
    let replayed = journal::replay(&journal_path, &id, &mut config.rules)?;
    match replayed.stopped {
        None => return Ok(Some(config)),
        Some(Stop::CutShort { line }) => log::warn!(
            "{}:{line}: the last change is cut short (a crash while it was written, before it \
             was synced and acknowledged); restored the state file and the {} change(s) before it",
            journal_path.display(),
            replayed.applied
        ),
        Some(Stop::Damaged {
            line,
            problem,
            later,
        }) => {
            // Linked, not moved: until the fresh snapshot below is written, the journal stays
            // where a crash would look for it.
            let aside = damage::keep_aside(&journal_path, now)?;
            let error = StateError::Damaged {
                path: journal_path.clone(),
                line,
                problem,
            };
            log::error!(
                "{error}; kept the journal aside as {}; starting from the state file and the {} \
                 change(s) before line {line}; {later} later change(s) are not applied (they may \
                 depend on the damaged one)",
                aside.display(),
                replayed.applied
            );
        }
    }
    // A new snapshot with a new ID: the old journal no longer counts from here, and the new
    // (empty) one replaces it.
    match write_snapshot(path, digest(config_text.as_bytes()), 0, &config) {
        Ok(_) => log::info!("wrote {} afresh with the restored state", path.display()),
        Err(failed) => log::error!(
            "cannot write {} afresh: {}; the next start recovers the same way",
            path.display(),
            failed.error
        ),
    }
    Ok(Some(config))
}

/// A snapshot's rules and settings, and the ID of its journal if it names one.
pub(super) type Snapshot = (ConfigFile, Option<String>);

/// The snapshot in `bytes` with the ID of its journal, `None` if it belongs to another
/// configuration than `config_text`, or the line and problem of the damage.
pub(super) fn read_snapshot(
    bytes: &[u8],
    config_text: &str,
) -> Result<Option<Snapshot>, (usize, Problem)> {
    let text = utf8(bytes)?;
    const EXPECTED: &str = "`# fanout-relay state of configuration digest <16 hex digits>`";
    let Some(header) = text.lines().next() else {
        return Err((1, Problem::Empty));
    };
    let theirs = header
        .strip_prefix(DIGEST_PREFIX)
        .filter(|hex| hex.len() == 16 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .ok_or_else(|| (1, Problem::header(header, EXPECTED)))?;
    // An operator who edited the configuration meanwhile gets the new configuration.
    if theirs != format!("{:016x}", digest(config_text.as_bytes())) {
        return Ok(None);
    }
    let config = ConfigFile::parse(text).map_err(|error| {
        let message = error.to_string();
        // The TOML parser's message names the line ("TOML parse error at line 7, column 3").
        let line = message
            .split_once("at line ")
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(1);
        (line, Problem::Syntax(message.replace('\n', " ")))
    })?;
    // Snapshots name their journal on a comment line before the first setting.
    let id = text
        .lines()
        .take_while(|line| line.starts_with('#'))
        .find_map(|line| line.strip_prefix(journal::ID_PREFIX))
        .and_then(|rest| rest.split(':').next())
        .map(str::to_owned);
    Ok(Some((config, id)))
}

/// The paths, for a log line.
fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}
