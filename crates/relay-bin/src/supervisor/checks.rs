//! Rules checked against the interfaces of this host, at start and on every reload.

use crate::rings;
use relay_rules::{Interfaces, RuleSet};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Rules that fail validation, every one listed.
#[derive(Debug, thiserror::Error)]
#[error("{}", InvalidList { path, errors })]
pub(super) struct InvalidRules {
    /// The configuration (or state) file they came from.
    pub(super) path: PathBuf,
    /// One line per problem, naming the rule and the field.
    pub(super) errors: Vec<String>,
}

/// The file, then one problem per line.
pub(super) struct InvalidList<'a> {
    pub(super) path: &'a Path,
    pub(super) errors: &'a [String],
}

impl fmt::Display for InvalidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} problem(s):",
            self.path.display(),
            self.errors.len()
        )?;
        for error in self.errors {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

/// Validates `rules` against the facts of the interfaces they name; `path` is where they came
/// from, for the error.
pub(super) fn check_rules(
    path: &Path,
    rules: &[relay_rules::Rule],
) -> Result<RuleSet, InvalidRules> {
    let names: BTreeSet<&str> = rules
        .iter()
        .flat_map(|rule| {
            std::iter::once(rule.input.interface.as_str())
                .chain(rule.outputs.iter().map(|output| output.interface.as_str()))
        })
        .collect();
    // An interface that does not exist is left out of the facts: validation then names every
    // rule and field that refers to it.
    let interfaces: Interfaces = names
        .into_iter()
        .filter_map(rings::interface_facts)
        .collect();
    rings::validate(rules, &interfaces).map_err(|errors| InvalidRules {
        path: path.to_owned(),
        errors,
    })
}
