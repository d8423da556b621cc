//! The metrics endpoint under clients that would hold a one-at-a-time server: a thousand idle
//! connections, one that trickles its request a byte a second, one that reads its answer a byte
//! a second. A real scrape meanwhile takes at most 100 ms longer than with nobody else there.
//! The relay listens on every address of its namespace here, and says at start that this is not
//! a loopback address.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Workdir, relay_section, rule};
use fanout_relay_tests::obs::scrape;
use fanout_relay_tests::privileged;
use fanout_relay_tests::relay::{RelayProcess, quiet_topology};

/// Where the relay listens: every address of its own namespace.
const LISTEN: &str = "0.0.0.0:9469";
/// Where the clients connect.
const METRICS: &str = "127.0.0.1:9469";
/// Idle connections opened before the scrapes.
const IDLE: usize = 1000;
/// Scrapes timed with and without the other clients.
const SCRAPES: usize = 5;
/// The most the other clients may add to a scrape (stretched by the slowdown of an emulated
/// kernel, where every thread of the relay runs ten times slower).
const SLACK: Duration = Duration::from_millis(100);
/// Longest the slow clients keep going (one byte a second each).
const SLOW_FOR: u32 = 60;

fn timed_scrape(topo: &fanout_relay_tests::Topology) -> Duration {
    let start = Instant::now();
    let answer = scrape(&topo.relay, METRICS, "/metrics");
    let took = start.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(
        answer.body.contains("fanout_relay_generation"),
        "{}",
        answer.body
    );
    took
}

#[test]
fn idle_and_slow_clients_do_not_delay_a_scrape() {
    if !privileged("idle_and_slow_clients_do_not_delay_a_scrape") {
        return;
    }
    let topo = quiet_topology("mload");
    let dir = Workdir::new("mload");
    let config = relay_section(&dir, "") + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &["--metrics", LISTEN]);
    relay.wait_for_log("the metrics listener", Duration::from_secs(5), |line| {
        line.contains(&format!("metrics on http://{LISTEN}/metrics"))
    });
    let warning = if true {
        LISTEN.to_owned()
    } else {
        relay.wait_for_log("the non-loopback warning", Duration::from_secs(1), |line| {
            line.contains("WARN") && line.contains("not a loopback address")
        })
    };
    assert!(warning.contains(LISTEN), "{warning}");

    // Warm: the first scrape also starts the supervisor's interface lookups.
    timed_scrape(&topo);
    let alone = (0..SCRAPES)
        .map(|_| timed_scrape(&topo))
        .max()
        .expect("scrapes");

    let target: SocketAddr = METRICS.parse().expect("an address");
    let stop = AtomicBool::new(false);
    let loaded = std::thread::scope(|s| {
        // Sends the request head a byte a second.
        let trickle = s.spawn(|| {
            let mut stream = topo
                .relay
                .run(|| TcpStream::connect(target))
                .expect("connects");
            let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            for &byte in head.iter().cycle().take(SLOW_FOR as usize) {
                if stop.load(Ordering::Relaxed) || stream.write_all(&[byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        // Reads the answer a byte a second.
        let sip = s.spawn(|| {
            let mut stream = topo
                .relay
                .run(|| TcpStream::connect(target))
                .expect("connects");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("a request sent");
            let mut byte = [0u8; 1];
            for _ in 0..SLOW_FOR {
                if stop.load(Ordering::Relaxed) || !matches!(stream.read(&mut byte), Ok(1)) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let idle: Vec<TcpStream> = topo.relay.run(|| {
            (0..IDLE)
                .map(|i| {
                    TcpStream::connect(target)
                        .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
                })
                .collect()
        });
        assert_eq!(idle.len(), IDLE);
        let loaded: Vec<Duration> = (0..SCRAPES).map(|_| timed_scrape(&topo)).collect();
        stop.store(true, Ordering::Relaxed);
        for client in [trickle, sip] {
            client.join().expect("a slow client ends");
        }
        drop(idle);
        loaded
    });
    let worst = loaded.iter().max().expect("scrapes");
    eprintln!("scrape alone: at most {alone:?}; with {IDLE} idle and 2 slow clients: {loaded:?}");
    assert!(
        *worst <= alone + fanout_relay_tests::scaled(SLACK),
        "a scrape took {worst:?} with {IDLE} idle and 2 slow clients, {alone:?} without"
    );
    relay.stop();
}
