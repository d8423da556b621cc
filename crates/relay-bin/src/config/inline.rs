//! `input.interface = ["eth0", "eth1"]`: a rule that lists its input interfaces in place, as an
//! `[[interface_group]]` of its own.
//!
//! The rule model names one interface per input, and a TOML parser reports a mistake at its line
//! only while it deserializes the text itself. So a list is lifted out of the text before the
//! real parse: [`lift`] finds each rule whose `input.interface` is a list of names, writes the
//! name of a group made for that rule in the list's place, and returns the groups, which then
//! expand like named ones (one rule per member, `RULE.MEMBER`). The made name starts with `:`,
//! which no interface name can contain, so it never meets an interface.

use super::groups::{InterfaceGroup, inline_group_name};
use serde::Deserialize;
use std::borrow::Cow;
use std::ops::Range;

/// The rules of a file, as far as inline lists are concerned: every other key is ignored.
#[derive(Deserialize)]
struct Outline {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleOutline>,
}

#[derive(Deserialize)]
struct RuleOutline {
    name: Option<String>,
    input: Option<InputOutline>,
}

#[derive(Deserialize)]
struct InputOutline {
    interface: Option<toml::Spanned<toml::Value>>,
}

/// `text` with every rule's inline list of interfaces replaced by the name of a group made for
/// it, and those groups. A text without lists, or that does not parse, comes back unchanged
/// (the real parse then says what is wrong, where).
pub(super) fn lift(text: &str) -> (Cow<'_, str>, Vec<InterfaceGroup>) {
    if !may_list(text) {
        return (Cow::Borrowed(text), Vec::new());
    }
    let Ok(outline) = toml::from_str::<Outline>(text) else {
        return (Cow::Borrowed(text), Vec::new());
    };
    let mut lifted: Vec<(Range<usize>, InterfaceGroup)> = outline
        .rules
        .into_iter()
        .filter_map(|rule| {
            let name = rule.name?;
            let interface = rule.input?.interface?;
            let span = interface.span();
            let toml::Value::Array(items) = interface.into_inner() else {
                return None;
            };
            let interfaces = items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(name) => Some(name),
                    _ => None,
                })
                .collect::<Option<Vec<String>>>()?;
            Some((
                span,
                InterfaceGroup {
                    name: inline_group_name(&name),
                    interfaces,
                },
            ))
        })
        .collect();
    if lifted.is_empty() {
        return (Cow::Borrowed(text), Vec::new());
    }
    lifted.sort_by_key(|(span, _)| span.start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (span, group) in &lifted {
        out.push_str(&text[at..span.start]);
        out.push_str(&toml::Value::String(group.name.clone()).to_string());
        // Keep the lines where they were, so that a later error names the line as written.
        out.extend(text[span.clone()].chars().filter(|&c| c == '\n'));
        at = span.end;
    }
    out.push_str(&text[at..]);
    (
        Cow::Owned(out),
        lifted.into_iter().map(|(_, group)| group).collect(),
    )
}

/// Whether `text` may hold an inline list: `interface`, then `=` and `[` with only blanks
/// between. Cheap, so that files without lists (most, and every large one) are parsed once.
fn may_list(text: &str) -> bool {
    text.match_indices("interface").any(|(at, key)| {
        let mut rest = text[at + key.len()..].trim_start_matches([' ', '\t', '"', '\'']);
        let Some(after) = rest.strip_prefix('=') else {
            return false;
        };
        rest = after.trim_start_matches([' ', '\t']);
        rest.starts_with('[')
    })
}

#[cfg(test)]
mod tests {
    use super::super::groups::inline_rule_of;
    use super::*;

    #[test]
    fn a_list_becomes_a_group_of_the_rule() {
        let text = r#"
[[rule]]
name = "cam"
input = { interface = ["eth0", "eth1"], destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "eth2", destination = "239.2.2.2", port = 6000 } ]

[[rule]]
name = "plain"
input = { interface = "eth3", destination = "239.1.1.2", port = 5000 }
outputs = [ { interface = "eth2", destination = "239.2.2.3", port = 6000 } ]
"#;
        let (lifted, groups) = lift(text);
        assert_eq!(
            groups,
            [InterfaceGroup {
                name: ":cam".into(),
                interfaces: vec!["eth0".into(), "eth1".into()],
            }]
        );
        assert!(lifted.contains(r#"input = { interface = ":cam", destination"#));
        assert!(lifted.contains(r#"interface = "eth3""#));
        assert_eq!(lifted.lines().count(), text.lines().count());
        assert_eq!(inline_rule_of(&groups[0].name), Some("cam"));
    }

    #[test]
    fn a_list_over_lines_keeps_the_lines_after_it() {
        let text = "[[rule]]\nname = \"cam\"\noutputs = []\n[rule.input]\ninterface = [\n  \"eth0\",\n  \"eth1\",\n]\nport = 5000\n";
        let (lifted, groups) = lift(text);
        assert_eq!(groups.len(), 1);
        assert_eq!(lifted.lines().count(), text.lines().count());
        let port_line = |t: &str| t.lines().position(|l| l.starts_with("port"));
        assert_eq!(port_line(&lifted), port_line(text));
    }

    #[test]
    fn texts_without_lists_are_not_copied() {
        for text in [
            "[[rule]]\nname = \"a\"\ninput = { interface = \"eth0\" }\n",
            "[[rule]]\nname = \"a\"\ninput = { interface = [\"eth0\" }\n",
            "[[rule]]\nname = \"a\"\ninput = { interface = [1, 2] }\n",
            "[[interface_group]]\nname = \"up\"\ninterfaces = [\"eth0\"]\n",
        ] {
            let (lifted, groups) = lift(text);
            assert!(matches!(lifted, Cow::Borrowed(_)), "{text}");
            assert!(groups.is_empty(), "{text}");
        }
    }
}
