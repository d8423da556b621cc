//! Text built with `write!`/`writeln!` into a `String`.
//!
//! `fmt::Write` for `String` never fails: the `fmt::Result` each `write!` returns exists only so
//! that writers which can fail may use `?`. A renderer writes inside [`append`] with `?` like any
//! other fallible writer, and that one result is checked once, here.

use std::fmt;

/// Appends to `text` what `write` writes.
pub(crate) fn append(text: &mut String, write: impl FnOnce(&mut String) -> fmt::Result) {
    write(text).expect("fmt::Write for String never returns an error");
}
