//! Interfaces followed through netlink: a thread subscribed to the kernel's link and IPv4
//! address notifications (`RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`) turns each into a small typed
//! [`LinkEvent`] for the supervisor's loop, which alone changes its state.
//!
//! The messages are parsed by `netlink-packet-route`, not by hand: its types follow the
//! kernel's attribute layout, and it skips attributes it does not know instead of failing.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc::Sender;

/// Receive buffer of the netlink socket: a burst of notifications (hundreds of VLANs created
/// at once) must fit while the thread is busy; past it the kernel drops them with ENOBUFS,
/// which [`LinkEvent::Lost`] reports.
const RECEIVE_BUFFER: usize = 1 << 20;

/// What the kernel said about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LinkEvent {
    /// `RTM_NEWLINK`: the interface exists, as described (new, or its flags, MTU, hardware
    /// address or name changed).
    Link(LinkFacts),
    /// `RTM_DELLINK`: the interface is gone.
    Deleted {
        /// Its kernel index.
        index: u32,
        /// Its name, as the message gave it (empty if it gave none).
        name: String,
    },
    /// `RTM_NEWADDR` / `RTM_DELADDR` for an IPv4 address.
    Address {
        /// The kernel index of the interface.
        index: u32,
        /// The local address.
        address: Ipv4Addr,
        /// Added (true) or removed.
        added: bool,
    },
    /// Notifications were lost (the socket's buffer overflowed): the interfaces must be read
    /// again.
    Lost,
}

/// The link facts an `RTM_NEWLINK` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LinkFacts {
    /// Kernel index.
    pub(super) index: u32,
    /// Name (empty if the message had none).
    pub(super) name: String,
    /// Administratively up (`IFF_UP`).
    pub(super) up: bool,
    /// Operationally up (`IFF_RUNNING`: up with a carrier), the state in which frames flow.
    pub(super) running: bool,
    /// MTU, if the message said.
    pub(super) mtu: Option<u32>,
    /// Hardware address, if it has an Ethernet one.
    pub(super) mac: Option<[u8; 6]>,
}

/// Why interfaces cannot be followed.
#[derive(Debug, thiserror::Error)]
pub(super) enum LinksError {
    /// A system call on the netlink socket failed.
    #[error("netlink route socket: {what}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The error, with its errno.
        source: std::io::Error,
    },
}

/// Subscribes to link and IPv4 address notifications and starts a thread that sends them to
/// `events`, converted by `wrap`. The subscription is made before this returns, so nothing that
/// happens afterwards is missed; the thread ends when `events` is closed.
pub(super) fn follow<E: Send + 'static>(
    events: Sender<E>,
    wrap: fn(LinkEvent) -> E,
) -> Result<(), LinksError> {
    let socket = subscribe()?;
    std::thread::Builder::new()
        .name("netlink".into())
        .spawn(move || read_events(&socket, &events, wrap))
        .map(drop)
        .map_err(|source| LinksError::Socket {
            what: "starting its thread",
            source,
        })
}

fn subscribe() -> Result<Socket, LinksError> {
    let failed = |what| move |source| LinksError::Socket { what, source };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(failed("socket"))?;
    socket
        .bind(&SocketAddr::new(0, 0))
        .map_err(failed("bind"))?;
    // A smaller buffer than asked for is not fatal: a burst past it is reported as Lost.
    if let Err(error) = socket.set_rx_buf_sz(RECEIVE_BUFFER) {
        log::debug!("netlink: SO_RCVBUF {RECEIVE_BUFFER}: {error}");
    }
    for group in [libc::RTNLGRP_LINK, libc::RTNLGRP_IPV4_IFADDR] {
        socket
            .add_membership(group)
            .map_err(failed("NETLINK_ADD_MEMBERSHIP"))?;
    }
    Ok(socket)
}

fn read_events<E>(socket: &Socket, events: &Sender<E>, wrap: fn(LinkEvent) -> E) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let received = socket.recv(&mut &mut buffer[..], 0);
        let batch = match received {
            Ok(len) => parse(&buffer[..len.min(buffer.len())]),
            Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => vec![LinkEvent::Lost],
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                log::error!(
                    "netlink route socket: recv: {error}; interfaces are no longer followed"
                );
                return;
            }
        };
        for event in batch {
            if events.send(wrap(event)).is_err() {
                return;
            }
        }
    }
}

/// The events in one datagram from the route socket; a message that does not parse is
/// skipped (logged), the others are kept.
pub(super) fn parse(mut bytes: &[u8]) -> Vec<LinkEvent> {
    let mut events = Vec::new();
    while !bytes.is_empty() {
        let message = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            Ok(message) => message,
            Err(error) => {
                log::warn!("netlink: a route message does not parse: {error}");
                break;
            }
        };
        let len = message.header.length as usize;
        match message.payload {
            NetlinkPayload::InnerMessage(inner) => events.extend(event_of(inner)),
            NetlinkPayload::Overrun(_) => events.push(LinkEvent::Lost),
            _ => {}
        }
        // Messages are aligned to 4 bytes; a length of 0 would never advance.
        let next = len.next_multiple_of(4);
        if len == 0 || next > bytes.len() {
            break;
        }
        bytes = &bytes[next..];
    }
    events
}

fn event_of(message: RouteNetlinkMessage) -> Option<LinkEvent> {
    match message {
        RouteNetlinkMessage::NewLink(link) => Some(LinkEvent::Link(link_facts(&link))),
        RouteNetlinkMessage::DelLink(link) => {
            let facts = link_facts(&link);
            Some(LinkEvent::Deleted {
                index: facts.index,
                name: facts.name,
            })
        }
        RouteNetlinkMessage::NewAddress(address) => address_event(&address, true),
        RouteNetlinkMessage::DelAddress(address) => address_event(&address, false),
        _ => None,
    }
}

fn link_facts(link: &LinkMessage) -> LinkFacts {
    let mut facts = LinkFacts {
        index: link.header.index,
        name: String::new(),
        up: link.header.flags.contains(LinkFlags::Up),
        running: link.header.flags.contains(LinkFlags::Running),
        mtu: None,
        mac: None,
    };
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(name) => facts.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => facts.mtu = Some(*mtu),
            LinkAttribute::Address(bytes) => facts.mac = <[u8; 6]>::try_from(&bytes[..]).ok(),
            _ => {}
        }
    }
    facts
}

fn address_event(message: &AddressMessage, added: bool) -> Option<LinkEvent> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a point-to-point
    // link and the same as IFA_LOCAL otherwise.
    let local = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            AddressAttribute::Local(IpAddr::V4(address)) => Some(*address),
            _ => None,
        });
    let address = local.or_else(|| {
        message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Address(IpAddr::V4(address)) => Some(*address),
                _ => None,
            })
    })?;
    Some(LinkEvent::Address {
        index: message.header.index,
        address,
        added,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::AddressFamily;

    fn bytes_of(messages: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for inner in messages {
            let mut message =
                NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
            message.finalize();
            let mut buffer = vec![0u8; message.buffer_len()];
            message.serialize(&mut buffer);
            buffer.resize(buffer.len().next_multiple_of(4), 0);
            out.extend(buffer);
        }
        out
    }

    fn link(index: u32, name: &str, flags: LinkFlags, mtu: u32) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = flags;
        link.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 7]),
        ];
        link
    }

    #[test]
    fn link_messages_become_typed_events() {
        let running = LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp;
        let bytes = bytes_of(vec![
            RouteNetlinkMessage::NewLink(link(7, "in0", running, 1500)),
            RouteNetlinkMessage::NewLink(link(7, "in0", LinkFlags::Up, 9000)),
            RouteNetlinkMessage::DelLink(link(7, "in0", LinkFlags::empty(), 9000)),
        ]);
        let facts = |up, running, mtu| {
            LinkEvent::Link(LinkFacts {
                index: 7,
                name: "in0".into(),
                up,
                running,
                mtu: Some(mtu),
                mac: Some([2, 0, 0, 0, 0, 7]),
            })
        };
        assert_eq!(
            parse(&bytes),
            vec![
                facts(true, true, 1500),
                facts(true, false, 9000),
                LinkEvent::Deleted {
                    index: 7,
                    name: "in0".into()
                },
            ]
        );
    }

    #[test]
    fn ipv4_address_messages_name_the_local_address() {
        let address = |index, local: [u8; 4], peer: Option<[u8; 4]>| {
            let mut message = AddressMessage::default();
            message.header.family = AddressFamily::Inet;
            message.header.prefix_len = 24;
            message.header.index = index;
            if let Some(peer) = peer {
                message
                    .attributes
                    .push(AddressAttribute::Address(IpAddr::from(peer)));
            }
            message
                .attributes
                .push(AddressAttribute::Local(IpAddr::from(local)));
            message
        };
        let bytes = bytes_of(vec![
            RouteNetlinkMessage::NewAddress(address(3, [10, 0, 0, 1], Some([10, 0, 0, 2]))),
            RouteNetlinkMessage::DelAddress(address(4, [10, 1, 0, 1], None)),
        ]);
        assert_eq!(
            parse(&bytes),
            vec![
                LinkEvent::Address {
                    index: 3,
                    address: Ipv4Addr::new(10, 0, 0, 1),
                    added: true
                },
                LinkEvent::Address {
                    index: 4,
                    address: Ipv4Addr::new(10, 1, 0, 1),
                    added: false
                },
            ]
        );
    }

    #[test]
    fn garbage_and_other_messages_give_no_event() {
        assert_eq!(parse(&[0xff; 7]), vec![]);
        assert_eq!(parse(&[0u8; 64]), vec![]);
        let mut truncated = bytes_of(vec![RouteNetlinkMessage::NewLink(link(
            1,
            "x",
            LinkFlags::Up,
            1500,
        ))]);
        truncated.truncate(truncated.len() - 3);
        assert_eq!(parse(&truncated), vec![]);
        let route = bytes_of(vec![RouteNetlinkMessage::NewRoute(Default::default())]);
        assert_eq!(parse(&route), vec![]);
    }
}
