//! Where a worker's output frames go: a transmit ring per output interface and a batched UDP
//! socket per socket output, kicked together once per batch of received frames.

use super::datapath::{Outputs, Written};
use crate::config::RingSection;
use crate::rings;
use fanout_core::udp_batch::UdpBatch;
use fanout_core::{TxRing, TxRingBuilder};
use relay_rules::table::CompiledOutput;
use relay_rules::{Interfaces, RewriteError};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

/// Datagrams queued per socket output before a `sendmmsg`.
const SOCKET_BATCH: usize = 64;
/// Largest UDP payload a socket output carries.
const MAX_PAYLOAD: usize = 65_507;

/// A socket output's socket, shared by every output with the same interface, source, TTL and DSCP.
struct SocketOut {
    key: (u32, Ipv4Addr, u8, Option<u8>),
    batch: UdpBatch,
}

/// Transmit rings and socket batches: the [`Outputs`] of a worker.
#[derive(Default)]
pub(super) struct Sinks {
    rings: Vec<(u32, TxRing)>,
    sockets: Vec<SocketOut>,
    /// Datagrams the kernel refused in `sendmmsg` since the data path last counted them.
    pub(super) socket_failures: usize,
    /// `sendmmsg` calls made.
    sendmmsg_calls: u64,
}

impl Sinks {
    /// Opens what `output` needs, unless an earlier output already did.
    pub(super) fn open(
        &mut self,
        output: &CompiledOutput,
        interfaces: &Interfaces,
        ring: &RingSection,
    ) -> Result<(), String> {
        let ifindex = output.ifindex();
        let name = interfaces
            .by_index(ifindex)
            .map(|facts| facts.name.clone())
            .ok_or_else(|| {
                format!("output interface #{ifindex} is not among the interfaces handed over")
            })?;
        match output {
            CompiledOutput::Ring { .. } => {
                if self.rings.iter().any(|(index, _)| *index == ifindex) {
                    return Ok(());
                }
                let ring = TxRingBuilder::new(name.as_str())
                    .geometry(rings::tx_geometry(ring))
                    .qdisc_bypass(ring.qdisc_bypass)
                    .linear(ring.tx_linear && TxRingBuilder::linear_supported())
                    .dont_fork(true)
                    .build()
                    .map_err(|error| format!("transmit ring on {name}: {error}"))?;
                self.rings.push((ifindex, ring));
            }
            CompiledOutput::Socket {
                source, ttl, dscp, ..
            } => {
                let key = (ifindex, *source, *ttl, *dscp);
                if self.sockets.iter().any(|socket| socket.key == key) {
                    return Ok(());
                }
                let socket = output_socket(&name, *source, *ttl, *dscp)
                    .map_err(|error| format!("socket output on {name} from {source}: {error}"))?;
                self.sockets.push(SocketOut {
                    key,
                    batch: UdpBatch::new(
                        socket,
                        SOCKET_BATCH,
                        MAX_PAYLOAD.min(ring.frame_size as usize * 32),
                    ),
                });
            }
        }
        Ok(())
    }

    /// Kicks every transmit ring holding unsent frames and sends every queued datagram.
    pub(super) fn flush(&mut self) {
        for (_, ring) in &mut self.rings {
            // A failed kick leaves the frames committed; the next kick sends them.
            let _ = ring.flush();
        }
        for socket in &mut self.sockets {
            if socket.batch.is_empty() {
                continue;
            }
            self.sendmmsg_calls += 1;
            let flushed = socket.batch.flush();
            self.socket_failures += flushed.failed;
        }
    }

    /// Frames refused by the kernel on the transmit rings (TP_STATUS_WRONG_FORMAT).
    pub(super) fn wrong_format(&self) -> u64 {
        self.rings
            .iter()
            .map(|(_, ring)| ring.counters().wrong_format)
            .sum()
    }

    /// Transmit kicks (`send`) and `sendmmsg` calls made so far: the worker's syscalls per
    /// batch of output.
    pub(super) fn syscalls(&self) -> (u64, u64) {
        let kicks = self
            .rings
            .iter()
            .map(|(_, ring)| ring.counters().kicks)
            .sum();
        (kicks, self.sendmmsg_calls)
    }
}

impl Outputs for Sinks {
    #[inline]
    fn write_frame<F>(&mut self, ifindex: u32, write: F) -> Written
    where
        F: FnOnce(&mut [u8]) -> Result<usize, RewriteError>,
    {
        let Some((_, ring)) = self.rings.iter_mut().find(|(index, _)| *index == ifindex) else {
            return Written::RingFull;
        };
        let Some(mut slot) = ring.reserve() else {
            return Written::RingFull;
        };
        match write(slot.buffer()) {
            Ok(len) => {
                slot.commit(len);
                Written::Queued
            }
            Err(_) => Written::Refused,
        }
    }

    fn queue(
        &mut self,
        output: &CompiledOutput,
        destination: SocketAddrV4,
        payload: &[u8],
    ) -> bool {
        let CompiledOutput::Socket {
            ifindex,
            source,
            ttl,
            dscp,
            ..
        } = output
        else {
            return false;
        };
        let key = (*ifindex, *source, *ttl, *dscp);
        let Some(socket) = self.sockets.iter_mut().find(|socket| socket.key == key) else {
            return false;
        };
        if socket.batch.push(destination, payload).is_ok() {
            return true;
        }
        self.sendmmsg_calls += 1;
        let flushed = socket.batch.flush();
        self.socket_failures += flushed.failed;
        socket.batch.push(destination, payload).is_ok()
    }
}

/// A UDP socket sending from `source` out of interface `name` with the output's TTL and DSCP.
fn output_socket(
    name: &str,
    source: Ipv4Addr,
    ttl: u8,
    dscp: Option<u8>,
) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = UdpSocket::bind((source, 0))?;
    setsockopt(
        &socket,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(name),
    )?;
    socket.set_ttl(u32::from(ttl))?;
    socket.set_multicast_ttl_v4(u32::from(ttl))?;
    socket.set_multicast_loop_v4(false)?;
    if let Some(dscp) = dscp {
        setsockopt(&socket, sockopt::Ipv4Tos, &(i32::from(dscp) << 2))?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}
