//! The relay's ingress classifier on an input interface, over rtnetlink: a `clsact` qdisc and
//! one direct-action `cls_bpf` filter running the classic program of
//! [`relay_rules::bpf::consume_program`], which drops the frames the relay's rules relay after
//! its packet sockets saw them.
//!
//! The messages are built and parsed by `netlink-packet-route`, whose tc types cover the qdisc,
//! the filter header and `cls_bpf`'s flags; the classic program itself (`TCA_BPF_OPS_LEN`,
//! `TCA_BPF_OPS`), which the crate has no variant for, goes in its generic attribute.
//!
//! The relay owns its filter by a tag: kind `bpf`, preference [`PRIORITY`] and handle
//! [`HANDLE`] on the ingress hook. A filter with that tag is the relay's, whoever installed it:
//! a run that crashed leaves one behind, and the next start finds it ([`Tc::sweep`]) and
//! replaces or removes it. One relay per network namespace owns the tag.

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use relay_rules::bpf::Program;

/// Preference of the relay's filter: high, so that the host's own ingress filters (tc numbers
/// those it picks from 49152 down) run before it.
pub const PRIORITY: u16 = 0xF652;
/// Handle of the relay's filter ("FRLY").
pub const HANDLE: u32 = 0x4652_4C59;

const ETH_P_ALL: u16 = 0x0003;
/// Room for one datagram of answers: the kernel fills a dump's datagrams to at most 32 KiB.
const RECEIVE_BUFFER: usize = 64 * 1024;
const TCA_BPF_OPS_LEN: u16 = 4;
const TCA_BPF_OPS: u16 = 5;
/// The `clsact` qdisc's handle, `ffff:0`.
const CLSACT_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// The ingress hook of a `clsact` (or `ingress`) qdisc, `ffff:fff2`.
const INGRESS: TcHandle = TcHandle {
    major: 0xffff,
    minor: TcHandle::MIN_INGRESS,
};
/// The egress hook of a `clsact` qdisc, `ffff:fff3`.
const EGRESS: TcHandle = TcHandle {
    major: 0xffff,
    minor: TcHandle::MIN_EGRESS,
};

/// Why a tc request failed.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// A system call on the netlink socket failed.
    #[error("netlink route socket: {what}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The error, with its errno.
        source: std::io::Error,
    },
    /// The kernel refused a request.
    #[error("{what} on interface index {ifindex}: {source}")]
    Refused {
        /// The request.
        what: &'static str,
        /// The interface.
        ifindex: u32,
        /// The kernel's errno.
        source: std::io::Error,
    },
    /// The kernel's answer did not parse.
    #[error("{what}: the kernel's answer does not parse: {reason}")]
    Answer {
        /// The request.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl TcError {
    /// The kernel's errno, for a refused request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            TcError::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// One tc filter on an ingress hook, as a dump tells of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressFilter {
    /// Its kind (`bpf`, `u32`, `flower`, ...).
    pub kind: String,
    /// Its preference.
    pub priority: u16,
    /// Its handle.
    pub handle: u32,
}

impl IngressFilter {
    /// Whether the tag says it is the relay's.
    pub fn is_relays(&self) -> bool {
        self.kind == "bpf" && self.priority == PRIORITY && self.handle == HANDLE
    }
}

/// A netlink route socket for tc requests, answered one at a time.
#[derive(Debug)]
pub struct Tc {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Tc {
    /// Opens the socket.
    pub fn open() -> Result<Self, TcError> {
        let failed = |what| move |source| TcError::Socket { what, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(failed("socket"))?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .map_err(failed("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(failed("connect"))?;
        Ok(Tc {
            socket,
            sequence: 0,
            buffer: vec![0u8; RECEIVE_BUFFER],
        })
    }

    /// Adds a `clsact` qdisc to `ifindex`; true if this call added it, false if the interface
    /// already had one (or an `ingress` qdisc, whose ingress hook serves as well).
    pub fn add_clsact(&mut self, ifindex: u32) -> Result<bool, TcError> {
        let message = RouteNetlinkMessage::NewQueueDiscipline(tc_message(
            ifindex,
            CLSACT_HANDLE,
            TcHandle::CLSACT,
            0,
            vec![TcAttribute::Kind("clsact".into())],
        ));
        match self.request(
            "adding a clsact qdisc",
            ifindex,
            message,
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(true),
            Err(error) if error.errno() == Some(libc::EEXIST) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Removes `ifindex`'s `clsact` qdisc, with every filter it still holds.
    pub fn remove_clsact(&mut self, ifindex: u32) -> Result<(), TcError> {
        let message = RouteNetlinkMessage::DelQueueDiscipline(tc_message(
            ifindex,
            CLSACT_HANDLE,
            TcHandle::CLSACT,
            0,
            vec![TcAttribute::Kind("clsact".into())],
        ));
        self.request("removing the clsact qdisc", ifindex, message, 0)
            .map(drop)
    }

    /// Installs the relay's filter with `program` on `ifindex`'s ingress hook, or replaces the
    /// program of the one there (atomically: every frame meets the old or the new program).
    pub fn replace_filter(&mut self, ifindex: u32, program: &Program) -> Result<(), TcError> {
        let count = u16::try_from(program.len()).map_err(|_| TcError::Answer {
            what: "installing the ingress filter",
            reason: format!("a program of {} instructions", program.len()),
        })?;
        let mut ops = Vec::with_capacity(program.len() * 8);
        for instruction in program.instructions() {
            ops.extend_from_slice(&instruction.code.to_ne_bytes());
            ops.push(instruction.jt);
            ops.push(instruction.jf);
            ops.extend_from_slice(&instruction.k.to_ne_bytes());
        }
        let options = vec![
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
            TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(
                TCA_BPF_OPS_LEN,
                count.to_ne_bytes().to_vec(),
            ))),
            TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(TCA_BPF_OPS, ops))),
        ];
        let message = RouteNetlinkMessage::NewTrafficFilter(tc_message(
            ifindex,
            TcHandle::from(HANDLE),
            INGRESS,
            filter_info(PRIORITY),
            vec![
                TcAttribute::Kind("bpf".into()),
                TcAttribute::Options(options),
            ],
        ));
        self.request(
            "installing the ingress filter",
            ifindex,
            message,
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Removes the relay's filter from `ifindex`; `Ok(false)` when there was none (or no
    /// interface with that index any more: the kernel removes its filters with it).
    pub fn remove_filter(&mut self, ifindex: u32) -> Result<bool, TcError> {
        let message = RouteNetlinkMessage::DelTrafficFilter(tc_message(
            ifindex,
            TcHandle::from(HANDLE),
            INGRESS,
            filter_info(PRIORITY),
            vec![TcAttribute::Kind("bpf".into())],
        ));
        match self.request("removing the ingress filter", ifindex, message, 0) {
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    error.errno(),
                    Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// The filters on `ifindex`'s ingress hook (none without a `clsact` or `ingress` qdisc).
    pub fn ingress_filters(&mut self, ifindex: u32) -> Result<Vec<IngressFilter>, TcError> {
        self.filters(ifindex, INGRESS)
    }

    /// Whether `ifindex` has filters other than the relay's, on either hook of its `clsact`.
    pub fn has_other_filters(&mut self, ifindex: u32) -> Result<bool, TcError> {
        let ingress = self.filters(ifindex, INGRESS)?;
        let egress = self.filters(ifindex, EGRESS)?;
        Ok(ingress
            .iter()
            .chain(&egress)
            .any(|filter| !filter.is_relays()))
    }

    /// Removes the relay's filter from every interface of the namespace that has one (left by a
    /// run that did not end cleanly); returns their indexes.
    pub fn sweep(&mut self) -> Result<Vec<u32>, TcError> {
        let message = RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default());
        let qdiscs = self.request("listing qdiscs", 0, message, NLM_F_DUMP)?;
        let mut hooked: Vec<u32> = qdiscs
            .into_iter()
            .filter_map(|message| match message {
                RouteNetlinkMessage::NewQueueDiscipline(qdisc)
                    if kind_of(&qdisc)
                        .is_some_and(|kind| kind == "clsact" || kind == "ingress") =>
                {
                    u32::try_from(qdisc.header.index).ok()
                }
                _ => None,
            })
            .collect();
        hooked.sort_unstable();
        hooked.dedup();
        let mut removed = Vec::new();
        for ifindex in hooked {
            let ours = self
                .ingress_filters(ifindex)?
                .iter()
                .any(IngressFilter::is_relays);
            if ours && self.remove_filter(ifindex)? {
                removed.push(ifindex);
            }
        }
        Ok(removed)
    }

    fn filters(&mut self, ifindex: u32, parent: TcHandle) -> Result<Vec<IngressFilter>, TcError> {
        let index = i32::try_from(ifindex).unwrap_or(i32::MAX);
        let mut message = TcMessage::with_index(index);
        message.header.parent = parent;
        let answers = self.request(
            "listing filters",
            ifindex,
            RouteNetlinkMessage::GetTrafficFilter(message),
            NLM_F_DUMP,
        );
        let answers = match answers {
            Ok(answers) => answers,
            // No such interface, or no qdisc with that hook: no filters.
            Err(error) if matches!(error.errno(), Some(libc::ENODEV | libc::EINVAL)) => {
                return Ok(Vec::new());
            }
            Err(error) => return Err(error),
        };
        Ok(answers
            .into_iter()
            .filter_map(|message| match message {
                // The first message of each preference announces the chain, without a handle.
                RouteNetlinkMessage::NewTrafficFilter(filter)
                    if u32::from(filter.header.handle) != 0 =>
                {
                    Some(IngressFilter {
                        kind: kind_of(&filter).unwrap_or_default().to_owned(),
                        priority: (filter.header.info >> 16) as u16,
                        handle: u32::from(filter.header.handle),
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Sends `message` and collects the answers: for a dump, every message until `NLMSG_DONE`;
    /// otherwise the acknowledgement (or the errno it carries).
    fn request(
        &mut self,
        what: &'static str,
        ifindex: u32,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, TcError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket
            .send(&bytes, 0)
            .map_err(|source| TcError::Socket {
                what: "send",
                source,
            })?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        loop {
            let buffer = &mut self.buffer[..];
            let len = match self.socket.recv(&mut &mut buffer[..], libc::MSG_TRUNC) {
                Ok(len) if len > buffer.len() => {
                    return Err(TcError::Answer {
                        what,
                        reason: format!("a datagram of {len} bytes, over {}", buffer.len()),
                    });
                }
                Ok(len) => len,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(TcError::Socket {
                        what: "recv",
                        source,
                    });
                }
            };
            let mut bytes = &buffer[..len];
            while !bytes.is_empty() {
                let header_len = bytes
                    .get(..4)
                    .map(|length| u32::from_ne_bytes([length[0], length[1], length[2], length[3]]))
                    .unwrap_or(0) as usize;
                if header_len < 16 || header_len > bytes.len() {
                    return Err(TcError::Answer {
                        what,
                        reason: format!("a message of {header_len} bytes in {}", bytes.len()),
                    });
                }
                let sequence_of = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
                let parsed =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..header_len]);
                bytes = &bytes[header_len.next_multiple_of(4).min(bytes.len())..];
                if sequence_of != sequence {
                    continue;
                }
                let payload = match parsed {
                    Ok(message) => message.payload,
                    // A message of a dump this crate cannot read (a foreign filter's option):
                    // skipped, the others are kept.
                    Err(error) if dump => {
                        log::debug!("{what}: skipping a message that does not parse: {error}");
                        continue;
                    }
                    Err(error) => {
                        return Err(TcError::Answer {
                            what,
                            reason: error.to_string(),
                        });
                    }
                };
                match payload {
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None if !dump => Ok(answers),
                            None => continue,
                            Some(code) => Err(TcError::Refused {
                                what,
                                ifindex,
                                source: std::io::Error::from_raw_os_error(-code.get()),
                            }),
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}

fn tc_message(
    ifindex: u32,
    handle: TcHandle,
    parent: TcHandle,
    info: u32,
    attributes: Vec<TcAttribute>,
) -> TcMessage {
    let mut message = TcMessage::with_index(i32::try_from(ifindex).unwrap_or(i32::MAX));
    message.header = TcHeader {
        handle,
        parent,
        info,
        ..message.header
    };
    message.attributes = attributes;
    message
}

/// `tcm_info` of a filter: its preference over the protocol it classifies, in network order.
fn filter_info(priority: u16) -> u32 {
    (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be())
}

fn kind_of(message: &TcMessage) -> Option<&str> {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            TcAttribute::Kind(kind) => Some(kind.as_str()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_is_tagged_for_every_protocol() {
        // tc shows it as "protocol all pref 63058 ... handle 0x46524c59".
        assert_eq!(filter_info(PRIORITY) >> 16, 0xF652);
        assert_eq!(
            u16::from_be(filter_info(PRIORITY) as u16),
            ETH_P_ALL,
            "the protocol is in network order"
        );
        assert!(
            IngressFilter {
                kind: "bpf".into(),
                priority: PRIORITY,
                handle: HANDLE
            }
            .is_relays()
        );
        assert!(
            !IngressFilter {
                kind: "u32".into(),
                priority: PRIORITY,
                handle: HANDLE
            }
            .is_relays()
        );
    }
}
