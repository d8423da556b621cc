//! Stream inspection end to end: a synthetic MPEG-TS stream (made by relay-rules' `TsSynth`,
//! with and without RTP) and a real one from `ffmpeg -f rtp_mpegts`, relayed by a rule with
//! `inspect`, first clean (no error counted), then with one datagram in N dropped on the way
//! by an nftables rule in the sender's namespace (`numgen inc mod N`, deterministic: `tc
//! netem`'s loss is random, and the kernels this runs on may lack netem) and, for RTP, pairs of
//! datagrams swapped by the sender. The relay's counters must equal what was dropped and what
//! the receiver behind it saw missing or out of order, exactly: the receiver gets what the
//! relay got, in the order it got it.
//!
//! Each flow is sent from one thread pinned to one CPU and the relay has one worker, so one
//! worker sees the whole stream (inspection per worker is exact only then; see the README).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section};
use fanout_relay_tests::obs::{Metrics, promtool_check, scrape};
use fanout_relay_tests::relay::{Datagram, RelayProcess, UdpReceiver, UdpSender, quiet_topology};
use fanout_relay_tests::{Topology, have_program, online_cpus, privileged, skip};
use relay_bin::counters::StreamCount;
use relay_rules::inspect::synth::{self, TsSynth};

/// Datagrams per second: a debug relay keeps up, and netem's delays reorder a few.
const PPS: u32 = 500;
const TIMEOUT: Duration = Duration::from_secs(30);
/// Where the relay of the MPEG-TS test serves metrics, inside its namespace.
const METRICS: &str = "127.0.0.1:9479";

fn config(dir: &Workdir, inspect: &str) -> String {
    let cpu = online_cpus()[0];
    relay_section(dir, &format!("cpus = \"{cpu}\""))
        + &format!(
            "\n[[rule]]\nname = \"ts\"\ninspect = {inspect:?}\n\
             input = {{ interface = \"rin0\", destination = \"239.1.1.1\", port = 5000 }}\n\
             outputs = [ {{ interface = \"rout0\", destination = \"239.2.2.2\", port = 6000 }} ]\n"
        )
}

/// Sends the next `count` datagrams of the synthetic stream to 239.1.1.1:5000 at [`PPS`], from
/// one thread pinned to one CPU; every `swap`th datagram (if any) is sent after the one that
/// follows it.
fn send_synth(sender: &UdpSender, synth: &mut TsSynth, count: u32, swap: Option<u32>) {
    let cpu = online_cpus()[0] as usize;
    std::thread::scope(|s| {
        s.spawn(|| {
            fanout_core::cpu::pin_current_thread(cpu)
                .unwrap_or_else(|e| panic!("pin the sending thread to cpu {cpu}: {e}"));
            let start = Instant::now();
            let mut out = [0u8; TsSynth::MAX_DATAGRAM];
            let mut held: Option<Vec<u8>> = None;
            let send = |datagram: &[u8]| {
                sender
                    .socket()
                    .send_to(datagram, "239.1.1.1:5000")
                    .unwrap_or_else(|e| panic!("send the synthetic stream: {e}"));
            };
            for i in 0..count {
                let due = start + Duration::from_secs_f64(f64::from(i) / f64::from(PPS));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let timestamp = (start.elapsed().as_micros() * 9 / 100) as u32;
                let len = synth.write(&mut out, timestamp);
                if swap.is_some_and(|n| i % n == 0) && i + 1 < count {
                    held = Some(out[..len].to_vec());
                    continue;
                }
                send(&out[..len]);
                if let Some(earlier) = held.take() {
                    send(&earlier);
                }
            }
        });
    });
}

/// The rule's stream counters once it has counted `packets` datagrams (the workers report
/// every second); panics with the last counters after [`TIMEOUT`].
fn stream_after(ctl: &Ctl, packets: u64) -> StreamCount {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stats = ctl.stats();
        let rule = &stats.rules["ts"];
        let stream = rule.stream.clone().unwrap_or_default();
        let seen = stream
            .rtp
            .map(|rtp| rtp.packets + rtp.invalid)
            .or(stream.ts.map(|ts| ts.packets / 7))
            .unwrap_or(0);
        if seen >= packets {
            return stream;
        }
        assert!(
            Instant::now() < deadline,
            "the relay counted {seen} of {packets} datagrams: {rule:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Numbers of the datagrams that arrived, in arrival order.
fn numbers(got: &[Datagram], rtp: bool) -> Vec<u32> {
    got.iter()
        .map(|d| synth::datagram_number(&d.payload, rtp).expect("a synthetic datagram"))
        .collect()
}

/// What the receiver saw of datagrams `range`: how many numbers never came (before the last
/// that did), and how many came after a higher number.
fn missing_and_late(arrived: &[u32], range: std::ops::Range<u32>) -> (u64, u64) {
    let received: BTreeSet<u32> = arrived.iter().copied().collect();
    let last = received
        .range(range.clone())
        .next_back()
        .copied()
        .unwrap_or(range.start);
    let missing = (range.start..last)
        .filter(|n| !received.contains(n))
        .count() as u64;
    let mut highest = None;
    let mut late = 0;
    for &number in arrived {
        if highest.is_some_and(|h| number < h) {
            late += 1;
        }
        highest = highest.max(Some(number));
    }
    (missing, late)
}

/// Drops one datagram to port 5000 in `n` as it leaves the sender's veth (an nftables netdev
/// egress rule, after the socket sent it, as a lossy link would): the `n/2`th from now, then
/// every `n`th (so that the first datagram, which nothing before it would show lost, is not).
fn drop_one_in(topo: &Topology, n: u32) {
    let rules = format!(
        "add table netdev impair\n\
         add chain netdev impair out {{ type filter hook egress device {} priority 0; }}\n\
         add rule netdev impair out udp dport 5000 numgen inc mod {n} == {} counter drop\n",
        Topology::SENDER_IF,
        n / 2
    );
    let file = std::env::temp_dir().join(format!("fr-impair-{}-{n}.nft", std::process::id()));
    std::fs::write(&file, rules).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    let path = file.display().to_string();
    let out = topo.sender.exec(&["nft", "-f", &path]);
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Datagrams the rule of [`drop_one_in`] dropped so far.
fn dropped(topo: &Topology) -> u64 {
    let listing = topo
        .sender
        .exec_checked(&["nft", "list", "chain", "netdev", "impair", "out"]);
    listing
        .split_whitespace()
        .skip_while(|word| *word != "packets")
        .nth(1)
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no drop counter in {listing}"))
}

/// Skips `test` (panics under `CI=true`) unless every program it needs is installed.
fn have_programs(test: &str, programs: &[&str]) -> bool {
    for program in programs {
        if !have_program(program) {
            skip(test, &format!("{program} is not installed"));
            return false;
        }
    }
    true
}

#[test]
fn mpegts_counts_no_error_clean_and_each_lost_datagram_once_per_pid() {
    let test = "mpegts_counts_no_error_clean_and_each_lost_datagram_once_per_pid";
    if !privileged(test) || !have_programs(test, &["nft"]) {
        return;
    }
    let topo = quiet_topology("tsh");
    let dir = Workdir::new("tsh");
    let relay = RelayProcess::start(
        &topo.relay,
        &config(&dir, "mpegts"),
        &["--metrics", METRICS],
    );
    let ctl = Ctl::new(&dir);
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let mut synth = TsSynth::new(false);

    const CLEAN: u32 = 1000;
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(CLEAN as usize, TIMEOUT);
    send_synth(&sender, &mut synth, CLEAN, None);
    assert_eq!(
        receiver.finish().len(),
        CLEAN as usize,
        "the clean stream arrived whole"
    );
    let clean = stream_after(&ctl, u64::from(CLEAN));
    let ts = clean.ts.expect("MPEG-TS counters");
    assert_eq!(
        (ts.packets, ts.cc_errors, ts.sync_errors, ts.tei, ts.pids),
        (7 * u64::from(CLEAN), 0, 0, 0, 4),
        "{clean:?}"
    );

    // One datagram in 50 dropped: each loss is alone, and breaks each PID's continuity once.
    drop_one_in(&topo, 50);
    const IMPAIRED: u32 = 2000;
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(IMPAIRED as usize, Duration::from_secs(10));
    send_synth(&sender, &mut synth, IMPAIRED, None);
    // The last datagrams may still be on their way through the relay.
    std::thread::sleep(Duration::from_millis(500));
    let got = receiver.stop();
    let dropped = dropped(&topo);
    let (missing, late) = missing_and_late(&numbers(&got, false), CLEAN..CLEAN + IMPAIRED);
    assert_eq!(
        (dropped, missing, late),
        (40, 40, 0),
        "what nft dropped and the receiver missed"
    );
    let impaired = stream_after(&ctl, u64::from(CLEAN) + got.len() as u64);
    let ts = impaired.ts.expect("MPEG-TS counters");
    assert_eq!(
        ts.packets,
        7 * (u64::from(CLEAN) + got.len() as u64),
        "the relay saw what arrived"
    );
    let want: BTreeMap<u16, u64> = synth::PIDS.iter().map(|&pid| (pid, dropped)).collect();
    assert_eq!(impaired.cc_errors_by_pid(), want, "CC errors per PID");
    assert_eq!((ts.cc_errors, ts.sync_errors, ts.tei), (4 * dropped, 0, 0));
    let stats = ctl.ok(&["stats"]);
    assert!(
        stats.contains(&format!("ts cc {} sync 0 tei 0 pids 4", 4 * dropped)),
        "the health line of ctl stats:\n{stats}"
    );
    let scraped = scrape(&topo.relay, METRICS, "/metrics");
    let metrics = Metrics::parse(&scraped.body);
    let rule = [("rule", "ts")];
    assert_eq!(
        metrics.get("fanout_relay_ts_cc_errors_total", &rule),
        Some((4 * dropped) as f64),
        "{}",
        scraped.body
    );
    assert_eq!(metrics.get("fanout_relay_ts_pids", &rule), Some(4.0));
    let video = [("rule", "ts"), ("pid", "256")];
    assert_eq!(
        metrics.get("fanout_relay_ts_pid_cc_errors_total", &video),
        Some(dropped as f64)
    );
    if let Some(Err(said)) = promtool_check(&scraped.body) {
        panic!("promtool check metrics refused:\n{said}\n{}", scraped.body);
    }
    drop(relay);
}

#[test]
fn rtp_counts_what_was_dropped_and_reordered() {
    let test = "rtp_counts_what_was_dropped_and_reordered";
    if !privileged(test) || !have_programs(test, &["nft"]) {
        return;
    }
    let topo = quiet_topology("rtph");
    let dir = Workdir::new("rtph");
    let relay = RelayProcess::start(&topo.relay, &config(&dir, "rtp+mpegts"), &[]);
    let ctl = Ctl::new(&dir);
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    let mut synth = TsSynth::new(true);
    drop_one_in(&topo, 40);
    const N: u32 = 2000;
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, Duration::from_secs(10));
    // Every 25th datagram is sent after its successor.
    send_synth(&sender, &mut synth, N, Some(25));
    // The last datagrams may still be on their way through the relay.
    std::thread::sleep(Duration::from_millis(500));
    let got = receiver.stop();
    let dropped = dropped(&topo);
    let (missing, late) = missing_and_late(&numbers(&got, true), 0..N);
    assert_eq!(dropped, u64::from(N / 40));
    assert!(late > 0 && missing > 0, "missing {missing}, late {late}");
    let stream = stream_after(&ctl, got.len() as u64);
    let rtp = stream.rtp.expect("RTP counters");
    assert_eq!(rtp.packets, got.len() as u64, "{stream:?}");
    assert_eq!(
        (
            rtp.lost,
            rtp.reordered,
            rtp.duplicated,
            rtp.ssrc_changes,
            rtp.invalid
        ),
        (missing, late, 0, 0, 0),
        "(lost, reordered, duplicated, ssrc_changes, invalid) against the receiver's count"
    );
    let ts = stream.ts.expect("MPEG-TS counters");
    assert!(
        ts.cc_errors >= 4 * missing,
        "each loss breaks every PID: {ts:?}"
    );
    drop(relay);
}

#[test]
fn an_ffmpeg_rtp_mpegts_stream_is_clean_then_counts_its_losses() {
    let test = "an_ffmpeg_rtp_mpegts_stream_is_clean_then_counts_its_losses";
    if !privileged(test) || !have_programs(test, &["ffmpeg", "nft", "taskset"]) {
        return;
    }
    let topo = quiet_topology("ffh");
    let dir = Workdir::new("ffh");
    let relay = RelayProcess::start(&topo.relay, &config(&dir, "rtp+mpegts"), &[]);
    let ctl = Ctl::new(&dir);
    let cpu = online_cpus()[0].to_string();

    let run_ffmpeg = |seconds: &str| -> Vec<Datagram> {
        let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
            .collect(usize::MAX, Duration::from_secs(30));
        let url = format!(
            "rtp://239.1.1.1:5000?ttl=4&localaddr={}&pkt_size=1328",
            Topology::SENDER_ADDR
        );
        let output = topo
            .sender
            .cmd("taskset")
            .args([
                "-c",
                &cpu,
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
            ])
            .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=1000"])
            .args([
                "-t",
                seconds,
                "-c:v",
                "mpeg2video",
                "-b:v",
                "2M",
                "-c:a",
                "mp2",
            ])
            .args(["-f", "rtp_mpegts", &url])
            .output()
            .unwrap_or_else(|e| panic!("run ffmpeg: {e}"));
        assert!(
            output.status.success(),
            "ffmpeg failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
        receiver.stop()
    };
    let sequence = |d: &Datagram| u16::from_be_bytes([d.payload[2], d.payload[3]]);

    let clean = run_ffmpeg("3");
    assert!(
        clean.len() > 100,
        "ffmpeg's stream arrived: {} datagrams",
        clean.len()
    );
    let stream = stream_after(&ctl, clean.len() as u64);
    let (rtp, ts) = (stream.rtp.expect("RTP"), stream.ts.expect("MPEG-TS"));
    assert_eq!(
        (
            rtp.packets,
            rtp.lost,
            rtp.reordered,
            rtp.duplicated,
            rtp.invalid
        ),
        (clean.len() as u64, 0, 0, 0, 0),
        "{stream:?}"
    );
    assert_eq!(
        (ts.cc_errors, ts.sync_errors, ts.tei),
        (0, 0, 0),
        "{stream:?}"
    );
    assert!(ts.pids >= 4, "PAT, PMT, video and audio at least: {ts:?}");

    drop_one_in(&topo, 30);
    let impaired = run_ffmpeg("4");
    let dropped = dropped(&topo);
    // A new ffmpeg is a new RTP source, whose sequence starts anew.
    let mut missing = 0u64;
    for pair in impaired.windows(2) {
        let step = sequence(&pair[1]).wrapping_sub(sequence(&pair[0]));
        missing += u64::from(step.wrapping_sub(1));
    }
    assert!(dropped > 0, "nft dropped nothing of {}", impaired.len());
    let stream = stream_after(&ctl, (clean.len() + impaired.len()) as u64);
    let (rtp, ts) = (stream.rtp.expect("RTP"), stream.ts.expect("MPEG-TS"));
    assert_eq!(
        (rtp.lost, rtp.ssrc_changes, rtp.reordered),
        (missing, 1, 0),
        "{dropped} dropped: {stream:?}"
    );
    assert!(
        missing == dropped || missing + 1 == dropped,
        "the receiver missed {missing} of {dropped} dropped (the last may be after the last received)"
    );
    assert!(
        ts.cc_errors >= missing,
        "each lost datagram breaks continuity: {ts:?}"
    );
    drop(relay);
}
