//! The facts one steering report gathers, as plain data.

use nix::errno::Errno;

use super::Irq;
use crate::cpu::CpuSet;

/// Numbers of queues an interface exposes in sysfs (`queues/rx-*`, `queues/tx-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Receive queues: the number of CPUs hardware RSS can spread over.
    pub rx: usize,
    /// Transmit queues.
    pub tx: usize,
}

/// Channel counts from the driver (`ETHTOOL_GCHANNELS`, `ethtool -l`): current and maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    /// RX-only channels in use.
    pub rx: u32,
    /// TX-only channels in use.
    pub tx: u32,
    /// Other (link, management) channels in use.
    pub other: u32,
    /// Combined RX+TX channels in use (most multiqueue NICs count here).
    pub combined: u32,
    /// Maximum RX-only channels.
    pub max_rx: u32,
    /// Maximum TX-only channels.
    pub max_tx: u32,
    /// Maximum other channels.
    pub max_other: u32,
    /// Maximum combined channels: `ethtool -L combined N` can raise `combined` up to this.
    pub max_combined: u32,
}

/// The RSS indirection table, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RssIndirection {
    /// Entry `i` is the RX queue that packets whose hash falls in bucket `i` go to.
    Table(Vec<u32>),
    /// The driver exposes no table (veth, tun, loopback and most virtual devices answer
    /// EOPNOTSUPP); the errno says what `ETHTOOL_GRXFHINDIR` returned.
    NotExposed {
        /// What the kernel answered.
        errno: Errno,
    },
}

/// RPS settings of one RX queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxQueue {
    /// The queue number (`rx-<index>`).
    pub index: usize,
    /// CPUs RPS re-steers this queue's packets to; empty means RPS is off for the queue.
    pub rps_cpus: CpuSet,
    /// Entries of this queue's RFS flow table (`rps_flow_cnt`); 0 means RFS is off.
    pub rps_flow_cnt: u32,
}

/// Everything known about how one interface's packets reach CPUs, gathered at one moment
/// (what `check-steering` reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteeringReport {
    /// The interface.
    pub interface: String,
    /// Queue counts from sysfs.
    pub queues: QueueCounts,
    /// Channel counts from the driver; `None` when it has none (veth).
    pub channels: Option<Channels>,
    /// RPS settings per RX queue, in queue order.
    pub rx_queues: Vec<RxQueue>,
    /// Global RFS socket flow table size; `None` outside the initial network namespace.
    pub rps_sock_flow_entries: Option<u32>,
    /// The interface's IRQs with their affinity; empty for virtual devices.
    pub irqs: Vec<Irq>,
    /// RSS indirection table, or why there is none.
    pub rss: RssIndirection,
}

impl SteeringReport {
    /// Whether any RX queue has RPS on (a non-empty `rps_cpus`).
    pub fn rps_enabled(&self) -> bool {
        self.rx_queues.iter().any(|q| !q.rps_cpus.is_empty())
    }
}
