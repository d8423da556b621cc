//! The stream counters of one rule: what its inspection counted and its storm guard dropped.

use relay_rules::inspect::mpegts::TsCounters;
use relay_rules::inspect::rtp::RtpCounters;
use relay_rules::stream::StreamState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Inspection and storm guard counters of one rule (one worker's, or summed over workers).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct StreamCount {
    /// Datagrams the storm guard dropped.
    pub limited_packets: u64,
    /// Their payload bytes.
    pub limited_bytes: u64,
    /// RTP counters, when the rule inspects RTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtp: Option<RtpCounters>,
    /// MPEG-TS counters, when the rule inspects MPEG-TS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<TsCounters>,
    /// Continuity-counter errors by PID, for every PID the rule follows, ascending by PID.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ts_pids: Vec<PidErrors>,
}

/// The continuity-counter errors of one PID. (A list of these rather than a map keyed by
/// PID: JSON keys are strings, and the worker's messages are read through a buffered enum
/// that does not turn them back into numbers.)
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PidErrors {
    /// The PID.
    pub pid: u16,
    /// Its continuity-counter errors.
    pub cc_errors: u64,
}

impl StreamCount {
    /// A copy of one worker's state of one rule.
    pub fn of(state: &StreamState) -> StreamCount {
        let limited = state.limited();
        let inspector = state.inspector();
        let kind = inspector.map(|inspector| inspector.kind());
        let health = state.health().unwrap_or_default();
        StreamCount {
            limited_packets: limited.packets,
            limited_bytes: limited.bytes,
            rtp: kind.filter(|kind| kind.rtp()).map(|_| health.rtp),
            ts: kind.filter(|kind| kind.mpegts()).map(|_| health.ts),
            ts_pids: {
                let mut pids: Vec<PidErrors> = inspector
                    .into_iter()
                    .flat_map(|inspector| inspector.pids())
                    .map(|pid| PidErrors {
                        pid: pid.pid,
                        cc_errors: pid.cc_errors,
                    })
                    .collect();
                pids.sort_unstable();
                pids
            },
        }
    }

    /// Adds another worker's count of the same rule.
    pub fn add(&mut self, other: &StreamCount) {
        self.limited_packets += other.limited_packets;
        self.limited_bytes += other.limited_bytes;
        if let Some(rtp) = &other.rtp {
            self.rtp.get_or_insert_default().merge(rtp);
        }
        if let Some(ts) = &other.ts {
            self.ts.get_or_insert_default().merge(ts);
        }
        for theirs in &other.ts_pids {
            match self
                .ts_pids
                .binary_search_by_key(&theirs.pid, |ours| ours.pid)
            {
                Ok(at) => self.ts_pids[at].cc_errors += theirs.cc_errors,
                Err(at) => self.ts_pids.insert(at, *theirs),
            }
        }
    }

    /// The continuity-counter errors by PID, as a map.
    pub fn cc_errors_by_pid(&self) -> BTreeMap<u16, u64> {
        self.ts_pids.iter().map(|p| (p.pid, p.cc_errors)).collect()
    }

    /// Whether `now` counts less than `before`: the worker started the rule's counts anew.
    pub fn went_back(now: Option<&StreamCount>, before: Option<&StreamCount>) -> bool {
        let packets = |count: Option<&StreamCount>| {
            count.map_or((0, 0, 0), |count| {
                (
                    count.limited_packets,
                    count.rtp.map_or(0, |rtp| rtp.packets),
                    count.ts.map_or(0, |ts| ts.packets),
                )
            })
        };
        let (now, before) = (packets(now), packets(before));
        now.0 < before.0 || now.1 < before.1 || now.2 < before.2
    }

    /// The health line of `ctl stats`: the counters that say whether the stream is well,
    /// `None` for a rule that neither inspects nor was limited.
    pub fn health_line(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(rtp) = &self.rtp {
            parts.push(format!(
                "rtp lost {} reordered {} dup {} ssrc {} jitter {} us",
                rtp.lost,
                rtp.reordered,
                rtp.duplicated,
                rtp.ssrc_changes,
                rtp.jitter_us()
            ));
            if rtp.invalid > 0 {
                parts.push(format!("not rtp {}", rtp.invalid));
            }
        }
        if let Some(ts) = &self.ts {
            let mut line = format!(
                "ts cc {} sync {} tei {} pids {}",
                ts.cc_errors, ts.sync_errors, ts.tei, ts.pids
            );
            if ts.pid_overflow > 0 {
                line.push_str(&format!(
                    " (+{} packets of PIDs beyond the table)",
                    ts.pid_overflow
                ));
            }
            parts.push(line);
        }
        if self.limited_packets > 0 {
            parts.push(format!("limited {}", self.limited_packets));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}
