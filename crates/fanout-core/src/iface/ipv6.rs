//! Whether an interface carries IPv6, from `/proc/sys/net/ipv6/conf/<name>/disable_ipv6`.
//!
//! `/proc/sys/net` answers for the network namespace of the reading thread, unlike sysfs, so
//! this fact is namespace-correct like the rest of the module. The kernel keeps an interface's
//! IPv6 configuration (and that directory) only while the interface can carry IPv6: it removes
//! both when the MTU drops below 1280, and has neither when built or booted without IPv6.

use super::{IfName, IfaceError, index_of};
use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The IPv6 sysctl root, absent when the kernel has no IPv6.
const IPV6_SYSCTL: &str = "/proc/sys/net/ipv6";

/// Whether an interface carries IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6State {
    /// IPv6 is on: it sends and receives, MLD reports included.
    Enabled,
    /// `net.ipv6.conf.<name>.disable_ipv6` is set (or was inherited from `all`/`default`):
    /// the interface sends no IPv6 packet, so a join would never be reported.
    Disabled,
    /// The interface has no IPv6 configuration at all (an MTU below 1280, which IPv6 needs).
    NoConfiguration,
    /// The kernel has no IPv6 (built without it, or booted with `ipv6.disable=1`).
    NoKernelSupport,
}

impl fmt::Display for Ipv6State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ipv6State::Enabled => "IPv6 enabled",
            Ipv6State::Disabled => "disable_ipv6 is set",
            Ipv6State::NoConfiguration => {
                "no IPv6 configuration, as when the MTU is below IPv6's 1280"
            }
            Ipv6State::NoKernelSupport => "the kernel has no IPv6",
        })
    }
}

/// Whether interface `name`, in the calling thread's network namespace, carries IPv6.
///
/// Returns [`IfaceError::NotFound`] when the interface does not exist.
pub fn ipv6_state(name: &str) -> Result<Ipv6State, IfaceError> {
    IfName::new(name).ok_or_else(|| IfaceError::InvalidName {
        name: name.to_owned(),
    })?;
    // The index first: an interface without IPv6 configuration and a missing interface both
    // lack the sysctl directory.
    index_of(name)?;
    state_in(Path::new(IPV6_SYSCTL), name)
}

/// The state of `name` as the sysctl tree under `root` says.
fn state_in(root: &Path, name: &str) -> Result<Ipv6State, IfaceError> {
    let path: PathBuf = root.join("conf").join(name).join("disable_ipv6");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim() == "0" => Ok(Ipv6State::Enabled),
        Ok(_) => Ok(Ipv6State::Disabled),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(if root.exists() {
            Ipv6State::NoConfiguration
        } else {
            Ipv6State::NoKernelSupport
        }),
        Err(source) => Err(IfaceError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sysctl_tree() {
        let root = tempfile::tempdir().expect("temporary directory");
        let conf = root.path().join("conf");
        for (name, value) in [("on0", "0\n"), ("off0", "1\n")] {
            std::fs::create_dir_all(conf.join(name)).expect("mkdir");
            std::fs::write(conf.join(name).join("disable_ipv6"), value).expect("write");
        }
        assert_eq!(state_in(root.path(), "on0").ok(), Some(Ipv6State::Enabled));
        assert_eq!(
            state_in(root.path(), "off0").ok(),
            Some(Ipv6State::Disabled)
        );
        assert_eq!(
            state_in(root.path(), "small0").ok(),
            Some(Ipv6State::NoConfiguration)
        );
        assert_eq!(
            state_in(&root.path().join("absent"), "on0").ok(),
            Some(Ipv6State::NoKernelSupport)
        );
    }

    #[test]
    fn a_missing_interface_is_not_found() {
        assert!(matches!(
            ipv6_state("fcnosuch0"),
            Err(IfaceError::NotFound { .. })
        ));
    }
}
