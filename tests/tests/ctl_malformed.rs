//! 1,000 malformed control requests over a few connections at once: random bytes, lines over
//! 1 MiB, unknown commands, bad fields, wrong versions, cut-off JSON. Each is answered with an
//! error that says why, the connection stays usable, and the relay keeps answering and relaying
//! with its rules and workers untouched.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule};
use fanout_relay_tests::relay::{
    RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged};

/// Malformed requests in all.
const REQUESTS: usize = 1000;
/// Connections they are spread over, used at the same time.
const CONNECTIONS: usize = 4;
/// The relay's longest request line (`MAX_REQUEST`).
const MAX_REQUEST: usize = 1 << 20;
/// Datagrams relayed before and after.
const N: u32 = 200;

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const ADD: &str = r#"{"version":1,"command":"add","rule":{"name":"x","input":{"interface":"rin0","destination":"239.1.1.9","port":5009},"outputs":[{"interface":"rout0","destination":"239.2.2.9","port":6009}]}}"#;

/// Requests whose fields are wrong: the wrong type, out of range, missing, unknown, or valid in
/// shape but refused by validation.
const BAD_FIELDS: &[&str] = &[
    r#"{"version":1,"command":"remove","name":5}"#,
    r#"{"version":1,"command":"remove"}"#,
    r#"{"version":1,"command":"remove","name":"base","key":{"interface":"rin0","destination":"239.1.1.1","port":5000}}"#,
    r#"{"version":1,"command":"remove","name":"ghost"}"#,
    r#"{"version":1,"command":"remove","key":{"interface":"rin0","destination":"239.1.1.1","port":70000}}"#,
    r#"{"version":1,"command":"remove","key":{"interface":"rin0","destination":"300.1.1.1","port":5000}}"#,
    r#"{"version":1,"command":"remove","name":"base","color":"red"}"#,
    r#"{"version":1,"command":"save"}"#,
    r#"{"version":1,"command":"save","path":17}"#,
    r#"{"version":1,"command":"add"}"#,
    r#"{"version":1,"command":"add","rule":null}"#,
    r#"{"version":1,"command":"add","rule":{"name":"x"}}"#,
    r#"{"version":1,"command":"add","rule":{"name":"x","input":{"interface":"rin0","destination":"239.1.1.9","port":5009},"outputs":[]}}"#,
    r#"{"version":1,"command":"add","rule":{"name":"x","input":{"interface":"nosuch0","destination":"239.1.1.9","port":0},"outputs":[{"interface":"rout0","destination":"239.2.2.9","port":6009}]}}"#,
    r#"{"version":1,"command":"add","rule":{"name":"x","input":{"interface":"rin0","destination":"10.1.1.1","port":5009},"outputs":[{"interface":"rout0","destination":"239.2.2.9","port":6009}]}}"#,
    r#"{"version":1,"command":"add","rule":{"name":"x","input":{"interface":"rin0","destination":"239.1.1.9","port":0},"outputs":[{"interface":"rout0","destination":"239.2.2.9","port":6009}]}}"#,
    r#"{"version":1,"command":"add","rule":{"name":"x","input":{"interface":"rin0","destination":"239.1.1.9","port":5009},"outputs":[{"interface":"rout0","destination":"239.2.2.9","port":6009,"ttl":300}]}}"#,
    r#"{"version":1,"command":"add","rule":{"name":"base","input":{"interface":"rin0","destination":"239.1.1.9","port":5009},"outputs":[{"interface":"rout0","destination":"239.2.2.9","port":6009}]}}"#,
    r#"{"version":1,"command":"add","rule":{"name":"x","input":{"interface":"rin0","destination":"239.1.1.1","port":5000},"outputs":[{"interface":"rout0","destination":"239.2.2.9","port":6009}]}}"#,
    r#"{"version":1,"command":"add","rule":{"name":"x","input":{"interface":"rin0","destination":"239.1.1.9","port":5009},"outputs":[{"interface":"rin0","destination":"239.1.1.9","port":5009}]}}"#,
    r#"{"version":1,"command":"add","rule":{"name":"x","extra":1,"input":{"interface":"rin0","destination":"239.1.1.9","port":5009},"outputs":[{"interface":"rout0","destination":"239.2.2.9","port":6009}]}}"#,
    r#"{"version":1,"command":"debug_corrupt_table","cpu":4096}"#,
];

/// Wrong or missing protocol versions.
const BAD_VERSIONS: &[&str] = &[
    r#"{"version":0,"command":"list"}"#,
    r#"{"version":2,"command":"list"}"#,
    r#"{"version":4294967297,"command":"list"}"#,
    r#"{"version":-1,"command":"list"}"#,
    r#"{"version":1.5,"command":"list"}"#,
    r#"{"version":"1","command":"list"}"#,
    r#"{"version":null,"command":"list"}"#,
    r#"{"command":"list"}"#,
];

/// JSON that is not a request object.
const NOT_OBJECTS: &[&str] = &[
    "[1,2,3]",
    "\"list\"",
    "42",
    "null",
    "true",
    "{}",
    "{\"version\":1}",
];

/// Request `index` of the malformed set, and whether it is over the line limit.
fn malformed(index: usize, random: &mut Random) -> (Vec<u8>, bool) {
    let text = |s: &str| s.as_bytes().to_vec();
    let line = match index % 10 {
        0 => {
            // Random bytes: no newline inside, and not blank (a blank line is skipped).
            let len = 1 + random.below(300);
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| random.next() as u8)
                .map(|b| if b == b'\n' { b'?' } else { b })
                .collect();
            bytes[0] = b'!' + (random.below(90) as u8);
            bytes
        }
        1 => text(&format!(
            "{{\"version\":1,\"command\":\"frobnicate_{index}\"}}"
        )),
        2 | 3 => text(BAD_FIELDS[random.below(BAD_FIELDS.len())]),
        4 => text(BAD_VERSIONS[random.below(BAD_VERSIONS.len())]),
        5 => {
            // Cut-off JSON: every proper prefix of an object is invalid.
            let cut = 1 + random.below(ADD.len() - 1);
            text(&ADD[..cut])
        }
        6 => text(NOT_OBJECTS[random.below(NOT_OBJECTS.len())]),
        7 => {
            // Invalid UTF-8 and NUL inside a string, and nesting past any parser's limit.
            match random.below(3) {
                0 => b"{\"version\":1,\"command\":\"remove\",\"name\":\"\xff\xfe\"}".to_vec(),
                1 => b"{\"version\":1,\"command\":\"li\x00st\"}".to_vec(),
                _ => vec![b'['; 10_000],
            }
        }
        8 if index % 100 == 8 => {
            // Over the limit, one in a hundred (10 MiB in all).
            let mut bytes = vec![b'{'; MAX_REQUEST + 1 + random.below(4096)];
            bytes[1] = b'"';
            return (bytes, true);
        }
        _ => text(&format!("{{\"version\":1,\"command\":{index}}}")),
    };
    (line, false)
}

/// Sends `line` and a newline, and reads one answer line (empty at end of stream).
fn exchange(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, line: &[u8]) -> String {
    stream.write_all(line).expect("write a request");
    stream.write_all(b"\n").expect("write a newline");
    let mut answer = Vec::new();
    reader
        .read_until(b'\n', &mut answer)
        .expect("read an answer");
    String::from_utf8_lossy(&answer).into_owned()
}

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

/// Checks that `answer` is a refusal with a reason; returns the reason.
fn refusal<'a>(answer: &'a str, request: &[u8]) -> &'a str {
    let shown = String::from_utf8_lossy(&request[..request.len().min(120)]).into_owned();
    let reason = answer
        .strip_prefix("{\"ok\":false,\"error\":\"")
        .and_then(|rest| rest.strip_suffix("\"}\n"))
        .unwrap_or_else(|| panic!("request {shown:?} got {answer:?}, not a refusal"));
    assert!(
        !reason.is_empty(),
        "request {shown:?}: a refusal without a reason"
    );
    reason
}

#[test]
fn a_thousand_malformed_requests_leave_the_relay_answering_and_relaying() {
    if !privileged("a_thousand_malformed_requests_leave_the_relay_answering_and_relaying") {
        return;
    }
    let topo = quiet_topology("ctlmal");
    let dir = Workdir::new("malformed");
    let config = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let rules = ctl.rules();
    let pids: Vec<Option<u32>> = ctl.workers().iter().map(|w| w.pid).collect();
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(2 * N as usize, Duration::from_secs(60));
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    sender.send_numbered("239.1.1.1:5000", 1, 0..N, 500);

    let answered: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let socket = ctl.socket();
                s.spawn(move || {
                    let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1));
                    let (mut stream, mut reader) = connect(socket);
                    let mut count = 0;
                    for index in (c..REQUESTS).step_by(CONNECTIONS) {
                        let (line, oversized) = malformed(index, &mut random);
                        let answer = exchange(&mut stream, &mut reader, &line);
                        let reason = refusal(&answer, &line);
                        if oversized {
                            assert!(
                                reason.contains("longer than 1048576 bytes"),
                                "an oversized line was refused with {reason:?}"
                            );
                        }
                        count += 1;
                        // The connection is still usable.
                        if index % 50 == 0 {
                            let answer = exchange(
                                &mut stream,
                                &mut reader,
                                b"{\"version\":1,\"command\":\"workers\"}",
                            );
                            assert!(answer.starts_with("{\"ok\":true"), "{answer}");
                        }
                    }
                    count
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .sum()
    });
    assert_eq!(answered, REQUESTS);

    // An oversized line cut off by closing, and cut-off JSON ended by a half-close: the relay
    // answers what it can and goes on.
    let (mut stream, _) = connect(ctl.socket());
    stream
        .write_all(&vec![b'x'; 3 * MAX_REQUEST])
        .expect("write 3 MiB");
    drop(stream);
    let (mut stream, mut reader) = connect(ctl.socket());
    stream
        .write_all(br#"{"version":1,"comm"#)
        .expect("write a partial request");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    reader.read_line(&mut answer).expect("an answer");
    refusal(&answer, b"{\"version\":1,\"comm");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("end of stream");
    assert!(rest.is_empty(), "more after the answer: {rest:?}");

    // Nothing changed, nothing restarted, and relaying goes on.
    assert_eq!(ctl.rules(), rules, "malformed requests changed the rules");
    let workers = ctl.workers();
    assert_eq!(
        workers.iter().map(|w| w.pid).collect::<Vec<_>>(),
        pids,
        "{workers:#?}"
    );
    assert!(
        workers
            .iter()
            .all(|w| w.state == "ready" && w.restarts == 0)
    );
    sender.send_numbered("239.1.1.1:5000", 1, N..2 * N, 500);
    if let Err(problem) = check_stream(&receiver.finish(), 1, 0..2 * N) {
        panic!("relaying around the malformed requests: {problem}");
    }
    assert!(
        relay.log().lines().all(|line| !line.contains("panicked")),
        "the relay panicked:\n{}",
        relay.log()
    );
    relay.stop();
}
