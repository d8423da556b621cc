//! The packet socket: an `AF_PACKET`/`SOCK_RAW` descriptor, its interface binding and the options
//! that may be set at any time.
//!
//! Sockets are opened with protocol 0 so they receive nothing until [`PacketSocket::bind`] names
//! an interface and a non-zero protocol: options and rings set up in between never see a frame
//! that predates them. Options that must precede a ring (version, reserve, loss) are not offered
//! here; the ring builders in [`crate::ring`] set them in the one order the kernel accepts.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType};

use crate::sys;

/// An EtherType in host byte order, as passed to `bind` (`sll_protocol`).
///
/// The protocol decides which frames the kernel hands to the socket: [`Protocol::ALL`] takes
/// every frame, [`Protocol::NONE`] none (useful for transmit-only sockets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Protocol(pub u16);

impl Protocol {
    /// Receive nothing: the socket is attached to the interface for sending only.
    pub const NONE: Self = Self(0);
    /// Every frame (`ETH_P_ALL`).
    pub const ALL: Self = Self(0x0003);
    /// IPv4 (`ETH_P_IP`).
    pub const IPV4: Self = Self(0x0800);
    /// ARP (`ETH_P_ARP`).
    pub const ARP: Self = Self(0x0806);
    /// IPv6 (`ETH_P_IPV6`).
    pub const IPV6: Self = Self(0x86dd);
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// Failures of the packet socket itself, each naming the syscall, the option and the interface.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// `socket(AF_PACKET, SOCK_RAW, 0)` failed; EPERM means CAP_NET_RAW is missing.
    #[error("socket(AF_PACKET, SOCK_RAW, 0) failed: {errno} (packet sockets need CAP_NET_RAW)")]
    Open {
        /// The errno of `socket(2)`.
        errno: Errno,
    },
    /// No interface of that name exists in the socket's network namespace.
    #[error(
        "interface {name:?} does not exist in this network namespace (if_nametoindex: {errno})"
    )]
    NoSuchInterface {
        /// The name asked for.
        name: String,
        /// The errno of `if_nametoindex(3)`, usually ENODEV.
        errno: Errno,
    },
    /// `bind(2)` to an interface failed (ENODEV: gone; ENETDOWN: down; EINVAL: bad protocol).
    #[error("bind(AF_PACKET) to interface {interface} with protocol {protocol} failed: {errno}")]
    Bind {
        /// Interface name, or `#index` when only the index is known.
        interface: String,
        /// The protocol asked for.
        protocol: Protocol,
        /// The errno of `bind(2)`.
        errno: Errno,
    },
    /// A `setsockopt(2)` failed.
    #[error("setsockopt({option}) on packet socket ({interface}) failed: {errno}")]
    SetOption {
        /// The option's C name, e.g. `PACKET_ADD_MEMBERSHIP`.
        option: &'static str,
        /// The bound interface, or `unbound`.
        interface: String,
        /// The errno of `setsockopt(2)`.
        errno: Errno,
    },
    /// A `getsockopt(2)` failed.
    #[error("getsockopt({option}) on packet socket ({interface}) failed: {errno}")]
    GetOption {
        /// The option's C name.
        option: &'static str,
        /// The bound interface, or `unbound`.
        interface: String,
        /// The errno of `getsockopt(2)`.
        errno: Errno,
    },
    /// `send(2)`/`recv(2)` on the socket failed.
    #[error("{syscall} on packet socket ({interface}) failed: {errno}")]
    Io {
        /// `send` or `recv`.
        syscall: &'static str,
        /// The bound interface, or `unbound`.
        interface: String,
        /// The errno.
        errno: Errno,
    },
}

/// Which extra link-layer addresses an interface accepts on behalf of this socket
/// (`PACKET_ADD_MEMBERSHIP`); the kernel drops the membership when the socket closes, so a
/// crashed process never leaves an interface promiscuous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMembership {
    /// Every frame on the wire (`PACKET_MR_PROMISC`).
    Promiscuous,
    /// Every multicast frame (`PACKET_MR_ALLMULTI`).
    AllMulticast,
    /// One multicast MAC address (`PACKET_MR_MULTICAST`).
    Multicast([u8; 6]),
}

/// Where receive timestamps come from (`PACKET_TIMESTAMP`); software is the kernel's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampSource {
    /// The kernel's clock when the frame was received.
    Software,
    /// The NIC's raw hardware clock, where the driver provides one (falls back to software).
    RawHardware,
}

/// Where a socket is bound; kept for error messages and hand-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) interface: String,
    pub(crate) ifindex: u32,
    pub(crate) protocol: Protocol,
}

/// An `AF_PACKET`/`SOCK_RAW` socket without a ring.
///
/// Use it to send or receive single frames with `send`/`recv`, or let the ring builders own one.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    binding: Option<Binding>,
    /// The interface a not-yet-bound socket is being set up for, for error messages.
    intended: Option<String>,
}

/// Resolves an interface name in the calling thread's network namespace.
pub(crate) fn interface_index(name: &str) -> Result<u32, SocketError> {
    nix::net::if_::if_nametoindex(name).map_err(|errno| SocketError::NoSuchInterface {
        name: name.to_owned(),
        errno,
    })
}

impl PacketSocket {
    /// Opens a packet socket with protocol 0 (it receives nothing until bound) and `O_CLOEXEC`.
    pub fn open() -> Result<Self, SocketError> {
        let fd = nix::sys::socket::socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|errno| SocketError::Open { errno })?;
        Ok(Self {
            fd,
            binding: None,
            intended: None,
        })
    }

    /// Wraps an existing packet socket descriptor, e.g. one received from another process.
    pub(crate) fn from_parts(fd: OwnedFd, binding: Option<Binding>) -> Self {
        Self {
            fd,
            binding,
            intended: None,
        }
    }

    /// Names the interface this socket is being set up for, so errors before `bind` name it.
    pub(crate) fn intended_for(mut self, interface: &str) -> Self {
        self.intended = Some(interface.to_owned());
        self
    }

    /// Binds to the interface `name` and starts receiving frames of `protocol`.
    pub fn bind(&mut self, name: &str, protocol: Protocol) -> Result<(), SocketError> {
        let ifindex = interface_index(name)?;
        self.bind_resolved(ifindex, name.to_owned(), protocol)
    }

    /// Binds to the interface with index `ifindex`.
    pub fn bind_index(&mut self, ifindex: u32, protocol: Protocol) -> Result<(), SocketError> {
        let name = nix::net::if_::if_indextoname(ifindex)
            .ok()
            .and_then(|n| n.into_string().ok())
            .unwrap_or_else(|| format!("#{ifindex}"));
        self.bind_resolved(ifindex, name, protocol)
    }

    pub(crate) fn bind_resolved(
        &mut self,
        ifindex: u32,
        interface: String,
        protocol: Protocol,
    ) -> Result<(), SocketError> {
        sys::bind_packet(self.fd.as_fd(), ifindex, protocol.0).map_err(|errno| {
            SocketError::Bind {
                interface: interface.clone(),
                protocol,
                errno,
            }
        })?;
        self.binding = Some(Binding {
            interface,
            ifindex,
            protocol,
        });
        Ok(())
    }

    /// The interface name for messages: the bound one, or `unbound`.
    pub fn interface_label(&self) -> String {
        match (&self.binding, &self.intended) {
            (Some(binding), _) => binding.interface.clone(),
            (None, Some(name)) => format!("{name} (not yet bound)"),
            (None, None) => "unbound".to_owned(),
        }
    }

    /// The bound interface index, if bound.
    pub fn ifindex(&self) -> Option<u32> {
        self.binding.as_ref().map(|b| b.ifindex)
    }

    /// The bound protocol, if bound.
    pub fn protocol(&self) -> Option<Protocol> {
        self.binding.as_ref().map(|b| b.protocol)
    }

    pub(crate) fn binding(&self) -> Option<&Binding> {
        self.binding.as_ref()
    }

    /// Sets an integer option at level `SOL_PACKET`.
    pub(crate) fn set_packet_int(
        &self,
        option: &'static str,
        name: libc::c_int,
        value: libc::c_int,
    ) -> Result<(), SocketError> {
        self.set_packet_option(option, name, &value)
    }

    pub(crate) fn set_packet_option<T: sys::OptionValue>(
        &self,
        option: &'static str,
        name: libc::c_int,
        value: &T,
    ) -> Result<(), SocketError> {
        sys::set_option(self.fd.as_fd(), libc::SOL_PACKET, name, value).map_err(|errno| {
            SocketError::SetOption {
                option,
                interface: self.interface_label(),
                errno,
            }
        })
    }

    pub(crate) fn get_packet_option<T: sys::OptionValue>(
        &self,
        option: &'static str,
        name: libc::c_int,
    ) -> Result<(T, usize), SocketError> {
        sys::get_option(self.fd.as_fd(), libc::SOL_PACKET, name).map_err(|errno| {
            SocketError::GetOption {
                option,
                interface: self.interface_label(),
                errno,
            }
        })
    }

    /// Takes the error the kernel latched on the socket (`SO_ERROR`, which clears it), if any.
    ///
    /// The kernel latches ENETDOWN when the bound interface goes down, and `poll(2)` reports
    /// POLLERR for as long as an error is latched; a ring socket is never read with `recv`, so
    /// nothing else clears it, and a loop that polls the socket without taking the error spins.
    pub fn take_error(&self) -> Result<Option<Errno>, SocketError> {
        let pending = nix::sys::socket::getsockopt(self, nix::sys::socket::sockopt::SocketError)
            .map_err(|errno| SocketError::GetOption {
                option: "SO_ERROR",
                interface: self.interface_label(),
                errno,
            })?;
        Ok((pending != 0).then(|| Errno::from_raw(pending)))
    }

    /// Drops frames this host sends (`PACKET_IGNORE_OUTGOING`), which a packet socket otherwise
    /// sees as `PACKET_OUTGOING`; a relay sending on its own input needs this.
    pub fn set_ignore_outgoing(&self, ignore: bool) -> Result<(), SocketError> {
        self.set_packet_int(
            "PACKET_IGNORE_OUTGOING",
            libc::PACKET_IGNORE_OUTGOING,
            ignore.into(),
        )
    }

    /// Skips the qdisc layer on send (`PACKET_QDISC_BYPASS`): faster, but frames are not seen by
    /// other packet sockets and the qdisc gives no backpressure.
    pub fn set_qdisc_bypass(&self, bypass: bool) -> Result<(), SocketError> {
        self.set_packet_int(
            "PACKET_QDISC_BYPASS",
            libc::PACKET_QDISC_BYPASS,
            bypass.into(),
        )
    }

    /// Puts a [`VnetHeader`](crate::VnetHeader) in front of every frame this socket receives
    /// (and expects one in front of every frame it sends) (`PACKET_VNET_HDR`): the only way a
    /// capture learns that a frame still carries several UDP datagrams the kernel will split
    /// later, and where they begin ([`VnetHeader::udp_segment_size`](crate::VnetHeader::udp_segment_size)).
    /// [`PacketSocket::try_recv`] then returns the header's [`VnetHeader::LEN`](crate::VnetHeader::LEN)
    /// bytes and the frame after them. A kernel that cannot describe a frame's offloads this way
    /// fails that `recv` with `EINVAL`.
    pub fn set_vnet_header(&self, on: bool) -> Result<(), SocketError> {
        self.set_packet_int("PACKET_VNET_HDR", crate::vnet::PACKET_VNET_HDR, on.into())
    }

    /// Chooses the receive timestamp source (`PACKET_TIMESTAMP`).
    pub fn set_timestamp_source(&self, source: TimestampSource) -> Result<(), SocketError> {
        let flags = match source {
            TimestampSource::Software => 0,
            TimestampSource::RawHardware => libc::SOF_TIMESTAMPING_RAW_HARDWARE as libc::c_int,
        };
        self.set_packet_int("PACKET_TIMESTAMP", libc::PACKET_TIMESTAMP, flags)
    }

    fn membership_request(
        &self,
        membership: LinkMembership,
    ) -> Result<libc::packet_mreq, SocketError> {
        let ifindex = self.ifindex().ok_or_else(|| SocketError::SetOption {
            option: "PACKET_ADD_MEMBERSHIP",
            interface: "unbound".to_owned(),
            errno: Errno::ENODEV,
        })?;
        let mut request = libc::packet_mreq {
            mr_ifindex: i32::try_from(ifindex).unwrap_or(i32::MAX),
            mr_type: 0,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        let mr_type = match membership {
            LinkMembership::Promiscuous => libc::PACKET_MR_PROMISC,
            LinkMembership::AllMulticast => libc::PACKET_MR_ALLMULTI,
            LinkMembership::Multicast(mac) => {
                request.mr_alen = 6;
                request.mr_address[..6].copy_from_slice(&mac);
                libc::PACKET_MR_MULTICAST
            }
        };
        request.mr_type = u16::try_from(mr_type).expect("PACKET_MR_* constants are 0..=3");
        Ok(request)
    }

    /// Adds a membership on the bound interface (`PACKET_ADD_MEMBERSHIP`); it lasts as long as
    /// the socket.
    pub fn add_membership(&self, membership: LinkMembership) -> Result<(), SocketError> {
        let request = self.membership_request(membership)?;
        self.set_packet_option(
            "PACKET_ADD_MEMBERSHIP",
            libc::PACKET_ADD_MEMBERSHIP,
            &request,
        )
    }

    /// Removes a membership added with [`PacketSocket::add_membership`].
    pub fn drop_membership(&self, membership: LinkMembership) -> Result<(), SocketError> {
        let request = self.membership_request(membership)?;
        self.set_packet_option(
            "PACKET_DROP_MEMBERSHIP",
            libc::PACKET_DROP_MEMBERSHIP,
            &request,
        )
    }

    /// Sends one frame (Ethernet header included) on the bound interface.
    pub fn send(&self, frame: &[u8]) -> Result<usize, SocketError> {
        nix::sys::socket::send(
            std::os::fd::AsRawFd::as_raw_fd(&self.fd),
            frame,
            nix::sys::socket::MsgFlags::empty(),
        )
        .map_err(|errno| SocketError::Io {
            syscall: "send",
            interface: self.interface_label(),
            errno,
        })
    }

    /// Receives one frame without blocking; `Ok(None)` when none is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>, SocketError> {
        match nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&self.fd),
            buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => Ok(Some(n)),
            Err(Errno::EAGAIN) => Ok(None),
            Err(errno) => Err(SocketError::Io {
                syscall: "recv",
                interface: self.interface_label(),
                errno,
            }),
        }
    }

    /// Gives up the descriptor.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_displays_as_hex_ethertype() {
        assert_eq!(Protocol::IPV4.to_string(), "0x0800");
        assert_eq!(Protocol::ALL.to_string(), "0x0003");
    }

    #[test]
    fn missing_interface_is_a_typed_error() {
        let err = interface_index("no-such-if0").expect_err("interface must not exist");
        match err {
            SocketError::NoSuchInterface { name, .. } => assert_eq!(name, "no-such-if0"),
            other => panic!("wrong error: {other}"),
        }
    }
}
