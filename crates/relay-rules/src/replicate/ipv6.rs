//! IPv6 output frames: the template's header and the per-datagram patches.

use std::net::{IpAddr, Ipv6Addr};

use super::{
    FrameTemplate, IPV6_HEADER_LEN, MAX_HEADER_LEN, RewriteError, TemplateSpec, UDP_HEADER_LEN,
};
use crate::rule::Ttl;
use crate::wire::checksum::addr6_sum;
use crate::wire::{Datagram, Ipv6Packet, PROTOCOL_UDP, UdpPacket, fold, pseudo_header_sum, sum};

/// The template of an IPv6 output whose Ethernet header (and tag) `header` already holds,
/// `ip_offset` bytes long.
pub(super) fn new(
    spec: &TemplateSpec,
    mut header: [u8; MAX_HEADER_LEN],
    ip_offset: usize,
    destination: Ipv6Addr,
) -> FrameTemplate {
    let source = match spec.source {
        IpAddr::V6(source) => source,
        IpAddr::V4(_) => Ipv6Addr::UNSPECIFIED,
    };
    let udp_offset = ip_offset + IPV6_HEADER_LEN;
    let header_len = udp_offset + UDP_HEADER_LEN;
    let mut ip = Ipv6Packet::new_unchecked(&mut header[ip_offset..udp_offset]);
    ip.set_version_class_flow(spec.dscp.map_or(0, |dscp| (dscp & 0x3f) << 2), 0);
    ip.set_next_header(PROTOCOL_UDP);
    // A decremented hop limit is written per datagram.
    ip.set_hop_limit(match spec.ttl {
        Ttl::Fixed(ttl) => ttl,
        Ttl::Decrement => 0,
    });
    ip.set_src_addr(source);
    ip.set_dst_addr(destination);

    let mut udp = UdpPacket::new_unchecked(&mut header[udp_offset..header_len]);
    udp.set_src_port(spec.source_port.unwrap_or(0));
    udp.set_dst_port(spec.destination_port);
    let udp_added = addr6_sum(source)
        + addr6_sum(destination)
        + u64::from(spec.destination_port)
        + spec.source_port.map_or(0, u64::from);
    FrameTemplate {
        spec: TemplateSpec {
            source: IpAddr::V6(source),
            ..spec.clone()
        },
        header,
        header_len,
        ip_offset,
        ipv6: true,
        ip_partial: 0,
        udp_added,
    }
}

impl FrameTemplate {
    /// [`FrameTemplate::write`] for an IPv6 output. Out of line, so that the IPv4 path the
    /// data path mostly takes stays as small as it was.
    #[inline(never)]
    pub(super) fn write_ipv6(
        &self,
        input: &Datagram<'_>,
        out: &mut [u8],
    ) -> Result<usize, RewriteError> {
        let payload_len = input.payload.len();
        let udp_len = UDP_HEADER_LEN + payload_len;
        let packet = IPV6_HEADER_LEN + udp_len;
        if packet > self.spec.mtu as usize || udp_len > usize::from(u16::MAX) {
            return Err(RewriteError::ExceedsMtu {
                packet,
                mtu: self.spec.mtu,
            });
        }
        let hop_limit = match self.spec.ttl {
            Ttl::Fixed(_) => None,
            Ttl::Decrement => match input.ttl.saturating_sub(1) {
                0 => return Err(RewriteError::TtlExpired { ttl: input.ttl }),
                hop_limit => Some(hop_limit),
            },
        };
        let headers = self.copy_frame(input.payload, out)?;

        // Fits in u16: checked above.
        let udp_len = udp_len as u16;
        let (ip_bytes, udp_bytes) = headers[self.ip_offset..].split_at_mut(IPV6_HEADER_LEN);
        let mut ip = Ipv6Packet::new_unchecked(ip_bytes);
        ip.set_payload_len(udp_len);
        if let Some(hop_limit) = hop_limit {
            ip.set_hop_limit(hop_limit);
        }
        if self.spec.dscp.is_none() {
            ip.set_traffic_class(input.tos & 0xfc);
        }
        let mut udp = UdpPacket::new_unchecked(udp_bytes);
        udp.set_len(udp_len);
        if self.spec.source_port.is_none() {
            udp.set_src_port(input.source_port);
        }
        let checksum = match input.udp_checksum {
            // Only an IPv4 input comes without one; IPv6 requires it, so compute it.
            0 => {
                let (source, destination) = (self.spec.source, self.spec.destination);
                let pseudo = pseudo_header_sum(source, destination, PROTOCOL_UDP, udp_len);
                let whole = pseudo + sum(udp.into_inner()) + sum(input.payload);
                match !fold(whole) {
                    0 => 0xffff,
                    other => other,
                }
            }
            _ => self.udp_checksum(input),
        };
        let udp_at = self.ip_offset + IPV6_HEADER_LEN;
        UdpPacket::new_unchecked(&mut headers[udp_at..]).set_checksum(checksum);
        Ok(self.header_len + payload_len)
    }
}
