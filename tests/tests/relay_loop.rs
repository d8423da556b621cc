//! Frames the relay sends on an interface that is also one of its inputs are not received (and
//! so never relayed) again: the receive rings ignore outgoing frames, through the kernel's
//! `IGNORE_OUTGOING` or, where it lacks it, their socket filter. The second test forces every
//! probed kernel feature off (`FANOUT_RELAY_FORCE_NO_FEATURES=all`, a test switch) to check
//! that the relay still starts and relays a stream on the fallbacks alone, as on a kernel
//! older than any this suite can boot.

use std::time::Duration;

use fanout_core::Feature;
use fanout_relay_tests::relay::{
    Capture, RelayProcess, UdpReceiver, UdpSender, check_stream, quiet_topology, worker_logged,
};
use fanout_relay_tests::{Topology, privileged};

/// Rule `back` sends every datagram out of its own input interface (to a group and port no rule
/// takes, which validation allows) and to the receiver.
const CONFIG: &str = r#"
[[rule]]
name = "back"
input = { interface = "rin0", destination = "239.1.1.1", port = 5000 }
outputs = [
    { interface = "rin0", destination = "239.4.4.4", port = 7000, ttl = 3 },
    { interface = "rout0", destination = "239.2.2.2", port = 6000, ttl = 3 },
]
"#;

const N: u32 = 500;
/// Fast enough that datagrams share a batch, so with `tx_gso` some leave rin0 as segmented
/// frames, which the capture (seeing them before any split) must split itself.
const PPS: u32 = 5_000;

#[test]
fn output_on_an_input_interface_is_not_received_again() {
    if !privileged("output_on_an_input_interface_is_not_received_again") {
        return;
    }
    relay_on_its_own_input("loop", &[]);
}

#[test]
fn every_kernel_feature_forced_off_still_relays_and_ignores_its_own_output() {
    if !privileged("every_kernel_feature_forced_off_still_relays_and_ignores_its_own_output") {
        return;
    }
    let log = relay_on_its_own_input("loopoff", &[("FANOUT_RELAY_FORCE_NO_FEATURES", "all")]);
    for feature in Feature::ALL {
        // The supervisor and its worker act on it: neither probed, both were told.
        assert!(
            log.contains(&format!("kernel feature {feature}: forced off")),
            "{feature} was not forced off:\n{log}"
        );
    }
    for used in [
        "tx_gso",
        "tx_linear",
        "fanout_ignore_outgoing",
        "unique_id",
        "rollover",
    ] {
        assert!(
            log.contains(&format!("kernel feature {used} (forced off): ")),
            "the relay did not say what it does without {used}:\n{log}"
        );
    }
    assert_eq!(
        worker_logged(&log, "segmented"),
        Some(0),
        "segmented frames with segmentation forced off:\n{log}"
    );
}

/// Relays [`N`] datagrams through [`CONFIG`] with `env` added to the relay's environment and
/// checks both outputs and that the relay received only the sender's frames; returns its log.
fn relay_on_its_own_input(name: &str, env: &[(&str, &str)]) -> String {
    let topo = quiet_topology(name);
    let relay = RelayProcess::start_with_env(&topo.relay, CONFIG, &[], env);
    // The frames the relay sends back out of rin0 arrive at the sender's end of the link.
    let echoed = Capture::open(&topo.sender, Topology::SENDER_IF, "239.4.4.4:7000")
        .collect(N as usize, Duration::from_secs(30));
    let receiver = UdpReceiver::join(&topo.receiver, "239.2.2.2:6000", Topology::RECEIVER_ADDR)
        .collect(N as usize, Duration::from_secs(30));
    UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4).send_numbered(
        "239.1.1.1:5000",
        1,
        0..N,
        PPS,
    );
    let (echoed, received) = (echoed.finish(), receiver.finish());
    let exit = relay.stop();

    // The relay did send on its input interface (else the counters below prove nothing).
    if let Err(problem) = check_stream(&echoed, 1, 0..N) {
        // Where they were lost: the link's drop counters at both ends, and the kernel's
        // per-CPU backlog drops (second column), which a veth's receive side counts in.
        panic!(
            "frames sent back out of rin0: {problem}\n{}\n{}\n/proc/net/softnet_stat:\n{}\nrelay log:\n{}",
            topo.sender.ip(&["-s", "link", "show", Topology::SENDER_IF]),
            topo.relay.ip(&["-s", "link", "show", "rin0"]),
            std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default(),
            exit.log
        );
    }
    if let Err(problem) = check_stream(&received, 1, 0..N) {
        panic!(
            "frames sent out of rout0: {problem}\nrelay log:\n{}",
            exit.log
        );
    }
    let summary = &exit.summary;
    let total = summary.total();
    assert_eq!(
        (total.received, total.no_rule, total.malformed),
        (u64::from(N), 0, 0),
        "(received, no_rule, malformed): the relay must receive only the sender's {N} frames, \
         not its own {N} on rin0; {summary:#?}"
    );
    assert_eq!(
        (summary.rule_packets("back"), total.forwarded),
        (u64::from(N), 2 * u64::from(N)),
        "{summary:#?}"
    );
    exit.log
}
