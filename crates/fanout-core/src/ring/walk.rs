//! The receive walkers over plain bytes: a V3 block or a run of V2 slots held in a slice, read
//! by the same code that reads the mapped ring, so that tests and fuzzing can try headers the
//! kernel never writes.
//!
//! A received frame is only as trustworthy as the header fields that place it; these entry
//! points let every field be made up, and what they yield is exactly what the ring would
//! yield for the same bytes: a frame whose data lies inside its block or slot, or a
//! [`Malformed`] refusal.

use super::frame::{self, Frame, Malformed, u32_at, u64_at};
use super::{v2, v3};

/// The frames of one TPACKET_V3 block held in `block`: the whole block, descriptor first
/// (`struct tpacket_block_desc`), as the kernel retires it. `num_pkts` frames are read from
/// `offset_to_first_pkt`, each header's `tp_next_offset` leading to the next; a malformed
/// header ends the walk, as in the ring. `rx_hash` says whether the ring asked the kernel to
/// fill in the flow hash.
pub fn v3_block(block: &[u8], rx_hash: bool) -> V3BlockFrames<'_> {
    let field32 = |at| u32_at(block, at).unwrap_or(0);
    V3BlockFrames(v3::V3Frames::over(
        block,
        field32(frame::v3::BLOCK_FIRST),
        field32(frame::v3::BLOCK_NUM_PKTS),
        u64_at(block, frame::v3::BLOCK_SEQ).unwrap_or(0),
        rx_hash,
    ))
}

/// The frame slots of a TPACKET_V2 block held in `block`, `frame_size` bytes each (frames never
/// straddle blocks; a tail shorter than a slot is unused). Each slot is read on its own, as the
/// ring reads a run of user-owned slots, so a malformed one does not end the walk.
pub fn v2_block(
    block: &[u8],
    frame_size: usize,
) -> impl Iterator<Item = Result<Frame<'_>, Malformed>> {
    let slots = match frame_size {
        0 => [].chunks_exact(1),
        size => block.chunks_exact(size),
    };
    slots.map(v2::slot_frame)
}

/// Iterator over the frames of a V3 block held in a slice ([`v3_block`]).
#[derive(Debug)]
pub struct V3BlockFrames<'b>(v3::V3Frames<'b>);

impl<'b> Iterator for V3BlockFrames<'b> {
    type Item = Result<Frame<'b>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::geometry::V3_BLOCK_HEADER_LEN;

    /// A V3 block of `size` bytes holding `payloads` one after another, as the kernel packs them.
    fn v3(size: usize, payloads: &[&[u8]]) -> Vec<u8> {
        let mut block = vec![0u8; size];
        let put32 = |block: &mut Vec<u8>, at: usize, value: u32| {
            block[at..at + 4].copy_from_slice(&value.to_ne_bytes());
        };
        let first = V3_BLOCK_HEADER_LEN as usize;
        put32(&mut block, frame::v3::BLOCK_NUM_PKTS, payloads.len() as u32);
        put32(&mut block, frame::v3::BLOCK_FIRST, first as u32);
        let mut at = first;
        for (i, payload) in payloads.iter().enumerate() {
            let mac = frame::v3::SLL + 32;
            let len = (mac + payload.len()).div_ceil(16) * 16;
            let next = if i + 1 == payloads.len() { 0 } else { len };
            put32(&mut block, at + frame::v3::NEXT_OFFSET, next as u32);
            put32(&mut block, at + frame::v3::SNAPLEN, payload.len() as u32);
            put32(&mut block, at + frame::v3::LEN, payload.len() as u32);
            block[at + frame::v3::MAC..at + frame::v3::MAC + 2]
                .copy_from_slice(&(mac as u16).to_ne_bytes());
            block[at + mac..at + mac + payload.len()].copy_from_slice(payload);
            at += len;
        }
        block
    }

    #[test]
    fn v3_walks_every_packed_frame() {
        let block = v3(4096, &[b"first", b"", b"third frame"]);
        let data: Vec<&[u8]> = v3_block(&block, false)
            .map(|frame| frame.map(|f| f.data()))
            .collect::<Result<_, _>>()
            .expect("well formed");
        assert_eq!(data, [&b"first"[..], b"", b"third frame"]);
    }

    #[test]
    fn v3_stops_at_a_frame_past_the_block() {
        let mut block = v3(4096, &[b"first", b"second"]);
        // The second frame's data runs past the end of the block.
        let second = V3_BLOCK_HEADER_LEN as usize + 96;
        block[second + frame::v3::SNAPLEN..second + frame::v3::SNAPLEN + 4]
            .copy_from_slice(&5000u32.to_ne_bytes());
        let walked: Vec<_> = v3_block(&block, false)
            .map(|f| f.map(|f| f.data()))
            .collect();
        assert_eq!(walked, [Ok(&b"first"[..]), Err(Malformed::DataOutOfBounds)]);
    }

    #[test]
    fn v3_refuses_a_first_offset_inside_the_descriptor_or_past_the_block() {
        for first in [0u32, 8, 4096, u32::MAX] {
            let mut block = v3(4096, &[b"x"]);
            block[frame::v3::BLOCK_FIRST..frame::v3::BLOCK_FIRST + 4]
                .copy_from_slice(&first.to_ne_bytes());
            let walked: Vec<_> = v3_block(&block, false).map(|f| f.map(|_| ())).collect();
            assert_eq!(walked, [Err(Malformed::HeaderOutOfBounds)], "first {first}");
        }
    }

    #[test]
    fn v2_reads_each_slot_on_its_own() {
        let mut block = vec![0u8; 3 * 128 + 40];
        let mac = frame::v2::SLL as u16 + 32;
        for (slot, len) in [(0usize, 4u32), (1, 500), (2, 8)] {
            let at = slot * 128;
            block[at + frame::v2::SNAPLEN..at + frame::v2::SNAPLEN + 4]
                .copy_from_slice(&len.to_ne_bytes());
            block[at + frame::v2::MAC..at + frame::v2::MAC + 2].copy_from_slice(&mac.to_ne_bytes());
        }
        let lens: Vec<_> = v2_block(&block, 128)
            .map(|f| f.map(|f| f.data().len()))
            .collect();
        assert_eq!(lens, [Ok(4), Err(Malformed::DataOutOfBounds), Ok(8)]);
        assert_eq!(v2_block(&block, 0).count(), 0);
    }
}
