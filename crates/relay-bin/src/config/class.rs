//! `[[class]]`: named sets of CPUs with workers of their own.
//!
//! A rule that names a class is served only by that class's workers: its input goes to the
//! class's own fanout group on the input interface, whose socket filter keeps only the (group,
//! port) keys of the class's rules, and every other group on that interface drops them. So
//! `video` traffic on CPUs 0–1 never waits behind `bulk` traffic on the others, and a burst in
//! one class fills only that class's rings. Rules that name no class are served by the workers of
//! `relay.workers` that no class takes.

use super::CpuListError;
use relay_rules::Rule;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One `[[class]]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassEntry {
    /// The name rules give in their `class` field.
    pub name: String,
    /// The CPUs that get one of the class's workers, in the kernel's list syntax (`"0-1,4"`,
    /// or a single CPU such as `3`). No two classes share a CPU.
    pub cpus: CpuList,
}

/// A list of CPUs, written as the kernel writes CPU lists (`"0-3,6"`) or as one CPU number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<u32>);

impl CpuList {
    /// Parses `0-3,6`: ranges and single CPUs, separated by commas; sorted, without repeats.
    pub fn parse(text: &str) -> Result<Self, CpuListError> {
        let mut cpus = Vec::new();
        for part in text.trim().split(',') {
            let not_cpus = || CpuListError::NotCpus {
                part: part.to_owned(),
            };
            match part.split_once('-') {
                Some((low, high)) => {
                    let low: u32 = low.trim().parse().map_err(|_| not_cpus())?;
                    let high: u32 = high.trim().parse().map_err(|_| not_cpus())?;
                    if low > high {
                        return Err(CpuListError::Backwards {
                            part: part.to_owned(),
                        });
                    }
                    if high - low >= CpuListError::MAX_RANGE {
                        return Err(CpuListError::TooWide {
                            part: part.to_owned(),
                        });
                    }
                    cpus.extend(low..=high);
                }
                None => cpus.push(part.trim().parse().map_err(|_| not_cpus())?),
            }
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList(cpus))
    }
}

impl std::fmt::Display for CpuList {
    /// As a comma-separated list (`0,1,4`), which [`CpuList::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

impl Serialize for CpuList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(u32),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::One(cpu) => Ok(CpuList(vec![cpu])),
            Raw::Text(text) => CpuList::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// Longest class name: it appears in logs, `ctl workers` and metric labels.
const MAX_NAME_LEN: usize = 32;

/// What is wrong with the `[[class]]` tables on their own, one line per problem: names must be
/// short words and unique, every class needs a CPU, and no CPU is in two classes.
pub fn check_classes(classes: &[ClassEntry]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
    for (index, class) in classes.iter().enumerate() {
        let name = &class.name;
        let word = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !word {
            problems.push(format!(
                "class[{index}].name: {name:?} is not a name of 1 to {MAX_NAME_LEN} letters, \
                 digits, '-' or '_'"
            ));
        }
        if !names.insert(name.as_str()) {
            problems.push(format!("class[{index}].name: {name:?} is defined twice"));
        }
        if class.cpus.0.is_empty() {
            problems.push(format!("class {name:?}: cpus lists no CPU"));
        }
        for &cpu in &class.cpus.0 {
            if let Some(other) = owner.insert(cpu, name) {
                problems.push(format!(
                    "class {name:?}: CPU {cpu} is already class {other:?}'s (a CPU runs the \
                     workers of one class)"
                ));
            }
        }
    }
    problems
}

/// What is wrong with the classes `rules` name, one line per rule: a class not among the
/// defined `classes`, or no class when no CPU is left for the default workers (`default_workers` false).
pub fn check_rule_classes<'a>(
    rules: impl IntoIterator<Item = &'a Rule>,
    classes: &[String],
    default_workers: bool,
) -> Vec<String> {
    rules
        .into_iter()
        .filter_map(|rule| match &rule.class {
            Some(class) if !classes.contains(class) => Some(format!(
                "rule {:?}: class: no class named {class:?} (defined: {classes:?})",
                rule.name
            )),
            None if !default_workers => Some(format!(
                "rule {:?}: names no class, and every CPU of relay.workers belongs to a class, \
                 so no worker would serve it: give it a class",
                rule.name
            )),
            _ => None,
        })
        .collect()
}

/// Rules of different classes on one (interface, group, port) key, one line per rule after the
/// first of its key. A key's frames go to one class's workers (the class filters work on the
/// key), and a source-specific rule takes precedence over an any-source rule of its key only
/// where both are in one table: so a key belongs to one class.
pub fn check_shared_keys<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> Vec<String> {
    type Key<'a> = (&'a str, std::net::IpAddr, u16, Option<u16>);
    let mut first: std::collections::HashMap<Key<'_>, &Rule> = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for rule in rules {
        let key = (
            rule.input.interface.as_str(),
            rule.input.destination,
            rule.input.port,
            rule.input.vlan,
        );
        match first.get(&key) {
            Some(other) if other.class != rule.class => {
                problems.push(shared_key_problem(rule, other));
            }
            Some(_) => {}
            None => {
                first.insert(key, rule);
            }
        }
    }
    problems
}

/// Why `rule` cannot join `other`'s key.
pub fn shared_key_problem(rule: &Rule, other: &Rule) -> String {
    let class = |rule: &Rule| rule.class.clone().unwrap_or_else(|| "default".into());
    format!(
        "rule {:?}: class {}: rule {:?} of class {} has its input {}; a key belongs to one \
         class (its frames reach one class's workers)",
        rule.name,
        class(rule),
        other.name,
        class(other),
        relay_rules::RuleKey {
            source: None,
            ..rule.input.key()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, cpus: &str) -> ClassEntry {
        ClassEntry {
            name: name.into(),
            cpus: CpuList::parse(cpus).expect("a CPU list"),
        }
    }

    #[test]
    fn a_key_belongs_to_one_class() {
        let rule = |name: &str, class: Option<&str>, source: Option<[u8; 4]>| Rule {
            name: name.into(),
            input: relay_rules::Input {
                interface: "in0".into(),
                destination: [239, 1, 1, 1].into(),
                port: 5000,
                source: source.map(Into::into),
                vlan: None,
            },
            outputs: Vec::new(),
            class: class.map(Into::into),
            inspect: None,
            rtp_clock_hz: None,
            max_pps: None,
            max_bps: None,
        };
        let same = [
            rule("a", Some("video"), None),
            rule("b", Some("video"), Some([192, 0, 2, 1])),
        ];
        assert!(check_shared_keys(&same).is_empty());
        let split = [
            rule("a", Some("video"), Some([192, 0, 2, 1])),
            rule("b", None, None),
            rule("c", Some("bulk"), Some([192, 0, 2, 2])),
        ];
        let problems = check_shared_keys(&split);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "rule \"b\": class default: rule \"a\" of class video has its input \
                 in0:239.1.1.1:5000"
            ),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("rule \"c\": class bulk"),
            "{problems:?}"
        );
    }

    #[test]
    fn cpu_lists_parse_like_the_kernels() {
        assert_eq!(CpuList::parse("0-2,6,1"), Ok(CpuList(vec![0, 1, 2, 6])));
        assert_eq!(CpuList::parse("3"), Ok(CpuList(vec![3])));
        assert_eq!(
            CpuList::parse("2-1"),
            Err(CpuListError::Backwards { part: "2-1".into() })
        );
        assert_eq!(
            CpuList::parse("0,x"),
            Err(CpuListError::NotCpus { part: "x".into() })
        );
        assert!(matches!(
            CpuList::parse("0-4096"),
            Err(CpuListError::TooWide { .. })
        ));
        assert_eq!(CpuList::parse("0-4095").map(|list| list.0.len()), Ok(4096));
    }

    #[test]
    fn classes_must_be_named_once_and_not_share_cpus() {
        assert!(check_classes(&[class("video", "0"), class("bulk", "1-3")]).is_empty());
        let problems = check_classes(&[
            class("video", "0-1"),
            class("video", "2"),
            class("bulk", "1"),
            class("no spaces", "3"),
        ]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("defined twice"), "{problems:?}");
        assert!(
            problems[1].contains("CPU 1 is already class \"video\"'s"),
            "{problems:?}"
        );
        assert!(problems[2].contains("\"no spaces\""), "{problems:?}");
        let empty = ClassEntry {
            name: "none".into(),
            cpus: CpuList(Vec::new()),
        };
        assert_eq!(check_classes(&[empty]).len(), 1);
    }

    #[test]
    fn rules_must_name_a_defined_class_or_have_default_workers() {
        let classes = ["video".to_owned()];
        let rule = |name: &str, class: Option<&str>| Rule {
            name: name.into(),
            input: relay_rules::Input {
                interface: "in0".into(),
                destination: [239, 1, 1, 1].into(),
                port: 5000,
                source: None,
                vlan: None,
            },
            outputs: Vec::new(),
            class: class.map(Into::into),
            inspect: None,
            rtp_clock_hz: None,
            max_pps: None,
            max_bps: None,
        };
        let rules = [
            rule("a", Some("video")),
            rule("b", Some("audio")),
            rule("c", None),
        ];
        let with_default = check_rule_classes(&rules, &classes, true);
        assert_eq!(with_default.len(), 1, "{with_default:?}");
        assert!(with_default[0].contains("rule \"b\": class: no class named \"audio\""));
        let without = check_rule_classes(&rules, &classes, false);
        assert_eq!(without.len(), 2, "{without:?}");
        assert!(without[1].contains("rule \"c\": names no class"));
    }
}
