//! Workers boxed in: under a root relay each worker runs as `nobody` with no capability, no new
//! privileges and a seccomp filter, and still relays what rules added at run time ask for
//! (their transmit rings and sockets come from the supervisor); a worker that makes a system
//! call outside its filter is killed by the kernel, counted, and replaced.

use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section, rule};
use fanout_relay_tests::relay::{
    RelayProcess, Stream, UdpReceiver, UdpSender, check_stream, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged, skip};

/// The uid and gid of `nobody`, which workers of a root relay become.
const NOBODY: &str = "65534";

/// The value of `field` in `/proc/<pid>/status`.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

#[test]
fn workers_run_as_nobody_without_capabilities_under_seccomp() {
    if !privileged("workers_run_as_nobody_without_capabilities_under_seccomp") {
        return;
    }
    let topo = quiet_topology("sbxbox");
    let dir = Workdir::new("sandbox");
    let config = relay_section(&dir, "workers = \"0-1\"")
        + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    ctl.wait_settled(Duration::from_secs(10));
    let workers = relay.worker_pids();
    assert!(!workers.is_empty(), "no workers; log:\n{}", relay.log());
    for pid in workers.values() {
        let pid = *pid;
        for field in ["Uid", "Gid"] {
            let ids = status_field(pid, field);
            assert!(
                ids.split_whitespace().all(|id| id == NOBODY),
                "worker {pid}: {field} {ids}"
            );
        }
        assert_eq!(status_field(pid, "Groups"), NOBODY, "worker {pid}'s groups");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                status_field(pid, set),
                "0000000000000000",
                "worker {pid}: {set}"
            );
        }
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "worker {pid}");
        assert_eq!(
            status_field(pid, "Seccomp"),
            "2",
            "worker {pid}: filter mode"
        );
    }
    // The supervisor keeps what it needs: it still runs as root.
    assert_eq!(
        status_field(relay.pid(), "Uid").split_whitespace().next(),
        Some("0")
    );

    // A rule added now needs a socket (a unicast output), which a boxed-in worker cannot
    // open: the supervisor hands it over, and every datagram arrives.
    let receiver = UdpReceiver::bind(&topo.receiver, &format!("{}:7000", Topology::RECEIVER_ADDR))
        .collect(200, Duration::from_secs(20));
    ctl.ok(&[
        "add",
        "unicast",
        "rin0:239.1.1.3:5003",
        &format!("rout0:{}:7000", Topology::RECEIVER_ADDR),
    ]);
    ctl.wait_settled(Duration::from_secs(10));
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 8);
    sender.send_numbered("239.1.1.3:5003", 3, 0..200, 1000);
    if let Err(problem) = check_stream(&receiver.finish(), 3, 0..200) {
        panic!(
            "the rule added at run time: {problem}; log:\n{}",
            relay.log()
        );
    }
    assert_eq!(
        relay.worker_pids(),
        workers,
        "no worker may have died for the new output"
    );
    let exit = relay.stop();
    assert_eq!(exit.summary.rule_packets("unicast"), 200);
}

#[test]
fn a_forbidden_system_call_kills_the_worker_which_is_counted_and_replaced() {
    let test = "a_forbidden_system_call_kills_the_worker_which_is_counted_and_replaced";
    if !privileged(test) {
        return;
    }
    let topo = quiet_topology("sbxkil");
    let dir = Workdir::new("sandbox-kill");
    let config = relay_section(&dir, "") + &rule("cam", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    ctl.wait_settled(Duration::from_secs(10));
    let workers = ctl.workers();
    let victim = workers[0].cpu;
    let old_pid = workers[0].pid.expect("a ready worker has a pid");
    if ctl.debug("debug_forbidden_syscall", victim).is_none() {
        skip(
            test,
            "the relay binary was built without `--features drift-test`",
        );
        return;
    }
    let workers = ctl.wait_workers(
        "the worker killed by its filter to be back and ready",
        Duration::from_secs(20),
        |workers| {
            workers.iter().any(|w| {
                w.cpu == victim
                    && w.pid.is_some_and(|pid| pid != old_pid)
                    && w.state == "ready"
                    && w.restart_reasons.get("forbidden_syscall") == Some(&1)
            })
        },
    );
    let replaced = workers
        .iter()
        .find(|w| w.cpu == victim)
        .expect("the victim's slot");
    assert_eq!(replaced.restarts, 1, "{workers:#?}");
    assert!(
        relay.log().contains("killed by the kernel (SIGSYS)"),
        "the log does not say why; log:\n{}",
        relay.log()
    );
    assert!(
        !relay.log().contains("the forbidden system call returned"),
        "the call returned: the filter did not stop it"
    );
    // The replacement is boxed in too, and relays.
    let pid = replaced.pid.expect("a ready worker has a pid");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    let stream = Stream::start(&topo, 4, 1000);
    let from = stream.next_seq();
    assert!(
        stream
            .wait_from(from, std::time::Instant::now(), Duration::from_secs(5))
            .is_some(),
        "nothing relayed after the replacement; log:\n{}",
        relay.log()
    );
    drop(stream);
    relay.stop();
}
