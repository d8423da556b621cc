//! Reading a large configuration one `[[rule]]` table at a time.
//!
//! A TOML parser builds the whole document (every key, value, table and span) before any of it
//! is deserialized: for a file of 100,000 rules (17 MB) that is about 700 MB for a moment. Here
//! the text is cut at the `[[rule]]` headers instead: the other tables (`[relay]`, `[ring]`,
//! `[[class]]`, ...) are parsed together as one document, each rule's piece on its own, so the
//! peak is one rule's document plus the result.
//!
//! The cut is a line scan, which only a whole parse can be sure of; so anything unusual (a
//! multi-line string, rules anywhere but in `[[rule]]` tables, a piece that does not parse)
//! makes [`parse`] give up, and the caller parses the whole text, which also gives the exact
//! error message and location.

use super::ConfigFile;
use relay_rules::Rule;
use serde::Deserialize;

/// The rules of one piece: a `[[rule]]` header and what follows it up to the next header of
/// another table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulePiece {
    rule: Vec<Rule>,
}

/// What a table header line opens.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    /// `[[rule]]`: the next rule.
    Rule,
    /// `[rule.x]` or `[[rule.x]]`: a part of the current rule.
    RulePart,
    /// Any other table.
    Other,
}

/// The header on `line`, if the line is one.
fn header(line: &str) -> Option<Header> {
    let line = line.trim_start();
    let (inner, array) = if let Some(rest) = line.strip_prefix("[[") {
        (rest.split_once("]]")?.0, true)
    } else {
        (line.strip_prefix('[')?.split_once(']')?.0, false)
    };
    let name = inner.trim();
    Some(match name {
        "rule" if array => Header::Rule,
        _ if name.starts_with("rule.") || name == "rule" => Header::RulePart,
        _ => Header::Other,
    })
}

/// The configuration in `text`, read piece by piece; `None` when the text is not one this cut
/// is sure of, or does not parse (the caller then parses it whole).
pub(super) fn parse(text: &str) -> Option<ConfigFile> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    let mut head = String::new();
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut in_rule = false;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let start = at;
        at += line.len();
        match header(line) {
            Some(Header::Rule) => {
                pieces.push((start, at));
                in_rule = true;
                continue;
            }
            Some(Header::Other) => in_rule = false,
            Some(Header::RulePart) | None => {}
        }
        if in_rule {
            if let Some(piece) = pieces.last_mut() {
                piece.1 = at;
            }
        } else {
            head.push_str(line);
        }
    }
    let head: toml::Table = toml::from_str(&head).ok()?;
    // A `rule` key outside the [[rule]] tables (`rule = [...]`, `rule.x = ...`) would combine
    // with them in ways only the whole document shows.
    if head.contains_key("rule") && !pieces.is_empty() {
        return None;
    }
    let mut config: ConfigFile = head.try_into().ok()?;
    for (start, end) in pieces {
        let piece: RulePiece = toml::from_str(&text[start..end]).ok()?;
        config.rules.extend(piece.rule);
    }
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> (Option<ConfigFile>, Result<ConfigFile, toml::de::Error>) {
        (parse(text), toml::from_str(text))
    }

    /// `parse` agrees with a whole parse whenever it answers.
    fn agrees(text: &str) -> ConfigFile {
        let (pieces, whole) = both(text);
        let whole = whole.expect("the text is valid");
        assert_eq!(pieces.as_ref(), Some(&whole), "{text}");
        whole
    }

    const RULE: &str = "[[rule]]\nname = \"NAME\"\n\
        input = { interface = \"in0\", destination = \"239.1.1.1\", port = PORT }\n\
        outputs = [\n  { interface = \"out0\", destination = \"239.2.2.2\", port = 6000 },\n]\n";

    fn rule(name: &str, port: u16) -> String {
        RULE.replace("NAME", name)
            .replace("PORT", &port.to_string())
    }

    #[test]
    fn tables_anywhere_around_the_rules_read_the_same() {
        let text = format!(
            "# a relay\n[relay]\nworkers = 2\n\n{}{}[ring]\nblock_count = 4\n\n\
             [[class]]\nname = \"video\"\ncpus = \"0\"\n{}  [[ rule ]] # spaced\n\
             name = \"d\"\nclass = \"video\"\n[rule.input]\ninterface = \"in0\"\n\
             destination = \"239.1.1.9\"\nport = 9\n[[rule.outputs]]\ninterface = \"out0\"\n\
             destination = \"239.2.2.9\"\nport = 9\n[[class]]\nname = \"bulk\"\ncpus = 1\n",
            rule("a", 1),
            rule("b", 2),
            rule("c", 3)
        );
        let config = agrees(&text);
        let names: Vec<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(config.ring.block_count, 4);
        assert_eq!(config.classes.len(), 2);
        assert_eq!(config.rules[3].input.port, 9);
        assert_eq!(config.rules[3].outputs.len(), 1);
    }

    #[test]
    fn many_rules_read_the_same() {
        let text: String = (0..500).map(|i| rule(&format!("r{i}"), 1000 + i)).collect();
        assert_eq!(agrees(&text).rules.len(), 500);
        assert_eq!(agrees("").rules.len(), 0);
        assert_eq!(agrees("[relay]\nworkers = 1\n").rules.len(), 0);
    }

    #[test]
    fn what_the_cut_is_not_sure_of_is_left_to_a_whole_parse() {
        // A multi-line string could hold a line that looks like a header.
        let quoted = format!(
            "{}[relay]\ncontrol_socket = \"\"\"/run/x.sock\"\"\"\n",
            rule("a", 1)
        );
        let (pieces, whole) = both(&quoted);
        assert!(pieces.is_none());
        assert!(whole.is_ok());
        // Rules as an inline array rather than [[rule]] tables.
        let inline = "rule = []\n".to_owned() + &rule("a", 1);
        assert!(parse(&inline).is_none());
        // A mistake: the whole parse says where.
        let broken = rule("a", 1) + &RULE.replace("NAME", "b").replace("PORT", "70000");
        let (pieces, whole) = both(&broken);
        assert!(pieces.is_none());
        assert!(whole.is_err());
        let duplicate =
            "[relay]\nworkers = 1\n".to_owned() + &rule("a", 1) + "[relay]\nworkers = 2\n";
        let (pieces, whole) = both(&duplicate);
        assert!(pieces.is_none() && whole.is_err(), "{pieces:?}");
    }

    #[test]
    fn headers_are_told_apart() {
        assert_eq!(header("[[rule]]\n"), Some(Header::Rule));
        assert_eq!(header("  [[ rule ]]  # x\n"), Some(Header::Rule));
        assert_eq!(header("[rule.input]\n"), Some(Header::RulePart));
        assert_eq!(header("[[rule.outputs]]\n"), Some(Header::RulePart));
        assert_eq!(header("[relay]\n"), Some(Header::Other));
        assert_eq!(header("[[class]]\n"), Some(Header::Other));
        assert_eq!(header("[[rules]]\n"), Some(Header::Other));
        assert_eq!(header("name = \"[x]\"\n"), None);
        assert_eq!(header("  { interface = \"a\" },\n"), None);
    }
}
