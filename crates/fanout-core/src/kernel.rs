//! The running kernel's release, for behaviour that only some kernels have.
//!
//! Most of what fanout-core uses fails loudly where the kernel lacks it (an unknown socket
//! option is `ENOPROTOOPT`). A few features do not: an old kernel's `tpacket_snd()` ignores
//! `PACKET_VNET_HDR` and sends the header as frame data. Those are gated on the release.

use std::fmt;

/// A kernel release as `major.minor`, the part of `uname -r` that orders features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelRelease {
    /// Major version (`6` of `6.1.0-18-amd64`).
    pub major: u32,
    /// Minor version (`1` of `6.1.0-18-amd64`).
    pub minor: u32,
}

impl KernelRelease {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        KernelRelease { major, minor }
    }

    /// The running kernel's release, from `/proc/sys/kernel/osrelease`.
    pub fn running() -> std::io::Result<Self> {
        let text = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
        Self::parse(&text).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("kernel release {:?} is not MAJOR.MINOR...", text.trim()),
            )
        })
    }

    /// Reads `6.1.0-18-amd64`, `5.15.0`, `6.18`: the first two dot-separated numbers; the minor
    /// one may be followed by anything but a digit.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?;
        let digits = minor
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(minor.len());
        let minor = minor[..digits].parse().ok()?;
        Some(KernelRelease { major, minor })
    }
}

impl fmt::Display for KernelRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_and_order() {
        assert_eq!(
            KernelRelease::parse("6.1.0-18-amd64\n"),
            Some(KernelRelease::new(6, 1))
        );
        assert_eq!(
            KernelRelease::parse("5.15"),
            Some(KernelRelease::new(5, 15))
        );
        assert_eq!(
            KernelRelease::parse("4.19-rc3"),
            Some(KernelRelease::new(4, 19))
        );
        assert_eq!(KernelRelease::parse("6"), None);
        assert_eq!(KernelRelease::parse("x.1"), None);
        assert_eq!(KernelRelease::parse("6.x"), None);
        assert!(KernelRelease::new(4, 16) < KernelRelease::new(4, 17));
        assert!(KernelRelease::new(4, 20) < KernelRelease::new(5, 0));
        assert_eq!(KernelRelease::new(6, 18).to_string(), "6.18");
        let running = KernelRelease::running().expect("Linux has /proc/sys/kernel/osrelease");
        assert!(running >= KernelRelease::new(3, 0), "{running}");
    }
}
