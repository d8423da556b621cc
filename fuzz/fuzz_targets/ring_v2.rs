//! The TPACKET_V2 slot reader (`fanout_core::ring::walk::v2_block`, the code that reads every
//! user-owned slot of a mapped ring) over synthetic blocks whose frame headers are fuzzed.
//!
//! Input: two bytes choosing the slot size (a multiple of 16 from 16 to 4096, the kernel's
//! TPACKET_ALIGNMENT; sizes below the header are tried too), then the block. Every slot is read
//! on its own: the walk must never panic, yield one item per whole slot, and agree with a model
//! written here from `struct tpacket2_hdr`: the frame's bytes where `tp_mac` and `tp_snaplen`
//! put them, inside its own slot, or the refusal the layout calls for.

#![no_main]

use fanout_core::ring::Malformed;
use fanout_core::ring::walk::v2_block;
use libfuzzer_sys::fuzz_target;

/// `sizeof(struct tpacket2_hdr)`; the `sockaddr_ll` follows, the data after that.
const FRAME_HEADER: usize = 32;
const MAX_BLOCK: usize = 1 << 16;

fn field(slot: &[u8], at: usize, len: usize) -> usize {
    let mut bytes = [0u8; 4];
    bytes[..len].copy_from_slice(&slot[at..at + len]);
    if len == 2 {
        usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]))
    } else {
        u32::from_ne_bytes(bytes) as usize
    }
}

fn model(slot: &[u8]) -> Result<std::ops::Range<usize>, Malformed> {
    if slot.len() < FRAME_HEADER {
        return Err(Malformed::HeaderOutOfBounds);
    }
    let snap = field(slot, 8, 4);
    let mac = field(slot, 12, 2);
    if mac < FRAME_HEADER {
        return Err(Malformed::HeaderOutOfBounds);
    }
    if mac + snap > slot.len() {
        return Err(Malformed::DataOutOfBounds);
    }
    Ok(mac..mac + snap)
}

fuzz_target!(|data: &[u8]| {
    let Some((size, block)) = data.split_first_chunk::<2>() else {
        return;
    };
    let frame_size = (usize::from(u16::from_le_bytes(*size)) % 256 + 1) * 16;
    let block = &block[..block.len().min(MAX_BLOCK)];
    let walked: Vec<_> = v2_block(block, frame_size).collect();
    assert_eq!(
        walked.len(),
        block.len() / frame_size,
        "one item per whole slot"
    );
    let base = block.as_ptr() as usize;
    for (index, got) in walked.iter().enumerate() {
        let slot_start = index * frame_size;
        let slot = &block[slot_start..slot_start + frame_size];
        match (got, model(slot)) {
            (Ok(frame), Ok(range)) => {
                let start = frame.data().as_ptr() as usize - base;
                assert_eq!(
                    start..start + frame.data().len(),
                    slot_start + range.start..slot_start + range.end,
                    "frame where its header says, inside its slot"
                );
                assert_eq!(frame.seq_num(), None);
                assert_eq!(frame.rx_hash(), None);
            }
            (Err(got), Err(want)) => assert_eq!(*got, want),
            (got, want) => panic!("slot {index}: walk {got:?} where the model says {want:?}"),
        }
    }
});
