//! Why a configuration file, or one of its settings, is refused. Each error names the file, the
//! field (and, where the parser knows it, the line), and what to write instead.

use super::CpuList;
use std::path::PathBuf;

/// A configuration file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        source: ParseError,
    },
}

/// Why the text of a configuration file does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not TOML, or not the shape of the file: a wrong type, an unknown key, or a value one of
    /// the settings below refused (their text is in the parser's message, which names the line
    /// and column and shows the line).
    #[error("{}", source.to_string().trim_end())]
    Toml {
        /// The line the mistake is on, from 1, when the parser says where it is.
        line: Option<usize>,
        /// The parser's error (boxed: it is large, and every configuration error carries it).
        source: Box<toml::de::Error>,
    },
    /// `relay.cpus` and a different CPU list in `relay.workers`.
    #[error(
        "relay.cpus = \"{cpus}\" and relay.workers = \"{workers}\": give the CPUs once, as cpus"
    )]
    TwoCpuLists {
        /// `relay.cpus`.
        cpus: CpuList,
        /// `relay.workers`.
        workers: CpuList,
    },
    /// `relay.cpus` and a count in `relay.workers`.
    #[error(
        "relay.cpus = \"{cpus}\" and relay.workers = {count}: give one of them (cpus names the \
         CPUs that get a worker, workers counts them)"
    )]
    CpusAndCount {
        /// `relay.cpus`.
        cpus: CpuList,
        /// `relay.workers`.
        count: u32,
    },
}

impl ParseError {
    /// The TOML parser's error on `text`, with the line its span starts on.
    pub(super) fn toml(source: toml::de::Error, text: &str) -> Self {
        let line = source.span().map(|span| {
            let before = text.get(..span.start).unwrap_or(text);
            before.bytes().filter(|&byte| byte == b'\n').count() + 1
        });
        ParseError::Toml {
            line,
            source: Box::new(source),
        }
    }

    /// The line of the file the mistake is on, from 1, when it is known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::Toml { line, .. } => *line,
            ParseError::TwoCpuLists { .. } | ParseError::CpusAndCount { .. } => None,
        }
    }
}

/// Why a CPU list (`relay.cpus`, `[[class]] cpus`, `--cpus`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    /// A part that is neither a number nor two numbers joined by `-`.
    #[error("`{part}` is not a CPU or a range of CPUs (expected e.g. `0-3,6`)")]
    NotCpus {
        /// The part, as written between commas.
        part: String,
    },
    /// A range that ends below where it starts.
    #[error(
        "`{part}` is not a range of CPUs: it ends below where it starts (expected e.g. `0-3,6`)"
    )]
    Backwards {
        /// The range, as written.
        part: String,
    },
    /// A range of more CPUs than any machine has.
    #[error("`{part}` is a range of more than {max} CPUs", max = Self::MAX_RANGE)]
    TooWide {
        /// The range, as written.
        part: String,
    },
}

impl CpuListError {
    /// Most CPUs one range may name: more is a typo, and would allocate for nothing.
    pub const MAX_RANGE: u32 = 4096;
}

/// Why a worker set (`relay.workers`, `--workers`, `ctl workers set`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkersError {
    /// A count of zero.
    #[error(
        "`0` is a count of workers, and a relay needs at least one (for a worker on CPU 0 alone, \
         give the CPU list `cpus = \"0\"`, or `--cpus 0`)"
    )]
    Zero,
    /// Neither `all`, nor a count, nor a CPU list.
    #[error(transparent)]
    Cpus(#[from] CpuListError),
}

/// Why the `[ring]` section is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingFieldError {
    /// `busy_poll_us` past [`super::MAX_BUSY_POLL_US`].
    #[error(
        "[ring] busy_poll_us = {busy_poll_us} is more than {max} (one second)",
        max = super::MAX_BUSY_POLL_US
    )]
    BusyPollTooLong {
        /// The value written.
        busy_poll_us: u32,
    },
    /// `busy_poll_us` with a V3 ring.
    #[error(
        "[ring] busy_poll_us = {busy_poll_us} needs version = \"v2\": a V3 block reaches the \
         worker only when it is full or its retire timer fires, which spinning does not hasten"
    )]
    BusyPollOnV3 {
        /// The value written.
        busy_poll_us: u32,
    },
}

/// Why the `[autoscale]` section is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AutoscaleError {
    /// The ring busy-polls.
    #[error(
        "autoscale measures the CPU time workers use, and a busy-polling worker \
         (ring.busy_poll_us > 0) always uses all of its CPU"
    )]
    BusyPolling,
    /// `min_workers = 0`.
    #[error("autoscale.min_workers = 0: a relay needs at least one worker")]
    NoWorkers,
    /// The bounds are upside down, or above the CPUs there are.
    #[error(
        "autoscale: min_workers {min} and max_workers {max} must satisfy min <= max <= {cpus} \
         (the CPUs of relay.workers)"
    )]
    Bounds {
        /// `min_workers`.
        min: u32,
        /// `max_workers`, or the CPUs when it is not given.
        max: u32,
        /// The CPUs of `relay.workers`.
        cpus: usize,
    },
    /// `busy_above` or `idle_below` is not a fraction of a CPU.
    #[error("autoscale.{field} = {value}: a fraction of a CPU in (0, 1]")]
    NotFraction {
        /// `busy_above` or `idle_below`.
        field: &'static str,
        /// The value written.
        value: f64,
    },
    /// `idle_below` is not below `busy_above`.
    #[error(
        "autoscale.idle_below ({idle_below}) must be below busy_above ({busy_above}), or the \
         relay would add and remove workers in turn"
    )]
    Flapping {
        /// `idle_below`.
        idle_below: f64,
        /// `busy_above`.
        busy_above: f64,
    },
    /// `sustain_s = 0`.
    #[error("autoscale.sustain_s = 0: a condition must hold for at least one sample")]
    NoSample,
}
