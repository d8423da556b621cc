//! From a `ctl` command line to the request sent to the relay: rules written compactly as
//! arguments (`IFACE:ADDRESS:PORT...`) or as a TOML file, and paths made absolute.

use super::{ArgError, RequestError};
use crate::cli::{CtlCommand, WorkersAction};
use crate::config::ConfigFile;
use crate::control::proto::{Command, KeyEntry};
use relay_rules::{Input, Output, Rule};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The request `command` makes.
pub(super) fn command(command: &CtlCommand) -> Result<Command, RequestError> {
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
            stream,
            toml,
        } => {
            let (rule, interfaces) = match (toml, name, input) {
                (Some(path), None, None) if outputs.is_empty() => rule_from_toml(path)?,
                (None, Some(name), Some(input)) if !outputs.is_empty() => {
                    let mut input = parse_input(input)?;
                    let interfaces = listed_interfaces(&mut input);
                    let mut rule = Rule {
                        name: name.clone(),
                        input,
                        outputs: outputs
                            .iter()
                            .map(|o| parse_output(o))
                            .collect::<Result<_, _>>()?,
                        class: class.clone(),
                        inspect: None,
                        rtp_clock_hz: None,
                        max_pps: None,
                        max_bps: None,
                    };
                    stream.apply(&mut rule);
                    (rule, interfaces)
                }
                _ => return Err(RequestError::AddForm),
            };
            Command::Add { rule, interfaces }
        }
    })
}

/// The interfaces of a compact input on several, `eth0+eth1:...`, taken out of `input` (whose
/// interface is then empty, as the request wants it); none for an input on one interface.
fn listed_interfaces(input: &mut Input) -> Vec<String> {
    if !input.interface.contains('+') {
        return Vec::new();
    }
    std::mem::take(&mut input.interface)
        .split('+')
        .map(str::to_owned)
        .collect()
}

/// `path` resolved against the working directory: the relay writes it, from its own.
fn absolute(path: &Path) -> Result<PathBuf, RequestError> {
    std::path::absolute(path).map_err(|source| RequestError::Absolute {
        path: path.to_owned(),
        source,
    })
}

/// Reads one `[[rule]]` from a TOML file (`-`: standard input), with the interfaces of its
/// input when it lists several in place or names a group the file has.
fn rule_from_toml(path: &Path) -> Result<(Rule, Vec<String>), RequestError> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|source| RequestError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file = ConfigFile::parse(&text).map_err(|source| RequestError::Parse {
        path: path.to_owned(),
        source,
    })?;
    match <[Rule; 1]>::try_from(file.rules) {
        Ok([mut rule]) => {
            let group = file
                .interface_groups
                .into_iter()
                .find(|group| group.name == rule.input.interface);
            let interfaces = match group {
                Some(group) => {
                    rule.input.interface.clear();
                    group.interfaces
                }
                None => Vec::new(),
            };
            Ok((rule, interfaces))
        }
        Err(rules) => Err(RequestError::RuleCount {
            path: path.to_owned(),
            found: rules.len(),
        }),
    }
}

/// `IFACE:DESTINATION:PORT[@SOURCE][,vlan=N]`.
pub fn parse_input(text: &str) -> Result<Input, ArgError> {
    let mut parts = text.split(',');
    let key = parts.next().unwrap_or_default();
    let (main, source) = match key.split_once('@') {
        Some((main, source)) => (main, Some(parse_addr(source, "source")?)),
        None => (key, None),
    };
    let (interface, destination, port) = parse_endpoint(main)?;
    let mut vlan = None;
    for option in parts {
        match option.split_once('=') {
            Some(("vlan", value)) => {
                vlan = Some(value.parse().map_err(|_| ArgError::OutOfRange {
                    option: option.to_owned(),
                    key: "vlan",
                    min: 1,
                    max: 4094,
                })?);
            }
            Some(_) => {
                return Err(ArgError::UnknownOption {
                    option: option.to_owned(),
                });
            }
            None => {
                return Err(ArgError::NotKeyValue {
                    option: option.to_owned(),
                });
            }
        }
    }
    Ok(Input {
        interface,
        destination,
        port,
        source,
        vlan,
    })
}

/// `IFACE:DESTINATION:PORT[,ttl=N][,source=A][,dscp=N][,vlan=N]`.
pub fn parse_output(text: &str) -> Result<Output, ArgError> {
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
            .ok_or_else(|| ArgError::NotKeyValue {
                option: option.to_owned(),
            })?;
        let out_of_range = |key, min, max| ArgError::OutOfRange {
            option: option.to_owned(),
            key,
            min,
            max,
        };
        match key {
            // A number, or `decrement` (the incoming TTL less one).
            "ttl" => output.ttl = value.parse().map_err(|_| out_of_range("ttl", 1, 255))?,
            "dscp" => output.dscp = Some(value.parse().map_err(|_| out_of_range("dscp", 0, 63))?),
            "vlan" => {
                output.vlan = Some(value.parse().map_err(|_| out_of_range("vlan", 1, 4094))?);
            }
            "source" => output.source = Some(parse_addr(value, "source")?),
            _ => {
                return Err(ArgError::UnknownOption {
                    option: option.to_owned(),
                });
            }
        }
    }
    Ok(output)
}

/// `IFACE:DESTINATION:PORT[@SOURCE][,vlan=N]`, as a rule's match key.
fn parse_key(text: &str) -> Result<KeyEntry, ArgError> {
    let input = parse_input(text)?;
    Ok(KeyEntry {
        interface: input.interface,
        destination: input.destination,
        port: input.port,
        source: input.source,
        vlan: input.vlan,
    })
}

fn parse_endpoint(text: &str) -> Result<(String, IpAddr, u16), ArgError> {
    let Some((interface, address, port)) = split_endpoint(text) else {
        return Err(ArgError::Endpoint {
            text: text.to_owned(),
        });
    };
    Ok((
        interface.to_owned(),
        parse_addr(address, "address")?,
        port.parse().map_err(|_| ArgError::Port {
            text: text.to_owned(),
            port: port.to_owned(),
        })?,
    ))
}

/// `IFACE:ADDRESS:PORT` in its three parts; an IPv6 address is written in brackets
/// (`eth0:[ff3e::8000:1]:5000`), as in a URL, since its own colons would make it ambiguous.
fn split_endpoint(text: &str) -> Option<(&str, &str, &str)> {
    let (interface, rest) = text.split_once(':')?;
    let (address, port) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed.split_once(']')?;
            (address, after.strip_prefix(':')?)
        }
        None => rest.split_once(':')?,
    };
    (!interface.is_empty()).then_some((interface, address, port))
}

/// An address, IPv6 in brackets or not (`@[2001:db8::10]` or `source=2001:db8::10`).
fn parse_addr(text: &str, what: &'static str) -> Result<IpAddr, ArgError> {
    let bare = text
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse().map_err(|_| ArgError::Address {
        text: text.to_owned(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn compact_add_takes_the_stream_options() {
        use clap::Parser as _;
        let args = [
            "fanout-relay",
            "ctl",
            "add",
            "cam",
            "eth0:239.1.1.1:5000",
            "eth1:239.2.2.2:6000,ttl=decrement",
            "--inspect",
            "rtp+mpegts",
            "--rtp-clock-hz",
            "27000000",
            "--max-pps",
            "5000",
            "--max-bps",
            "8000000",
        ];
        let cli = crate::cli::Cli::try_parse_from(args).expect("valid arguments");
        let crate::cli::Command::Ctl(ctl) = cli.command else {
            panic!("not ctl: {cli:?}");
        };
        let Ok(Command::Add { rule, .. }) = command(&ctl.command) else {
            panic!("not an add");
        };
        assert_eq!(rule.inspect, Some(relay_rules::inspect::Inspect::RtpMpegTs));
        assert_eq!(
            (rule.rtp_clock_hz, rule.max_pps, rule.max_bps),
            (Some(27_000_000), Some(5000), Some(8_000_000))
        );
        assert_eq!(rule.outputs[0].ttl, relay_rules::Ttl::Decrement);
        assert_eq!(
            crate::cli::StreamArgs::describe(&rule),
            " inspect rtp+mpegts rtp_clock_hz 27000000 max_pps 5000 max_bps 8000000"
        );
        let mut wrong = args.to_vec();
        wrong[7] = "h264";
        assert!(
            crate::cli::Cli::try_parse_from(wrong).is_err(),
            "an unknown inspection"
        );
    }

    #[test]
    fn a_compact_input_on_several_interfaces_lists_them_apart() {
        let mut input = parse_input("eth0+eth1:239.1.1.1:5000,vlan=7").expect("valid");
        assert_eq!(listed_interfaces(&mut input), ["eth0", "eth1"]);
        assert_eq!((input.interface.as_str(), input.vlan), ("", Some(7)));
        let mut input = parse_input("eth0:239.1.1.1:5000").expect("valid");
        assert!(listed_interfaces(&mut input).is_empty());
        assert_eq!(input.interface, "eth0");
    }

    #[test]
    fn compact_ipv6_rules_parse() {
        let input = parse_input("eth0:[ff3e::8000:1]:5000@[2001:db8::10]").expect("valid");
        assert_eq!(
            input.destination,
            "ff3e::8000:1".parse::<IpAddr>().expect("literal")
        );
        assert_eq!(input.source, Some("2001:db8::10".parse().expect("literal")));
        let output =
            parse_output("eth1:[ff3e::8000:2]:6000,source=2001:db8::1,ttl=3").expect("valid");
        assert_eq!(
            output.destination,
            "ff3e::8000:2".parse::<IpAddr>().expect("literal")
        );
        assert_eq!(output.source, Some("2001:db8::1".parse().expect("literal")));
        assert!(
            parse_input("eth0:ff3e::8000:1:5000").is_err(),
            "unbracketed"
        );
    }

    #[test]
    fn endpoints_split_with_bracketed_ipv6_addresses() {
        assert_eq!(
            split_endpoint("eth0:239.1.1.1:5000"),
            Some(("eth0", "239.1.1.1", "5000"))
        );
        assert_eq!(
            split_endpoint("eth0:[ff3e::8000:1]:5000"),
            Some(("eth0", "ff3e::8000:1", "5000"))
        );
        for wrong in [
            "eth0:[ff3e::1]5000",
            "eth0:[ff3e::1:5000",
            ":1.2.3.4:5",
            "eth0:5000",
        ] {
            assert_eq!(split_endpoint(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn compact_rules_parse() {
        let input = parse_input("eth0:239.1.1.1:5000@192.0.2.10").expect("valid input");
        assert_eq!(input.interface, "eth0");
        assert_eq!(input.port, 5000);
        assert_eq!(input.source, Some(Ipv4Addr::new(192, 0, 2, 10).into()));
        assert_eq!(input.vlan, None);
        let tagged = parse_input("eth0:239.1.1.1:5000@192.0.2.10,vlan=100").expect("valid");
        assert_eq!(
            (tagged.source, tagged.vlan),
            (Some(Ipv4Addr::new(192, 0, 2, 10).into()), Some(100))
        );
        assert_eq!(
            parse_input("eth0:239.1.1.1:5000,vlan=4096").map(|input| input.vlan),
            Ok(Some(4096)),
            "the range is validation's to refuse, naming the field"
        );
        assert!(matches!(
            parse_input("eth0:239.1.1.1:5000,vlan=x"),
            Err(ArgError::OutOfRange { key: "vlan", .. })
        ));
        assert_eq!(
            parse_input("eth0:239.1.1.1:5000,ttl=3"),
            Err(ArgError::UnknownOption {
                option: "ttl=3".into()
            })
        );
        let output = parse_output("eth1:239.2.2.2:6000,ttl=4,dscp=46,source=10.0.0.1")
            .expect("valid output");
        assert_eq!(output.ttl, relay_rules::Ttl::Fixed(4));
        let decrement = parse_output("eth1:239.2.2.2:6000,ttl=decrement").expect("valid");
        assert_eq!(decrement.ttl, relay_rules::Ttl::Decrement);
        assert_eq!(output.dscp, Some(46));
        assert_eq!(output.source, Some(Ipv4Addr::new(10, 0, 0, 1).into()));
        assert_eq!(
            parse_output("eth1:239.2.2.2:6000,color=red"),
            Err(ArgError::UnknownOption {
                option: "color=red".into()
            })
        );
        assert_eq!(
            parse_input("eth0:239.1.1:5000"),
            Err(ArgError::Address {
                text: "239.1.1".into(),
                what: "address"
            })
        );
        assert_eq!(
            parse_input("eth0:239.1.1.1:99999")
                .expect_err("not a port")
                .to_string(),
            "`eth0:239.1.1.1:99999`: `99999` is not a UDP port"
        );
        assert_eq!(
            parse_input(":239.1.1.1:1"),
            Err(ArgError::Endpoint {
                text: ":239.1.1.1:1".into()
            })
        );
        assert_eq!(
            parse_output("eth1:239.2.2.2:6000,ttl=300")
                .expect_err("past 255")
                .to_string(),
            "`ttl=300`: ttl must be a number from 1 to 255"
        );
        assert!(matches!(
            parse_output("eth1:239.2.2.2:6000,ttl"),
            Err(ArgError::NotKeyValue { .. })
        ));
    }

    #[test]
    fn a_toml_rule_file_is_named_in_its_errors() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("rule.toml");
        let error = rule_from_toml(&path).expect_err("no such file");
        assert!(
            matches!(&error, RequestError::Read { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound),
            "{error:?}"
        );
        std::fs::write(&path, "[relay]\nworkers = 1\n").expect("write");
        let error = rule_from_toml(&path).expect_err("no rule");
        assert_eq!(
            error.to_string(),
            format!("{}: expected exactly one [[rule]], found 0", path.display())
        );
        std::fs::write(&path, "[[rule]]\nname = 1\n").expect("write");
        let error = rule_from_toml(&path).expect_err("not a rule");
        assert!(
            matches!(&error, RequestError::Parse { source, .. } if source.line() == Some(2)),
            "{error:?}"
        );
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
}
