//! A set of CPU numbers in the two text forms the kernel uses.

use std::fmt;
use std::str::FromStr;

/// CPU numbers above this are refused when parsing, so a hostile or corrupt file cannot make the
/// set allocate gigabytes. The kernel's own limit (`NR_CPUS`) is at most 8192.
pub const MAX_CPUS: usize = 65_536;

/// A set of CPU numbers, as in an affinity, an RPS mask or `/sys/devices/system/cpu/online`.
///
/// The kernel writes such sets in two forms, and this type reads and writes both:
/// - the *list* form (`"0-3,6"`, `Display`/[`FromStr`]), used by `cpu/online`,
///   `smp_affinity_list` and taskset `-c`; ranges may carry a stride (`"0-7:2/4"` = 0,1,4,5);
/// - the *mask* form (`"ff,00000001"`, [`CpuSet::parse_mask`]/[`CpuSet::to_mask`]), hex 32-bit
///   words separated by commas, most significant first, used by `rps_cpus` and `smp_affinity`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuSet {
    /// Bit `cpu % 64` of word `cpu / 64`; no trailing zero words, so `Eq` compares sets.
    words: Vec<u64>,
}

/// Why a CPU list or mask could not be read; positions are byte offsets into the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CpuSetParseError {
    /// Something other than a decimal CPU number where one was expected.
    #[error("expected a CPU number at byte {offset}")]
    Number {
        /// Byte offset of the bad item.
        offset: usize,
    },
    /// A range whose end lies below its start, or a stride like `:0/4` or `:5/4`.
    #[error("bad range at byte {offset}")]
    Range {
        /// Byte offset of the bad range.
        offset: usize,
    },
    /// A CPU number at or above [`MAX_CPUS`].
    #[error("CPU {cpu} is above the supported maximum {MAX_CPUS}")]
    TooLarge {
        /// The refused CPU number (saturated at `u32::MAX`).
        cpu: u32,
    },
    /// A mask word that is empty, longer than 8 hex digits or not hexadecimal.
    #[error("expected up to 8 hex digits at byte {offset}")]
    MaskWord {
        /// Byte offset of the bad word.
        offset: usize,
    },
}

impl CpuSet {
    /// The empty set.
    pub fn new() -> CpuSet {
        CpuSet::default()
    }

    /// The set holding only `cpu`, the common case of pinning.
    pub fn single(cpu: usize) -> CpuSet {
        let mut set = CpuSet::new();
        set.insert(cpu);
        set
    }

    /// Adds `cpu`; returns whether it was new.
    pub fn insert(&mut self, cpu: usize) -> bool {
        let (word, bit) = (cpu / 64, 1u64 << (cpu % 64));
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let new = self.words[word] & bit == 0;
        self.words[word] |= bit;
        new
    }

    /// Removes `cpu`; returns whether it was present.
    pub fn remove(&mut self, cpu: usize) -> bool {
        let present = self.contains(cpu);
        if present {
            self.words[cpu / 64] &= !(1u64 << (cpu % 64));
            self.trim();
        }
        present
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.words
            .get(cpu / 64)
            .is_some_and(|w| w & (1u64 << (cpu % 64)) != 0)
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set holds no CPU (an RPS mask of `0` means "RPS off").
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The highest CPU in the set.
    pub fn max(&self) -> Option<usize> {
        let last = self.words.last()?;
        Some((self.words.len() - 1) * 64 + 63 - last.leading_zeros() as usize)
    }

    /// The CPUs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| i * 64 + b)
        })
    }

    /// Reads the list form, e.g. `"0-3,6"` or `"0-7:2/4"`; surrounding whitespace (the trailing
    /// newline of a sysfs file) is ignored, and an empty text is the empty set.
    pub fn parse_list(text: &str) -> Result<CpuSet, CpuSetParseError> {
        let mut set = CpuSet::new();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(set);
        }
        let base = text.len() - text.trim_start().len();
        let mut offset = base;
        for item in trimmed.split(',') {
            set.parse_list_item(item, offset)?;
            offset += item.len() + 1;
        }
        Ok(set)
    }

    fn parse_list_item(&mut self, item: &str, offset: usize) -> Result<(), CpuSetParseError> {
        let (range, stride) = match item.split_once(':') {
            Some((range, stride)) => (range, Some(stride)),
            None => (item, None),
        };
        let (start, end) = match range.split_once('-') {
            Some((a, b)) => (cpu_number(a, offset)?, cpu_number(b, offset)?),
            None => {
                let cpu = cpu_number(range, offset)?;
                (cpu, cpu)
            }
        };
        if end < start {
            return Err(CpuSetParseError::Range { offset });
        }
        let (used, group) = match stride {
            None => (1, 1),
            Some(stride) => {
                let (u, g) = stride
                    .split_once('/')
                    .ok_or(CpuSetParseError::Range { offset })?;
                let bad = |_| CpuSetParseError::Range { offset };
                let (u, g) = (
                    u.parse::<usize>().map_err(bad)?,
                    g.parse::<usize>().map_err(bad)?,
                );
                if u == 0 || g == 0 || u > g {
                    return Err(CpuSetParseError::Range { offset });
                }
                (u, g)
            }
        };
        for cpu in start..=end {
            if (cpu - start) % group < used {
                self.insert(cpu);
            }
        }
        Ok(())
    }

    /// Reads the mask form, e.g. `"3"`, `"00000000,00000101"` (CPUs 0 and 8); surrounding
    /// whitespace is ignored.
    pub fn parse_mask(text: &str) -> Result<CpuSet, CpuSetParseError> {
        let trimmed = text.trim();
        let base = text.len() - text.trim_start().len();
        let chunks: Vec<&str> = trimmed.split(',').collect();
        let mut set = CpuSet::new();
        let mut offset = base;
        for (i, chunk) in chunks.iter().enumerate() {
            let bad = CpuSetParseError::MaskWord { offset };
            if chunk.is_empty() || chunk.len() > 8 {
                return Err(bad);
            }
            let word = u32::from_str_radix(chunk, 16).map_err(|_| bad)?;
            let shift = (chunks.len() - 1 - i) * 32;
            if word != 0 && shift >= MAX_CPUS {
                return Err(CpuSetParseError::TooLarge {
                    cpu: u32::try_from(shift).unwrap_or(u32::MAX),
                });
            }
            for b in (0..32).filter(|b| word & (1u32 << b) != 0) {
                set.insert(shift + b);
            }
            offset += chunk.len() + 1;
        }
        Ok(set)
    }

    /// Writes the mask form the kernel's `bitmap_parse` accepts: 32-bit hex words, most
    /// significant first, the first unpadded and the others 8 digits; `"0"` for the empty set.
    pub fn to_mask(&self) -> String {
        let Some(max) = self.max() else {
            return "0".to_owned();
        };
        let word32 = |i: usize| -> u32 {
            let w = self.words.get(i / 2).copied().unwrap_or(0);
            // Truncation keeps exactly the 32 bits of the wanted half.
            (if i.is_multiple_of(2) { w } else { w >> 32 }) as u32
        };
        let top = max / 32;
        let mut out = format!("{:x}", word32(top));
        for i in (0..top).rev() {
            out.push_str(&format!(",{:08x}", word32(i)));
        }
        out
    }

    fn trim(&mut self) {
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
    }
}

fn cpu_number(text: &str, offset: usize) -> Result<usize, CpuSetParseError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CpuSetParseError::Number { offset });
    }
    let cpu: u64 = text.parse().unwrap_or(u64::MAX);
    if cpu >= MAX_CPUS as u64 {
        return Err(CpuSetParseError::TooLarge {
            cpu: u32::try_from(cpu).unwrap_or(u32::MAX),
        });
    }
    Ok(cpu as usize)
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> CpuSet {
        let mut set = CpuSet::new();
        for cpu in iter {
            set.insert(cpu);
        }
        set
    }
}

impl FromStr for CpuSet {
    type Err = CpuSetParseError;

    /// The list form, as [`CpuSet::parse_list`].
    fn from_str(text: &str) -> Result<CpuSet, CpuSetParseError> {
        CpuSet::parse_list(text)
    }
}

/// The list form with maximal ranges, as the kernel prints it (`"0-3,6"`; empty for no CPU).
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.iter().peekable();
        let mut first = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end += 1;
                cpus.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_kernel_lists() {
        let set = CpuSet::parse_list("0-3,6\n").unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 6]);
        assert_eq!(set.to_string(), "0-3,6");
        assert_eq!(CpuSet::parse_list("\n").unwrap(), CpuSet::new());
        let strided = CpuSet::parse_list("0-7:2/4").unwrap();
        assert_eq!(strided.iter().collect::<Vec<_>>(), [0, 1, 4, 5]);
        assert_eq!(CpuSet::parse_list("64,130").unwrap().max(), Some(130));
    }

    #[test]
    fn refuses_bad_lists_with_position() {
        assert_eq!(
            CpuSet::parse_list("0-3,x"),
            Err(CpuSetParseError::Number { offset: 4 })
        );
        assert_eq!(
            CpuSet::parse_list("5-2"),
            Err(CpuSetParseError::Range { offset: 0 })
        );
        assert_eq!(
            CpuSet::parse_list("0-7:5/4"),
            Err(CpuSetParseError::Range { offset: 0 })
        );
        assert_eq!(
            CpuSet::parse_list("0-4000000000"),
            Err(CpuSetParseError::TooLarge { cpu: 4_000_000_000 })
        );
        assert!(CpuSet::parse_list("1,,2").is_err());
        assert!(CpuSet::parse_list("-1").is_err());
    }

    #[test]
    fn reads_and_writes_kernel_masks() {
        let set = CpuSet::parse_mask("00000000,00000101\n").unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 8]);
        assert_eq!(set.to_mask(), "101");
        assert_eq!(CpuSet::parse_mask("0").unwrap(), CpuSet::new());
        assert_eq!(CpuSet::new().to_mask(), "0");
        let wide: CpuSet = [1, 33, 64].into_iter().collect();
        assert_eq!(wide.to_mask(), "1,00000002,00000002");
        assert_eq!(CpuSet::parse_mask(&wide.to_mask()).unwrap(), wide);
        assert_eq!(
            CpuSet::parse_mask("3,123456789"),
            Err(CpuSetParseError::MaskWord { offset: 2 })
        );
        assert_eq!(
            CpuSet::parse_mask("g"),
            Err(CpuSetParseError::MaskWord { offset: 0 })
        );
        assert!(CpuSet::parse_mask("").is_err());
    }

    #[test]
    fn remove_keeps_sets_comparable() {
        let mut set = CpuSet::single(100);
        assert!(set.contains(100) && !set.contains(99));
        assert!(set.remove(100));
        assert!(!set.remove(100));
        assert_eq!(set, CpuSet::new());
        assert!(set.is_empty() && set.max().is_none());
    }

    proptest! {
        #[test]
        fn list_and_mask_round_trip(cpus in proptest::collection::btree_set(0usize..300, 0..40)) {
            let set: CpuSet = cpus.iter().copied().collect();
            prop_assert_eq!(set.len(), cpus.len());
            prop_assert_eq!(CpuSet::parse_list(&set.to_string()).unwrap(), set.clone());
            prop_assert_eq!(CpuSet::parse_mask(&set.to_mask()).unwrap(), set.clone());
            prop_assert_eq!(set.iter().collect::<Vec<_>>(), cpus.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn parsing_never_panics(text in "[0-9a-f,:/\\- ]{0,24}") {
            let _ = CpuSet::parse_list(&text);
            let _ = CpuSet::parse_mask(&text);
        }
    }
}
