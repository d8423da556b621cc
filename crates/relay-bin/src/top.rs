//! `fanout-relay ctl top`: the `ctl stats` table, refreshed every second until Ctrl-C.
//!
//! On a terminal each refresh redraws the table in place (cursor home, each line erased to its
//! end, the rest of the screen erased), which does not flicker the way clearing first does.
//! Into a pipe or a file it prints successive tables separated by a blank line, or one JSON
//! object per line with `--json`, so a script can follow the rates.

use crate::control::proto::{Command, Reply, Request, StatsReport, VERSION};
use crate::ctl::error::CtlError;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

/// Time between two refreshes: the supervisor's counter interval, so every table is fresh.
const REFRESH: Duration = Duration::from_secs(1);

/// Cursor to the top-left corner.
const HOME: &str = "\x1b[H";
/// Erase from the cursor to the end of the line.
const ERASE_LINE: &str = "\x1b[K";
/// Erase from the cursor to the end of the screen.
const ERASE_BELOW: &str = "\x1b[J";

/// How a refresh is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Redraw in place.
    Terminal,
    /// Successive tables.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Shows the relay's stats at `socket` every second, `count` times or until interrupted; `Err`
/// says why it stopped early (the relay went away or refused, or standard output closed).
pub fn run(socket: &Path, json: bool, count: Option<u64>) -> Result<(), CtlError> {
    let style = match (json, std::io::stdout().is_terminal()) {
        (true, _) => Style::Json,
        (false, true) => Style::Terminal,
        (false, false) => Style::Plain,
    };
    let mut shown = 0u64;
    let mut next = Instant::now();
    loop {
        let stats = fetch(socket)?;
        let text = frame(&stats, socket, style)?;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(CtlError::Stdout)?;
        drop(stdout);
        shown += 1;
        if count.is_some_and(|count| shown >= count) {
            return Ok(());
        }
        next += REFRESH;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        std::thread::sleep(next - now);
    }
}

fn fetch(socket: &Path) -> Result<StatsReport, CtlError> {
    let request = Request {
        version: VERSION,
        command: Command::Stats,
    };
    let response = crate::control::call(socket, &request).map_err(|source| CtlError::Call {
        socket: socket.to_owned(),
        source,
    })?;
    match (response.ok, response.result, response.error) {
        (true, Some(Reply::Stats(stats)), _) => Ok(stats),
        (_, _, Some(error)) => Err(CtlError::Refused(error)),
        _ => Err(CtlError::NotStats),
    }
}

/// One refresh as it is written.
fn frame(stats: &StatsReport, socket: &Path, style: Style) -> Result<String, CtlError> {
    let table = crate::ctl_tables::stats(stats);
    Ok(match style {
        Style::Json => {
            let mut line = serde_json::to_string(stats)?;
            line.push('\n');
            line
        }
        Style::Plain => format!("{table}\n"),
        Style::Terminal => {
            let mut out = String::from(HOME);
            let title = format!(
                "fanout-relay top: {} (every {} s, Ctrl-C to quit)\n\n",
                socket.display(),
                REFRESH.as_secs()
            );
            for line in title.lines().chain(table.lines()) {
                out.push_str(line);
                out.push_str(ERASE_LINE);
                out.push('\n');
            }
            out.push_str(ERASE_BELOW);
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{RuleStats, WorkerStats};

    fn stats() -> StatsReport {
        let mut stats = StatsReport {
            interval_seconds: 1.0,
            ..StatsReport::default()
        };
        stats.rules.insert(
            "cam".into(),
            RuleStats {
                packets: 42,
                ..RuleStats::default()
            },
        );
        stats.workers.push(WorkerStats {
            cpu: 3,
            share: 1.0,
            ..WorkerStats::default()
        });
        stats
    }

    #[test]
    fn a_terminal_gets_the_table_redrawn_in_place() {
        let text = frame(&stats(), Path::new("/run/x.sock"), Style::Terminal).expect("a frame");
        assert!(text.starts_with("\x1b[H"), "{text:?}");
        assert!(text.ends_with("\x1b[J"), "{text:?}");
        assert!(text.contains("/run/x.sock"), "{text:?}");
        let cam = text
            .lines()
            .find(|line| line.starts_with("cam "))
            .expect("the rule's line");
        assert!(cam.contains(" 42 ") && cam.ends_with("\x1b[K"), "{cam:?}");
    }

    #[test]
    fn a_pipe_gets_plain_tables_or_json_lines() {
        let plain = frame(&stats(), Path::new("/run/x.sock"), Style::Plain).expect("a frame");
        assert!(!plain.contains('\x1b'), "{plain:?}");
        assert!(plain.ends_with("\n\n"), "{plain:?}");
        assert_eq!(plain, format!("{}\n", crate::ctl_tables::stats(&stats())));
        let json = frame(&stats(), Path::new("/run/x.sock"), Style::Json).expect("a frame");
        assert_eq!(json.lines().count(), 1);
        let back: StatsReport = serde_json::from_str(&json).expect("one JSON object");
        assert_eq!(back, stats());
    }

    #[test]
    fn a_relay_that_cannot_be_reached_is_named() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("gone.sock");
        let error = fetch(&socket).expect_err("nothing listens there");
        assert!(
            matches!(&error, CtlError::Call { socket: named, source }
                if *named == socket && source.kind() == std::io::ErrorKind::NotFound),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: ", socket.display())),
            "{error}"
        );
    }
}
