//! The `virtio_net_hdr` (linux/virtio_net.h) that a packet socket with `PACKET_VNET_HDR` puts in
//! front of every frame: on send it asks the kernel for offloads (a checksum to complete, a frame
//! to split into UDP datagrams), on receive it says which offloads a frame still waits for.
//!
//! A frame the kernel will split later (a GSO frame: a transmit ring's segmented frame crossing
//! veth, or a UDP socket's `UDP_SEGMENT` send) reaches every packet socket on its way whole, as
//! one long datagram. Only the header's `gso_size` says where the datagrams it carries begin, so a
//! capture that checks datagrams must read it ([`PacketSocket::set_vnet_header`]).
//!
//! [`PacketSocket::set_vnet_header`]: crate::PacketSocket::set_vnet_header

/// `PACKET_VNET_HDR` (linux/if_packet.h); not exported by libc for every target.
pub(crate) const PACKET_VNET_HDR: libc::c_int = 15;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is to be completed.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`: split into UDP datagrams of `gso_size` payload bytes.
const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into the type: the frame has ECN set.
const GSO_ECN: u8 = 0x80;
/// Offset of the checksum in a UDP header.
const UDP_CHECKSUM_OFFSET: u16 = 6;

/// One `virtio_net_hdr` (the legacy 10-byte layout). Its 16-bit fields are in native byte order,
/// which is what the kernel's `__virtio16_to_cpu(vio_le(), ..)` reads and writes for this header
/// on a little-endian host and on a big-endian one alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHeader {
    /// `flags`: bit 0 `NEEDS_CSUM`, bit 1 `DATA_VALID` (the checksum was verified).
    pub flags: u8,
    /// `gso_type`: 0 none, 1 TCPv4, 3 UDP (fragmentation), 4 TCPv6, 5 UDP segmentation; bit 7 ECN.
    pub gso_type: u8,
    /// `hdr_len`: bytes of headers (on send: the bytes the kernel copies into the linear part).
    pub hdr_len: u16,
    /// `gso_size`: payload bytes of each piece but the last.
    pub gso_size: u16,
    /// `csum_start`: where the checksummed part starts (the UDP header).
    pub csum_start: u16,
    /// `csum_offset`: where the checksum is, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHeader {
    /// Bytes of the header in front of a frame.
    pub const LEN: usize = 10;

    /// The header of a `len`-byte frame with no offload: the kernel sends it as it is.
    pub fn plain(len: usize) -> VnetHeader {
        VnetHeader {
            hdr_len: u16::try_from(len).unwrap_or(u16::MAX),
            ..VnetHeader::default()
        }
    }

    /// The header of a `len`-byte frame of UDP datagrams to be split at `segment_size` payload
    /// bytes, its UDP header at `udp_offset`, each datagram's checksum to be completed.
    pub fn udp_segments(len: usize, udp_offset: u16, segment_size: u16) -> VnetHeader {
        VnetHeader {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            gso_size: segment_size,
            csum_start: udp_offset,
            csum_offset: UDP_CHECKSUM_OFFSET,
            ..VnetHeader::plain(len)
        }
    }

    /// Reads the header at the start of `bytes`, or `None` when they are too short.
    pub fn parse(bytes: &[u8]) -> Option<VnetHeader> {
        let field = |at: usize| Some(u16::from_ne_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
        Some(VnetHeader {
            flags: *bytes.first()?,
            gso_type: *bytes.get(1)?,
            hdr_len: field(2)?,
            gso_size: field(4)?,
            csum_start: field(6)?,
            csum_offset: field(8)?,
        })
    }

    /// The header as the kernel lays it out.
    pub fn to_bytes(self) -> [u8; VnetHeader::LEN] {
        let mut bytes = [0u8; VnetHeader::LEN];
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        bytes[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        bytes[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        bytes[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        bytes[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        bytes
    }

    /// The payload bytes of each UDP datagram but the last, when the frame is one to be split
    /// into UDP datagrams; `None` for a frame that is one packet.
    pub fn udp_segment_size(&self) -> Option<u16> {
        (self.gso_type & !GSO_ECN == GSO_UDP_L4 && self.gso_size > 0).then_some(self.gso_size)
    }

    /// Whether the frame is one packet as it stands (no segmentation pending).
    pub fn is_whole(&self) -> bool {
        self.gso_type & !GSO_ECN == GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segmenting_header_round_trips_and_names_its_size() {
        let header = VnetHeader::udp_segments(1_000, 34, 200);
        let bytes = header.to_bytes();
        assert_eq!((bytes[0], bytes[1]), (F_NEEDS_CSUM, GSO_UDP_L4));
        assert_eq!(VnetHeader::parse(&bytes), Some(header));
        assert_eq!(header.udp_segment_size(), Some(200));
        assert!(!header.is_whole());
        let ecn = VnetHeader {
            gso_type: GSO_UDP_L4 | GSO_ECN,
            ..header
        };
        assert_eq!(ecn.udp_segment_size(), Some(200));
    }

    #[test]
    fn a_plain_header_asks_for_nothing() {
        let header = VnetHeader::plain(70_000);
        assert_eq!(header.hdr_len, u16::MAX);
        assert_eq!(header.udp_segment_size(), None);
        assert!(header.is_whole());
        assert_eq!(&header.to_bytes()[..2], &[0, 0]);
        // TCP segmentation (type 1) is no UDP datagram split.
        let tcp = VnetHeader {
            gso_type: 1,
            gso_size: 1448,
            ..header
        };
        assert_eq!(tcp.udp_segment_size(), None);
    }

    #[test]
    fn short_bytes_are_no_header() {
        assert_eq!(VnetHeader::parse(&[0; 9]), None);
    }
}
