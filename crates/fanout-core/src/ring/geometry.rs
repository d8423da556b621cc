//! Ring geometry and the kernel's rules for it, checked before any syscall.
//!
//! The rules mirror `packet_set_ring()` in `net/packet/af_packet.c`, which answers a bare EINVAL
//! for any of them; checking here first turns that EINVAL into an error naming the field.

use super::RingVersion;

/// `TPACKET_ALIGNMENT`: frame sizes and frame offsets are multiples of it.
pub const FRAME_ALIGNMENT: u32 = 16;

/// Size of the V3 block header the kernel writes at the start of each block
/// (`BLK_HDR_LEN` = `ALIGN(sizeof(struct tpacket_block_desc), 8)`).
pub const V3_BLOCK_HEADER_LEN: u32 = 48;

/// The layout of a ring: `block_count` blocks of `block_size` bytes, each holding
/// `block_size / frame_size` frame slots (V2, TX) or variable-size frames (V3 RX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    block_size: u32,
    block_count: u32,
    frame_size: u32,
}

/// A ring layout the kernel would refuse (or silently misuse), found before any syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// `tp_block_size` must be a positive multiple of the page size.
    #[error("block size {block_size} is not a positive multiple of the page size {page_size}")]
    BlockSizeNotPageMultiple {
        /// The block size asked for.
        block_size: u32,
        /// The runtime page size (`sysconf(_SC_PAGESIZE)`).
        page_size: u32,
    },
    /// `tp_block_nr` must be positive (0 asks the kernel to tear the ring down).
    #[error("block count must be at least 1")]
    NoBlocks,
    /// `tp_frame_size` must be a multiple of `TPACKET_ALIGNMENT` (16).
    #[error("frame size {frame_size} is not a multiple of {FRAME_ALIGNMENT}")]
    FrameSizeUnaligned {
        /// The frame size asked for.
        frame_size: u32,
    },
    /// `tp_frame_size` must hold the frame header plus the reserve.
    #[error("frame size {frame_size} is below the minimum {minimum} (header + reserve)")]
    FrameTooSmall {
        /// The frame size asked for.
        frame_size: u32,
        /// Header length of the ring version plus `PACKET_RESERVE`.
        minimum: u32,
    },
    /// A block must hold at least one frame.
    #[error("frame size {frame_size} exceeds block size {block_size}")]
    FrameLargerThanBlock {
        /// The frame size asked for.
        frame_size: u32,
        /// The block size asked for.
        block_size: u32,
    },
    /// A V3 block must hold its header, the private area and one minimal frame.
    #[error(
        "block size {block_size} cannot hold the block header, a private area of {private_size} \
         bytes and one frame of {minimum_frame} bytes"
    )]
    PrivateAreaTooLarge {
        /// The block size asked for.
        block_size: u32,
        /// The private area asked for.
        private_size: u32,
        /// Header length plus reserve.
        minimum_frame: u32,
    },
    /// Frame count or ring size does not fit the kernel's 32-bit fields or this address space.
    #[error("ring of {block_count} blocks of {block_size} bytes overflows {what}")]
    Overflow {
        /// Which quantity overflowed.
        what: &'static str,
        /// The block size asked for.
        block_size: u32,
        /// The block count asked for.
        block_count: u32,
    },
}

/// What besides the geometry the kernel checks it against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Constraints {
    pub(crate) version: RingVersion,
    pub(crate) page_size: u32,
    pub(crate) reserve: u32,
    pub(crate) private_size: u32,
}

const fn align_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

impl Geometry {
    /// A layout, not yet checked; the ring builders check it against the kernel's rules.
    pub const fn new(block_size: u32, block_count: u32, frame_size: u32) -> Self {
        Self {
            block_size,
            block_count,
            frame_size,
        }
    }

    /// Bytes per block.
    pub const fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Number of blocks.
    pub const fn block_count(&self) -> u32 {
        self.block_count
    }

    /// Bytes per frame slot.
    pub const fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Frame slots per block (whole frames only; the rest of a block is unused).
    pub const fn frames_per_block(&self) -> u32 {
        match self.block_size.checked_div(self.frame_size) {
            Some(n) => n,
            None => 0,
        }
    }

    /// `tp_frame_nr`: the kernel demands exactly `frames_per_block * block_count`.
    pub const fn frame_count(&self) -> u64 {
        self.frames_per_block() as u64 * self.block_count as u64
    }

    /// Bytes of the whole ring, i.e. the mmap length of an RX-only or TX-only socket.
    pub const fn ring_bytes(&self) -> u64 {
        self.block_size as u64 * self.block_count as u64
    }

    /// Checks every rule of `packet_set_ring()`.
    pub(crate) fn validate(&self, c: &Constraints) -> Result<(), GeometryError> {
        let Self {
            block_size,
            block_count,
            frame_size,
        } = *self;
        if block_size == 0 || c.page_size == 0 || !block_size.is_multiple_of(c.page_size) {
            return Err(GeometryError::BlockSizeNotPageMultiple {
                block_size,
                page_size: c.page_size,
            });
        }
        if block_count == 0 {
            return Err(GeometryError::NoBlocks);
        }
        if !frame_size.is_multiple_of(FRAME_ALIGNMENT) || frame_size == 0 {
            return Err(GeometryError::FrameSizeUnaligned { frame_size });
        }
        let minimum = u64::from(c.version.header_len()) + u64::from(c.reserve);
        if u64::from(frame_size) < minimum {
            return Err(GeometryError::FrameTooSmall {
                frame_size,
                minimum: u32::try_from(minimum).unwrap_or(u32::MAX),
            });
        }
        if frame_size > block_size {
            return Err(GeometryError::FrameLargerThanBlock {
                frame_size,
                block_size,
            });
        }
        if c.version == RingVersion::V3 {
            let needed =
                u64::from(V3_BLOCK_HEADER_LEN) + align_up(u64::from(c.private_size), 8) + minimum;
            if u64::from(block_size) < needed {
                return Err(GeometryError::PrivateAreaTooLarge {
                    block_size,
                    private_size: c.private_size,
                    minimum_frame: u32::try_from(minimum).unwrap_or(u32::MAX),
                });
            }
        }
        let overflow = |what| GeometryError::Overflow {
            what,
            block_size,
            block_count,
        };
        if self.frame_count() > u64::from(u32::MAX) {
            return Err(overflow("tp_frame_nr (u32)"));
        }
        if usize::try_from(self.ring_bytes()).is_err() || self.ring_bytes() > i64::MAX as u64 {
            return Err(overflow("the address space (mmap length)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(reserve: u32, private_size: u32) -> Constraints {
        Constraints {
            version: RingVersion::V3,
            page_size: 4096,
            reserve,
            private_size,
        }
    }

    #[test]
    fn accepts_a_typical_v3_ring() {
        let g = Geometry::new(1 << 20, 64, 2048);
        assert_eq!(g.validate(&v3(0, 0)), Ok(()));
        assert_eq!(g.frames_per_block(), 512);
        assert_eq!(g.frame_count(), 512 * 64);
        assert_eq!(g.ring_bytes(), 64 << 20);
    }

    #[test]
    fn rejects_block_size_off_the_page_grid() {
        let err = Geometry::new(4096 + 16, 4, 2048).validate(&v3(0, 0));
        assert_eq!(
            err,
            Err(GeometryError::BlockSizeNotPageMultiple {
                block_size: 4112,
                page_size: 4096
            })
        );
        let err = Geometry::new(0, 4, 2048).validate(&v3(0, 0));
        assert!(matches!(
            err,
            Err(GeometryError::BlockSizeNotPageMultiple { block_size: 0, .. })
        ));
    }

    #[test]
    fn page_size_is_the_runtime_one() {
        let c = Constraints {
            page_size: 16384,
            ..v3(0, 0)
        };
        assert!(Geometry::new(8192, 4, 2048).validate(&c).is_err());
        assert_eq!(Geometry::new(16384, 4, 2048).validate(&c), Ok(()));
    }

    #[test]
    fn rejects_unaligned_and_small_frames() {
        let g = Geometry::new(4096, 4, 2040);
        assert_eq!(
            g.validate(&v3(0, 0)),
            Err(GeometryError::FrameSizeUnaligned { frame_size: 2040 })
        );
        let g = Geometry::new(4096, 4, 64);
        assert_eq!(
            g.validate(&v3(0, 0)),
            Err(GeometryError::FrameTooSmall {
                frame_size: 64,
                minimum: RingVersion::V3.header_len()
            })
        );
        let v2 = Constraints {
            version: RingVersion::V2,
            ..v3(32, 0)
        };
        assert_eq!(
            Geometry::new(4096, 4, 80).validate(&v2),
            Err(GeometryError::FrameTooSmall {
                frame_size: 80,
                minimum: 52 + 32
            })
        );
    }

    #[test]
    fn rejects_zero_blocks_and_frames_larger_than_blocks() {
        assert_eq!(
            Geometry::new(4096, 0, 2048).validate(&v3(0, 0)),
            Err(GeometryError::NoBlocks)
        );
        assert_eq!(
            Geometry::new(4096, 2, 8192).validate(&v3(0, 0)),
            Err(GeometryError::FrameLargerThanBlock {
                frame_size: 8192,
                block_size: 4096
            })
        );
    }

    #[test]
    fn rejects_private_area_that_leaves_no_room() {
        let err = Geometry::new(4096, 2, 2048).validate(&v3(0, 4000));
        assert!(matches!(
            err,
            Err(GeometryError::PrivateAreaTooLarge {
                private_size: 4000,
                ..
            })
        ));
        assert_eq!(Geometry::new(4096, 2, 2048).validate(&v3(0, 256)), Ok(()));
    }

    #[test]
    fn rejects_frame_count_overflow() {
        // 2^31-byte blocks of 64-byte frames: 2^25 frames per block, times 1024 blocks > u32.
        let c = Constraints {
            version: RingVersion::V2,
            page_size: 4096,
            reserve: 0,
            private_size: 0,
        };
        let g = Geometry::new(1 << 31, 1024, 64);
        assert!(matches!(
            g.validate(&c),
            Err(GeometryError::Overflow {
                what: "tp_frame_nr (u32)",
                ..
            })
        ));
    }
}
