//! Whether the relay's ingress filter (`consume_input`, see [`crate::ingress`]) is on an
//! interface, for `check-steering`: with it, the relayed frames stop after the relay's receive
//! rings and cost the receiving CPU no IP processing.

use crate::ingress::{IngressFilter, Tc};
use serde::Serialize;

/// What `check-steering` found on the interface's ingress hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumeCheck {
    /// The relay's filter is there.
    Installed,
    /// It is not (the setting is off, no rule reads the interface, or no relay runs).
    Absent,
    /// The hook could not be read.
    Unknown(String),
}

impl ConsumeCheck {
    /// Looks at `interface`'s ingress hook in this network namespace.
    pub fn of(interface: &str) -> Self {
        let ifindex = match nix::net::if_::if_nametoindex(interface) {
            Ok(ifindex) => ifindex,
            Err(errno) => return ConsumeCheck::Unknown(format!("if_nametoindex: {errno}")),
        };
        match Tc::open().and_then(|mut tc| tc.ingress_filters(ifindex)) {
            Ok(filters) if filters.iter().any(IngressFilter::is_relays) => ConsumeCheck::Installed,
            Ok(_) => ConsumeCheck::Absent,
            Err(error) => ConsumeCheck::Unknown(error.to_string()),
        }
    }

    /// The line of the human report.
    pub fn describe(&self) -> String {
        match self {
            ConsumeCheck::Installed => "the relay's ingress filter drops the relayed frames \
                after its rings took them (consume_input)"
                .to_owned(),
            ConsumeCheck::Absent => "no relay ingress filter: the host's IP stack also takes \
                every frame the relay takes (consume_input off, no rule reads this interface, \
                or no relay runs)"
                .to_owned(),
            ConsumeCheck::Unknown(why) => format!("unknown ({why})"),
        }
    }
}
