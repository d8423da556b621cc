//! The watchdog: a serving worker that stops answering is killed and replaced.
//!
//! The supervisor asks every ready worker for its counters once per counter interval, with at
//! most one request in flight per worker. A serving worker reads its control socket at least
//! every 200 ms (`worker::wait::CONTROL_EVERY`) and answers at once, so silence is the signal:
//! a worker that has left a request unanswered, and sent nothing else, for [`SILENCE_LIMIT`]
//! is stopped (`SIGSTOP`), deadlocked or starved, and is killed with `SIGKILL`; the usual
//! restart follows, counted with the reason `unresponsive`.
//!
//! A worker that is building a table is busy, not hung, and a table of a million rules takes
//! seconds: a starting worker (no `Ready` yet) is not watched at all, and one applying a change
//! or a resync (a table sent that it has not confirmed) gets [`BUSY_LIMIT`] instead.
//!
//! The bound: the next request leaves within one counter interval (1 s) of the hang, the kill
//! [`SILENCE_LIMIT`] after it, and the restart after the restart backoff (100-200 ms for a
//! worker that was not already restarting in a loop): a hung serving worker is replaced within
//! about 4.5 s, and the loop keeps answering the control socket all along, since nothing in it
//! waits for a worker.

use super::restarts::RestartReason;
use super::setup::World;
use super::workers::WorkerSlot;
use std::time::{Duration, Instant};

/// How long a serving worker may leave a counters request unanswered (and send nothing else).
/// Fifteen times the longest a serving worker goes without reading its control socket, and
/// below the 5 s after which a write to it gives up.
pub(super) const SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// The same for a worker applying a table change it has not confirmed yet.
pub(super) const BUSY_LIMIT: Duration = Duration::from_secs(60);

/// How long `slot`'s worker may stay silent now, if it is watched at all: a starting worker
/// (building its first table), a stopped or moving one and a retired one are not.
fn limit(slot: &WorkerSlot) -> Option<Duration> {
    let process = slot.process.as_ref()?;
    if !slot.active || slot.held || slot.restart_now || !process.ready {
        return None;
    }
    let busy = slot.resyncing || slot.sent_generation > slot.acked_generation;
    Some(if busy { BUSY_LIMIT } else { SILENCE_LIMIT })
}

/// When `slot`'s worker becomes overdue, if it is watched and owes an answer: the limit after
/// the later of the unanswered request and the last message it sent.
pub(super) fn deadline(slot: &WorkerSlot) -> Option<Instant> {
    let limit = limit(slot)?;
    let process = slot.process.as_ref()?;
    let asked = process.asked_at?;
    Some(asked.max(process.heard_at) + limit)
}

impl World {
    /// Kills every watched worker that has been silent past its limit; its exit is reaped and
    /// it is restarted as any other.
    pub(super) fn watch(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if deadline(slot).is_none_or(|due| due > now) {
                continue;
            }
            let process = slot.process.as_ref();
            let silent = process
                .and_then(|process| process.asked_at)
                .map_or(Duration::ZERO, |asked| now.saturating_duration_since(asked));
            let pid = process.map_or(0, |process| process.child.id());
            let allowed = limit(slot).unwrap_or(SILENCE_LIMIT);
            let cpu = slot.cpu;
            // Not rate-limited: the limit itself spaces these out to one per worker every
            // few seconds at most, and this line is why the restart that follows happens.
            log::error!(
                "worker on cpu {cpu} (pid {pid}) left a counters request unanswered for {} ms \
                 (limit {} ms): killed as unresponsive, to be restarted",
                silent.as_millis(),
                allowed.as_millis(),
            );
            self.slots[index].kill(RestartReason::Unresponsive);
        }
    }

    /// When the loop must wake up to check a worker's silence.
    pub(super) fn watchdog_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.slots.iter().filter_map(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watch limit of a slot with these flags, whose process (`true` stands in for a
    /// worker) is `ready` or still starting.
    fn flags(ready: bool, sent: u64, acked: u64, resyncing: bool) -> Option<Duration> {
        let mut slot = WorkerSlot::new(0, 0, 0);
        slot.sent_generation = sent;
        slot.acked_generation = acked;
        slot.resyncing = resyncing;
        let child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let (control, _theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        slot.process = Some(super::super::workers::WorkerProcess {
            child,
            control,
            started: Instant::now(),
            ready,
            counters: Default::default(),
            asked_at: None,
            heard_at: Instant::now(),
        });
        let limit = limit(&slot);
        if let Some(process) = &mut slot.process {
            let _ = process.child.wait();
        }
        limit
    }

    #[test]
    fn only_serving_workers_get_the_short_limit() {
        assert_eq!(flags(true, 4, 4, false), Some(SILENCE_LIMIT), "serving");
        assert_eq!(
            flags(false, 4, 0, false),
            None,
            "starting: building its table"
        );
        assert_eq!(
            flags(true, 5, 4, false),
            Some(BUSY_LIMIT),
            "applying a change"
        );
        assert_eq!(flags(true, 4, 0, true), Some(BUSY_LIMIT), "resyncing");
    }

    #[test]
    fn silence_counts_from_the_later_of_the_request_and_the_last_message() {
        let mut slot = WorkerSlot::new(0, 0, 0);
        assert_eq!(deadline(&slot), None, "no process");
        let child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let (control, _theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        let start = Instant::now();
        slot.process = Some(super::super::workers::WorkerProcess {
            child,
            control,
            started: start,
            ready: true,
            counters: Default::default(),
            asked_at: None,
            heard_at: start,
        });
        assert_eq!(deadline(&slot), None, "nothing asked: nothing owed");
        let asked = start + Duration::from_secs(1);
        let process = slot.process.as_mut().expect("set above");
        process.asked_at = Some(asked);
        assert_eq!(deadline(&slot), Some(asked + SILENCE_LIMIT));
        let heard = start + Duration::from_secs(2);
        let process = slot.process.as_mut().expect("set above");
        process.heard_at = heard;
        assert_eq!(
            deadline(&slot),
            Some(heard + SILENCE_LIMIT),
            "an answer to something else (a change confirmed) restarts the clock"
        );
        if let Some(process) = &mut slot.process {
            let _ = process.child.wait();
        }
    }
}
