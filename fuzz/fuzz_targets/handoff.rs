//! The ring hand-off descriptor a worker receives from its supervisor
//! (`fanout_core::RingDescriptor`, binary and hex forms) on arbitrary bytes.
//!
//! It must never panic; what it accepts must be the one encoding of what it decoded to (the
//! bytes re-encode to themselves, the hex form to the same descriptor, in either case of
//! digits), and must describe a ring the kernel could have built: at least one block, frames
//! aligned, holding their header, no larger than a block, a frame count and a mapping length
//! that fit their types. A descriptor outside those would send the worker's ring arithmetic
//! past the mapping or into a division by zero.

#![no_main]

use fanout_core::RingDescriptor;
use fanout_core::ring::RingVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = RingDescriptor::from_bytes(data);
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    let from_hex = hex.parse::<RingDescriptor>();
    let from_upper = hex.to_uppercase().parse::<RingDescriptor>();
    assert_eq!(decoded.is_ok(), from_hex.is_ok(), "binary and hex agree");
    assert_eq!(
        decoded.is_ok(),
        from_upper.is_ok(),
        "hex digits of either case"
    );
    if let Ok(text) = std::str::from_utf8(data) {
        // Text that is not hex of a descriptor is refused without panicking.
        if let Ok(descriptor) = text.parse::<RingDescriptor>() {
            assert_eq!(text.len(), 48);
            assert_eq!(descriptor.to_string(), text.to_ascii_lowercase());
        }
    }
    let Ok(descriptor) = decoded else {
        return;
    };
    assert_eq!(
        &descriptor.to_bytes()[..],
        data,
        "one encoding per descriptor"
    );
    assert_eq!(from_hex.ok(), Some(descriptor));
    assert_eq!(descriptor.to_string(), hex);

    let g = descriptor.geometry;
    let header = match descriptor.version {
        RingVersion::V2 => 32 + 20,
        RingVersion::V3 => 48 + 20,
    };
    assert!(g.block_count() >= 1, "a ring has a block: {g:?}");
    assert!(
        g.block_size() > 0 && g.block_size() % 16 == 0,
        "block size: {g:?}"
    );
    assert!(g.frame_size() % 16 == 0, "frame size aligned: {g:?}");
    assert!(g.frame_size() >= header, "a frame holds its header: {g:?}");
    assert!(
        g.frame_size() <= g.block_size(),
        "a frame fits a block: {g:?}"
    );
    assert!(
        g.frame_count() <= u64::from(u32::MAX),
        "tp_frame_nr fits: {g:?}"
    );
    assert!(
        usize::try_from(g.ring_bytes()).is_ok(),
        "the mapping fits: {g:?}"
    );
});
