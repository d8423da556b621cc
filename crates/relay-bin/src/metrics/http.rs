//! One HTTP exchange of the metrics endpoint: the request head read and parsed with `httparse`,
//! and the answer. Only `GET` and `HEAD` of `/metrics` are served; every answer has a
//! `Content-Length` and `Connection: close`, so a connection carries one request.

use std::io::Read;

/// Longest request head (request line and headers) read.
pub(super) const MAX_HEAD: usize = 8192;
/// Most headers a request may have; a scraper sends a handful.
const MAX_HEADERS: usize = 32;
/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The parts of a request head the endpoint looks at.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Head {
    /// `GET`, `HEAD`, ...
    pub(super) method: String,
    /// The request target, query included.
    pub(super) target: String,
}

/// Why no request head was read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum HeadError {
    /// Longer than [`MAX_HEAD`] or more than [`MAX_HEADERS`] headers.
    #[error("request head over {MAX_HEAD} bytes or {MAX_HEADERS} headers")]
    TooLarge,
    /// Not an HTTP/1.x request head.
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    /// The peer closed, or the connection failed or was shut down (its deadline), first.
    #[error("connection closed before the end of the request head")]
    Closed,
}

/// Reads and parses a request head from `stream`. Reads block: the connection's deadline is
/// kept by whoever can shut the socket down (see `connections`), not by read timeouts.
pub(super) fn read_head(stream: &mut impl Read) -> Result<Head, HeadError> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&bytes) {
            Ok(httparse::Status::Complete(_)) => {
                return Ok(Head {
                    method: request.method.unwrap_or_default().to_owned(),
                    target: request.path.unwrap_or_default().to_owned(),
                });
            }
            Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => {
                return Err(HeadError::TooLarge);
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(error) => return Err(HeadError::Malformed(error)),
        }
        let room = (MAX_HEAD + 1 - bytes.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The answer to a head that could not be read, if one is owed.
pub(super) fn refusal(error: &HeadError) -> Option<Vec<u8>> {
    match error {
        HeadError::TooLarge => Some(plain(431, "Request Header Fields Too Large", "", true)),
        HeadError::Malformed(why) => Some(plain(
            400,
            "Bad Request",
            &format!("not an HTTP/1.x request: {why}\n"),
            true,
        )),
        HeadError::Closed => None,
    }
}

/// The answer to `head`; `body` renders the metrics, or says why it cannot.
pub(super) fn respond<E: std::fmt::Display>(
    head: &Head,
    body: impl FnOnce() -> Result<String, E>,
) -> Vec<u8> {
    let with_body = match head.method.as_str() {
        "GET" => true,
        "HEAD" => false,
        _ => {
            let mut answer = plain(405, "Method Not Allowed", "GET or HEAD only\n", true);
            let at = answer
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a status line ends with CRLF")
                + 2;
            answer.splice(at..at, b"Allow: GET, HEAD\r\n".iter().copied());
            return answer;
        }
    };
    let path = head.target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return plain(
            404,
            "Not Found",
            "not found: the metrics are at /metrics\n",
            with_body,
        );
    }
    match body() {
        Ok(text) => http(200, "OK", CONTENT_TYPE, &text, with_body),
        Err(why) => plain(503, "Service Unavailable", &format!("{why}\n"), with_body),
    }
}

/// A plain-text answer.
pub(super) fn plain(status: u16, reason: &str, text: &str, with_body: bool) -> Vec<u8> {
    http(status, reason, "text/plain; charset=utf-8", text, with_body)
}

fn http(status: u16, reason: &str, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        answer.extend_from_slice(body.as_bytes());
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(answer: &[u8]) -> String {
        String::from_utf8_lossy(answer).into_owned()
    }

    fn answer(mut raw: &[u8]) -> String {
        let ok = || Ok::<_, String>("up 1\n".to_owned());
        match read_head(&mut raw) {
            Ok(head) => text(&respond(&head, ok)),
            Err(error) => text(&refusal(&error).expect("an answer is owed")),
        }
    }

    #[test]
    fn routes_and_statuses() {
        let get = answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(
            get.contains("Content-Type: text/plain; version=0.0.4"),
            "{get}"
        );
        assert!(get.contains("Content-Length: 5\r\n"), "{get}");
        assert!(get.ends_with("\r\n\r\nup 1\n"), "{get}");
        let head = answer(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(
            head.contains("Content-Length: 5\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let bare = answer(b"GET /metrics HTTP/1.0\n\n");
        assert!(bare.starts_with("HTTP/1.1 200 "), "{bare}");
        let missing = answer(b"GET / HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = answer(b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"\x00\xff\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
        ] {
            let answer = answer(bad);
            assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        }
        let down = text(&respond(
            &Head {
                method: "GET".into(),
                target: "/metrics".into(),
            },
            || Err::<String, _>("the relay is shutting down"),
        ));
        assert!(down.starts_with("HTTP/1.1 503 "), "{down}");
        assert!(down.ends_with("shutting down\n"), "{down}");
    }

    #[test]
    fn request_heads_are_bounded() {
        let mut cut: &[u8] = b"GET /metrics HTTP/1.1\r\n";
        assert_eq!(read_head(&mut cut), Err(HeadError::Closed));
        let mut huge = b"GET /metrics HTTP/1.1\r\nA: ".to_vec();
        huge.resize(MAX_HEAD * 2, b'a');
        assert_eq!(read_head(&mut huge.as_slice()), Err(HeadError::TooLarge));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("H{i}: x\r\n"))
            .collect();
        let many = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
        assert_eq!(read_head(&mut many.as_bytes()), Err(HeadError::TooLarge));
        let answer = answer(many.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }
}
