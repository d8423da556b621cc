//! Ctrl-C: SIGINT and SIGTERM end the demo through its ordinary clean-up path.
//!
//! Sending a signal to the process in a unit test would kill the test runner (its other threads
//! do not block it), so this is tested end to end by `tests/tests/demo.rs`.

use super::DemoError;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// SIGINT and SIGTERM, blocked on every thread of the demo and taken by a thread of their own
/// that sets a flag, so that Ctrl-C ends the demo through its ordinary clean-up path.
pub(super) struct SignalWatch {
    interrupted: Arc<AtomicBool>,
    previous: SigSet,
}

impl SignalWatch {
    /// Blocks SIGINT and SIGTERM on the calling thread (and so on the threads it starts
    /// later) and starts the thread that takes them.
    pub(super) fn start() -> Result<SignalWatch, DemoError> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGTERM);
        // Threads started from here on inherit the mask; child processes get a clean one.
        let previous = mask
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(|errno| DemoError::Io {
                what: "blocking SIGINT and SIGTERM".into(),
                source: errno.into(),
            })?;
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&interrupted);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                while let Ok(signal) = mask.wait() {
                    if !flag.swap(true, Ordering::Relaxed) {
                        eprintln!("\n{signal}: stopping the demo and removing what it made");
                    }
                }
            })
            .map_err(|source| DemoError::Io {
                what: "starting the signal thread".into(),
                source,
            })?;
        Ok(SignalWatch {
            interrupted,
            previous,
        })
    }

    /// Whether SIGINT or SIGTERM has arrived.
    pub(super) fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        if let Err(errno) = self.previous.thread_set_mask() {
            log::warn!("demo: cannot restore the signal mask: {errno}");
        }
    }
}
