//! The frame view shared by V3 blocks and V2 frame slots: what the kernel says about one
//! received frame, and its bytes, read in place.
//!
//! Headers are decoded from byte slices with explicit offsets (asserted against the `libc`
//! structs below), so a corrupt header is a bounds-check failure, never an out-of-range read.

use std::mem::{offset_of, size_of};
use std::time::Duration;

/// Offsets of `struct tpacket3_hdr` fields.
pub(crate) mod v3 {
    use super::*;
    pub(crate) const NEXT_OFFSET: usize = offset_of!(libc::tpacket3_hdr, tp_next_offset);
    pub(crate) const SEC: usize = offset_of!(libc::tpacket3_hdr, tp_sec);
    pub(crate) const NSEC: usize = offset_of!(libc::tpacket3_hdr, tp_nsec);
    pub(crate) const SNAPLEN: usize = offset_of!(libc::tpacket3_hdr, tp_snaplen);
    pub(crate) const LEN: usize = offset_of!(libc::tpacket3_hdr, tp_len);
    pub(crate) const STATUS: usize = offset_of!(libc::tpacket3_hdr, tp_status);
    pub(crate) const MAC: usize = offset_of!(libc::tpacket3_hdr, tp_mac);
    pub(crate) const HV1: usize = offset_of!(libc::tpacket3_hdr, hv1);
    pub(crate) const RXHASH: usize = HV1 + offset_of!(libc::tpacket_hdr_variant1, tp_rxhash);
    pub(crate) const VLAN_TCI: usize = HV1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci);
    pub(crate) const VLAN_TPID: usize = HV1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid);
    pub(crate) const SIZE: usize = size_of::<libc::tpacket3_hdr>();
    /// Where the kernel writes the `sockaddr_ll` (TPACKET_ALIGN of the header).
    pub(crate) const SLL: usize = SIZE.div_ceil(16) * 16;

    /// Offsets of `struct tpacket_block_desc` + `tpacket_hdr_v1`.
    pub(crate) const BLOCK_STATUS: usize = 8;
    pub(crate) const BLOCK_NUM_PKTS: usize = 12;
    pub(crate) const BLOCK_FIRST: usize = 16;
    pub(crate) const BLOCK_LEN: usize = 20;
    pub(crate) const BLOCK_SEQ: usize = 24;
    const _: () = assert!(
        offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, seq_num)
            == BLOCK_SEQ
            && offset_of!(libc::tpacket_block_desc, hdr)
                + offset_of!(libc::tpacket_hdr_v1, block_status)
                == BLOCK_STATUS
            && offset_of!(libc::tpacket_block_desc, hdr)
                + offset_of!(libc::tpacket_hdr_v1, blk_len)
                == BLOCK_LEN
            && offset_of!(libc::tpacket_block_desc, hdr)
                + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt)
                == BLOCK_FIRST
            && offset_of!(libc::tpacket_block_desc, hdr)
                + offset_of!(libc::tpacket_hdr_v1, num_pkts)
                == BLOCK_NUM_PKTS
    );
}

/// Offsets of `struct tpacket2_hdr` fields.
pub(crate) mod v2 {
    use super::*;
    pub(crate) const STATUS: usize = offset_of!(libc::tpacket2_hdr, tp_status);
    pub(crate) const LEN: usize = offset_of!(libc::tpacket2_hdr, tp_len);
    pub(crate) const SNAPLEN: usize = offset_of!(libc::tpacket2_hdr, tp_snaplen);
    pub(crate) const MAC: usize = offset_of!(libc::tpacket2_hdr, tp_mac);
    pub(crate) const SEC: usize = offset_of!(libc::tpacket2_hdr, tp_sec);
    pub(crate) const NSEC: usize = offset_of!(libc::tpacket2_hdr, tp_nsec);
    pub(crate) const VLAN_TCI: usize = offset_of!(libc::tpacket2_hdr, tp_vlan_tci);
    pub(crate) const VLAN_TPID: usize = offset_of!(libc::tpacket2_hdr, tp_vlan_tpid);
    pub(crate) const SIZE: usize = size_of::<libc::tpacket2_hdr>();
    pub(crate) const SLL: usize = SIZE.div_ceil(16) * 16;
}

/// Offsets inside `struct sockaddr_ll`.
const SLL_IFINDEX: usize = offset_of!(libc::sockaddr_ll, sll_ifindex);
const SLL_PKTTYPE: usize = offset_of!(libc::sockaddr_ll, sll_pkttype);

pub(crate) fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Who a frame was addressed to (`sll_pkttype`), e.g. to skip frames this host sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// To this host (`PACKET_HOST`).
    Host,
    /// Link-layer broadcast.
    Broadcast,
    /// Link-layer multicast.
    Multicast,
    /// To another host (seen in promiscuous mode).
    OtherHost,
    /// Sent by this host (`PACKET_OUTGOING`).
    Outgoing,
    /// Any other value.
    Other(u8),
}

impl From<u8> for PacketType {
    fn from(value: u8) -> Self {
        match value {
            libc::PACKET_HOST => Self::Host,
            libc::PACKET_BROADCAST => Self::Broadcast,
            libc::PACKET_MULTICAST => Self::Multicast,
            libc::PACKET_OTHERHOST => Self::OtherHost,
            libc::PACKET_OUTGOING => Self::Outgoing,
            other => Self::Other(other),
        }
    }
}

/// One received frame, read in place: it borrows its block (V3) or batch (V2), and so cannot
/// outlive the moment the ring hands that memory back to the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    data: &'a [u8],
    original_len: u32,
    status: u32,
    sec: u32,
    nsec: u32,
    vlan_tci: u16,
    vlan_tpid: u16,
    rx_hash: Option<u32>,
    ifindex: Option<u32>,
    packet_type: Option<u8>,
    seq_num: Option<u64>,
}

/// The decoded fields of a frame header, before the data slice is cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) status: u32,
    pub(crate) original_len: u32,
    pub(crate) snap_len: u32,
    pub(crate) mac: u16,
    pub(crate) sec: u32,
    pub(crate) nsec: u32,
    pub(crate) vlan_tci: u16,
    pub(crate) vlan_tpid: u16,
    pub(crate) rx_hash: Option<u32>,
}

/// Why a received frame's header was refused (counted in `RxCounters::malformed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The header does not fit in its block or slot, or the data would start inside it.
    #[error("frame header outside its block, or data starting inside the header")]
    HeaderOutOfBounds,
    /// `tp_mac + tp_snaplen` runs past the end of the block or slot.
    #[error("frame data past the end of its block or slot")]
    DataOutOfBounds,
}

impl<'a> Frame<'a> {
    /// Cuts the frame out of `region`, where `region` starts at the frame header and ends at the
    /// end of the block (V3) or frame slot (V2). `sll_at` is where the `sockaddr_ll` starts.
    pub(crate) fn cut(
        region: &'a [u8],
        header: Header,
        sll_at: usize,
        seq_num: Option<u64>,
    ) -> Result<Self, Malformed> {
        let start = usize::from(header.mac);
        let end = start
            .checked_add(header.snap_len as usize)
            .ok_or(Malformed::DataOutOfBounds)?;
        if start < sll_at {
            return Err(Malformed::HeaderOutOfBounds);
        }
        let data = region.get(start..end).ok_or(Malformed::DataOutOfBounds)?;
        let sll = region.get(sll_at..start);
        Ok(Self {
            data,
            original_len: header.original_len,
            status: header.status,
            sec: header.sec,
            nsec: header.nsec,
            vlan_tci: header.vlan_tci,
            vlan_tpid: header.vlan_tpid,
            rx_hash: header.rx_hash,
            ifindex: sll.and_then(|s| u32_at(s, SLL_IFINDEX)),
            packet_type: sll.and_then(|s| s.get(SLL_PKTTYPE).copied()),
            seq_num,
        })
    }

    /// The captured bytes, starting at the link-layer (Ethernet) header.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The frame's length on the wire; larger than [`Frame::snap_len`] when truncated.
    pub fn original_len(&self) -> u32 {
        self.original_len
    }

    /// Bytes captured (`tp_snaplen`), the length of [`Frame::data`].
    pub fn snap_len(&self) -> u32 {
        u32::try_from(self.data.len()).unwrap_or(u32::MAX)
    }

    /// True when the kernel clamped the frame to the ring's room (`tp_snaplen < tp_len`).
    pub fn is_truncated(&self) -> bool {
        self.snap_len() < self.original_len
    }

    /// Receive time since the Unix epoch, from the source chosen with `PACKET_TIMESTAMP`.
    pub fn timestamp(&self) -> Duration {
        Duration::new(u64::from(self.sec), self.nsec.min(999_999_999))
    }

    /// The 802.1Q TCI the driver stripped (VLAN offload), if any: veth and most NICs remove the
    /// tag from the bytes and report it here.
    pub fn vlan_tci(&self) -> Option<u16> {
        (self.status & libc::TP_STATUS_VLAN_VALID != 0).then_some(self.vlan_tci)
    }

    /// The stripped tag's TPID (0x8100, 0x88a8), if the kernel reported it.
    pub fn vlan_tpid(&self) -> Option<u16> {
        (self.status & libc::TP_STATUS_VLAN_TPID_VALID != 0).then_some(self.vlan_tpid)
    }

    /// The skb's flow hash, when the ring asked for it (V3 with `TP_FT_REQ_FILL_RXHASH`).
    pub fn rx_hash(&self) -> Option<u32> {
        self.rx_hash
    }

    /// Whether the UDP/TCP checksum is only partly computed (`TP_STATUS_CSUMNOTREADY`): the
    /// frame was sent by this host and seen before the device's checksum offload filled it in.
    /// Such a checksum cannot be updated incrementally; it must be computed in full, or cleared.
    pub fn checksum_partial(&self) -> bool {
        self.status & libc::TP_STATUS_CSUMNOTREADY != 0
    }

    /// Whether the kernel verified the UDP/TCP checksum on receipt (`TP_STATUS_CSUM_VALID`: a
    /// NIC's receive checksum offload, or a checksum already checked by the stack).
    pub fn checksum_verified(&self) -> bool {
        self.status & libc::TP_STATUS_CSUM_VALID != 0
    }

    /// The raw `tp_status` bits (e.g. `TP_STATUS_CSUM_VALID`, `TP_STATUS_LOSING`).
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The interface the frame arrived on.
    pub fn ifindex(&self) -> Option<u32> {
        self.ifindex
    }

    /// Who the frame was addressed to.
    pub fn packet_type(&self) -> Option<PacketType> {
        self.packet_type.map(PacketType::from)
    }

    /// Sequence number of the V3 block holding the frame (`None` on V2).
    pub fn seq_num(&self) -> Option<u64> {
        self.seq_num
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(mac: u16, snap: u32, len: u32, status: u32) -> Header {
        Header {
            status,
            original_len: len,
            snap_len: snap,
            mac,
            sec: 7,
            nsec: 5,
            vlan_tci: 42,
            vlan_tpid: 0x8100,
            rx_hash: None,
        }
    }

    #[test]
    fn layout_matches_the_kernel_abi() {
        assert_eq!((v3::SIZE, v3::SLL, v3::MAC, v3::VLAN_TCI), (48, 48, 24, 32));
        assert_eq!((v2::SIZE, v2::SLL, v2::MAC, v2::VLAN_TCI), (32, 32, 12, 24));
    }

    #[test]
    fn cuts_data_and_reads_the_sockaddr() {
        let mut region = vec![0u8; 128];
        region[v3::SLL + SLL_IFINDEX..v3::SLL + SLL_IFINDEX + 4]
            .copy_from_slice(&9u32.to_ne_bytes());
        region[v3::SLL + SLL_PKTTYPE] = libc::PACKET_OUTGOING;
        region[80..84].copy_from_slice(b"abcd");
        let frame = Frame::cut(
            &region,
            header(80, 4, 60, libc::TP_STATUS_USER),
            v3::SLL,
            Some(3),
        )
        .expect("in bounds");
        assert_eq!(frame.data(), b"abcd");
        assert_eq!(
            (frame.snap_len(), frame.original_len(), frame.is_truncated()),
            (4, 60, true)
        );
        assert_eq!(frame.ifindex(), Some(9));
        assert_eq!(frame.packet_type(), Some(PacketType::Outgoing));
        assert_eq!(frame.vlan_tci(), None, "TCI only with TP_STATUS_VLAN_VALID");
        assert_eq!(frame.timestamp(), Duration::new(7, 5));
        assert_eq!(frame.seq_num(), Some(3));
    }

    #[test]
    fn vlan_fields_need_their_status_bits() {
        let region = vec![0u8; 128];
        let status = libc::TP_STATUS_VLAN_VALID | libc::TP_STATUS_VLAN_TPID_VALID;
        let frame =
            Frame::cut(&region, header(64, 4, 4, status), v3::SLL, None).expect("in bounds");
        assert_eq!(
            (frame.vlan_tci(), frame.vlan_tpid()),
            (Some(42), Some(0x8100))
        );
    }

    #[test]
    fn refuses_data_past_the_region_or_inside_the_header() {
        let region = vec![0u8; 128];
        let err = Frame::cut(&region, header(100, 64, 64, 0), v3::SLL, None).map(|_| ());
        assert_eq!(err, Err(Malformed::DataOutOfBounds));
        let err = Frame::cut(&region, header(8, 4, 4, 0), v3::SLL, None).map(|_| ());
        assert_eq!(err, Err(Malformed::HeaderOutOfBounds));
        let err = Frame::cut(&region, header(u16::MAX, u32::MAX, 4, 0), v3::SLL, None).map(|_| ());
        assert_eq!(err, Err(Malformed::DataOutOfBounds));
    }
}
