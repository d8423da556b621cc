//! Interface ioctls nix does not wrap: `SIOCGIFMTU`, setting an interface up (`SIOCSIFFLAGS`)
//! and the `SIOCETHTOOL` queries for channels and the RSS indirection table.
//!
//! # Safety
//!
//! Each call passes `ioctl(2)` a pointer to a live, zero-initialised `struct ifreq` whose name
//! is NUL-terminated within `IFNAMSIZ` (guaranteed by [`IfName`]). For `SIOCETHTOOL`,
//! `ifr_data` points to a `#[repr(C)]` buffer laid out as the kernel's `struct ethtool_*` for the
//! command in its first word, large enough for everything the kernel copies back: for
//! `ETHTOOL_GRXFHINDIR` the kernel writes `size` entries only when `size` equals the table size
//! it reported in a first call with `size = 0` (`ethtool_get_rxfh_indir` in
//! `net/ethtool/ioctl.c`), and the buffer always has room for that many. Buffers outlive the
//! call; the ioctl keeps no pointer after it returns.
#![allow(unsafe_code, reason = "interface ioctls on kernel ABI structs")]

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// An interface name the kernel can take: 1–15 bytes, no NUL, `/`, `:` or whitespace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IfName([libc::c_char; libc::IFNAMSIZ]);

impl IfName {
    /// `None` if the kernel could never have an interface of this name.
    pub(crate) fn new(name: &str) -> Option<IfName> {
        let ok = !name.is_empty()
            && name.len() < libc::IFNAMSIZ
            && name
                .bytes()
                .all(|b| b != 0 && b != b'/' && b != b':' && !b.is_ascii_whitespace());
        if !ok {
            return None;
        }
        let mut raw = [0 as libc::c_char; libc::IFNAMSIZ];
        for (dst, src) in raw.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        Some(IfName(raw))
    }
}

/// The counts `ETHTOOL_GCHANNELS` reports (kernel `struct ethtool_channels`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EthtoolChannels {
    pub(crate) cmd: u32,
    pub(crate) max_rx: u32,
    pub(crate) max_tx: u32,
    pub(crate) max_other: u32,
    pub(crate) max_combined: u32,
    pub(crate) rx_count: u32,
    pub(crate) tx_count: u32,
    pub(crate) other_count: u32,
    pub(crate) combined_count: u32,
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_GRXFHINDIR: u32 = 0x38;

/// A control socket of the calling thread's network namespace, for interface ioctls.
#[derive(Debug)]
pub(crate) struct IfSocket(OwnedFd);

impl IfSocket {
    /// An `AF_INET`/`SOCK_DGRAM` socket: every kernel has it, and interface ioctls on it look
    /// names up in the namespace the socket was created in.
    pub(crate) fn open() -> Result<IfSocket, Errno> {
        socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map(IfSocket)
    }

    /// Sets `name` up (`SIOCGIFFLAGS`, then `SIOCSIFFLAGS` with `IFF_UP` added).
    pub(crate) fn set_up(&self, name: IfName) -> Result<(), Errno> {
        let mut req = ifreq(name);
        self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS succeeded, so the kernel wrote `ifru_flags`, a short.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.ioctl(libc::SIOCSIFFLAGS, &mut req)
    }

    /// The MTU of `name` (`SIOCGIFMTU`).
    pub(crate) fn mtu(&self, name: IfName) -> Result<u32, Errno> {
        let mut req = ifreq(name);
        self.ioctl(libc::SIOCGIFMTU, &mut req)?;
        // SAFETY: SIOCGIFMTU succeeded, so the kernel wrote `ifru_mtu`; an int is valid for
        // every bit pattern.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        u32::try_from(mtu).map_err(|_| Errno::ERANGE)
    }

    /// The link type (`ARPHRD_*`) and the first six bytes of the hardware address of `name`
    /// (`SIOCGIFHWADDR`); the bytes mean a MAC only for Ethernet link types.
    pub(crate) fn hwaddr(&self, name: IfName) -> Result<(u16, [u8; 6]), Errno> {
        let mut req = ifreq(name);
        self.ioctl(libc::SIOCGIFHWADDR, &mut req)?;
        // SAFETY: SIOCGIFHWADDR succeeded, so the kernel wrote `ifru_hwaddr`, a plain sockaddr
        // of integers valid for every bit pattern.
        let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(sa.sa_data.iter()) {
            *dst = *src as u8;
        }
        Ok((sa.sa_family, mac))
    }

    /// The name of the interface with `index` (`SIOCGIFNAME`); ENODEV when there is none.
    ///
    /// Used instead of nix's `if_indextoname`, which reports success with an empty name for a
    /// missing index.
    pub(crate) fn name_of(&self, index: u32) -> Result<String, Errno> {
        let mut req = ifreq(IfName([0; libc::IFNAMSIZ]));
        req.ifr_ifru.ifru_ifindex = i32::try_from(index).map_err(|_| Errno::ENODEV)?;
        self.ioctl(libc::SIOCGIFNAME, &mut req)?;
        // The kernel copies a NUL-terminated name of at most IFNAMSIZ bytes; stop at the NUL
        // and never read past the array even if it were missing.
        let bytes: Vec<u8> = req
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `ETHTOOL_GCHANNELS`; EOPNOTSUPP when the driver has no channel counts.
    pub(crate) fn channels(&self, name: IfName) -> Result<EthtoolChannels, Errno> {
        let mut ch = EthtoolChannels {
            cmd: ETHTOOL_GCHANNELS,
            ..EthtoolChannels::default()
        };
        self.ethtool(name, (&raw mut ch).cast())?;
        Ok(ch)
    }

    /// The RSS indirection table (`ETHTOOL_GRXFHINDIR`): entry i is the RX queue that hash
    /// bucket i goes to. EOPNOTSUPP when the driver has none (veth, most virtual devices).
    pub(crate) fn rxfh_indir(&self, name: IfName) -> Result<Vec<u32>, Errno> {
        // Layout of `struct ethtool_rxfh_indir`: cmd, size, then `size` u32 entries.
        let mut head = [ETHTOOL_GRXFHINDIR, 0u32];
        self.ethtool(name, head.as_mut_ptr().cast())?;
        let size = head[1] as usize;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u32; 2 + size];
        buf[0] = ETHTOOL_GRXFHINDIR;
        buf[1] = head[1];
        self.ethtool(name, buf.as_mut_ptr().cast())?;
        buf.drain(..2);
        Ok(buf)
    }

    /// `SIOCETHTOOL` with `data` as `ifr_data`.
    ///
    /// `data` must point to a buffer valid as the `struct ethtool_*` of the command in its
    /// first word (see the module's Safety section); both callers above keep that.
    fn ethtool(&self, name: IfName, data: *mut libc::c_char) -> Result<(), Errno> {
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_data = data;
        self.ioctl(libc::SIOCETHTOOL, &mut req)
    }

    fn ioctl(&self, request: libc::c_ulong, req: &mut libc::ifreq) -> Result<(), Errno> {
        // SAFETY: `req` is a live ifreq with a NUL-terminated name; for the requests used here
        // the kernel reads and writes only within it, plus the ethtool buffer in `ifru_data`
        // that `ethtool` callers size for the command (module Safety section).
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), request as _, std::ptr::from_mut(req)) };
        Errno::result(rc).map(drop)
    }
}

fn ifreq(name: IfName) -> libc::ifreq {
    // SAFETY: ifreq is a C struct of a char array and a union of integers, sockaddrs and a
    // pointer, for all of which all-zero bytes are a valid value (a null pointer included).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name = name.0;
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_kernel_refuses_are_refused() {
        assert!(IfName::new("eth0").is_some());
        assert!(IfName::new("abcdefghijklmno").is_some());
        assert!(IfName::new("abcdefghijklmnop").is_none());
        assert!(IfName::new("").is_none());
        assert!(IfName::new("a/b").is_none());
        assert!(IfName::new("a b").is_none());
        assert!(IfName::new("a\0").is_none());
    }

    #[test]
    fn loopback_has_a_large_mtu_and_no_rss_table() {
        let sock = IfSocket::open().expect("AF_INET socket");
        let lo = IfName::new("lo").expect("valid name");
        assert!(sock.mtu(lo).expect("lo exists") >= 1500);
        assert!(sock.rxfh_indir(lo).is_err());
        let missing = IfName::new("frnosuchif0").expect("valid name");
        assert_eq!(sock.mtu(missing), Err(Errno::ENODEV));
    }
}
