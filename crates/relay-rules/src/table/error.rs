//! Why a table refuses a rule: the rule, and what it collides with or lacks.

use crate::rule::RuleKey;
use crate::validate::Field;
use thiserror::Error;

/// Why [`super::RuleTable::insert`] refused a rule; the table is unchanged.
///
/// The supervisor validates every change against its whole rule set before sending it, so a
/// worker that meets one of these holds a table that drifted from the supervisor's (or facts
/// that differ from the ones the rule was checked against): it reports the error, and the
/// supervisor resyncs it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TableError {
    /// Names identify rules in counters and the control protocol, and `remove` finds a rule by
    /// its name, so two rules of one table cannot share one.
    #[error("rule {rule:?}: the table already has a rule with this name")]
    DuplicateName {
        /// The rule refused.
        rule: String,
    },
    /// Two rules with one match key would compete for the same packets; the table keeps one
    /// rule per key.
    #[error("rule {rule:?}: rule {other:?} already matches {key}")]
    DuplicateKey {
        /// The rule refused.
        rule: String,
        /// The rule of the table that has the key.
        other: String,
        /// The key.
        key: RuleKey,
    },
    /// The rule names an interface the facts passed to `insert` do not have, so its index (or
    /// its addresses and hardware address, for an output) cannot be resolved.
    #[error("rule {rule:?}: {field}: no interface named {interface:?} in the facts given")]
    UnknownInterface {
        /// The rule refused.
        rule: String,
        /// Where the rule names the interface.
        field: Field,
        /// The interface name.
        interface: String,
    },
    /// An output without a source takes its interface's first IPv4 address, and the facts
    /// given say the interface has none.
    #[error("rule {rule:?}: {field}: {interface} has no IPv4 address to send from")]
    NoSourceAddress {
        /// The rule refused.
        rule: String,
        /// The output's source field.
        field: Field,
        /// The output interface.
        interface: String,
    },
}

impl TableError {
    /// Name of the rule refused, for the worker's answer to the supervisor.
    pub fn rule(&self) -> &str {
        match self {
            TableError::DuplicateName { rule }
            | TableError::DuplicateKey { rule, .. }
            | TableError::UnknownInterface { rule, .. }
            | TableError::NoSourceAddress { rule, .. } => rule,
        }
    }
}
