//! What the demo prints: a line of live counters per second, and the final table with its
//! verdict. Pure functions of the counters, so their text is tested without a network.

use super::error::{Problem, Shortfall};
use super::stats::RelayCounters;
use super::world::{
    Leg, PROBE, RECEIVERS, RELAY_IN_ADDR, RELAY_IN_IF, SENDER_ADDR, SENDER_IF, STREAMS, StreamSpec,
    World, legs,
};
use std::fmt::Write as _;
use std::net::SocketAddr;

/// Who sits where, and why the relay is needed at all.
pub(super) fn picture(world: &World) -> String {
    let mut text = format!(
        "  {:<6} {:<24} {:<22} <-> {:<22} relay {}\n",
        "sender",
        world.sender.name(),
        format!("{SENDER_IF} {SENDER_ADDR}/24"),
        format!("{RELAY_IN_IF} {RELAY_IN_ADDR}/24"),
        world.relay.name()
    );
    crate::text::append(&mut text, |text| {
        for (spec, ns) in RECEIVERS.iter().zip(&world.receivers) {
            writeln!(
                text,
                "  {:<6} {:<24} {:<22} <-> {:<22} relay",
                spec.name,
                ns.name(),
                format!("{} {}/24", spec.name, spec.addr),
                format!("{} {}/24", spec.relay_if, spec.relay_addr),
            )?;
        }
        writeln!(
            text,
            "\nThe relay's namespace has no route back to {SENDER_ADDR} and filters reverse paths\n\
         (rp_filter=1), so its kernel drops the sender's packets before any socket sees them;\n\
         fanout-relay takes them off the wire (AF_PACKET) before that, and re-sends them from\n\
         its own addresses."
        )?;
        Ok(())
    });
    text
}

/// The rules of the configuration, one line each.
pub(super) fn rules() -> String {
    let line = |stream: &StreamSpec| {
        let outputs: Vec<String> = stream
            .legs
            .iter()
            .map(|leg| format!("{} on {}", leg.to, RECEIVERS[leg.receiver].relay_if))
            .collect();
        format!(
            "  {:<8} {} on {RELAY_IN_IF}  ->  {}",
            stream.rule,
            stream.input,
            outputs.join(", ")
        )
    };
    let mut text = String::new();
    crate::text::append(&mut text, |text| {
        for stream in &STREAMS {
            writeln!(text, "{}", line(stream))?;
        }
        write!(
            text,
            "{}  (only to learn that the relay is up)",
            line(&PROBE)
        )?;
        Ok(())
    });
    text
}

/// Where the receivers' packets came from: the relay's output addresses, not the sender.
pub(super) fn sources(per_leg: &[Option<SocketAddr>]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for ((_, leg), source) in legs().zip(per_leg) {
        if let Some(source) = source {
            let item = format!("{} ({})", source.ip(), RECEIVERS[leg.receiver].name);
            if !seen.contains(&item) {
                seen.push(item);
            }
        }
    }
    if seen.is_empty() {
        return String::new();
    }
    format!(
        "the receivers got the packets from {}: the relay's addresses, not {SENDER_ADDR}\n",
        seen.join(" and ")
    )
}

/// Counters of the demo's own sockets, copied out of the shared tally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Seen {
    /// Sent, per stream.
    pub(super) sent: Vec<u64>,
    /// Received, per leg (in the order of [`legs`]).
    pub(super) received: Vec<u64>,
    /// Duplicates, per leg.
    pub(super) duplicates: Vec<u64>,
    /// Datagrams that were not of the leg's stream, per leg.
    pub(super) corrupt: Vec<u64>,
}

fn leg_label(leg: &Leg) -> String {
    format!("{}:{}", RECEIVERS[leg.receiver].name, leg.to.ip())
}

fn live_labels() -> Vec<String> {
    let mut labels = vec!["time".to_owned()];
    labels.extend(STREAMS.iter().map(|s| format!("sent:{}", s.rule)));
    labels.extend(STREAMS.iter().map(|s| format!("relayed:{}", s.rule)));
    labels.extend(legs().map(|(_, leg)| leg_label(leg)));
    labels
}

fn row(cells: &[String]) -> String {
    let mut line = String::new();
    crate::text::append(&mut line, |line| {
        for (cell, label) in cells.iter().zip(live_labels()) {
            write!(line, "  {cell:>width$}", width = label.len().max(6))?;
        }
        Ok(())
    });
    line
}

/// The header of the live counters.
pub(super) fn live_header() -> String {
    row(&live_labels())
}

/// One line of live counters at `seconds` into sending. The relay's counters arrive once a
/// second, so `relayed` trails `sent` a little; `-` until the first table.
pub(super) fn live_row(seconds: u64, seen: &Seen, relay: &RelayCounters) -> String {
    let mut cells = vec![format!("{seconds}s")];
    cells.extend(seen.sent.iter().map(u64::to_string));
    cells.extend(STREAMS.iter().map(|stream| {
        relay.rules.get(stream.rule).map_or_else(
            || {
                if relay.tables == 0 {
                    "-".into()
                } else {
                    "0".into()
                }
            },
            u64::to_string,
        )
    }));
    cells.extend(seen.received.iter().map(u64::to_string));
    row(&cells)
}

/// The final table: per leg, what was sent, what the relay matched for its rule, and what the
/// receiver got; then the relay's worker totals.
pub(super) fn final_table(seen: &Seen, relay: &RelayCounters) -> String {
    let mut text = format!(
        "{:<8} {:<15} {:<22} {:>8} {:>8} {:>9} {:>6}\n",
        "stream", "from", "to", "sent", "relayed", "received", "lost"
    );
    crate::text::append(&mut text, |text| {
        for (index, (stream, leg)) in legs().enumerate() {
            let sent = seen.sent[stream];
            let received = seen.received[index];
            let relayed = relay
                .rules
                .get(STREAMS[stream].rule)
                .map_or_else(|| "?".to_owned(), u64::to_string);
            writeln!(
                text,
                "{:<8} {:<15} {:<22} {:>8} {:>8} {:>9} {:>6}",
                STREAMS[stream].rule,
                STREAMS[stream].input.to_string(),
                format!("{} on {}", leg.to, RECEIVERS[leg.receiver].name),
                sent,
                relayed,
                received,
                sent.saturating_sub(received)
            )?;
        }
        let total = relay.total();
        let reasons: Vec<String> = relay
            .malformed
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect();
        writeln!(
            text,
            "\nrelay workers ({}): received {}, forwarded {}, no rule {}, not IPv4 UDP {}, \
         malformed {}{}, tx full {}, kernel drops {}, restarts {}",
            relay.workers.len(),
            total.received,
            total.forwarded,
            total.no_rule,
            total.not_udp,
            total.malformed,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            },
            total.tx_full,
            total.kernel_drops,
            total.restarts
        )?;
        Ok(())
    });
    text
}

/// `Ok` with a one-line verdict if every receiver got every one of the `planned` packets of its
/// stream, once and intact; otherwise `Err` saying what went wrong where.
pub(super) fn verdict(seen: &Seen, planned: u32) -> Result<String, Shortfall> {
    let planned = u64::from(planned);
    let mut problems = Vec::new();
    for (index, stream) in STREAMS.iter().enumerate() {
        if seen.sent[index] < planned {
            problems.push(Problem::Unsent {
                rule: stream.rule,
                sent: seen.sent[index],
                planned,
            });
        }
    }
    let mut got = 0;
    for (index, (stream, leg)) in legs().enumerate() {
        let what = || format!("{} to {}", STREAMS[stream].rule, leg_label(leg));
        let received = seen.received[index];
        got += received;
        if received < planned {
            problems.push(Problem::Lost {
                leg: what(),
                lost: planned - received,
                planned,
            });
        }
        if seen.duplicates[index] > 0 {
            problems.push(Problem::Duplicates {
                leg: what(),
                count: seen.duplicates[index],
            });
        }
        if seen.corrupt[index] > 0 {
            problems.push(Problem::Damaged {
                leg: what(),
                count: seen.corrupt[index],
            });
        }
    }
    let expected = planned * legs().count() as u64;
    if problems.is_empty() {
        Ok(format!(
            "every receiver got every packet: {got} of {expected}"
        ))
    } else {
        Err(Shortfall(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(sent: u64, received: [u64; 3]) -> Seen {
        Seen {
            sent: vec![sent; STREAMS.len()],
            received: received.to_vec(),
            duplicates: vec![0; 3],
            corrupt: vec![0; 3],
        }
    }

    fn relay(rewrite: u64, fanout: u64) -> RelayCounters {
        let mut counters = RelayCounters {
            tables: 1,
            ..Default::default()
        };
        counters.rules.insert("rewrite".into(), rewrite);
        counters.rules.insert("fanout".into(), fanout);
        counters
    }

    /// The last four numbers of the final table's line for `rule` and `to`.
    fn numbers(table: &str, rule: &str, to: &str) -> Vec<String> {
        let line = table
            .lines()
            .find(|l| l.starts_with(rule) && l.contains(to))
            .unwrap_or_else(|| panic!("no line for {rule} {to} in\n{table}"));
        let tokens: Vec<&str> = line.split_whitespace().collect();
        tokens[tokens.len() - 4..]
            .iter()
            .map(|t| (*t).to_owned())
            .collect()
    }

    #[test]
    fn the_final_table_has_a_line_per_leg() {
        let table = final_table(&seen(200, [200, 199, 200]), &relay(200, 200));
        assert_eq!(
            numbers(&table, "rewrite", "239.2.2.2:6000"),
            ["200", "200", "200", "0"]
        );
        assert_eq!(
            numbers(&table, "fanout", "239.3.3.3:7000"),
            ["200", "200", "199", "1"]
        );
        assert_eq!(
            numbers(&table, "fanout", "239.4.4.4:7000 on rx2"),
            ["200", "200", "200", "0"]
        );
        assert!(table.contains("malformed 0, tx full"), "{table}");
        let mut damaged = relay(200, 200);
        damaged.malformed.insert("ipv4_bad_checksum".into(), 3);
        let table = final_table(&seen(200, [200; 3]), &damaged);
        assert!(table.contains("(ipv4_bad_checksum 3)"), "{table}");
        let unknown = final_table(&seen(5, [5, 5, 5]), &RelayCounters::default());
        assert_eq!(
            numbers(&unknown, "rewrite", "239.2.2.2"),
            ["5", "?", "5", "0"]
        );
    }

    #[test]
    fn the_verdict_names_every_loss() {
        assert_eq!(
            verdict(&seen(200, [200, 200, 200]), 200),
            Ok("every receiver got every packet: 600 of 600".into())
        );
        let error = verdict(&seen(200, [200, 197, 200]), 200).expect_err("3 lost");
        assert_eq!(
            error.0,
            [Problem::Lost {
                leg: "fanout to rx1:239.3.3.3".into(),
                lost: 3,
                planned: 200
            }]
        );
        assert_eq!(error.to_string(), "fanout to rx1:239.3.3.3: 3 of 200 lost");
        let mut twice = seen(200, [200, 200, 200]);
        twice.duplicates[2] = 4;
        let error = verdict(&twice, 200).expect_err("duplicates").to_string();
        assert!(error.contains("rx2:239.4.4.4: 4 duplicates"), "{error}");
        let error = verdict(&seen(150, [150, 150, 150]), 200)
            .expect_err("interrupted")
            .to_string();
        assert!(
            error.starts_with("rewrite: only 150 of 200 sent"),
            "{error}"
        );
    }

    #[test]
    fn live_rows_line_up_with_the_header() {
        let header = live_header();
        let line = live_row(3, &seen(1500, [1500, 1499, 1500]), &relay(1200, 1200));
        assert_eq!(header.len(), line.len(), "{header}\n{line}");
        assert!(line.trim_start().starts_with("3s"), "{line}");
        assert!(line.ends_with("1500"), "{line}");
        let before = live_row(0, &seen(0, [0; 3]), &RelayCounters::default());
        assert!(before.contains(" -"), "{before}");
    }
}
