//! Telling the service manager (systemd, `Type=notify`) how the relay is doing, through
//! `$NOTIFY_SOCKET`: ready once every worker serves its table, reloading around a SIGHUP reload,
//! stopping at the end, and a keep-alive from the loop every half watchdog interval
//! (`WatchdogSec=`), so that a supervisor stuck anywhere in its loop is restarted by the
//! manager. Without `$NOTIFY_SOCKET` (not run by systemd) nothing is sent.

use sd_notify::NotifyState;
use std::time::{Duration, Instant};

/// What the service manager has been told, and when the next keep-alive is due.
#[derive(Debug)]
pub(crate) struct Service {
    /// Half the watchdog interval the manager set, if it set one.
    ping_every: Option<Duration>,
    next_ping: Option<Instant>,
    ready: bool,
}

impl Service {
    /// The manager's settings, from the environment it started the relay with.
    pub(crate) fn from_env() -> Self {
        let ping_every = sd_notify::watchdog_enabled().map(|interval| interval / 2);
        if let Some(every) = ping_every {
            log::info!(
                "service watchdog: a keep-alive every {} ms",
                every.as_millis()
            );
        }
        Service {
            ping_every,
            next_ping: ping_every.map(|every| Instant::now() + every),
            ready: false,
        }
    }

    /// Whether the manager was told the relay is ready.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// Tells the manager the relay serves (every worker confirmed its table), with `status`.
    pub(crate) fn ready(&mut self, status: &str) {
        self.ready = true;
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Tells the manager a reload begins.
    pub(crate) fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        // systemd 253 and later want the time of the reload with it.
        match NotifyState::monotonic_usec_now() {
            Ok(now) => states.push(now),
            Err(error) => log::warn!("service: cannot read the monotonic clock: {error}"),
        }
        send(&states);
    }

    /// Tells the manager the reload is done and the relay serves, with `status`.
    pub(crate) fn reloaded(&self, status: &str) {
        if self.ready {
            send(&[NotifyState::Ready, NotifyState::Status(status)]);
        }
    }

    /// Tells the manager the relay stops.
    pub(crate) fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }

    /// Sends the keep-alive if it is due at `now`.
    pub(crate) fn tick(&mut self, now: Instant) {
        if let (Some(every), Some(at)) = (self.ping_every, self.next_ping)
            && now >= at
        {
            send(&[NotifyState::Watchdog]);
            self.next_ping = Some(now + every);
        }
    }

    /// When the next keep-alive is due, if there is a watchdog.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.next_ping
    }
}

/// Sends `states`; a failure is logged, never fatal: the relay serves without a manager too.
fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        log::warn!("service: cannot notify the service manager: {error}");
    }
}
