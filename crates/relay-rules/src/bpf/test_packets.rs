//! Packets for the tests of the BPF programs.

use std::net::Ipv4Addr;

/// An IPv4/UDP packet (from the network header on) to `destination`:`port`, from 10.0.0.1, with
/// `options` words of IP options (NOPs) and a 4-byte payload.
pub(super) fn udp_packet(destination: Ipv4Addr, port: u16, options: usize) -> Vec<u8> {
    let ihl = 5 + options;
    let mut packet = vec![0u8; ihl * 4 + 8 + 4];
    packet[0] = 0x40 | ihl as u8;
    let total = packet.len() as u16;
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet[8] = 64;
    packet[9] = 17;
    packet[12..16].copy_from_slice(&[10, 0, 0, 1]);
    packet[16..20].copy_from_slice(&destination.octets());
    packet[20..ihl * 4].fill(0x01);
    let udp = ihl * 4;
    packet[udp..udp + 2].copy_from_slice(&4000u16.to_be_bytes());
    packet[udp + 2..udp + 4].copy_from_slice(&port.to_be_bytes());
    packet
}
