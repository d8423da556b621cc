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

use super::World;
use crate::supervisor::life::Life;
use crate::supervisor::restarts::RestartReason;
use std::time::{Duration, Instant};

/// How long a serving worker may leave a counters request unanswered (and send nothing else).
/// Fifteen times the longest a serving worker goes without reading its control socket, and
/// below the 5 s after which a write to it gives up.
pub(super) const SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// The same for a worker applying a table change it has not confirmed yet.
pub(super) const BUSY_LIMIT: Duration = Duration::from_secs(60);

/// How long a worker in `life` may stay silent now, if it is watched at all: only a serving
/// one is (a starting one builds its first table; a stopping, held or retired one is going).
fn limit<P>(life: &Life<P>) -> Option<Duration> {
    let Life::Serving { run, resyncing } = life else {
        return None;
    };
    let busy = *resyncing || run.sent_generation > run.acked_generation;
    Some(if busy { BUSY_LIMIT } else { SILENCE_LIMIT })
}

/// When a worker in `life` becomes overdue, if it is watched and owes an answer: the limit
/// after the later of the unanswered request and the last message it sent.
fn deadline<P>(life: &Life<P>) -> Option<Instant> {
    let limit = limit(life)?;
    let run = life.run()?;
    let asked = run.asked_at?;
    Some(asked.max(run.heard_at) + limit)
}

impl World {
    /// Kills every watched worker that has been silent past its limit; its exit is reaped and
    /// it is restarted as any other.
    pub(super) fn watch(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if deadline(&slot.life).is_none_or(|due| due > now) {
                continue;
            }
            let run = slot.run();
            let silent = run
                .and_then(|run| run.asked_at)
                .map_or(Duration::ZERO, |asked| now.saturating_duration_since(asked));
            let pid = slot.pid().unwrap_or(0);
            let allowed = limit(&slot.life).unwrap_or(SILENCE_LIMIT);
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
        self.slots.iter().filter_map(|slot| deadline(&slot.life))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::life::{Run, Then};

    /// A worker's life with these generations, serving when `serving`, else starting.
    fn life(serving: bool, sent: u64, acked: u64, resyncing: bool) -> Life<()> {
        let mut life = Life::first(Instant::now());
        let mut run = Run::new((), 1, sent, Instant::now());
        run.acked_generation = acked;
        life.started(run);
        if serving {
            life.confirmed();
            life.set_resyncing(resyncing);
        }
        life
    }

    #[test]
    fn only_serving_workers_get_the_short_limit() {
        assert_eq!(limit(&life(false, 1, 0, false)), None, "starting");
        assert_eq!(limit(&life(true, 3, 3, false)), Some(SILENCE_LIMIT));
        assert_eq!(
            limit(&life(true, 4, 3, false)),
            Some(BUSY_LIMIT),
            "applying"
        );
        assert_eq!(
            limit(&life(true, 4, 0, true)),
            Some(BUSY_LIMIT),
            "resyncing"
        );
        let mut stopping = life(true, 3, 3, false);
        stopping.stop(Then::Hold);
        assert_eq!(limit(&stopping), None, "stopping");
    }

    #[test]
    fn silence_counts_from_the_later_of_the_request_and_the_last_message() {
        let mut life = life(true, 3, 3, false);
        assert_eq!(deadline(&life), None, "nothing asked: nothing owed");
        let start = life.run().map(|run| run.started).expect("a run");
        let asked = start + Duration::from_secs(1);
        if let Some(run) = life.run_mut() {
            run.asked_at = Some(asked);
        }
        assert_eq!(deadline(&life), Some(asked + SILENCE_LIMIT));
        let heard = start + Duration::from_secs(2);
        if let Some(run) = life.run_mut() {
            run.heard_at = heard;
        }
        assert_eq!(
            deadline(&life),
            Some(heard + SILENCE_LIMIT),
            "an answer to something else (a change confirmed) restarts the clock"
        );
        assert_eq!(deadline(&Life::<()>::Held), None, "no process");
    }
}
