//! The TPACKET_V3 block walker (`fanout_core::ring::walk::v3_block`, the code that reads every
//! retired block of a mapped ring) over synthetic blocks whose header fields are fuzzed.
//!
//! Input: one flag byte, then either the raw block (flag bit 0 clear) or a recipe (bit 0 set):
//! frame lengths and bytes that are packed into a well-formed block the way the kernel packs
//! them, after which one header field may be overwritten with a fuzzed value. The walk must
//! never panic or read outside the block, and must agree with a model written here from the
//! kernel's layout (`struct tpacket_block_desc`, `struct tpacket3_hdr`): the same frames with the
//! same bytes, the same refusal at the same place, nothing after a refusal. A well-formed block
//! must yield exactly the frames packed into it.

#![no_main]

use fanout_core::ring::Malformed;
use fanout_core::ring::walk::v3_block;
use libfuzzer_sys::fuzz_target;

/// Block descriptor (`BLK_HDR_LEN`) and frame header (`sizeof(struct tpacket3_hdr)`) sizes.
const BLOCK_HEADER: usize = 48;
const FRAME_HEADER: usize = 48;
/// Largest block tried: the walk is linear in it, and larger ones find nothing new.
const MAX_BLOCK: usize = 1 << 16;
/// The block status the kernel sets when it hands a block over.
const TP_STATUS_USER: u32 = 1;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn put32(b: &mut [u8], at: usize, value: u32) {
    b[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

/// What the walk must yield for `block`: the data range of each frame, or the refusal.
fn model(block: &[u8]) -> Vec<Result<std::ops::Range<usize>, Malformed>> {
    let count = u32_at(block, 12).unwrap_or(0);
    let mut at = Some(u32_at(block, 16).unwrap_or(0) as usize);
    let mut out = Vec::new();
    for _ in 0..count {
        let Some(header) = at.filter(|&h| h >= BLOCK_HEADER && h + FRAME_HEADER <= block.len())
        else {
            out.push(Err(Malformed::HeaderOutOfBounds));
            break;
        };
        let next = u32_at(block, header).unwrap_or(0) as usize;
        let snap = u32_at(block, header + 12).unwrap_or(0) as usize;
        let mac = usize::from(u16_at(block, header + 24).unwrap_or(0));
        if mac < FRAME_HEADER {
            out.push(Err(Malformed::HeaderOutOfBounds));
            break;
        }
        let (start, end) = (header + mac, header + mac + snap);
        if end > block.len() {
            out.push(Err(Malformed::DataOutOfBounds));
            break;
        }
        out.push(Ok(start..end));
        at = (next >= FRAME_HEADER)
            .then_some(header + next)
            .filter(|&n| n < block.len());
    }
    out
}

/// Packs the frames described by `recipe` into a block as the kernel does, and returns it with
/// the data range of each frame and the offset of each frame header.
fn pack(recipe: &[u8]) -> (Vec<u8>, Vec<std::ops::Range<usize>>, Vec<usize>) {
    let size = (usize::from(recipe.first().copied().unwrap_or(0)) + 1) * 256;
    let mut block = vec![0u8; size];
    let mut ranges = Vec::new();
    let mut headers = Vec::new();
    let mut at = BLOCK_HEADER;
    let mut rest = recipe.get(1..).unwrap_or_default();
    // Each frame: a length byte (times 4), then the bytes, taken from the recipe.
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len) * 4;
        let mac = FRAME_HEADER + 16; // the sockaddr_ll, then Ethernet alignment
        let room = (mac + len).div_ceil(16) * 16;
        if at + room > size {
            break;
        }
        let (data, tail) = tail.split_at(len.min(tail.len()));
        if let Some(&previous) = headers.last() {
            put32(&mut block, previous, (at - previous) as u32);
        }
        put32(&mut block, at + 12, len as u32);
        put32(&mut block, at + 16, len as u32);
        block[at + 24..at + 26].copy_from_slice(&(mac as u16).to_ne_bytes());
        block[at + mac..at + mac + data.len()].copy_from_slice(data);
        headers.push(at);
        ranges.push(at + mac..at + mac + len);
        at += room;
        rest = tail;
    }
    put32(&mut block, 12, headers.len() as u32);
    put32(&mut block, 16, BLOCK_HEADER as u32);
    put32(&mut block, 8, TP_STATUS_USER);
    (block, ranges, headers)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let rx_hash = flags & 2 != 0;
    let block: Vec<u8>;
    if flags & 1 == 0 {
        block = rest[..rest.len().min(MAX_BLOCK)].to_vec();
    } else {
        // The last 8 bytes (when there are) choose a field to overwrite and its value.
        let (recipe, patch) = rest.split_at(rest.len().saturating_sub(8));
        let (mut packed, ranges, headers) = pack(recipe);
        if flags & 4 == 0 || patch.len() < 8 {
            let walked: Vec<_> = v3_block(&packed, rx_hash)
                .map(|frame| frame.map(|f| f.data()))
                .collect();
            let expected: Vec<_> = ranges.iter().map(|r| Ok(&packed[r.clone()])).collect();
            assert_eq!(
                walked, expected,
                "a well-formed block yields what was packed"
            );
            return;
        }
        let value = u32::from_ne_bytes(patch[4..8].try_into().expect("4 bytes"));
        // Block fields (num_pkts, offset_to_first_pkt) or a frame's next offset, snaplen or mac.
        let which = usize::from(patch[0]);
        let at = match which % 5 {
            0 => Some(12),
            1 => Some(16),
            field => headers
                .get(usize::from(patch[1]) % headers.len().max(1))
                .map(|h| h + [0, 12, 24][field - 2]),
        };
        if let Some(at) = at {
            if which % 5 == 4 {
                packed[at..at + 2].copy_from_slice(&(value as u16).to_ne_bytes());
            } else {
                put32(&mut packed, at, value);
            }
        }
        block = packed;
    }

    let walked: Vec<_> = v3_block(&block, rx_hash).collect();
    let expected = model(&block);
    assert_eq!(walked.len(), expected.len(), "as many frames as the model");
    let base = block.as_ptr() as usize;
    for (got, want) in walked.iter().zip(&expected) {
        match (got, want) {
            (Ok(frame), Ok(range)) => {
                let start = frame.data().as_ptr() as usize - base;
                assert_eq!(
                    start..start + frame.data().len(),
                    *range,
                    "frame where the header says"
                );
                assert!(range.end <= block.len(), "frame inside the block");
                assert_eq!(frame.rx_hash().is_some(), rx_hash);
            }
            (Err(got), Err(want)) => assert_eq!(got, want),
            _ => panic!("walk {got:?} where the model says {want:?}"),
        }
    }
    // A frame header is at least FRAME_HEADER bytes past the previous one, so the walk is
    // bounded by the block's size whatever num_pkts says.
    assert!(walked.len() <= block.len() / FRAME_HEADER + 1);
});
