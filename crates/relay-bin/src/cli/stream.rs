//! The stream options of `ctl add`'s compact form: inspection and the storm guard, as the
//! `[[rule]]` keys of the same names.

use clap::Args;
use relay_rules::Rule;
use relay_rules::inspect::Inspect;

/// `--inspect`, `--rtp-clock-hz`, `--max-pps` and `--max-bps`.
#[derive(Debug, Clone, Default, Args)]
pub struct StreamArgs {
    /// Count the health of the stream: rtp, mpegts or rtp+mpegts (`inspect`).
    #[arg(long, value_name = "KIND", conflicts_with = "toml")]
    pub inspect: Option<Inspect>,
    /// RTP clock rate for the jitter, in Hz (`rtp_clock_hz`; default 90000).
    #[arg(long, value_name = "HZ", conflicts_with = "toml")]
    pub rtp_clock_hz: Option<u32>,
    /// Forward at most this many datagrams per second, over all workers (`max_pps`).
    #[arg(long, value_name = "PPS", conflicts_with = "toml")]
    pub max_pps: Option<u64>,
    /// Forward at most this many payload bits per second, over all workers (`max_bps`).
    #[arg(long, value_name = "BPS", conflicts_with = "toml")]
    pub max_bps: Option<u64>,
}

impl StreamArgs {
    /// The stream options of `rule` as `ctl list` shows them (` inspect mpegts max_pps 5000`),
    /// empty for a rule without any.
    pub fn describe(rule: &Rule) -> String {
        let mut text = String::new();
        if let Some(kind) = rule.inspect {
            text.push_str(&format!(" inspect {kind}"));
        }
        if let Some(hz) = rule.rtp_clock_hz {
            text.push_str(&format!(" rtp_clock_hz {hz}"));
        }
        if let Some(pps) = rule.max_pps {
            text.push_str(&format!(" max_pps {pps}"));
        }
        if let Some(bps) = rule.max_bps {
            text.push_str(&format!(" max_bps {bps}"));
        }
        text
    }

    /// Sets the options given on `rule`.
    pub fn apply(&self, rule: &mut Rule) {
        rule.inspect = self.inspect;
        rule.rtp_clock_hz = self.rtp_clock_hz;
        rule.max_pps = self.max_pps;
        rule.max_bps = self.max_bps;
    }
}
