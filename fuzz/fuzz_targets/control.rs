//! The control socket's request parser (`relay_bin::control::proto::parse_request`) on
//! arbitrary lines.
//!
//! It must never panic. What it accepts must speak this protocol's version, fit the line limit,
//! and survive a round trip: the request serialised as a client would send it parses again to
//! the same request. A `save` it accepts names an absolute path. A refusal is one bounded line
//! (it never echoes a long request back).

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_bin::control::proto::{self, Command, MAX_REQUEST, VERSION};
use std::path::Path;

/// The longest refusal: a sentence about the request, not the request itself.
const MAX_REFUSAL: usize = 512;

fuzz_target!(|line: &[u8]| {
    match proto::parse_request(line) {
        Ok(request) => {
            assert!(line.len() <= MAX_REQUEST);
            assert_eq!(request.version, VERSION);
            if let Command::Save { path } = &request.command {
                assert!(Path::new(path).is_absolute(), "save to {path:?}");
            }
            let sent = serde_json::to_vec(&request).expect("a request always serialises");
            match proto::parse_request(&sent) {
                Ok(again) => assert_eq!(again, request, "round trip"),
                Err(error) => panic!("{request:?} serialised as {sent:?} is refused: {error}"),
            }
        }
        Err(error) => {
            let error = error.refusal();
            assert!(!error.is_empty());
            assert!(!error.contains('\n'), "one line: {error:?}");
            assert!(error.len() <= MAX_REFUSAL, "{} bytes: {error}", error.len());
        }
    }
});
