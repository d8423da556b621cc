//! The IPv6 output socket ([`ipv6_socket`]), which a [`super::UdpBatch`] then sends through:
//! it carries what the output asks of every packet, the source address it is bound to, the hop
//! limit (`IPV6_UNICAST_HOPS` and `IPV6_MULTICAST_HOPS`, so a unicast and a multicast
//! destination both get it) and the traffic class (`IPV6_TCLASS`).

use crate::sys;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::AsFd;

/// What an IPv6 output socket is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6SocketOptions {
    /// The interface the datagrams leave by (`SO_BINDTODEVICE`).
    pub interface: String,
    /// The source address the socket is bound to; a link-local one is scoped to `interface`.
    pub source: Ipv6Addr,
    /// The hop limit of unicast and multicast datagrams alike.
    pub hop_limit: u8,
    /// The traffic class byte (DSCP in its upper six bits, ECN in the lower two); `None` keeps
    /// the kernel's 0.
    pub traffic_class: Option<u8>,
}

/// A call that failed while opening an IPv6 output socket.
#[derive(Debug, thiserror::Error)]
#[error("{call} for an IPv6 output socket from {from} on {interface}: {errno}")]
pub struct Ipv6SocketError {
    /// The call: `bind`, `setsockopt(IPV6_TCLASS)`, ...
    pub call: &'static str,
    /// The output interface.
    pub interface: String,
    /// The source address.
    pub from: Ipv6Addr,
    /// What the call returned.
    #[source]
    pub errno: io::Error,
}

/// A non-blocking UDP socket bound to `options.source` on `options.interface`, with its hop
/// limit and traffic class set, that sends its own multicast back to no local listener.
pub fn ipv6_socket(options: &Ipv6SocketOptions) -> Result<UdpSocket, Ipv6SocketError> {
    let fail = |call: &'static str| {
        move |errno: io::Error| Ipv6SocketError {
            call,
            interface: options.interface.clone(),
            from: options.source,
            errno,
        }
    };
    // A link-local source means nothing without the link it belongs to.
    let scope = if options.source.is_unicast_link_local() {
        crate::iface::index_of(&options.interface)
            .map_err(|error| fail("if_nametoindex")(io::Error::other(error)))?
    } else {
        0
    };
    let socket =
        UdpSocket::bind(SocketAddrV6::new(options.source, 0, 0, scope)).map_err(fail("bind"))?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(&options.interface),
    )
    .map_err(|errno| fail("setsockopt(SO_BINDTODEVICE)")(errno.into()))?;
    let set = |call: &'static str, name: libc::c_int, value: libc::c_int| {
        sys::set_option(socket.as_fd(), libc::IPPROTO_IPV6, name, &value)
            .map_err(|errno| fail(call)(errno.into()))
    };
    let hops = libc::c_int::from(options.hop_limit);
    set(
        "setsockopt(IPV6_UNICAST_HOPS)",
        libc::IPV6_UNICAST_HOPS,
        hops,
    )?;
    set(
        "setsockopt(IPV6_MULTICAST_HOPS)",
        libc::IPV6_MULTICAST_HOPS,
        hops,
    )?;
    set(
        "setsockopt(IPV6_MULTICAST_LOOP)",
        libc::IPV6_MULTICAST_LOOP,
        0,
    )?;
    if let Some(class) = options.traffic_class {
        set(
            "setsockopt(IPV6_TCLASS)",
            libc::IPV6_TCLASS,
            libc::c_int::from(class),
        )?;
    }
    socket
        .set_nonblocking(true)
        .map_err(fail("fcntl(O_NONBLOCK)"))?;
    Ok(socket)
}
