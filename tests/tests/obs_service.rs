//! The relay under a service manager (systemd's `Type=notify` protocol over `$NOTIFY_SOCKET`):
//! `READY=1` once every worker serves its table, a keep-alive every half `$WATCHDOG_USEC`,
//! `RELOADING=1` with the time and `READY=1` again around a SIGHUP reload, `STOPPING=1` at the
//! end; the workers do not inherit the manager's socket.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule, signal};
use fanout_relay_tests::privileged;
use fanout_relay_tests::relay::{RelayProcess, quiet_topology};
use nix::sys::signal::Signal;

/// The watchdog interval the test sets: keep-alives are due every 200 ms.
const WATCHDOG_USEC: &str = "400000";

/// Every message the relay sent, with when it arrived.
type Heard = Arc<Mutex<Vec<(Instant, String)>>>;

/// Receives the relay's notifications on `socket` until `stop` says so.
fn listen(socket: UnixDatagram, heard: Heard, stop: Arc<Mutex<bool>>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("SO_RCVTIMEO");
    let mut buf = [0u8; 4096];
    while !*stop.lock().unwrap_or_else(PoisonError::into_inner) {
        if let Ok(len) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            heard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((Instant::now(), text));
        }
    }
}

/// Waits up to `timeout` for a message after `since` that has the line `line`; returns it.
fn wait_for(heard: &Heard, since: Instant, line: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let found = heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(at, text)| *at >= since && text.lines().any(|l| l == line))
            .map(|(_, text)| text.clone());
        if let Some(text) = found {
            return text;
        }
        let all = heard.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert!(
            Instant::now() < deadline,
            "no {line} within {timeout:?}; heard: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_service_manager_hears_ready_keepalives_reloads_and_the_stop() {
    if !privileged("the_service_manager_hears_ready_keepalives_reloads_and_the_stop") {
        return;
    }
    let topo = quiet_topology("svc");
    let dir = Workdir::new("svc");
    let sockets = tempfile::tempdir().expect("a temporary directory");
    let path = sockets.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let heard: Heard = Arc::default();
    let stop = Arc::new(Mutex::new(false));
    let listener = {
        let (heard, stop) = (Arc::clone(&heard), Arc::clone(&stop));
        std::thread::spawn(move || listen(socket, heard, stop))
    };
    let config = relay_section(&dir, "") + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let started = Instant::now();
    let path_text = path.to_string_lossy().into_owned();
    let relay = RelayProcess::start_with_env(
        &topo.relay,
        &config,
        &[],
        &[
            ("NOTIFY_SOCKET", path_text.as_str()),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ],
    );
    let ctl = Ctl::new(&dir);

    let ready = wait_for(&heard, started, "READY=1", Duration::from_secs(10));
    assert!(
        ready.contains("STATUS=relaying 1 rule(s)"),
        "READY=1 without the status: {ready:?}"
    );
    assert!(
        ctl.workers().iter().all(|w| w.state == "ready"),
        "READY=1 before every worker served: {:#?}",
        ctl.workers()
    );
    for (cpu, pid) in relay.worker_pids() {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the worker's environ");
        assert!(
            !String::from_utf8_lossy(&environ).contains("NOTIFY_SOCKET"),
            "the worker on cpu {cpu} inherited NOTIFY_SOCKET"
        );
    }

    // Keep-alives every 200 ms: at least 4 in 1.2 s, however the loop is woken meanwhile.
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(1200));
    let pings = heard
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(at, text)| *at >= from && text.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    assert!(pings >= 4, "{pings} keep-alives in 1.2 s");

    let reload = Instant::now();
    signal(relay.pid(), Signal::SIGHUP);
    let reloading = wait_for(&heard, reload, "RELOADING=1", Duration::from_secs(5));
    assert!(
        reloading.contains("MONOTONIC_USEC="),
        "RELOADING=1 without the time: {reloading:?}"
    );
    wait_for(&heard, reload, "READY=1", Duration::from_secs(5));

    let stopping = Instant::now();
    relay.stop();
    wait_for(&heard, stopping, "STOPPING=1", Duration::from_secs(5));
    *stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
    listener.join().expect("the listener does not panic");
}
