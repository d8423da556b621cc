//! The demo's stream health: a synthetic MPEG-TS stream (relay-rules' `TsSynth`: four PIDs,
//! seven packets a datagram) sent through the rule `video`, which has `inspect = "mpegts"`,
//! and the health line the relay counts for it, read from its control socket as `ctl stats`
//! reads it.
//!
//! With `--impair` one datagram in [`IMPAIR_EVERY`] is dropped on the way (the sender makes it
//! and does not send it, as a lossy link would): each breaks the continuity of the four PIDs
//! it carries once, and the line must show exactly that many errors.

use super::DemoError;
use super::world::VIDEO;
use crate::control::proto::{Command, Reply, Request, VERSION};
use crate::counters::StreamCount;
use relay_rules::inspect::synth::{PIDS, TsSynth};
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

/// Datagrams of the stream.
pub(super) const DATAGRAMS: u32 = 1000;
/// With `--impair`, one datagram in this many is dropped on the way.
pub(super) const IMPAIR_EVERY: u32 = 100;
/// How long the relay may take to count the stream (its workers report every second).
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends the stream at `rate` datagrams per second from a thread pinned to one CPU (so one
/// worker sees all of it, as inspection needs), dropping one in [`IMPAIR_EVERY`] if `impair`;
/// returns the datagrams (sent, dropped).
pub(super) fn send(sender: &UdpSocket, rate: u32, impair: bool) -> Result<(u32, u32), DemoError> {
    let cpu = fanout_core::cpu::online_cpus()
        .ok()
        .and_then(|cpus| cpus.iter().next())
        .unwrap_or(0);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Best effort: unpinned, the stream may be split over two workers, each of
                // which then sees gaps.
                let _ = fanout_core::cpu::pin_current_thread(cpu);
                let mut synth = TsSynth::new(false);
                let mut datagram = [0u8; TsSynth::MAX_DATAGRAM];
                let interval = Duration::from_secs(1) / rate.max(1);
                let start = Instant::now();
                let (mut sent, mut dropped) = (0, 0);
                for i in 0..DATAGRAMS {
                    let due = start + interval * i;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let len = synth.write(&mut datagram, 0);
                    // Never the first: nothing before it would show its loss.
                    if impair && i % IMPAIR_EVERY == IMPAIR_EVERY / 2 {
                        dropped += 1;
                        continue;
                    }
                    sender
                        .send_to(&datagram[..len], VIDEO.input)
                        .map_err(|source| DemoError::Io {
                            what: format!("sending the MPEG-TS stream to {}", VIDEO.input),
                            source,
                        })?;
                    sent += 1;
                }
                Ok((sent, dropped))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The rule's stream counters once the relay has counted `datagrams` of the stream.
pub(super) fn counted(socket: &Path, datagrams: u32) -> Result<StreamCount, DemoError> {
    let deadline = Instant::now() + COUNT_TIMEOUT;
    let request = Request {
        version: VERSION,
        command: Command::Stats,
    };
    loop {
        let response = crate::control::call(socket, &request).map_err(|source| DemoError::Io {
            what: format!("asking the relay for its counters on {}", socket.display()),
            source,
        })?;
        let stream = match response.result {
            Some(Reply::Stats(stats)) => stats
                .rules
                .get(VIDEO.rule)
                .and_then(|rule| rule.stream.clone()),
            _ => None,
        }
        .unwrap_or_default();
        let packets = stream.ts.map_or(0, |ts| ts.packets);
        if packets >= 7 * u64::from(datagrams) || Instant::now() > deadline {
            return Ok(stream);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The health lines the demo prints, and whether the counters are what the datagrams
/// dropped (none, without `--impair`) make them: every PID one error per dropped datagram.
pub(super) fn report(stream: &StreamCount, sent: u32, dropped: u32) -> Result<String, String> {
    let line = stream
        .health_line()
        .unwrap_or_else(|| "nothing counted".to_owned());
    let expected = u64::from(dropped) * PIDS.len() as u64;
    let ts = stream.ts.unwrap_or_default();
    let text = format!(
        "stream health of rule \"{}\" ({} datagrams of MPEG-TS sent, {} dropped on the way):\n  \
         {}: {line}",
        VIDEO.rule, sent, dropped, VIDEO.rule
    );
    let complete = ts.packets == 7 * u64::from(sent);
    let per_pid = stream
        .ts_pids
        .iter()
        .all(|pid| pid.cc_errors == u64::from(dropped));
    if complete && ts.cc_errors == expected && per_pid && ts.pids as usize == PIDS.len() {
        Ok(format!(
            "{text}\n  as expected: {expected} continuity errors, one per PID for each of the \
             {dropped} datagrams dropped"
        ))
    } else {
        Err(format!(
            "{text}\n  expected {} TS packets and {expected} continuity errors ({} per PID)",
            7 * u64::from(sent),
            dropped
        ))
    }
}
