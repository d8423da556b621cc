//! The relay's view of the kernel features fanout-core probes: which the configuration wants,
//! what the relay does where one is missing, and the test-only switch that forces them off.

use crate::config::{ConfigFile, FanoutSetting, RingSection};
use fanout_core::FanoutFlags;
use fanout_core::features::{self, Feature, Features};

/// The environment variable that makes the relay act as if the kernel lacked some features:
/// a comma-separated list of [`Feature::name`]s, or `all`. For tests only: it lets a kernel that
/// has them check the fallbacks. Worker processes inherit it.
pub const FORCE_OFF_VAR: &str = "FANOUT_RELAY_FORCE_NO_FEATURES";

/// The environment variable through which the supervisor hands its workers the features it
/// found, so that they need not probe again: `name=yes|no|off` for every feature, separated by
/// commas ([`inherited`]).
pub const INHERITED_VAR: &str = "FANOUT_RELAY_KERNEL_FEATURES";

/// An environment switch of this module that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// [`INHERITED_VAR`] is not what a supervisor sets.
    #[error("{INHERITED_VAR}={0:?} is not what a supervisor sets")]
    Inherited(String),
    /// [`FORCE_OFF_VAR`] is not UTF-8.
    #[error("{FORCE_OFF_VAR}={0:?} is not UTF-8")]
    NotUtf8(std::ffi::OsString),
    /// [`FORCE_OFF_VAR`] names a feature that does not exist.
    #[error("{FORCE_OFF_VAR}: unknown feature {name:?} (known: {known}, or all)")]
    UnknownFeature {
        /// The name given.
        name: String,
        /// The features there are, comma-separated.
        known: String,
    },
}

/// This process's features as [`INHERITED_VAR`] carries them.
pub fn inherited() -> String {
    let features = Features::get();
    Feature::ALL
        .iter()
        .map(|&feature| {
            let state = if features.forced_off(feature) {
                "off"
            } else if features.has(feature) {
                "yes"
            } else {
                "no"
            };
            format!("{feature}={state}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads [`INHERITED_VAR`], if set, as this process's features (a worker); then
/// [`FORCE_OFF_VAR`], which forces features off where nothing was inherited. Call it before
/// anything opens a ring.
pub fn from_env() -> Result<(), EnvError> {
    if let Some(value) = std::env::var_os(INHERITED_VAR) {
        let value = value.to_string_lossy();
        let features = parse_inherited(&value)
            .ok_or_else(|| EnvError::Inherited(value.clone().into_owned()))?;
        features::adopt(features);
        return Ok(());
    }
    force_off_from_env()
}

fn parse_inherited(value: &str) -> Option<Features> {
    value
        .split(',')
        .try_fold(Features::none(), |features, item| {
            let (name, state) = item.split_once('=')?;
            let feature = Feature::parse(name)?;
            match state {
                "yes" => Some(features.with(feature)),
                "no" => Some(features.without(feature)),
                "off" => Some(features.with_forced_off(feature)),
                _ => None,
            }
        })
}

/// Reads [`FORCE_OFF_VAR`] and forces those features off for this process.
fn force_off_from_env() -> Result<(), EnvError> {
    let Some(value) = std::env::var_os(FORCE_OFF_VAR) else {
        return Ok(());
    };
    let value = value.into_string().map_err(EnvError::NotUtf8)?;
    let off = parse_list(&value)?;
    if !off.is_empty() {
        log::warn!(
            "{FORCE_OFF_VAR}: acting as if the kernel lacked {} (a test switch)",
            off.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
        );
    }
    features::force_off(&off);
    Ok(())
}

/// `tx_gso,rollover` or `all` as features; empty items are ignored.
fn parse_list(value: &str) -> Result<Vec<Feature>, EnvError> {
    if value.trim() == "all" {
        return Ok(Feature::ALL.to_vec());
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            Feature::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
                EnvError::UnknownFeature {
                    name: name.to_owned(),
                    known: known.join(", "),
                }
            })
        })
        .collect()
}

/// The fanout flag the relay's groups roll over with, where the kernel has it.
pub fn rollover_flag() -> FanoutFlags {
    if Features::get().has(Feature::Rollover) {
        FanoutFlags::ROLLOVER
    } else {
        FanoutFlags::NONE
    }
}

/// Whether transmit rings lend nothing and take frames whole: `tx_linear` where the kernel can.
pub fn tx_linear(ring: &RingSection) -> bool {
    ring.tx_linear && Features::get().has(Feature::TxLinear)
}

/// Whether transmit rings bypass the qdisc: `qdisc_bypass` where the kernel can.
pub fn qdisc_bypass(ring: &RingSection) -> bool {
    ring.qdisc_bypass && Features::get().has(Feature::QdiscBypass)
}

/// What the relay gives up without `feature`, given its configuration; `None` where it does not
/// use the feature as configured.
fn fallback(feature: Feature, ring: &RingSection, fanout: FanoutSetting) -> Option<&'static str> {
    let wanted = match feature {
        Feature::TxSegmentation => ring.tx_gso && ring.tx_linear,
        Feature::TxLinear => ring.tx_linear,
        // Every receive ring of the relay is in a fanout group: the socket option does nothing.
        Feature::FanoutIgnoreOutgoing | Feature::UniqueId => true,
        Feature::IgnoreOutgoing => false,
        Feature::Rollover => !matches!(fanout, FanoutSetting::Rollover | FanoutSetting::Steer),
        Feature::FanoutCbpf => fanout == FanoutSetting::Steer,
        Feature::QdiscBypass => ring.qdisc_bypass,
        Feature::Defrag | Feature::FanoutEbpf => false,
    };
    wanted.then(|| feature.without())
}

/// Logs a warning for each feature the configuration uses and the kernel lacks, saying what the
/// relay does instead; probes the kernel if nothing did yet.
pub fn warn_fallbacks(ring: &RingSection, fanout: FanoutSetting) {
    let features = Features::get();
    for feature in Feature::ALL {
        if features.has(feature) {
            continue;
        }
        if let Some(instead) = fallback(feature, ring, fanout) {
            let why = if features.forced_off(feature) {
                "forced off"
            } else {
                "this kernel lacks it"
            };
            log::warn!("kernel feature {feature} ({why}): {instead}");
        }
    }
}

/// The `features` command's report: the kernel, then per feature whether it is there, the
/// mainline release that brought it, and what the relay does without it.
pub fn report(config: Option<&ConfigFile>) -> String {
    let features = Features::get();
    let release = nix::sys::utsname::uname()
        .map(|uts| uts.release().to_string_lossy().into_owned())
        .unwrap_or_else(|errno| format!("unknown ({errno})"));
    let mut text = format!("kernel {release}\n");
    let (ring, fanout) = match config {
        Some(file) => (file.ring, file.relay.fanout),
        None => (ConfigFile::default().ring, FanoutSetting::default()),
    };
    crate::text::append(&mut text, |text| {
        use std::fmt::Write as _;
        writeln!(
            text,
            "{:<22} {:<10} {:<6} without it",
            "feature", "here", "since"
        )?;
        for feature in Feature::ALL {
            let here = if features.forced_off(feature) {
                "forced off"
            } else if features.has(feature) {
                "yes"
            } else {
                "no"
            };
            let instead = match fallback(feature, &ring, fanout) {
                Some(instead) => instead.to_owned(),
                None => format!("(unused as configured) {}", feature.without()),
            };
            writeln!(
                text,
                "{:<22} {here:<10} {:<6} {instead}",
                feature.name(),
                feature.since()
            )?;
        }
        Ok(())
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_features_parse_and_unknown_names_are_refused() {
        assert_eq!(
            parse_list("tx_gso, rollover,").expect("two features"),
            vec![Feature::TxSegmentation, Feature::Rollover]
        );
        assert_eq!(
            parse_list("all").expect("every feature").len(),
            Feature::ALL.len()
        );
        assert!(parse_list("").expect("none").is_empty());
        let error = parse_list("tx_gso,gro")
            .expect_err("gro is no feature")
            .to_string();
        assert!(
            error.contains("\"gro\"") && error.contains("tx_linear"),
            "{error}"
        );
    }

    #[test]
    fn inherited_features_read_back() {
        let features = Features::none()
            .with(Feature::Rollover)
            .with_forced_off(Feature::TxSegmentation);
        let text = "tx_gso=off,rollover=yes,defrag=no";
        assert_eq!(parse_inherited(text), Some(features));
        assert_eq!(parse_inherited("rollover=maybe"), None);
        assert_eq!(parse_inherited("gro=yes"), None);
        let all = inherited();
        assert_eq!(all.split(',').count(), Feature::ALL.len(), "{all}");
        assert_eq!(parse_inherited(&all), Some(Features::get()));
    }

    #[test]
    fn fallbacks_are_named_only_for_what_the_configuration_uses() {
        let mut ring = ConfigFile::default().ring;
        assert!(fallback(Feature::TxSegmentation, &ring, FanoutSetting::Cpu).is_some());
        ring.tx_linear = false;
        assert!(fallback(Feature::TxSegmentation, &ring, FanoutSetting::Cpu).is_none());
        assert!(fallback(Feature::FanoutCbpf, &ring, FanoutSetting::Cpu).is_none());
        assert!(fallback(Feature::FanoutCbpf, &ring, FanoutSetting::Steer).is_some());
        assert!(fallback(Feature::Rollover, &ring, FanoutSetting::Steer).is_none());
        assert!(fallback(Feature::FanoutIgnoreOutgoing, &ring, FanoutSetting::Hash).is_some());
        assert!(fallback(Feature::IgnoreOutgoing, &ring, FanoutSetting::Hash).is_none());
    }
}
