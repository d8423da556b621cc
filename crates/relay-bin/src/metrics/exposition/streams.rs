//! The per-rule families of stream inspection and the storm guard. A family appears only when
//! some rule has its counters: `rtp_*` for rules inspecting RTP, `ts_*` for MPEG-TS,
//! `rule_limited_*` for rules with a limit.

use super::{Exposition, Kind, labels};
use crate::control::proto::RuleStats;
use crate::counters::StreamCount;
use relay_rules::inspect::mpegts::TsCounters;
use relay_rules::inspect::rtp::RtpCounters;
use std::collections::BTreeMap;

type RtpOf = fn(&RtpCounters) -> u64;
type TsOf = fn(&TsCounters) -> u64;

/// Writes the stream families of `rules`.
pub(super) fn streams(out: &mut Exposition, rules: &BTreeMap<String, RuleStats>) {
    let streams: Vec<(&str, &StreamCount)> = rules
        .iter()
        .filter_map(|(name, stats)| Some((name.as_str(), stats.stream.as_ref()?)))
        .collect();
    let rule = |name: &str| labels(&[("rule", name)]);
    let rtp: [(&str, Kind, &str, RtpOf); 8] = [
        (
            "packets_total",
            Kind::Counter,
            "Valid RTP packets the rule received.",
            |c| c.packets,
        ),
        (
            "invalid_total",
            Kind::Counter,
            "Datagrams of an RTP-inspected rule that are not RTP.",
            |c| c.invalid,
        ),
        (
            "lost_total",
            Kind::Counter,
            "RTP sequence numbers skipped and never received late.",
            |c| c.lost,
        ),
        (
            "reordered_total",
            Kind::Counter,
            "RTP packets that arrived after a higher sequence number.",
            |c| c.reordered,
        ),
        (
            "duplicated_total",
            Kind::Counter,
            "RTP packets whose sequence number was seen already.",
            |c| c.duplicated,
        ),
        (
            "ssrc_changes_total",
            Kind::Counter,
            "Times the RTP synchronization source changed.",
            |c| c.ssrc_changes,
        ),
        (
            "restarts_total",
            Kind::Counter,
            "RTP sequence jumps the stream was restarted at.",
            |c| c.restarts,
        ),
        (
            "jitter_microseconds",
            Kind::Gauge,
            "RTP interarrival jitter (RFC 3550 6.4.1) now, in microseconds (the worst over workers).",
            |c| c.jitter_us(),
        ),
    ];
    for (suffix, kind, help, value) in rtp {
        out.family(
            &format!("fanout_relay_rtp_{suffix}"),
            kind,
            help,
            streams
                .iter()
                .filter_map(|(name, stream)| Some((rule(name), value(stream.rtp.as_ref()?))))
                .collect(),
        );
    }
    let ts: [(&str, Kind, &str, TsOf); 6] = [
        (
            "packets_total",
            Kind::Counter,
            "MPEG-TS packets with a sync byte the rule received.",
            |c| c.packets,
        ),
        (
            "cc_errors_total",
            Kind::Counter,
            "MPEG-TS continuity-counter errors, over every PID.",
            |c| c.cc_errors,
        ),
        (
            "sync_errors_total",
            Kind::Counter,
            "MPEG-TS packets without the sync byte, and datagrams ending inside a packet.",
            |c| c.sync_errors,
        ),
        (
            "tei_packets_total",
            Kind::Counter,
            "MPEG-TS packets with the transport error indicator set.",
            |c| c.tei,
        ),
        ("pids", Kind::Gauge, "MPEG-TS PIDs the rule follows.", |c| {
            u64::from(c.pids)
        }),
        (
            "pid_overflow_total",
            Kind::Counter,
            "MPEG-TS packets of PIDs beyond the rule's table, not checked.",
            |c| c.pid_overflow,
        ),
    ];
    for (suffix, kind, help, value) in ts {
        out.family(
            &format!("fanout_relay_ts_{suffix}"),
            kind,
            help,
            streams
                .iter()
                .filter_map(|(name, stream)| Some((rule(name), value(stream.ts.as_ref()?))))
                .collect(),
        );
    }
    out.family(
        "fanout_relay_ts_pid_cc_errors_total",
        Kind::Counter,
        "MPEG-TS continuity-counter errors of one PID.",
        streams
            .iter()
            .flat_map(|(name, stream)| {
                stream.ts_pids.iter().map(move |pid| {
                    let labels = labels(&[("rule", name), ("pid", &pid.pid.to_string())]);
                    (labels, pid.cc_errors)
                })
            })
            .collect(),
    );
    out.family(
        "fanout_relay_rule_limited_packets_total",
        Kind::Counter,
        "Datagrams the rule's storm guard (max_pps, max_bps) dropped.",
        streams
            .iter()
            .map(|(name, stream)| (rule(name), stream.limited_packets))
            .collect(),
    );
    out.family(
        "fanout_relay_rule_limited_bytes_total",
        Kind::Counter,
        "Payload bytes of the datagrams the rule's storm guard dropped.",
        streams
            .iter()
            .map(|(name, stream)| (rule(name), stream.limited_bytes))
            .collect(),
    );
}
