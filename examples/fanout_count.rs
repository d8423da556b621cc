//! Spread one interface's traffic over pinned worker threads with a PACKET_FANOUT group, and
//! count what each worker receives.
//!
//! Every worker is a thread pinned to one CPU with its own TPACKET_V3 receive ring on IFACE, and
//! all the rings are members of one fanout group, so the kernel hands each frame to exactly one
//! of them. In `cpu` mode a frame goes to member `cpu % members`, a member's index being the
//! order in which it joined: the rings join here in CPU order, so the worker pinned to CPU k
//! serves the frames CPU k took. `hash` keeps each flow on one worker; `lb` deals round robin.
//! Frames the host itself sends are not counted.
//!
//! It prints each worker's frames per second for SECONDS, then each ring's totals from
//! PACKET_STATISTICS: frames the kernel offered, drops because the ring was full, freezes.
//!
//! ```text
//! cargo run -p fanout-relay-examples --example fanout_count -- IFACE [WORKERS] [SECONDS] [MODE]
//! ```
//!
//! WORKERS defaults to one per online CPU (extra workers share CPUs round robin), SECONDS to 10,
//! MODE to `cpu` (or `hash`, `lb`). Needs CAP_NET_RAW (run as root).
//!
//! # Try it
//!
//! Two namespaces joined by a veth pair; a ping pinned to each CPU sends into `fc1`, and veth
//! delivers each frame on the sender's CPU, so in `cpu` mode worker k counts the ping on CPU k:
//!
//! ```text
//! ip netns add fc-a && ip netns add fc-b
//! ip link add fc0 netns fc-a type veth peer name fc1 netns fc-b
//! ip -n fc-a addr add 10.77.0.1/24 dev fc0 && ip -n fc-a link set fc0 up
//! ip -n fc-b addr add 10.77.0.2/24 dev fc1 && ip -n fc-b link set fc1 up
//! cargo build -p fanout-relay-examples --examples
//! ip netns exec fc-b cargo run -q -p fanout-relay-examples --example fanout_count -- fc1 2 5 cpu &
//! sleep 1
//! ip netns exec fc-a taskset -c 0 ping -q -i 0.01 -c 200 10.77.0.2 &
//! ip netns exec fc-a taskset -c 1 ping -q -i 0.005 -c 400 10.77.0.2
//! wait
//! ip netns del fc-a && ip netns del fc-b
//! ```

use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fanout_core::ring::{Readiness, RetireTimeout};
use fanout_core::{FanoutConfig, FanoutFlags, FanoutMode, RingStats, RxRing, RxRingBuilder, cpu};

const USAGE: &str = "usage: fanout_count IFACE [WORKERS] [SECONDS] [MODE: cpu|hash|lb]";

type BoxError = Box<dyn Error + Send + Sync>;

/// A worker's running frame count, alone on its cache line so that workers storing their counts
/// never make each other's lines bounce between cores.
#[repr(align(64))]
#[derive(Default)]
struct Counter(AtomicU64);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fanout_count: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [interface, options @ ..] = args.as_slice() else {
        return Err(USAGE.into());
    };
    let option = |i: usize| options.get(i).map(String::as_str);
    let online: Vec<usize> = cpu::online_cpus()?.iter().collect();
    let workers = option(0)
        .map_or(Ok(online.len()), str::parse)
        .map_err(|_| USAGE)?;
    let seconds: u64 = option(1).map_or(Ok(10), str::parse).map_err(|_| USAGE)?;
    let mode = match option(2) {
        None | Some("cpu") => FanoutMode::Cpu,
        Some("hash") => FanoutMode::Hash,
        Some("lb") => FanoutMode::Lb,
        Some(_) => return Err(USAGE.into()),
    };
    if workers == 0 || options.len() > 3 {
        return Err(USAGE.into());
    }
    let cpus: Vec<usize> = online.iter().copied().cycle().take(workers).collect();

    // The first ring creates a group with an id the kernel picks; the others join it, in order.
    // In a group only the group's flag skips outgoing frames, not the socket option.
    let builder = RxRingBuilder::new(interface.as_str())
        .block_size(1 << 18)
        .block_count(16)
        .retire_timeout(RetireTimeout::Millis(10));
    let create = FanoutConfig::unique(mode).flags(FanoutFlags::IGNORE_OUTGOING);
    let first = builder.clone().fanout(create).build()?;
    let group = first
        .fanout()
        .expect("the builder joined a fanout group")
        .group;
    let join = FanoutConfig::new(group, mode).flags(FanoutFlags::IGNORE_OUTGOING);
    let mut rings = vec![first];
    for _ in 1..cpus.len() {
        rings.push(builder.clone().fanout(join.clone()).build()?);
    }
    println!("{interface}: fanout group {group}, mode {mode:?}, workers on CPUs {cpus:?}");

    let counters: Vec<Counter> = cpus.iter().map(|_| Counter::default()).collect();
    let stop = &AtomicBool::new(false);
    let results: Vec<_> = thread::scope(|scope| {
        let workers: Vec<_> = (rings.into_iter().zip(&cpus).zip(&counters))
            .map(|((ring, &cpu), counter)| scope.spawn(move || serve(ring, cpu, counter, stop)))
            .collect();
        print_rates(&counters, seconds);
        stop.store(true, Ordering::Relaxed);
        (workers.into_iter())
            .map(|worker| {
                worker
                    .join()
                    .expect("workers return their errors, never panic")
            })
            .collect()
    });

    let row = |who: &str, counted: u64, kernel: RingStats| {
        let (packets, drops, freezes) = (kernel.packets, kernel.drops, kernel.freezes);
        println!("{who:>11} {counted:>10} {packets:>16} {drops:>8} {freezes:>8}");
    };
    println!("     worker    counted  kernel: packets    drops  freezes");
    let (mut all_counted, mut all_kernel) = (0, RingStats::default());
    for (w, (result, cpu)) in results.into_iter().zip(&cpus).enumerate() {
        let (counted, kernel) = result?;
        row(&format!("w{w} cpu{cpu}"), counted, kernel);
        all_counted += counted;
        all_kernel += kernel;
    }
    row("total", all_counted, all_kernel);
    Ok(())
}

/// One worker: pinned to `cpu`, it counts the frames of every block its ring hands over until
/// `stop`, then returns that count and the ring's kernel statistics.
fn serve(
    mut ring: RxRing,
    cpu: usize,
    counter: &Counter,
    stop: &AtomicBool,
) -> Result<(u64, RingStats), BoxError> {
    cpu::pin_current_thread(cpu)?;
    let mut frames = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Bounded, so the stop flag is seen within 100 ms on an idle link.
        if ring.wait(Duration::from_millis(100))? == Readiness::InterfaceDown {
            thread::sleep(Duration::from_millis(100));
        }
        while let Some(block) = ring.next_block() {
            frames += block.frames().count() as u64;
        } // each block goes back to the kernel at the end of its loop turn
        // A plain store: this thread is the only writer, the printer only reads.
        counter.0.store(frames, Ordering::Relaxed);
    }
    // PACKET_STATISTICS clears on read, so the first read covers the ring's whole life.
    Ok((frames, ring.statistics()?))
}

/// Prints, once a second for `seconds`, how many frames each worker counted in that second.
fn print_rates(counters: &[Counter], seconds: u64) {
    print!("second");
    for w in 0..counters.len() {
        print!(" {:>9}", format!("w{w}"));
    }
    println!(" {:>9}", "total");
    let start = Instant::now();
    let mut last = vec![0u64; counters.len()];
    for second in 1..=seconds {
        let tick = start + Duration::from_secs(second);
        thread::sleep(tick.saturating_duration_since(Instant::now()));
        print!("{second:>6}");
        let mut total = 0;
        for (counter, last) in counters.iter().zip(&mut last) {
            let now = counter.0.load(Ordering::Relaxed);
            print!(" {:>9}", now - *last);
            total += now - *last;
            *last = now;
        }
        println!(" {total:>9}");
    }
}
