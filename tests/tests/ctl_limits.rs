//! The control socket's limits hold against clients that do not play by the protocol: a line of
//! 64 MiB without a newline is refused while the supervisor's memory stays bounded, and a client
//! over the cap of concurrent connections is told why and closed while the others go on.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule};
use fanout_relay_tests::privileged;
use fanout_relay_tests::relay::{RelayProcess, quiet_topology};

/// The relay's longest request line (`MAX_REQUEST`).
const MAX_REQUEST: usize = 1 << 20;
/// Bytes of the one huge line.
const HUGE: usize = 64 << 20;
/// How much the supervisor's resident memory may grow while it discards the huge line.
const GROWTH_ALLOWED: u64 = 16 << 20;
/// Concurrent control connections the relay serves (`MAX_CONNECTIONS`).
const CAP: usize = 64;
/// A request every relay answers with success.
const WORKERS: &[u8] = b"{\"version\":1,\"command\":\"workers\"}\n";

fn connect(socket: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("SO_RCVTIMEO");
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .expect("SO_SNDTIMEO");
    let reader = BufReader::new(stream.try_clone().expect("clone a Unix stream"));
    (stream, reader)
}

fn read_answer(reader: &mut BufReader<UnixStream>) -> String {
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .unwrap_or_else(|e| panic!("no answer line from the relay within 20 s: {e}"));
    answer
}

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`: given there in kB).
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

#[test]
fn a_huge_line_without_newline_is_refused_in_bounded_memory() {
    if !privileged("a_huge_line_without_newline_is_refused_in_bounded_memory") {
        return;
    }
    let topo = quiet_topology("ctlmem");
    let dir = Workdir::new("memory");
    let config = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let pid = relay.pid();
    let (mut stream, mut reader) = connect(ctl.socket());
    // The connection is served before the huge line starts, so its own buffers are counted in
    // the baseline.
    stream.write_all(WORKERS).expect("write a request");
    assert!(read_answer(&mut reader).starts_with("{\"ok\":true"));
    let rss_before = memory(pid, "VmRSS");
    let peak_before = memory(pid, "VmHWM");

    let chunk = vec![b'x'; MAX_REQUEST];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rss_max = rss_before;
    for _ in 0..HUGE / chunk.len() {
        stream
            .write_all(&chunk)
            .expect("write a chunk of the huge line");
        rss_max = rss_max.max(memory(pid, "VmRSS"));
        assert!(Instant::now() < deadline, "sending 64 MiB took too long");
    }
    stream.write_all(b"\n").expect("end the huge line");
    stream.write_all(WORKERS).expect("write a request after it");
    let refusal = read_answer(&mut reader);
    assert!(
        refusal.starts_with("{\"ok\":false") && refusal.contains("longer than 1048576 bytes"),
        "the huge line got {refusal:?}"
    );
    let answer = read_answer(&mut reader);
    assert!(
        answer.starts_with("{\"ok\":true"),
        "the request after the huge line got {answer:?}"
    );
    rss_max = rss_max.max(memory(pid, "VmRSS"));
    // The peak counts what was resident between two samples, and what was freed since.
    let peak_growth = memory(pid, "VmHWM").saturating_sub(peak_before);
    let rss_growth = rss_max.saturating_sub(rss_before);
    eprintln!(
        "supervisor memory while discarding {HUGE} bytes: peak grew by {peak_growth}, resident \
         by {rss_growth} (resident before: {rss_before})"
    );
    assert!(
        peak_growth < GROWTH_ALLOWED && rss_growth < GROWTH_ALLOWED,
        "the supervisor grew by {peak_growth} bytes at its peak and {rss_growth} bytes resident \
         while it discarded a line of {HUGE} bytes"
    );
    assert_eq!(ctl.rule_names(), ["base"]);
    relay.stop();
}

#[test]
fn a_connection_over_the_cap_is_told_why_and_the_others_go_on() {
    if !privileged("a_connection_over_the_cap_is_told_why_and_the_others_go_on") {
        return;
    }
    let topo = quiet_topology("ctlcap");
    let dir = Workdir::new("cap");
    let config = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let mut open: Vec<(UnixStream, BufReader<UnixStream>)> = Vec::new();
    for _ in 0..CAP {
        let (mut stream, mut reader) = connect(ctl.socket());
        // Answered, so the relay counts it before the next one connects.
        stream.write_all(WORKERS).expect("write a request");
        let answer = read_answer(&mut reader);
        assert!(
            answer.starts_with("{\"ok\":true"),
            "connection {} of {CAP} got {answer:?}",
            open.len() + 1
        );
        open.push((stream, reader));
    }

    let (_over, mut over_reader) = connect(ctl.socket());
    let refusal = read_answer(&mut over_reader);
    assert!(
        refusal.starts_with("{\"ok\":false") && refusal.contains("too many control connections"),
        "connection {} got {refusal:?}",
        CAP + 1
    );
    let mut rest = String::new();
    assert_eq!(
        over_reader.read_line(&mut rest).expect("end of stream"),
        0,
        "the refused connection was not closed: {rest:?}"
    );
    // Through the client, as an operator would meet it.
    let out = ctl.run(&["list"]);
    assert!(
        !out.status.success() && out.stderr.contains("too many control connections"),
        "ctl list over the cap: {out:?}"
    );

    // The connections already open are served as before.
    let (stream, reader) = open.first_mut().expect("the cap is not 0");
    stream.write_all(WORKERS).expect("write a request");
    let answer = read_answer(reader);
    assert!(answer.starts_with("{\"ok\":true"), "{answer}");

    // Once one closes, a new connection is served again.
    open.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ctl.run(&["list"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection served 10 s after one of {CAP} closed: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(open);
    relay.stop();
}
