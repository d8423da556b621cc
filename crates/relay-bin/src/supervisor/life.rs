//! A worker slot's life, one state at a time: waiting to start, starting, serving, stopping,
//! held by a resize, retired, stopped with the relay.
//!
//! The states and their transitions are kept apart from the process a state holds (`P`: the
//! child and its control socket in the supervisor, a plain value in the tests), so every
//! transition is decided here and tested without a process; `workers` does what they call for
//! (sends the stop, kills, reaps).

use super::restarts::RestartReason;
use crate::counters::WorkerCounters;
use std::time::{Duration, Instant};

/// How long after a failed start the next attempt is made.
pub(crate) const RETRY_START: Duration = Duration::from_secs(1);

/// One run of a worker process: from its start to its exit.
#[derive(Debug)]
pub(crate) struct Run<P> {
    /// The process.
    pub(crate) process: P,
    /// Its process id, which its messages carry.
    pub(crate) pid: u32,
    /// When it was started.
    pub(crate) started: Instant,
    /// Its latest counters.
    pub(crate) counters: WorkerCounters,
    /// When the counters request it has not answered yet was sent (at most one is in flight).
    pub(crate) asked_at: Option<Instant>,
    /// When it last sent anything: a worker that answers something else is not silent.
    pub(crate) heard_at: Instant,
    /// The latest generation sent to it (start, update or table). A report of an older one
    /// while this is on its way is expected, not a reason for a resync.
    pub(crate) sent_generation: u64,
    /// The generation it last confirmed (0: none yet).
    pub(crate) acked_generation: u64,
}

impl<P> Run<P> {
    /// A run of `process` (`pid`) started at `now` with the table of `generation`.
    pub(crate) fn new(process: P, pid: u32, generation: u64, now: Instant) -> Self {
        Run {
            process,
            pid,
            started: now,
            counters: WorkerCounters::default(),
            asked_at: None,
            heard_at: now,
            sent_generation: generation,
            acked_generation: 0,
        }
    }
}

/// Where a slot is in its life.
#[derive(Debug)]
pub(crate) enum Life<P> {
    /// No process; the next one starts at `at`. `reason` is why, for the restart count (none:
    /// the slot's first start, which is not a restart).
    Waiting {
        /// When the start is due.
        at: Instant,
        /// Why the process is started again.
        reason: Option<RestartReason>,
    },
    /// Started; its table is not confirmed yet, so it reads no frame.
    Starting(Run<P>),
    /// Serving its table. `resyncing`: a whole table is on its way to it.
    Serving {
        /// The process.
        run: Run<P>,
        /// Whether a resync is on its way.
        resyncing: bool,
    },
    /// Asked to stop, or killed; `then` is what follows once it is gone.
    Stopping {
        /// The process.
        run: Run<P>,
        /// What follows.
        then: Then,
    },
    /// Stopped by a resize and not started again until its rings have moved.
    Held,
    /// Out of the worker set (a resize took it out); kept for its counters and its index.
    Retired,
    /// The relay is stopping: never started again.
    Stopped,
}

/// What follows a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Started again after the backoff, counted for the reason (it was killed).
    Restart(RestartReason),
    /// Held until a resize has moved its rings.
    Hold,
    /// Not started again: the relay stops.
    End,
}

/// A process that went away, as its slot saw it.
#[derive(Debug)]
pub(crate) struct Exit<P> {
    /// The run that ended.
    pub(crate) run: Run<P>,
    /// Whether nobody asked for it: an outage.
    pub(crate) unexpected: bool,
}

impl<P> Life<P> {
    /// A slot's life before its first start: due at `now`.
    pub(crate) fn first(now: Instant) -> Self {
        Life::Waiting {
            at: now,
            reason: None,
        }
    }

    /// The live process's run, if there is one.
    pub(crate) fn run(&self) -> Option<&Run<P>> {
        match self {
            Life::Starting(run) | Life::Serving { run, .. } | Life::Stopping { run, .. } => {
                Some(run)
            }
            _ => None,
        }
    }

    /// The live process's run, to update.
    pub(crate) fn run_mut(&mut self) -> Option<&mut Run<P>> {
        match self {
            Life::Starting(run) | Life::Serving { run, .. } | Life::Stopping { run, .. } => {
                Some(run)
            }
            _ => None,
        }
    }

    /// The state as `ctl workers` and the metrics name it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Life::Waiting { .. } => "restarting",
            Life::Starting(_) => "starting",
            Life::Serving {
                resyncing: true, ..
            } => "resyncing",
            Life::Serving { .. } => "ready",
            Life::Stopping { .. } => "stopping",
            Life::Held => "resizing",
            Life::Retired => "retired",
            Life::Stopped => "stopped",
        }
    }

    /// Whether its process has confirmed a table and serves (a resync may be on its way).
    pub(crate) fn is_serving(&self) -> bool {
        matches!(self, Life::Serving { .. })
    }

    /// Whether it serves the current table: serving, and no resync on its way.
    pub(crate) fn is_ready(&self) -> bool {
        matches!(
            self,
            Life::Serving {
                resyncing: false,
                ..
            }
        )
    }

    /// Whether the slot is in the worker set (not retired by a resize).
    pub(crate) fn in_worker_set(&self) -> bool {
        !matches!(self, Life::Retired)
    }

    /// When its next start is due, if it waits for one.
    pub(crate) fn start_due(&self) -> Option<Instant> {
        match self {
            Life::Waiting { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// Whether its process reads no frame until the start message arrives: it may be started.
    pub(crate) fn may_start(&self) -> bool {
        matches!(self, Life::Waiting { .. } | Life::Held)
    }

    /// Why the start about to happen is a restart (none: the first start, or one after a
    /// resize, which are not restarts).
    pub(crate) fn restart_reason(&self) -> Option<RestartReason> {
        match self {
            Life::Waiting { reason, .. } => *reason,
            _ => None,
        }
    }

    /// The process that went away nobody asking was killed for `reason` after all (the exit
    /// status said so): its restart is counted for it.
    pub(crate) fn blame(&mut self, reason: RestartReason) {
        if let Life::Waiting {
            reason: Some(blamed @ RestartReason::Exited),
            ..
        } = self
        {
            *blamed = reason;
        }
    }

    /// Its process was started: it builds its table and confirms it.
    pub(crate) fn started(&mut self, run: Run<P>) {
        *self = Life::Starting(run);
    }

    /// The process could not be started: it is tried again after [`RETRY_START`].
    pub(crate) fn start_failed(&mut self, now: Instant) {
        *self = Life::Waiting {
            at: now + RETRY_START,
            reason: Some(RestartReason::StartFailed),
        };
    }

    /// Its process confirmed a table: a starting one serves now.
    pub(crate) fn confirmed(&mut self) {
        if matches!(self, Life::Starting(_))
            && let Life::Starting(run) = std::mem::replace(self, Life::Stopped)
        {
            *self = Life::Serving {
                run,
                resyncing: false,
            };
        }
    }

    /// Notes whether a whole table is on its way to a serving process.
    pub(crate) fn set_resyncing(&mut self, on: bool) {
        if let Life::Serving { resyncing, .. } = self {
            *resyncing = on;
        }
    }

    /// Asks the slot to stop, for `then`; says whether a live process must be told to stop.
    /// A stopping process keeps going away, now for `then` (a killed one keeps its restart
    /// after the backoff unless it is to be held or the relay ends). Without a process, `Hold`
    /// and `End` take effect at once and a restart is already on its way.
    pub(crate) fn stop(&mut self, then: Then) -> bool {
        match self {
            Life::Starting(_) | Life::Serving { .. } => {
                self.stopping(then);
                true
            }
            Life::Stopping { then: current, .. } => {
                // A hold or the end wins over any restart; a killed process is restarted after
                // its backoff, not at once.
                if matches!(then, Then::Hold | Then::End) || !matches!(current, Then::Restart(_)) {
                    *current = then;
                }
                false
            }
            Life::Waiting { .. } | Life::Held | Life::Retired | Life::Stopped => {
                match then {
                    Then::Hold => *self = Life::Held,
                    Then::End => *self = Life::Stopped,
                    Then::Restart(_) => {}
                }
                false
            }
        }
    }

    /// The process is killed for `reason`: once it is gone it is restarted after the backoff,
    /// counted for `reason` (a stopping one keeps what follows its stop). Says whether there
    /// is a process to kill.
    pub(crate) fn killed(&mut self, reason: RestartReason) -> bool {
        match self {
            Life::Starting(_) | Life::Serving { .. } => {
                self.stopping(Then::Restart(reason));
                true
            }
            Life::Stopping { .. } => true,
            _ => false,
        }
    }

    fn stopping(&mut self, then: Then) {
        if let Life::Starting(run) | Life::Serving { run, .. } =
            std::mem::replace(self, Life::Stopped)
        {
            *self = Life::Stopping { run, then };
        }
    }

    /// The process went away at `now`: the slot waits `backoff` to start again, or at once, or
    /// is held, as the stop asked; an exit nobody asked for is an outage, restarted after the
    /// backoff and counted as `exited`. `None` when there was no process.
    pub(crate) fn exited(&mut self, now: Instant, backoff: Duration) -> Option<Exit<P>> {
        let (run, next, unexpected) = match std::mem::replace(self, Life::Stopped) {
            Life::Starting(run) | Life::Serving { run, .. } => {
                let next = Life::Waiting {
                    at: now + backoff,
                    reason: Some(RestartReason::Exited),
                };
                (run, next, true)
            }
            Life::Stopping { run, then } => {
                let next = match then {
                    Then::Restart(reason) => Life::Waiting {
                        at: now + backoff,
                        reason: Some(reason),
                    },
                    Then::Hold => Life::Held,
                    Then::End => Life::Stopped,
                };
                (run, next, false)
            }
            other => {
                *self = other;
                return None;
            }
        };
        *self = next;
        Some(Exit { run, unexpected })
    }

    /// Takes the slot out of the worker set (a resize moved its rings away).
    pub(crate) fn retire(&mut self) {
        if self.run().is_none() {
            *self = Life::Retired;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Duration = Duration::from_millis(200);

    /// A slot whose process (a number standing in for it) serves at generation 3.
    fn serving(now: Instant) -> Life<u32> {
        let mut life = Life::first(now);
        assert!(life.may_start());
        assert_eq!(
            life.restart_reason(),
            None,
            "the first start is not a restart"
        );
        life.started(Run::new(7, 70, 3, now));
        assert_eq!(life.name(), "starting");
        assert!(!life.is_serving());
        life.confirmed();
        assert!(life.is_ready());
        life
    }

    #[test]
    fn an_exit_nobody_asked_for_is_an_outage_restarted_after_the_backoff() {
        let now = Instant::now();
        let mut life = serving(now);
        let exit = life.exited(now, BACKOFF).expect("a process");
        assert!(exit.unexpected);
        assert_eq!(exit.run.pid, 70);
        assert_eq!(life.start_due(), Some(now + BACKOFF));
        assert_eq!(life.restart_reason(), Some(RestartReason::Exited));
        assert!(life.exited(now, BACKOFF).is_none(), "no process left");
    }

    #[test]
    fn a_killed_worker_is_restarted_after_the_backoff_for_the_kill_reason() {
        let now = Instant::now();
        let mut life = serving(now);
        assert!(life.killed(RestartReason::Unresponsive));
        assert!(
            !life.stop(Then::Restart(RestartReason::Exited)),
            "told once"
        );
        let exit = life.exited(now, BACKOFF).expect("a process");
        assert!(!exit.unexpected, "the kill was asked for");
        assert_eq!(life.start_due(), Some(now + BACKOFF));
        assert_eq!(life.restart_reason(), Some(RestartReason::Unresponsive));
        // A resize holds a killed one: it must not start with rings that are about to move.
        let mut held = serving(now);
        held.killed(RestartReason::Unresponsive);
        held.stop(Then::Hold);
        held.exited(now, BACKOFF).expect("a process");
        assert_eq!(held.name(), "resizing");
    }

    #[test]
    fn a_resize_holds_the_slot_until_its_rings_move() {
        let now = Instant::now();
        // A serving worker is stopped and then held.
        let mut life = serving(now);
        assert!(life.stop(Then::Hold));
        life.exited(now, BACKOFF).expect("a process");
        assert_eq!(life.name(), "resizing");
        assert_eq!(life.start_due(), None, "not restarted by the loop");
        assert!(life.may_start());
        assert_eq!(
            life.restart_reason(),
            None,
            "a resize's start is not a restart"
        );
        // A slot waiting out a backoff is held at once, with nothing to tell.
        let mut waiting: Life<u32> = Life::Waiting {
            at: now,
            reason: Some(RestartReason::Exited),
        };
        assert!(!waiting.stop(Then::Hold));
        assert_eq!(waiting.name(), "resizing");
        // A kill in progress becomes a hold.
        let mut killing = serving(now);
        killing.killed(RestartReason::Unresponsive);
        killing.stop(Then::Hold);
        killing.exited(now, BACKOFF).expect("a process");
        assert_eq!(killing.name(), "resizing");
        // A retired slot that joins again is held first, then started.
        let mut retired: Life<u32> = Life::Retired;
        assert!(!retired.in_worker_set());
        retired.stop(Then::Hold);
        assert!(retired.in_worker_set() && retired.may_start());
    }

    #[test]
    fn a_failed_start_is_retried_and_counted_for_it() {
        let now = Instant::now();
        let mut life: Life<u32> = Life::first(now);
        life.start_failed(now);
        assert_eq!(life.start_due(), Some(now + RETRY_START));
        assert_eq!(life.restart_reason(), Some(RestartReason::StartFailed));
    }

    #[test]
    fn the_end_stops_every_state_for_good() {
        let now = Instant::now();
        let mut life = serving(now);
        assert!(life.stop(Then::End));
        life.exited(now, BACKOFF).expect("a process");
        assert_eq!(life.name(), "stopped");
        assert!(!life.may_start());
        let mut waiting: Life<u32> = Life::first(now);
        waiting.stop(Then::End);
        assert_eq!(waiting.start_due(), None);
    }

    #[test]
    fn a_resync_is_named_and_ends() {
        let now = Instant::now();
        let mut life = serving(now);
        life.set_resyncing(true);
        assert_eq!(life.name(), "resyncing");
        assert!(life.is_serving() && !life.is_ready());
        life.set_resyncing(false);
        assert!(life.is_ready());
        // A starting worker is not resyncing: it is sent its whole table anyway.
        let mut starting: Life<u32> = Life::first(now);
        starting.started(Run::new(1, 2, 1, now));
        starting.set_resyncing(true);
        assert_eq!(starting.name(), "starting");
    }
}
