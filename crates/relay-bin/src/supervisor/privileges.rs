//! The capabilities the relay needs, checked once at start so that a missing one is named
//! before anything is opened: `CAP_NET_RAW` for packet sockets, always; and for
//! `relay.rps = "auto"`, which writes the inputs' RPS masks, `CAP_NET_ADMIN` (the kernel's
//! check) and `CAP_DAC_OVERRIDE` (the sysfs files belong to root). The relay does not need root:
//! it runs as any user that holds them (ambient or file capabilities, or systemd's
//! `AmbientCapabilities=`).

use crate::protocol::WorkerUser;
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
    /// `relay.user` names no user of this host.
    #[error("relay.user = {0:?}: no such user")]
    UnknownUser(String),
    /// The user database could not be read.
    #[error("looking up user {user:?}: {errno}")]
    Lookup {
        /// The user.
        user: String,
        /// Why.
        errno: nix::errno::Errno,
    },
    /// `relay.user` names another user, and the relay cannot switch users.
    #[error(
        "relay.user = {0:?}, but the relay cannot make its workers another user (it needs \
         CAP_SETUID and CAP_SETGID, i.e. to run as root): leave relay.user out, and the workers \
         run as the relay's own user, without capabilities"
    )]
    CannotSwitch(String),
}

/// The user workers run as when the relay runs as root and the configuration names none.
pub(super) const DEFAULT_WORKER_USER: &str = "nobody";

/// The user the workers become, given `relay.user`: the configured one, or when the relay can
/// switch users (it runs as root) [`DEFAULT_WORKER_USER`]; `None` keeps the relay's own, which is
/// then already unprivileged, or the configured one.
pub(super) fn worker_user(configured: Option<&str>) -> Result<Option<WorkerUser>, PrivilegeError> {
    let can_switch = [Capability::CAP_SETUID, Capability::CAP_SETGID]
        .into_iter()
        .map(|capability| caps::has_cap(None, CapSet::Effective, capability))
        .try_fold(true, |all, held| held.map(|held| all && held))
        .map_err(PrivilegeError::Read)?;
    let name = match configured {
        Some(name) => name,
        None if can_switch => DEFAULT_WORKER_USER,
        None => return Ok(None),
    };
    let found = nix::unistd::User::from_name(name).map_err(|errno| PrivilegeError::Lookup {
        user: name.to_owned(),
        errno,
    })?;
    let Some(user) = found else {
        if configured.is_none() {
            log::warn!(
                "there is no user {DEFAULT_WORKER_USER:?}: workers keep the relay's user (set \
                 relay.user to one without privileges)"
            );
            return Ok(None);
        }
        return Err(PrivilegeError::UnknownUser(name.to_owned()));
    };
    if user.uid == nix::unistd::geteuid() {
        return Ok(None);
    }
    if !can_switch {
        return Err(PrivilegeError::CannotSwitch(name.to_owned()));
    }
    Ok(Some(WorkerUser {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
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
