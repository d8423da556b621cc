//! `fanout-relay ctl`: the control socket's client, with human tables or JSON.

pub mod error;
mod request;

pub use error::{ArgError, CtlError, RequestError};
pub use request::{parse_input, parse_output};

use crate::cli::{CtlArgs, CtlCommand};
use crate::config::{ConfigFile, RUN_DIR};
use crate::control::proto::{Reply, Request, Response, VERSION};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Runs one `ctl` command; `Err` says why, and means exit status 1.
pub fn run(args: &CtlArgs) -> Result<(), CtlError> {
    let socket = socket_path(args)?;
    if let CtlCommand::Top { count } = args.command {
        return crate::top::run(&socket, args.json, count);
    }
    let command = request::command(&args.command)?;
    let response = crate::control::call(
        &socket,
        &Request {
            version: VERSION,
            command,
        },
    )
    .map_err(|source| CtlError::Call {
        socket: socket.clone(),
        source,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else if let Some(reply) = &response.result {
        print!("{}", render(reply));
    }
    match response {
        Response { ok: true, .. } => Ok(()),
        Response { error, .. } => Err(CtlError::Refused(error.unwrap_or_else(|| "refused".into()))),
    }
}

/// The socket to talk to: `--socket`, else the one of `--config`, else the only socket in the
/// default directory.
fn socket_path(args: &CtlArgs) -> Result<PathBuf, CtlError> {
    if let Some(path) = &args.socket {
        return Ok(path.clone());
    }
    if let Some(config) = &args.config {
        let file = ConfigFile::load(config)?;
        return Ok(file.relay.control_socket_for(config));
    }
    let entries = match std::fs::read_dir(RUN_DIR) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(CtlError::NoSocket);
        }
        Err(error) => return Err(CtlError::RunDir(error)),
    };
    // An entry that cannot be read (removed while listing) is no relay to talk to.
    let sockets: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sock"))
        .collect();
    match sockets.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CtlError::NoSocket),
        _ => Err(CtlError::SeveralSockets(sockets)),
    }
}

/// The human form of a reply.
pub fn render(reply: &Reply) -> String {
    let mut out = String::new();
    crate::text::append(&mut out, |out| {
        match reply {
            Reply::Changed(report) => {
                writeln!(
                    out,
                    "generation {}: added {:?}, removed {:?}",
                    report.generation, report.added, report.removed
                )?;
                if !report.runtime_only.is_empty() {
                    writeln!(
                        out,
                        "removed because they existed only at run time (not in the configuration \
                     file): {:?}; `fanout-relay ctl save FILE` before a reload keeps such rules",
                        report.runtime_only
                    )?;
                }
                if !report.unconfirmed.is_empty() {
                    writeln!(
                        out,
                        "not yet confirmed by the workers on cpus {:?} (being resynced)",
                        report.unconfirmed
                    )?;
                }
                if !report.waiting.is_empty() && !report.added.is_empty() {
                    writeln!(
                        out,
                        "waiting for interfaces that do not exist yet: {:?} (`ctl list` names \
                         them; they relay once the interfaces appear)",
                        report.waiting
                    )?;
                }
            }
            Reply::Rules {
                generation,
                rules,
                waiting,
                interfaces,
            } => {
                writeln!(out, "generation {generation}, {} rule(s)", rules.len())?;
                out.push_str(&crate::ctl_tables::waiting(waiting));
                for interface in interfaces.iter().filter(|interface| !interface.up) {
                    let state = if interface.index.is_some() {
                        "down"
                    } else {
                        "absent"
                    };
                    writeln!(out, "interface {} is {state}", interface.name)?;
                }
                for rule in rules {
                    let input = &rule.input;
                    let source = input.source.map(|s| format!("@{s}")).unwrap_or_default();
                    let class = rule
                        .class
                        .as_ref()
                        .map(|class| format!(" class {class}"))
                        .unwrap_or_default();
                    let stream = crate::cli::StreamArgs::describe(rule);
                    writeln!(
                        out,
                        "{:<24} {}:{}:{}{source}{class}{stream}",
                        rule.name, input.interface, input.destination, input.port
                    )?;
                    for output in &rule.outputs {
                        writeln!(
                            out,
                            "{:<24}   -> {}:{}:{} ttl {}{}{}",
                            "",
                            output.interface,
                            output.destination,
                            output.port,
                            output.ttl,
                            output
                                .source
                                .map(|s| format!(" from {s}"))
                                .unwrap_or_default(),
                            output
                                .dscp
                                .map(|d| format!(" dscp {d}"))
                                .unwrap_or_default()
                        )?;
                    }
                }
            }
            Reply::Saved { path, rules } => {
                writeln!(out, "wrote {rules} rule(s) to {path}")?;
            }
            Reply::Stats(stats) => out.push_str(&crate::ctl_tables::stats(stats)),
            Reply::Workers {
                workers,
                waiting,
                consume,
            } => {
                out.push_str(&crate::ctl_tables::workers(workers));
                out.push_str(&crate::ctl_tables::waiting(waiting));
                out.push_str(&crate::ctl_tables::consume_filters(consume));
            }
        }
        Ok(())
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_that_removed_run_time_rules_says_so() {
        let report = crate::control::proto::ChangeReport {
            generation: 4,
            removed: vec!["extra".into(), "old".into()],
            runtime_only: vec!["extra".into()],
            ..Default::default()
        };
        let text = render(&Reply::Changed(report));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "generation 4: added [], removed [\"extra\", \"old\"]"
        );
        assert!(
            lines[1].starts_with("removed because they existed only at run time")
                && lines[1].contains(": [\"extra\"];")
                && lines[1].contains("ctl save FILE"),
            "{text}"
        );
        let plain = render(&Reply::Changed(
            crate::control::proto::ChangeReport::default(),
        ));
        assert_eq!(plain.lines().count(), 1, "{plain}");
    }
}
