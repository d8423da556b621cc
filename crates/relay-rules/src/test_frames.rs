//! IPv6 packets and frames for the crate's unit tests, built field by field.

use crate::wire::{UdpPacket, pseudo_header_sum};
use std::net::Ipv6Addr;

/// An extension header to put between the IPv6 header and UDP: its type (next-header value)
/// and its length in bytes (a multiple of 8, at least 8).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extension {
    pub(crate) kind: u8,
    pub(crate) len: usize,
}

/// What [`ipv6_packet`] builds.
#[derive(Debug, Clone)]
pub(crate) struct Ipv6Udp<'a> {
    pub(crate) source: Ipv6Addr,
    pub(crate) destination: Ipv6Addr,
    pub(crate) source_port: u16,
    pub(crate) destination_port: u16,
    pub(crate) hop_limit: u8,
    pub(crate) traffic_class: u8,
    pub(crate) extensions: &'a [Extension],
    pub(crate) payload: &'a [u8],
}

impl Default for Ipv6Udp<'_> {
    fn default() -> Self {
        Ipv6Udp {
            source: "2001:db8::10".parse().expect("a literal address"),
            destination: "ff3e::1:1".parse().expect("a literal address"),
            source_port: 4000,
            destination_port: 5004,
            hop_limit: 9,
            traffic_class: 0,
            extensions: &[],
            payload: b"hi",
        }
    }
}

/// The IPv6/UDP packet (from the network header on), with a valid UDP checksum.
pub(crate) fn ipv6_packet(spec: &Ipv6Udp<'_>) -> Vec<u8> {
    let udp_len = 8 + spec.payload.len();
    let ext_len: usize = spec.extensions.iter().map(|e| e.len).sum();
    let mut packet = Vec::with_capacity(40 + ext_len + udp_len);
    let word = 6u32 << 28 | u32::from(spec.traffic_class) << 20;
    packet.extend_from_slice(&word.to_be_bytes());
    packet.extend_from_slice(&((ext_len + udp_len) as u16).to_be_bytes());
    packet.push(spec.extensions.first().map_or(17, |e| e.kind));
    packet.push(spec.hop_limit);
    packet.extend_from_slice(&spec.source.octets());
    packet.extend_from_slice(&spec.destination.octets());
    for (i, extension) in spec.extensions.iter().enumerate() {
        let next = spec.extensions.get(i + 1).map_or(17, |e| e.kind);
        let mut header = vec![0u8; extension.len];
        header[0] = next;
        header[1] = (extension.len / 8 - 1) as u8;
        // A fragment header's second byte is reserved, not a length.
        if extension.kind == 44 {
            header[1] = 0;
        }
        packet.extend_from_slice(&header);
    }
    let udp_at = packet.len();
    packet.extend_from_slice(&spec.source_port.to_be_bytes());
    packet.extend_from_slice(&spec.destination_port.to_be_bytes());
    packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(spec.payload);
    UdpPacket::new_unchecked(&mut packet[udp_at..]).fill_checksum(spec.source, spec.destination);
    packet
}

/// [`ipv6_packet`] in an Ethernet II frame (with one 802.1Q tag of `vlan` if given) to the
/// group's 33:33 MAC.
pub(crate) fn ipv6_frame(spec: &Ipv6Udp<'_>, vlan: Option<u16>) -> Vec<u8> {
    let o = spec.destination.octets();
    let mut frame = vec![0x33, 0x33, o[12], o[13], o[14], o[15], 2, 0, 0, 0, 0, 9];
    if let Some(vid) = vlan {
        frame.extend_from_slice(&[0x81, 0x00]);
        frame.extend_from_slice(&vid.to_be_bytes());
    }
    frame.extend_from_slice(&[0x86, 0xdd]);
    frame.extend_from_slice(&ipv6_packet(spec));
    frame
}

/// The sum a receiver checks a UDP checksum with: 0xffff when it verifies.
pub(crate) fn udp_verifies(source: Ipv6Addr, destination: Ipv6Addr, udp: &[u8]) -> bool {
    let pseudo = pseudo_header_sum(source, destination, 17, udp.len() as u16);
    crate::wire::fold(pseudo + crate::wire::sum(udp)) == 0xffff
}
