//! `relay_rules::wire::parse` on arbitrary bytes, without and with an offloaded VLAN tag.
//!
//! It must never panic, and whatever it accepts must agree with the bytes: the payload is a
//! slice of the input at the offset the headers give, every length field agrees with it, and
//! the fields it returns are the ones on the wire. The checks re-read the bytes by hand rather
//! than through the crate's views, so a bug shared by `parse` and the views still shows.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_rules::wire::{self, Datagram, DropReason, VlanTag};
use std::net::Ipv4Addr;

fuzz_target!(|frame: &[u8]| {
    let plain = wire::parse(frame, None);
    if let Ok(datagram) = &plain {
        check(frame, None, datagram);
    }

    // A tag the kernel took out of the frame, varied with the input so both TPIDs and many
    // TCIs are seen.
    let tpid = if frame.len().is_multiple_of(2) {
        0x8100
    } else {
        0x88a8
    };
    let tci = frame
        .first()
        .map_or(0, |&b| u16::from(b) << 8 | (frame.len() as u16 & 0xff));
    let offloaded = VlanTag { tpid, tci };
    let tagged = wire::parse(frame, Some(offloaded));
    match &tagged {
        Ok(datagram) => check(frame, Some(offloaded), datagram),
        // The offloaded tag only uses up one of the two tag slots: the frame is refused for
        // too many tags, or exactly as without it.
        Err(DropReason::TooManyVlanTags) => {}
        Err(reason) => assert_eq!(
            plain.as_ref().err(),
            Some(reason),
            "offloaded tag changed the reason"
        ),
    }
    if let (Ok(with), Ok(without)) = (&tagged, &plain) {
        assert_eq!(with.vlans[1], without.vlans[0]);
        assert_eq!(without.vlans[1], None);
        assert_eq!(with.payload, without.payload);
    }
});

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn addr(bytes: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3])
}

/// RFC 1071 sum of `bytes` (even length), folded.
fn folded_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|w| u32::from(be16(w, 0))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn check(frame: &[u8], offloaded: Option<VlanTag>, d: &Datagram<'_>) {
    // The payload lies inside the input.
    let start = frame.as_ptr() as usize;
    let offset = (d.payload.as_ptr() as usize)
        .checked_sub(start)
        .expect("payload starts inside the frame");
    assert!(
        offset + d.payload.len() <= frame.len(),
        "payload ends inside the frame"
    );

    // Tags: the offloaded one first, no gap, at most two, and the in-frame ones as on the wire.
    assert!(
        d.vlans[0].is_some() || d.vlans[1].is_none(),
        "a None before a Some"
    );
    if let Some(tag) = offloaded {
        assert_eq!(d.vlans[0], Some(tag));
    }
    let in_frame: Vec<VlanTag> = d
        .vlans
        .iter()
        .flatten()
        .copied()
        .skip(usize::from(offloaded.is_some()))
        .collect();
    let mut at = 12;
    for tag in &in_frame {
        assert_eq!(be16(frame, at), tag.tpid);
        assert!(tag.tpid == 0x8100 || tag.tpid == 0x88a8);
        assert_eq!(be16(frame, at + 2), tag.tci);
        at += 4;
    }
    assert_eq!(be16(frame, at), 0x0800, "ethertype IPv4");

    // IPv4: version, IHL, lengths, checksum, no fragment, UDP.
    let ip = at + 2;
    assert_eq!(frame[ip] >> 4, 4);
    let ihl = usize::from(frame[ip] & 0x0f) * 4;
    assert!((20..=60).contains(&ihl));
    let total = usize::from(be16(frame, ip + 2));
    assert_eq!(total, ihl + 8 + d.payload.len(), "IPv4 total length");
    assert!(ip + total <= frame.len(), "IP packet inside the frame");
    assert_eq!(
        folded_sum(&frame[ip..ip + ihl]),
        0xffff,
        "header checksum verifies"
    );
    assert_eq!(be16(frame, ip + 6) & 0x3fff, 0, "not a fragment");
    assert_eq!(frame[ip + 9], 17, "UDP");
    assert_eq!(frame[ip + 1], d.tos);
    assert_eq!(be16(frame, ip + 4), d.ip_id);
    assert_eq!(frame[ip + 8], d.ttl);
    assert_eq!(addr(frame, ip + 12), d.source);
    assert_eq!(addr(frame, ip + 16), d.destination);

    // UDP: the header right after the IPv4 header, the payload right after it.
    let udp = ip + ihl;
    assert_eq!(offset, udp + 8, "payload offset");
    assert_eq!(be16(frame, udp), d.source_port);
    assert_eq!(be16(frame, udp + 2), d.destination_port);
    assert_eq!(
        usize::from(be16(frame, udp + 4)),
        8 + d.payload.len(),
        "UDP length"
    );
    assert_eq!(be16(frame, udp + 6), d.udp_checksum);
    assert_eq!(d.udp_len(), 8 + d.payload.len());
}
