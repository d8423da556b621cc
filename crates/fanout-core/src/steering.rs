//! Steering facts: how the kernel spreads an interface's packets over CPUs before any packet
//! socket sees them (RSS queues and their IRQs, RPS masks), so a relay can tell whether its
//! fanout workers will all get traffic.
//!
//! Under fanout `cpu` a packet goes to the worker of the CPU that processed it, and that CPU is
//! chosen here: by the NIC's RSS hash → RX queue → IRQ affinity, then optionally re-steered by
//! RPS (`rps_cpus`). One RX queue and no RPS means one CPU, so one busy worker.
//!
//! # Which namespace the answers describe
//! - Queue counts, RPS masks and flow counts come from sysfs (`<sys>/class/net/<if>/queues`),
//!   which shows the network namespace **of the process that mounted sysfs**, not the caller's.
//!   [`Steering::with_roots`] takes the sysfs root so a caller can point it at a sysfs mounted in
//!   the wanted namespace (what `ip netns exec` does for a process).
//! - Channels and the RSS table use `SIOCETHTOOL` on a socket of the calling thread: always the
//!   caller's namespace.
//! - IRQs and their affinity (`/proc/interrupts`, `/proc/irq`) are global; the global flow table
//!   size (`/proc/sys/net/core/rps_sock_flow_entries`) exists only in the initial namespace.
//!
//! A library never changes global settings on its own: [`Steering::set_rps_cpus`] is the only
//! writer, called explicitly, and returns the previous mask so the caller can restore it.

mod irq;
mod report;

pub use irq::Irq;
pub use report::{Channels, QueueCounts, RssIndirection, RxQueue, SteeringReport};

use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::cpu::{CpuSet, CpuSetParseError};
use crate::iface::{IfName, IfSocket};

/// Why a steering fact could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    /// No interface of that name in the sysfs (or, for ioctls, the namespace) consulted.
    #[error("interface {name:?} not found under {root}")]
    NotFound {
        /// The interface asked for.
        name: String,
        /// The sysfs root consulted, or `SIOCETHTOOL` for the ioctls.
        root: String,
    },
    /// A name no interface can have.
    #[error("{name:?} is not a valid interface name")]
    InvalidName {
        /// The refused name.
        name: String,
    },
    /// The interface has no RX queue with that number.
    #[error("interface {name:?} has no RX queue {queue}")]
    NoQueue {
        /// The interface.
        name: String,
        /// The queue asked for.
        queue: usize,
    },
    /// A file could not be read (e.g. `rps_cpus` is absent on kernels without CONFIG_RPS).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the read returned.
        source: std::io::Error,
    },
    /// A file could not be written (EPERM without CAP_NET_ADMIN; EINVAL for CPUs that do not
    /// exist).
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// What the write returned.
        source: std::io::Error,
    },
    /// A CPU mask file did not hold a mask.
    #[error("{path} does not hold a CPU mask: {source}")]
    Mask {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        source: CpuSetParseError,
    },
    /// A number file did not hold a number.
    #[error("{path} does not hold a number: {text:?}")]
    Number {
        /// The file.
        path: PathBuf,
        /// What it held.
        text: String,
    },
    /// An ioctl failed for another reason than "the driver does not support it".
    #[error("{syscall} for interface {name:?} failed: {errno}")]
    Syscall {
        /// `socket`, `ioctl(ETHTOOL_GCHANNELS)`, ...
        syscall: &'static str,
        /// The interface.
        name: String,
        /// The error the kernel returned.
        errno: Errno,
    },
}

/// Reads (and, on request, writes) steering facts under a given sysfs and procfs root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steering {
    sys: PathBuf,
    proc: PathBuf,
}

impl Default for Steering {
    /// `/sys` and `/proc`: right for a process whose `/sys` was mounted in its own namespace.
    fn default() -> Steering {
        Steering::with_roots("/sys", "/proc")
    }
}

impl Steering {
    /// Facts under `/sys` and `/proc`.
    pub fn new() -> Steering {
        Steering::default()
    }

    /// Facts under other roots, e.g. a sysfs mounted inside the network namespace of interest.
    pub fn with_roots(sys: impl Into<PathBuf>, proc: impl Into<PathBuf>) -> Steering {
        Steering {
            sys: sys.into(),
            proc: proc.into(),
        }
    }

    /// `<sys>/class/net/<name>`, after checking the name and that the directory exists.
    fn iface_dir(&self, name: &str) -> Result<PathBuf, SteeringError> {
        IfName::new(name).ok_or_else(|| SteeringError::InvalidName {
            name: name.to_owned(),
        })?;
        let dir = self.sys.join("class/net").join(name);
        if !dir.is_dir() {
            return Err(SteeringError::NotFound {
                name: name.to_owned(),
                root: self.sys.display().to_string(),
            });
        }
        Ok(dir)
    }

    /// The `queues/rx-<queue>` directory, or [`SteeringError::NoQueue`].
    fn rx_dir(&self, name: &str, queue: usize) -> Result<PathBuf, SteeringError> {
        let dir = self.iface_dir(name)?.join(format!("queues/rx-{queue}"));
        if !dir.is_dir() {
            return Err(SteeringError::NoQueue {
                name: name.to_owned(),
                queue,
            });
        }
        Ok(dir)
    }

    /// Counts `rx-*` and `tx-*` under `queues/` (veth: 1 and 1 unless created with
    /// `numrxqueues`/`numtxqueues`).
    pub fn queue_counts(&self, name: &str) -> Result<QueueCounts, SteeringError> {
        let dir = self.iface_dir(name)?.join("queues");
        let entries = std::fs::read_dir(&dir).map_err(|source| SteeringError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut counts = QueueCounts { rx: 0, tx: 0 };
        for entry in entries.filter_map(Result::ok) {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if file.starts_with("rx-") {
                counts.rx += 1;
            } else if file.starts_with("tx-") {
                counts.tx += 1;
            }
        }
        Ok(counts)
    }

    /// The RPS mask of RX queue `queue`.
    pub fn rps_cpus(&self, name: &str, queue: usize) -> Result<CpuSet, SteeringError> {
        let path = self.rx_dir(name, queue)?.join("rps_cpus");
        let text = read(&path)?;
        CpuSet::parse_mask(&text).map_err(|source| SteeringError::Mask { path, source })
    }

    /// Sets the RPS mask of RX queue `queue` to `cpus` and returns the mask it replaced, so
    /// the caller can put it back. An empty set turns RPS off. Needs CAP_NET_ADMIN.
    pub fn set_rps_cpus(
        &self,
        name: &str,
        queue: usize,
        cpus: &CpuSet,
    ) -> Result<CpuSet, SteeringError> {
        let previous = self.rps_cpus(name, queue)?;
        let path = self.rx_dir(name, queue)?.join("rps_cpus");
        let value = cpus.to_mask();
        std::fs::write(&path, &value).map_err(|source| SteeringError::Write {
            path,
            value,
            source,
        })?;
        Ok(previous)
    }

    /// The RFS flow table size of RX queue `queue` (`rps_flow_cnt`).
    pub fn rps_flow_cnt(&self, name: &str, queue: usize) -> Result<u32, SteeringError> {
        read_number(&self.rx_dir(name, queue)?.join("rps_flow_cnt"))
    }

    /// The global RFS socket flow table size, `None` where the file does not exist (network
    /// namespaces other than the initial one; kernels without CONFIG_RPS).
    pub fn rps_sock_flow_entries(&self) -> Result<Option<u32>, SteeringError> {
        let path = self.proc.join("sys/net/core/rps_sock_flow_entries");
        if !path.exists() {
            return Ok(None);
        }
        read_number(&path).map(Some)
    }

    /// The interface's IRQs (MSI vectors and `/proc/interrupts` lines naming it or its device)
    /// with their affinity. Empty for virtual devices such as veth.
    pub fn irqs(&self, name: &str) -> Result<Vec<Irq>, SteeringError> {
        let dir = self.iface_dir(name)?;
        let path = self.proc.join("interrupts");
        let lines = irq::parse_interrupts(&read(&path)?);
        Ok(irq::interface_irqs(&dir, name, &lines)
            .into_iter()
            .map(|number| {
                let line = lines.iter().find(|l| l.number == number);
                Irq {
                    number,
                    description: line.map(|l| l.description.clone()).unwrap_or_default(),
                    counts: line.map(|l| l.counts.clone()).unwrap_or_default(),
                    affinity: irq::irq_cpus(&self.proc, number, "smp_affinity_list"),
                    effective_affinity: irq::irq_cpus(
                        &self.proc,
                        number,
                        "effective_affinity_list",
                    ),
                }
            })
            .collect())
    }

    /// Gathers every fact about `name` into one report.
    pub fn report(&self, name: &str) -> Result<SteeringReport, SteeringError> {
        let queues = self.queue_counts(name)?;
        let rx_queues = (0..queues.rx)
            .map(|index| {
                Ok(RxQueue {
                    index,
                    rps_cpus: self.rps_cpus(name, index)?,
                    rps_flow_cnt: self.rps_flow_cnt(name, index)?,
                })
            })
            .collect::<Result<_, SteeringError>>()?;
        Ok(SteeringReport {
            interface: name.to_owned(),
            queues,
            channels: channels(name)?,
            rx_queues,
            rps_sock_flow_entries: self.rps_sock_flow_entries()?,
            irqs: self.irqs(name)?,
            rss: rss_indirection(name)?,
        })
    }
}

/// Channel counts of `name` in the calling thread's namespace; `None` when the driver has none.
pub fn channels(name: &str) -> Result<Option<Channels>, SteeringError> {
    let (sock, ifname) = ethtool_target(name)?;
    match sock.channels(ifname) {
        Ok(c) => Ok(Some(Channels {
            rx: c.rx_count,
            tx: c.tx_count,
            other: c.other_count,
            combined: c.combined_count,
            max_rx: c.max_rx,
            max_tx: c.max_tx,
            max_other: c.max_other,
            max_combined: c.max_combined,
        })),
        Err(Errno::EOPNOTSUPP) => Ok(None),
        Err(errno) => Err(ethtool_error("ioctl(ETHTOOL_GCHANNELS)", name, errno)),
    }
}

/// The RSS indirection table of `name` in the calling thread's namespace.
pub fn rss_indirection(name: &str) -> Result<RssIndirection, SteeringError> {
    let (sock, ifname) = ethtool_target(name)?;
    match sock.rxfh_indir(ifname) {
        Ok(table) => Ok(RssIndirection::Table(table)),
        Err(errno @ Errno::EOPNOTSUPP) => Ok(RssIndirection::NotExposed { errno }),
        Err(errno) => Err(ethtool_error("ioctl(ETHTOOL_GRXFHINDIR)", name, errno)),
    }
}

fn ethtool_target(name: &str) -> Result<(IfSocket, IfName), SteeringError> {
    let ifname = IfName::new(name).ok_or_else(|| SteeringError::InvalidName {
        name: name.to_owned(),
    })?;
    let sock = IfSocket::open().map_err(|errno| SteeringError::Syscall {
        syscall: "socket(AF_INET)",
        name: name.to_owned(),
        errno,
    })?;
    Ok((sock, ifname))
}

fn ethtool_error(syscall: &'static str, name: &str, errno: Errno) -> SteeringError {
    if errno == Errno::ENODEV {
        SteeringError::NotFound {
            name: name.to_owned(),
            root: "SIOCETHTOOL".to_owned(),
        }
    } else {
        SteeringError::Syscall {
            syscall,
            name: name.to_owned(),
            errno,
        }
    }
}

fn read(path: &Path) -> Result<String, SteeringError> {
    std::fs::read_to_string(path).map_err(|source| SteeringError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_number(path: &Path) -> Result<u32, SteeringError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| SteeringError::Number {
        path: path.to_owned(),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_sysfs_is_read_and_written() {
        let root = tempfile::tempdir().expect("tempdir");
        let q = root.path().join("class/net/fake0/queues");
        for d in ["rx-0", "rx-1", "tx-0"] {
            std::fs::create_dir_all(q.join(d)).unwrap();
        }
        std::fs::write(q.join("rx-0/rps_cpus"), "00000000,00000003\n").unwrap();
        std::fs::write(q.join("rx-0/rps_flow_cnt"), "256\n").unwrap();
        std::fs::write(q.join("rx-1/rps_cpus"), "zz\n").unwrap();
        let s = Steering::with_roots(root.path(), root.path().join("proc"));

        assert_eq!(
            s.queue_counts("fake0").unwrap(),
            QueueCounts { rx: 2, tx: 1 }
        );
        assert_eq!(s.rps_cpus("fake0", 0).unwrap().to_string(), "0-1");
        assert_eq!(s.rps_flow_cnt("fake0", 0).unwrap(), 256);
        assert!(matches!(
            s.rps_cpus("fake0", 1),
            Err(SteeringError::Mask { .. })
        ));
        assert!(matches!(
            s.rps_cpus("fake0", 5),
            Err(SteeringError::NoQueue { queue: 5, .. })
        ));
        assert!(matches!(
            s.queue_counts("nope0"),
            Err(SteeringError::NotFound { .. })
        ));
        assert_eq!(s.rps_sock_flow_entries().unwrap(), None);

        let old = s.set_rps_cpus("fake0", 0, &CpuSet::single(5)).unwrap();
        assert_eq!(old.to_string(), "0-1");
        assert_eq!(
            std::fs::read_to_string(q.join("rx-0/rps_cpus")).unwrap(),
            "20"
        );
    }
}
