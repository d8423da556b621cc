//! `fanout-relay ctl`: the control socket's client, with human tables or JSON.

use crate::cli::{CtlArgs, CtlCommand, WorkersAction};
use crate::config::{ConfigError, ConfigFile, RUN_DIR};
use crate::control::proto::{Command, KeyEntry, Reply, Request, Response, VERSION};
use relay_rules::{Input, Output, Rule};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Why a `ctl` command failed; its text is what `ctl` prints before exiting with status 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The `--config` file, which names the socket, could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No socket given and none in the default directory.
    #[error(
        "no relay control socket in {RUN_DIR}: is the relay running? (or give --socket / --config)"
    )]
    NoSocket,
    /// No socket given and several in the default directory.
    #[error("several relays run here ({}): say which with --socket or --config", list(.0))]
    SeveralSockets(Vec<PathBuf>),
    /// The relay could not be reached, or its answer not read.
    #[error("{socket}: {source}")]
    Call {
        /// The control socket.
        socket: PathBuf,
        /// The connect, write or read error.
        source: std::io::Error,
    },
    /// The command line could not be made into a request (the text says which argument and
    /// why), or `top` failed.
    #[error("{0}")]
    Command(String),
    /// The answer could not be printed as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The relay refused the request; its reason.
    #[error("{0}")]
    Refused(String),
}

/// The paths, comma separated.
fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one `ctl` command; `Err` says why, and means exit status 1.
pub fn run(args: &CtlArgs) -> Result<(), CtlError> {
    let socket = socket_path(args)?;
    if let CtlCommand::Top { count } = args.command {
        return crate::top::run(&socket, args.json, count).map_err(CtlError::Command);
    }
    let command = command(&args.command).map_err(CtlError::Command)?;
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
    let sockets: Vec<PathBuf> = std::fs::read_dir(RUN_DIR)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "sock"))
                .collect()
        })
        .unwrap_or_default();
    match sockets.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CtlError::NoSocket),
        _ => Err(CtlError::SeveralSockets(sockets)),
    }
}

fn command(command: &CtlCommand) -> Result<Command, String> {
    Ok(match command {
        CtlCommand::List => Command::List,
        CtlCommand::Stats | CtlCommand::Top { .. } => Command::Stats,
        CtlCommand::Workers { action: None } => Command::Workers,
        CtlCommand::Workers {
            action: Some(WorkersAction::Set { workers, class }),
        } => Command::SetWorkers {
            workers: workers.clone(),
            class: class.clone(),
        },
        CtlCommand::Reload => Command::Reload,
        CtlCommand::Save { file } => Command::Save {
            path: absolute(file)?.display().to_string(),
        },
        CtlCommand::Remove { name, key } => Command::Remove {
            name: name.clone(),
            key: key.as_deref().map(parse_key).transpose()?,
        },
        CtlCommand::Add {
            name,
            input,
            outputs,
            class,
            toml,
        } => Command::Add {
            rule: match (toml, name, input) {
                (Some(path), None, None) if outputs.is_empty() => rule_from_toml(path)?,
                (None, Some(name), Some(input)) if !outputs.is_empty() => Rule {
                    name: name.clone(),
                    input: parse_input(input)?,
                    outputs: outputs
                        .iter()
                        .map(|o| parse_output(o))
                        .collect::<Result<_, _>>()?,
                    class: class.clone(),
                },
                _ => {
                    return Err(
                        "add takes NAME INPUT OUTPUT... or --toml FILE (see `ctl add --help`)"
                            .into(),
                    );
                }
            },
        },
    })
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|error| format!("{}: {error}", path.display()))
}

/// Reads one `[[rule]]` from a TOML file (`-`: standard input).
fn rule_from_toml(path: &Path) -> Result<Rule, String> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|error| format!("stdin: {error}"))?
    } else {
        std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?
    };
    let file = ConfigFile::parse(&text).map_err(|error| format!("{}: {error}", path.display()))?;
    match <[Rule; 1]>::try_from(file.rules) {
        Ok([rule]) => Ok(rule),
        Err(rules) => Err(format!(
            "{}: expected exactly one [[rule]], found {}",
            path.display(),
            rules.len()
        )),
    }
}

/// `IFACE:DESTINATION:PORT[@SOURCE]`.
pub fn parse_input(text: &str) -> Result<Input, String> {
    let (main, source) = match text.split_once('@') {
        Some((main, source)) => (main, Some(parse_addr(source, "source")?)),
        None => (text, None),
    };
    let (interface, destination, port) = parse_endpoint(main)?;
    Ok(Input {
        interface,
        destination,
        port,
        source,
    })
}

/// `IFACE:DESTINATION:PORT[,ttl=N][,source=A][,dscp=N][,vlan=N]`.
pub fn parse_output(text: &str) -> Result<Output, String> {
    let mut parts = text.split(',');
    let (interface, destination, port) = parse_endpoint(parts.next().unwrap_or_default())?;
    let mut output = Output {
        interface,
        destination,
        port,
        ttl: Output::DEFAULT_TTL,
        source: None,
        dscp: None,
        vlan: None,
    };
    for option in parts {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| format!("`{option}`: expected key=value (ttl, source, dscp, vlan)"))?;
        let bad = |what: &str| format!("`{option}`: {what} must be a number in range");
        match key {
            "ttl" => output.ttl = value.parse().map_err(|_| bad("ttl"))?,
            "dscp" => output.dscp = Some(value.parse().map_err(|_| bad("dscp"))?),
            "vlan" => output.vlan = Some(value.parse().map_err(|_| bad("vlan"))?),
            "source" => output.source = Some(parse_addr(value, "source")?),
            _ => {
                return Err(format!(
                    "`{option}`: unknown output option (ttl, source, dscp, vlan)"
                ));
            }
        }
    }
    Ok(output)
}

fn parse_key(text: &str) -> Result<KeyEntry, String> {
    let input = parse_input(text)?;
    Ok(KeyEntry {
        interface: input.interface,
        destination: input.destination,
        port: input.port,
        source: input.source,
    })
}

fn parse_endpoint(text: &str) -> Result<(String, Ipv4Addr, u16), String> {
    let mut parts = text.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(interface), Some(address), Some(port)) if !interface.is_empty() => Ok((
            interface.to_owned(),
            parse_addr(address, "address")?,
            port.parse()
                .map_err(|_| format!("`{text}`: `{port}` is not a UDP port"))?,
        )),
        _ => Err(format!("`{text}`: expected INTERFACE:ADDRESS:PORT")),
    }
}

fn parse_addr(text: &str, what: &str) -> Result<Ipv4Addr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an IPv4 {what}"))
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
                for waiting in waiting {
                    let input = &waiting.rule.input;
                    writeln!(
                        out,
                        "{:<24} {}:{}:{} waiting for interface(s) {}",
                        waiting.rule.name,
                        input.interface,
                        input.destination,
                        input.port,
                        waiting.missing.join(", ")
                    )?;
                }
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
                    writeln!(
                        out,
                        "{:<24} {}:{}:{}{source}{class}",
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
            Reply::Workers { workers } => out.push_str(&crate::ctl_tables::workers(workers)),
        }
        Ok(())
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_rules_parse() {
        let input = parse_input("eth0:239.1.1.1:5000@192.0.2.10").expect("valid input");
        assert_eq!(input.interface, "eth0");
        assert_eq!(input.port, 5000);
        assert_eq!(input.source, Some(Ipv4Addr::new(192, 0, 2, 10)));
        let output = parse_output("eth1:239.2.2.2:6000,ttl=4,dscp=46,source=10.0.0.1")
            .expect("valid output");
        assert_eq!(output.ttl, 4);
        assert_eq!(output.dscp, Some(46));
        assert_eq!(output.source, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(parse_output("eth1:239.2.2.2:6000,color=red").is_err());
        assert!(parse_input("eth0:239.1.1:5000").is_err());
        assert!(parse_input("eth0:239.1.1.1:99999").is_err());
        assert!(parse_input(":239.1.1.1:1").is_err());
    }

    #[test]
    fn save_sends_the_path_resolved_against_the_working_directory() {
        let Ok(Command::Save { path }) = command(&CtlCommand::Save {
            file: PathBuf::from("saved.toml"),
        }) else {
            panic!("save is a save request");
        };
        let cwd = std::env::current_dir().expect("a working directory");
        assert_eq!(PathBuf::from(&path), cwd.join("saved.toml"));
        let request = format!(r#"{{"version":1,"command":"save","path":{path:?}}}"#);
        assert!(
            crate::control::proto::parse_request(request.as_bytes()).is_ok(),
            "the relay takes what the client sends: {request}"
        );
    }

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
