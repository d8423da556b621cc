//! What the metrics endpoint answers to arbitrary request bytes
//! (`relay_bin::metrics::answer_request`: the head read through `httparse`, then routed).
//!
//! It must never panic, and every answer must be one well-formed HTTP/1.1 response that closes
//! the connection: a status among those the endpoint gives, a `Content-Length` equal to the
//! body sent (none for `HEAD`), the metrics only for `GET` or `HEAD` of `/metrics`, and nothing
//! at all only for bytes that end before a whole head (the client closed first).

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_bin::metrics::answer_request;

const METRICS: &str = "fanout_relay_generation 7\n";

fuzz_target!(|request: &[u8]| {
    let answer = answer_request(request, METRICS);
    // A request line the parser skips empty lines before.
    let start = request
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(request.len());
    let first = request[start..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    if answer.is_empty() {
        // Only a head cut short earns no answer: a scrape's whole head always gets one.
        let whole = request[start..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|end| start + end < 4096);
        assert!(
            !(first.starts_with(b"GET /metrics HTTP/1.1\r") && whole),
            "{request:?}"
        );
        return;
    }
    let text = String::from_utf8(answer).expect("answers are text");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a head ends with a blank line");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    assert!([200, 400, 404, 405, 431].contains(&status), "{status_line}");
    let headers: Vec<(&str, &str)> = lines
        .map(|line| line.split_once(": ").expect("a header line"))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    assert_eq!(header("Connection"), Some("close"));
    let length: usize = header("Content-Length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    assert!(
        body.is_empty() || body.len() == length,
        "{length} vs {}",
        body.len()
    );
    let is = |method: &[u8]| first.starts_with(method);
    if status == 200 {
        assert!(is(b"GET /metrics") || is(b"HEAD /metrics"), "{first:?}");
        assert_eq!(length, METRICS.len());
        assert_eq!(body, if is(b"HEAD") { "" } else { METRICS });
    } else {
        assert!(!body.contains(METRICS), "metrics only with 200");
    }
    if status == 405 {
        assert_eq!(header("Allow"), Some("GET, HEAD"));
    }
});
