//! The RPS fallback (`--rps auto`, `relay.rps = "auto"`): while the relay runs, RPS spreads each
//! single-queue input over the workers' CPUs; when it stops, the previous masks are put back.
//!
//! Only an input with exactly one RX queue and RPS off is touched: a multiqueue NIC is the
//! operator's to tune (`check-steering` says how), and a mask someone already set is theirs.
//! The masks are written through sysfs, which shows the network namespace of whoever mounted it:
//! before writing, the interface's index and MAC address in sysfs are compared with the ones
//! the relay's own namespace reports, so a relay started without `ip netns exec` never changes
//! a same-named interface of another namespace.

use super::NamespaceError;
use crate::config::RpsSetting;
use fanout_core::CpuSet;
use fanout_core::iface::InterfaceInfo;
use fanout_core::steering::Steering;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The masks the relay changed, put back when this is dropped (also on error paths and panics;
/// not after SIGKILL, which leaves RPS on, a harmless state).
#[derive(Debug)]
pub struct RpsFallback {
    steering: Steering,
    changed: Vec<Changed>,
}

#[derive(Debug)]
struct Changed {
    interface: String,
    queue: usize,
    previous: CpuSet,
    set: CpuSet,
}

impl RpsFallback {
    /// Turns RPS on across `workers` for each of `inputs` that needs it, when `setting` is
    /// `auto`; logs what it did and what it left alone. A failure is logged and skipped: the
    /// relay runs without RPS rather than not at all.
    pub fn apply<'a>(
        setting: RpsSetting,
        inputs: impl IntoIterator<Item = &'a str>,
        workers: &[u32],
    ) -> RpsFallback {
        Self::apply_under(Path::new("/sys"), setting, inputs, workers, same_namespace)
    }

    /// [`RpsFallback::apply`] under another sysfs root, with another namespace check.
    fn apply_under<'a>(
        sys: &Path,
        setting: RpsSetting,
        inputs: impl IntoIterator<Item = &'a str>,
        workers: &[u32],
        check: impl Fn(&Path, &str) -> Result<(), NamespaceError>,
    ) -> RpsFallback {
        let mut fallback = RpsFallback {
            steering: Steering::with_roots(sys, "/proc"),
            changed: Vec::new(),
        };
        if setting == RpsSetting::Off {
            return fallback;
        }
        if workers.len() < 2 {
            log::info!("rps auto: one worker, nothing to spread; RPS left as it is");
            return fallback;
        }
        let cpus: CpuSet = workers.iter().map(|&cpu| cpu as usize).collect();
        let inputs: BTreeSet<&str> = inputs.into_iter().collect();
        for interface in inputs {
            if let Err(problem) = check(sys, interface) {
                log::warn!("rps auto: {interface}: {problem}; RPS left alone");
                continue;
            }
            fallback.spread(interface, &cpus);
        }
        fallback
    }

    fn spread(&mut self, interface: &str, cpus: &CpuSet) {
        let queues = match self.steering.queue_counts(interface) {
            Ok(queues) => queues,
            Err(error) => return log::warn!("rps auto: {error}; RPS left alone"),
        };
        if queues.rx != 1 {
            return log::info!(
                "rps auto: {interface} has {} RX queues: RPS left as it is (`fanout-relay \
                 check-steering {interface}` tells whether they spread over the workers)",
                queues.rx
            );
        }
        match self.steering.rps_cpus(interface, 0) {
            Ok(mask) if !mask.is_empty() => {
                return log::info!(
                    "rps auto: {interface} rx-0 already has RPS on cpus {mask}: left as it is"
                );
            }
            Ok(_) => {}
            Err(error) => return log::warn!("rps auto: {error}; RPS left alone"),
        }
        match self.steering.set_rps_cpus(interface, 0, cpus) {
            Ok(previous) => {
                log::info!(
                    "rps auto: {interface} has 1 RX queue and had no RPS: RPS now spreads it \
                     over cpus {cpus} (mask {}), so every worker gets a share under fanout cpu; \
                     the previous mask ({}) is put back at exit",
                    cpus.to_mask(),
                    previous.to_mask()
                );
                self.changed.push(Changed {
                    interface: interface.to_owned(),
                    queue: 0,
                    previous,
                    set: cpus.clone(),
                });
            }
            Err(error) => log::warn!(
                "rps auto: cannot turn RPS on for {interface}: {error} (needs CAP_NET_ADMIN); \
                 relaying without it"
            ),
        }
    }

    /// The queues whose mask was changed, as (interface, queue, mask set).
    pub fn changed(&self) -> impl Iterator<Item = (&str, usize, &CpuSet)> {
        self.changed
            .iter()
            .map(|change| (change.interface.as_str(), change.queue, &change.set))
    }

    /// Puts every changed mask back, unless someone changed it again meanwhile; idempotent.
    pub fn restore(&mut self) {
        for change in self.changed.drain(..) {
            let Changed {
                interface,
                queue,
                previous,
                set,
            } = change;
            match self.steering.rps_cpus(&interface, queue) {
                Ok(now) if now != set => log::warn!(
                    "rps: {interface} rx-{queue} was changed to mask {} while the relay ran: \
                     left as it is",
                    now.to_mask()
                ),
                Ok(_) => match self.steering.set_rps_cpus(&interface, queue, &previous) {
                    Ok(_) => log::info!(
                        "rps: {interface} rx-{queue} put back to mask {}",
                        previous.to_mask()
                    ),
                    Err(error) => log::warn!("rps: cannot put the mask back: {error}"),
                },
                Err(error) => log::info!("rps: nothing to put back: {error}"),
            }
        }
    }
}

impl Drop for RpsFallback {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Checks that `sys` shows the calling process's `interface`: same index, same MAC address.
fn same_namespace(sys: &Path, interface: &str) -> Result<(), NamespaceError> {
    let here = InterfaceInfo::lookup(interface).map_err(NamespaceError::NotHere)?;
    let dir: PathBuf = sys.join("class/net").join(interface);
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path)
            .map(|text| text.trim().to_owned())
            .map_err(|source| NamespaceError::Read { path, source })
    };
    let index = read("ifindex")?;
    let mac = read("address")?;
    let our_mac = here.mac.map(|mac| {
        mac.iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    });
    if index != here.index.to_string() || our_mac.as_ref().is_some_and(|ours| *ours != mac) {
        return Err(NamespaceError::Elsewhere {
            sys: sys.to_owned(),
            there_index: index,
            there_mac: mac,
            here_index: here.index,
            here_mac: our_mac.unwrap_or_else(|| "none".to_owned()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(interfaces: &[(&str, &[&str])]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("a temporary directory");
        for (name, masks) in interfaces {
            for (queue, mask) in masks.iter().enumerate() {
                let dir = root
                    .path()
                    .join(format!("class/net/{name}/queues/rx-{queue}"));
                std::fs::create_dir_all(&dir).expect("mkdir");
                std::fs::write(dir.join("rps_cpus"), format!("{mask}\n")).expect("write");
            }
        }
        root
    }

    fn mask(root: &Path, name: &str, queue: usize) -> String {
        std::fs::read_to_string(root.join(format!("class/net/{name}/queues/rx-{queue}/rps_cpus")))
            .expect("read")
            .trim()
            .to_owned()
    }

    fn apply(root: &Path, setting: RpsSetting, inputs: &[&str], workers: &[u32]) -> RpsFallback {
        RpsFallback::apply_under(
            root,
            setting,
            inputs.iter().copied(),
            workers,
            |_, _| Ok(()),
        )
    }

    #[test]
    fn only_single_queue_inputs_without_rps_are_changed_and_put_back() {
        let sys = fake_sysfs(&[
            ("veth0", &["0"]),
            ("veth1", &["00000000,00000004"]),
            ("mq0", &["0", "0"]),
        ]);
        let root = sys.path();
        let mut fallback = apply(
            root,
            RpsSetting::Auto,
            &["veth0", "veth1", "mq0", "veth0", "gone0"],
            &[0, 1],
        );
        assert_eq!(
            fallback
                .changed()
                .map(|(name, queue, set)| (name.to_owned(), queue, set.to_string()))
                .collect::<Vec<_>>(),
            [("veth0".to_owned(), 0, "0-1".to_owned())]
        );
        assert_eq!(mask(root, "veth0", 0), "3");
        assert_eq!(mask(root, "veth1", 0), "00000000,00000004");
        assert_eq!(mask(root, "mq0", 0), "0");
        fallback.restore();
        assert_eq!(mask(root, "veth0", 0), "0");
        assert_eq!(fallback.changed().count(), 0);
    }

    #[test]
    fn dropping_puts_the_mask_back_unless_someone_changed_it() {
        let sys = fake_sysfs(&[("veth0", &["0"]), ("veth1", &["0"])]);
        let root = sys.path();
        let fallback = apply(root, RpsSetting::Auto, &["veth0", "veth1"], &[2, 3]);
        assert_eq!(mask(root, "veth0", 0), "c");
        let path = root.join("class/net/veth1/queues/rx-0/rps_cpus");
        std::fs::write(&path, "1\n").expect("write");
        drop(fallback);
        assert_eq!(mask(root, "veth0", 0), "0");
        assert_eq!(mask(root, "veth1", 0), "1", "someone else's mask is kept");
    }

    #[test]
    fn off_one_worker_or_another_namespace_change_nothing() {
        let sys = fake_sysfs(&[("veth0", &["0"])]);
        let root = sys.path();
        assert_eq!(
            apply(root, RpsSetting::Off, &["veth0"], &[0, 1])
                .changed()
                .count(),
            0
        );
        assert_eq!(
            apply(root, RpsSetting::Auto, &["veth0"], &[1])
                .changed()
                .count(),
            0
        );
        let refused =
            RpsFallback::apply_under(root, RpsSetting::Auto, ["veth0"], &[0, 1], |sys, _| {
                Err(NamespaceError::Elsewhere {
                    sys: sys.to_owned(),
                    there_index: "7".into(),
                    there_mac: "00:00:00:00:00:00".into(),
                    here_index: 1,
                    here_mac: "none".into(),
                })
            });
        assert_eq!(refused.changed().count(), 0);
        assert_eq!(mask(root, "veth0", 0), "0");
    }

    #[test]
    fn a_sysfs_of_another_namespace_is_recognised() {
        // "lo" exists in every namespace with index 1; a fake sysfs saying index 7 is not ours.
        let root = tempfile::tempdir().expect("a temporary directory");
        let dir = root.path().join("class/net/lo");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("ifindex"), "7\n").expect("write");
        std::fs::write(dir.join("address"), "00:00:00:00:00:00\n").expect("write");
        let error = same_namespace(root.path(), "lo").expect_err("index 7 is not lo's");
        assert!(
            matches!(&error, NamespaceError::Elsewhere { there_index, here_index: 1, .. }
                if there_index == "7"),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("another network namespace"),
            "{error}"
        );
        std::fs::write(dir.join("ifindex"), "1\n").expect("write");
        same_namespace(root.path(), "lo").expect("index 1 and lo's address are lo's");
        std::fs::remove_file(dir.join("address")).expect("remove");
        let error = same_namespace(root.path(), "lo").expect_err("no address file");
        assert!(
            matches!(&error, NamespaceError::Read { path, .. } if path.ends_with("lo/address")),
            "{error:?}"
        );
        let error = same_namespace(root.path(), "nosuch0").expect_err("not here");
        assert!(matches!(error, NamespaceError::NotHere(_)), "{error:?}");
    }
}
