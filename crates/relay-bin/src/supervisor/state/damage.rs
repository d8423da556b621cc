//! What is wrong with a state file or journal that does not read back, and how it is kept.
//!
//! A damaged file is evidence: of a disk going bad, of a hand edit, of a bug. It is never
//! deleted or overwritten. It is renamed aside (same directory, same inode, so the same
//! permissions and owner) to `NAME.damaged-YYYYMMDDTHHMMSSZ`, with `-1`, `-2`, ... after it when
//! that name exists, so that two damaged starts in the same second keep both files.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why the state on disk cannot be restored as it is, naming the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The state file or journal.
        path: PathBuf,
        /// The error of the read.
        source: io::Error,
    },
    /// A line of the file is damaged.
    #[error("{}:{line}: {problem}", path.display())]
    Damaged {
        /// The state file or journal.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        problem: Problem,
    },
    /// A damaged file could not be moved aside; the relay does not start rather than risk
    /// overwriting it (its next snapshot would replace the journal).
    #[error(
        "{}: cannot move the damaged file aside: {source}; move it away by hand to start",
        path.display()
    )]
    MoveAside {
        /// The damaged file.
        path: PathBuf,
        /// The error of the link or the removal.
        source: io::Error,
    },
}

/// What is wrong with one line of a state file or journal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// Bytes that are not UTF-8.
    #[error("not UTF-8 (byte {column} of the line)")]
    NotUtf8 {
        /// The offset of the first bad byte in the line, from 1.
        column: usize,
    },
    /// The file is empty (the relay never writes an empty state file or journal).
    #[error("the file is empty")]
    Empty,
    /// The first line is not the header the relay writes.
    #[error("the header {found:?} is not {expected}")]
    Header {
        /// The line as found (cut at 80 characters).
        found: String,
        /// What it should look like.
        expected: &'static str,
    },
    /// The line does not parse.
    #[error("does not parse: {0}")]
    Syntax(String),
    /// A journal line removes a rule that the snapshot and earlier lines did not leave.
    #[error("removes {0:?}, which no earlier change left")]
    UnknownRule(String),
}

impl Problem {
    /// A header problem for the line `found`.
    pub(super) fn header(found: &str, expected: &'static str) -> Problem {
        Problem::Header {
            found: found.chars().take(80).collect(),
            expected,
        }
    }
}

/// `bytes` as text, or the line (from 1) and problem of the first byte that is not UTF-8.
pub(super) fn utf8(bytes: &[u8]) -> Result<&str, (usize, Problem)> {
    std::str::from_utf8(bytes).map_err(|error| {
        let valid = &bytes[..error.valid_up_to()];
        let line = valid.iter().filter(|&&byte| byte == b'\n').count() + 1;
        let start = valid
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |newline| newline + 1);
        (
            line,
            Problem::NotUtf8 {
                column: valid.len() - start + 1,
            },
        )
    })
}

/// Links the damaged file `path` to `NAME.damaged-STAMP` (then `-1`, `-2`, ...), leaving it in
/// place as well, and returns the new name.
///
/// A hard link rather than a rename: it fails when the name exists (where a check followed by a
/// rename could overwrite a file that appeared in between), it keeps the inode with its owner and
/// mode, and the damaged file stays where it is until something consistent replaces it, so a
/// crash in between finds the same damage again rather than a state missing its journal.
pub(super) fn keep_aside(path: &Path, now: SystemTime) -> Result<PathBuf, StateError> {
    let stamp = utc_stamp(now);
    let failed = |source: io::Error| StateError::MoveAside {
        path: path.to_owned(),
        source,
    };
    for counter in 0..1000 {
        let mut name = path.as_os_str().to_owned();
        name.push(".damaged-");
        name.push(&stamp);
        if counter > 0 {
            name.push(format!("-{counter}"));
        }
        let aside = PathBuf::from(name);
        match std::fs::hard_link(path, &aside) {
            Ok(()) => return Ok(aside),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(failed(error)),
        }
    }
    Err(failed(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "1000 damaged files of this second exist already",
    )))
}

/// [`keep_aside`], then removes the name `path` (the file lives on under the new name).
pub(super) fn move_aside(path: &Path, now: SystemTime) -> Result<PathBuf, StateError> {
    let aside = keep_aside(path, now)?;
    std::fs::remove_file(path).map_err(|source| StateError::MoveAside {
        path: path.to_owned(),
        source,
    })?;
    Ok(aside)
}

/// `now` in UTC as `YYYYMMDDTHHMMSSZ`: sorts by time, and names no local zone that an operator
/// on another host would have to guess.
pub(super) fn utc_stamp(now: SystemTime) -> String {
    let seconds = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, in_day) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's days-to-civil, for the days since 1970 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}
