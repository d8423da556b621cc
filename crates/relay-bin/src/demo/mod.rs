//! `fanout-relay demo`: a sender, the relay and two receivers in network namespaces of its own.
//!
//! The demo shows, on one machine and without touching its network, what the relay is for: a
//! sender whose source address (192.0.2.10) the relay's namespace cannot route to, so that its
//! kernel's reverse-path filter drops the stream before any socket sees it, and the relay taking
//! the stream off the wire anyway and re-sending it, rewritten, from routable addresses:
//!
//! 1. `world` builds the namespaces and veth pairs and writes the relay's configuration;
//! 2. `relay` starts `fanout-relay run` in the relay namespace and reads its counters;
//! 3. `traffic` sends numbered datagrams and counts, byte for byte, what each receiver gets;
//! 4. `report` prints live counters once a second, then the final table and verdict.
//!
//! Everything is removed at the end, also on Ctrl-C (SIGINT and SIGTERM are taken by a thread
//! and end the demo in order) and on failure (every resource is a guard whose `Drop` removes
//! it). Namespaces left by a demo that was killed outright are removed by the next one.

mod error;
mod health;
mod relay;
mod report;
mod signals;
mod stats;
mod traffic;
mod world;

pub use error::{DemoError, Problem, Shortfall};
pub use relay::RelayError;
pub use traffic::SocketError;

use crate::cli::DemoArgs;
use crate::netns;
use relay::Relay;
use report::Seen;
use signals::SignalWatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use traffic::Tally;
use world::{PROBE, STREAMS, TempConfig, World};

/// After the last packet is sent, how long receivers may go without a new packet.
const QUIET_TIMEOUT: Duration = Duration::from_millis(1500);

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// Runs the demonstration; `Ok` only if every receiver got every packet of its stream.
///
/// Blocks SIGINT and SIGTERM on the calling thread while it runs (a thread of its own takes
/// them), so call it from the main thread before starting others.
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DemoError::NotRoot);
    }
    if args.packets == 0 || args.rate == 0 {
        return Err(DemoError::NothingToSend);
    }
    let signals = SignalWatch::start()?;
    let interrupted = || signals.interrupted();
    // Whatever happens inside, everything it made (relay, sockets, configuration file,
    // namespaces) is dropped, in that order, before it returns.
    let result = demonstrate(args, &interrupted);
    match result {
        Err(_) if interrupted() => Err(DemoError::Interrupted),
        other => other,
    }
}

fn demonstrate(args: &DemoArgs, interrupted: &dyn Fn() -> bool) -> Result<(), DemoError> {
    let exe = std::env::current_exe().map_err(io_error("finding the fanout-relay executable"))?;
    let stale = netns::sweep_stale(world::PREFIX);
    if !stale.is_empty() {
        println!("removed namespaces left by an earlier demo that was killed: {stale:?}");
    }
    println!(
        "fanout-relay demo: a sender whose source address the relay cannot route to, the relay, and\n\
         two receivers, each in a network namespace of its own (removed at the end, also on Ctrl-C).\n"
    );
    let world = World::build()?;
    let names = world.names().join(", ");
    let result = relay_through(args, &exe, &world, interrupted);
    drop(world);
    println!("removed the namespaces {names}");
    result
}

/// Everything after the namespaces exist: configuration, sockets, relay, traffic, report.
/// What it makes is dropped (relay first) before it returns.
fn relay_through(
    args: &DemoArgs,
    exe: &std::path::Path,
    world: &World,
    interrupted: &dyn Fn() -> bool,
) -> Result<(), DemoError> {
    print!("{}", report::picture(world));
    let workers = fanout_core::cpu::online_cpus().map_or(1, |cpus| cpus.len().clamp(1, 2));
    let config = TempConfig::write(&world::config_text(workers))
        .map_err(io_error("writing the relay's configuration file"))?;
    println!(
        "\nrules ({}):\n{}\n",
        config.path().display(),
        report::rules()
    );

    let sender = traffic::open_sender(&world.sender)?;
    let probe_rx = traffic::open_receiver(&world.receivers[0], 0, PROBE.legs[0].to)?;
    let receivers = world::legs()
        .map(|(_, leg)| {
            traffic::open_receiver(&world.receivers[leg.receiver], leg.receiver, leg.to)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let rule_names = STREAMS.iter().chain([&PROBE]).map(|s| s.rule.to_owned());
    let mut relay = Relay::start(&world.relay, exe, config.path(), rule_names)?;
    // How long the relay may take to say it relays, and then to relay the first probe.
    let start_timeout = Duration::from_secs(args.start_timeout);
    if !relay.wait_ready(start_timeout, interrupted)? {
        return Err(DemoError::Interrupted);
    }
    let Some(took) = traffic::probe(&sender, &probe_rx, start_timeout, || {
        interrupted() || relay.check_running().is_err()
    }) else {
        relay.check_running()?;
        return Err(if interrupted() {
            DemoError::Interrupted
        } else {
            DemoError::NoProbe(start_timeout)
        });
    };
    drop(probe_rx);
    println!(
        "the relay relays: a probe came through after {:.2} s\n\n\
         sending {} packets per stream at {}/s; relayed: the relay's own per-rule counters \
         (it prints them once a second)",
        took.as_secs_f64(),
        args.packets,
        args.rate
    );

    let tally = Tally::new();
    let (stop_sending, stop_receiving) = (AtomicBool::new(false), AtomicBool::new(false));
    let outcome = std::thread::scope(|scope| {
        // Whatever way this closure ends, the threads are told to stop before the scope joins.
        let _stop_receiving = StopOnDrop(&stop_receiving);
        let _stop_sending = StopOnDrop(&stop_sending);
        for ((stream, _), (socket, leg)) in world::legs().zip(receivers.iter().zip(&tally.legs)) {
            let stop = &stop_receiving;
            let stream = stream as u8;
            scope.spawn(move || traffic::receive(socket, stream, args.packets, leg, stop));
        }
        let sending =
            scope.spawn(|| traffic::send(&sender, args.packets, args.rate, &tally, &stop_sending));
        let outcome = watch(
            args,
            &tally,
            &mut relay,
            || sending.is_finished(),
            interrupted,
        );
        if outcome.is_err() {
            // Stopped early: let what is already on its way arrive, so the table adds up.
            stop_sending.store(true, Ordering::Relaxed);
            settle(&tally);
        }
        outcome
    });
    let health = match &outcome {
        Ok(()) => Some(stream_health(args, &sender, config.path())?),
        Err(_) => None,
    };

    if relay.check_running().is_ok() {
        println!("\nstopping the relay (SIGTERM)");
    }
    let end = relay.stop()?;
    let seen = snapshot(&tally);
    println!("\n{}", report::final_table(&seen, &end.counters));
    let sources: Vec<_> = tally
        .legs
        .iter()
        .map(|leg| leg.source.get().copied())
        .collect();
    print!("{}", report::sources(&sources));
    if let Some(error) = tally
        .last_send_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
    {
        println!("the sender's socket refused some packets, the last one with: {error}");
    }
    for (leg, tally) in world::legs().zip(&tally.legs) {
        if let Some(error) = tally
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            println!("the receiver of {} stopped early: {error}", leg.1.to);
        }
    }
    if !end.status.success() || end.killed {
        println!(
            "the relay exited with {}{}",
            end.status,
            if end.killed {
                " (killed: it did not stop within its grace time)"
            } else {
                ""
            }
        );
    }
    outcome?;
    if let Some(health) = health {
        println!("\n{}", health.as_ref().unwrap_or_else(|text| text));
        health.map_err(DemoError::Health)?;
    }
    match report::verdict(&seen, args.packets) {
        Ok(line) => {
            println!("{line}");
            Ok(())
        }
        Err(shortfall) => Err(DemoError::Incomplete(shortfall)),
    }
}

/// Sends the MPEG-TS stream through the inspected rule and returns its health report, `Err`
/// when the counters are not what the datagrams dropped make them.
fn stream_health(
    args: &DemoArgs,
    sender: &std::net::UdpSocket,
    config: &std::path::Path,
) -> Result<Result<String, String>, DemoError> {
    println!(
        "\nsending {} datagrams of a synthetic MPEG-TS stream (4 PIDs) through rule \"{}\" \
         (inspect = \"mpegts\"){}",
        health::DATAGRAMS,
        world::VIDEO.rule,
        if args.impair {
            format!(", dropping one in {} on the way", health::IMPAIR_EVERY)
        } else {
            String::new()
        }
    );
    let (sent, dropped) = health::send(sender, args.rate, args.impair)?;
    let socket = crate::config::RelaySection::default().control_socket_for(config);
    let stream = health::counted(&socket, sent)?;
    Ok(health::report(&stream, sent, dropped))
}

/// Prints live counters once a second until every packet has arrived, the receivers have been
/// quiet for a while after the sender finished, the relay died, or Ctrl-C.
fn watch(
    args: &DemoArgs,
    tally: &Tally,
    relay: &mut Relay,
    sender_done: impl Fn() -> bool,
    interrupted: &dyn Fn() -> bool,
) -> Result<(), DemoError> {
    println!("{}", report::live_header());
    let start = Instant::now();
    let mut next_line = start + Duration::from_secs(1);
    let mut last = (0, start);
    let complete = u64::from(args.packets) * world::legs().count() as u64;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let seen = snapshot(tally);
        let got: u64 = seen.received.iter().sum();
        if got != last.0 {
            last = (got, now);
        }
        let finished =
            sender_done() && (got >= complete || now.duration_since(last.1) >= QUIET_TIMEOUT);
        if now >= next_line || finished {
            let seconds = now.duration_since(start).as_secs();
            println!("{}", report::live_row(seconds, &seen, &relay.counters()));
            next_line += Duration::from_secs(1);
        }
        if finished {
            return Ok(());
        }
        if interrupted() {
            return Err(DemoError::Interrupted);
        }
        relay.check_running()?;
    }
}

/// Waits until the receivers have had nothing new for 200 ms (at most a second).
fn settle(tally: &Tally) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut last = snapshot(tally).received;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = snapshot(tally).received;
        if now == last {
            return;
        }
        last = now;
    }
}

/// A copy of the counters in `tally`.
fn snapshot(tally: &Tally) -> Seen {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    Seen {
        sent: tally.sent.iter().map(load).collect(),
        received: tally.legs.iter().map(|leg| load(&leg.received)).collect(),
        duplicates: tally.legs.iter().map(|leg| load(&leg.duplicates)).collect(),
        corrupt: tally.legs.iter().map(|leg| load(&leg.corrupt)).collect(),
    }
}

/// Sets a flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
