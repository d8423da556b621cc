//! The capabilities the relay needs, checked once at start so that a missing one is named
//! before anything is opened: `CAP_NET_RAW` for packet sockets, always; and for
//! `relay.rps = "auto"`, which writes the inputs' RPS masks, `CAP_NET_ADMIN` (the kernel's
//! check) and `CAP_DAC_OVERRIDE` (the sysfs files belong to root). The relay does not need root:
//! it runs as any user that holds them (ambient or file capabilities, or systemd's
//! `AmbientCapabilities=`).

use caps::{CapSet, Capability};

/// A capability the relay needs and does not hold.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Its effective set lacks `capability`, which `purpose` needs.
    #[error(
        "the relay needs {capability} ({purpose}) and does not hold it: run it as root, or give \
         it {capability} (e.g. `setpriv --ambient-caps +{short} --inh-caps +{short}`, a file \
         capability, or systemd's AmbientCapabilities=)"
    )]
    Missing {
        /// The capability, as `CAP_NET_RAW`.
        capability: Capability,
        /// Its name for setpriv, as `net_raw`.
        short: String,
        /// What it is needed for.
        purpose: &'static str,
    },
    /// The capability sets could not be read.
    #[error("reading the process's capabilities: {0}")]
    Read(#[source] caps::errors::CapsError),
}

/// Checks that the process holds `CAP_NET_RAW`, and what writing RPS masks needs when `rps`.
pub(super) fn check(rps: bool) -> Result<(), PrivilegeError> {
    const RPS: &str = "relay.rps = \"auto\" writes the inputs' RPS masks in sysfs";
    let needed = std::iter::once((Capability::CAP_NET_RAW, "packet sockets")).chain(
        [Capability::CAP_NET_ADMIN, Capability::CAP_DAC_OVERRIDE]
            .into_iter()
            .filter(|_| rps)
            .map(|capability| (capability, RPS)),
    );
    for (capability, purpose) in needed {
        if !caps::has_cap(None, CapSet::Effective, capability).map_err(PrivilegeError::Read)? {
            let short = capability
                .to_string()
                .trim_start_matches("CAP_")
                .to_lowercase();
            return Err(PrivilegeError::Missing {
                capability,
                short,
                purpose,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_capability_is_named_with_what_needs_it() {
        let error = PrivilegeError::Missing {
            capability: Capability::CAP_NET_ADMIN,
            short: "net_admin".into(),
            purpose: "relay.rps = \"auto\"",
        };
        let text = error.to_string();
        assert!(text.contains("CAP_NET_ADMIN"), "{text}");
        assert!(text.contains("relay.rps"), "{text}");
        assert!(text.contains("+net_admin"), "{text}");
    }

    /// What this process holds is read without error, and agrees with its uid's powers: the
    /// tests run as root, which holds both.
    #[test]
    fn this_process_is_checked() {
        let held = caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_RAW)
            .expect("capabilities readable");
        assert_eq!(check(false).is_ok(), held);
    }
}
