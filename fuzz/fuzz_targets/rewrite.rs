//! Parse, then rewrite through a template built from fuzzer-chosen fields, then re-parse.
//!
//! Input layout: a [`CONTROL_LEN`]-byte control block (the template's fields, the IP ID, the
//! output buffer length and an optional offloaded tag), then the received frame. Whenever the
//! frame parses, `FrameTemplate::write` must not panic; its refusals must be the right ones
//! (MTU, buffer), and a written frame must parse again with the template's addresses and
//! ports, the input's payload byte for byte, a header checksum that verifies (parse checks it)
//! and a UDP checksum that verifies exactly when the input's did (or is absent when the
//! input's was). Checksums are recomputed here in full, independently of the crate.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_rules::replicate::{FrameTemplate, RewriteError, TemplateSpec};
use relay_rules::wire::{self, Datagram, VlanTag};
use std::net::Ipv4Addr;

/// Length of the control block in front of the frame.
const CONTROL_LEN: usize = 40;
/// Largest output buffer the fuzzer may choose (a TX ring slot is usually 2048 or 4096).
const MAX_OUT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((control, frame)) = data.split_at_checked(CONTROL_LEN) else {
        return;
    };
    let c = |at: usize| control[at];
    let be16 = |at: usize| u16::from_be_bytes([c(at), c(at + 1)]);
    let ipv4 = |at: usize| Ipv4Addr::new(c(at), c(at + 1), c(at + 2), c(at + 3));
    let flags = c(30);
    let spec = TemplateSpec {
        src_mac: control[0..6].try_into().expect("6 bytes"),
        dst_mac: control[6..12].try_into().expect("6 bytes"),
        vlan: (flags & 1 != 0).then(|| be16(12)),
        source: ipv4(14),
        destination: ipv4(18),
        source_port: (flags & 2 != 0).then(|| be16(22)),
        destination_port: be16(24),
        ttl: c(26),
        dscp: (flags & 4 != 0).then(|| c(27) & 0x3f),
        mtu: u32::from(be16(28)),
    };
    let ip_id = be16(31);
    let out_len = usize::from(be16(33)) % (MAX_OUT + 1);
    let offloaded = (flags & 8 != 0).then(|| VlanTag {
        tpid: be16(35),
        tci: be16(37),
    });

    let Ok(input) = wire::parse(frame, offloaded) else {
        return;
    };
    let template = FrameTemplate::new(&spec);
    let mut buffer = [0u8; MAX_OUT];
    let out = &mut buffer[..out_len];
    let payload = input.payload.len();
    let packet = 20 + 8 + payload;
    let frame_len = template.frame_len(payload);
    assert_eq!(frame_len, template.header_len() + payload);
    assert_eq!(
        template.header_len(),
        if spec.vlan.is_some() { 46 } else { 42 }
    );

    match template.write(&input, ip_id, out) {
        Err(RewriteError::ExceedsMtu { packet: p, mtu }) => {
            assert_eq!((p, mtu), (packet, spec.mtu));
            assert!(packet > spec.mtu as usize || packet > usize::from(u16::MAX));
        }
        Err(RewriteError::BufferTooSmall { needed, available }) => {
            assert_eq!((needed, available), (frame_len, out_len));
            assert!(needed > available);
            assert!(packet <= spec.mtu as usize, "the MTU is checked first");
        }
        Ok(len) => {
            assert!(packet <= spec.mtu as usize && len <= out_len);
            assert_eq!(len, frame_len);
            check_output(&spec, &input, ip_id, &buffer[..len]);
        }
    }
});

fn check_output(spec: &TemplateSpec, input: &Datagram<'_>, ip_id: u16, written: &[u8]) {
    let output = match wire::parse(written, None) {
        Ok(output) => output,
        Err(reason) => panic!("written frame does not parse: {reason:?}"),
    };
    assert_eq!(&written[0..6], &spec.dst_mac);
    assert_eq!(&written[6..12], &spec.src_mac);
    let tag = spec.vlan.map(|vid| VlanTag {
        tpid: 0x8100,
        tci: vid & 0x0fff,
    });
    assert_eq!(output.vlans, [tag, None]);
    assert_eq!(output.source, spec.source);
    assert_eq!(output.destination, spec.destination);
    assert_eq!(
        output.source_port,
        spec.source_port.unwrap_or(input.source_port)
    );
    assert_eq!(output.destination_port, spec.destination_port);
    assert_eq!(output.ttl, spec.ttl);
    assert_eq!(output.ip_id, ip_id);
    let tos = spec.dscp.map_or(input.tos & 0xfc, |dscp| dscp << 2);
    assert_eq!(output.tos, tos);
    assert_eq!(output.payload, input.payload, "payload byte for byte");
    // Parse accepted the output, so its IPv4 header checksum verifies; the UDP one:
    if input.udp_checksum == 0 {
        assert_eq!(output.udp_checksum, 0, "no checksum in, none out");
    } else {
        assert_ne!(
            output.udp_checksum, 0,
            "a computed checksum is never sent as 0"
        );
        assert_eq!(
            udp_verifies(&output),
            udp_verifies(input),
            "incremental update keeps a right checksum right and a wrong one wrong"
        );
    }
}

/// Whether the UDP checksum of `d` verifies, summed in full over pseudo-header, header and
/// payload (RFC 768).
fn udp_verifies(d: &Datagram<'_>) -> bool {
    let len = d.udp_len() as u32;
    let words = |a: Ipv4Addr| {
        let o = a.octets();
        u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]))
    };
    let mut sum: u64 = u64::from(words(d.source) + words(d.destination) + 17 + len);
    sum += u64::from(d.source_port)
        + u64::from(d.destination_port)
        + u64::from(len)
        + u64::from(d.udp_checksum);
    for pair in d.payload.chunks(2) {
        sum += u64::from(pair[0]) << 8 | u64::from(pair.get(1).copied().unwrap_or(0));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}
