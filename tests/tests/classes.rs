//! Worker classes: two `[[class]]`es of one CPU each, on the first two online CPUs, and no
//! default workers (`relay.workers` lists just those two CPUs). Each class's workers relay only
//! the rules that name it, and the kernel gives them only their class's frames: the class
//! filters on the input interface keep each (group, port) key in its class's rings, and keys no
//! rule has in none. A rule added at run time to a class moves its key into that class's filter.

use std::net::Ipv4Addr;
use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, Workdir, relay_section};
use fanout_relay_tests::relay::{
    Collector, RelayProcess, UdpReceiver, UdpSender, check_stream, payload, quiet_topology,
};
use fanout_relay_tests::{Topology, privileged, two_online_cpus};
use relay_bin::control::proto::StatsReport;

/// Datagrams per flow.
const N: u32 = 500;

/// A flow: input (group, port), output (group, port), and the class of its rule.
struct Flow {
    tag: u8,
    input: (Ipv4Addr, u16),
    output: (Ipv4Addr, u16),
    class: &'static str,
}

fn flow(tag: u8, class: &'static str) -> Flow {
    Flow {
        tag,
        input: (Ipv4Addr::new(239, 1, 1, tag), 5000 + u16::from(tag)),
        output: (Ipv4Addr::new(239, 2, 2, tag), 6000 + u16::from(tag)),
        class,
    }
}

fn rule(name: &str, flow: &Flow) -> String {
    format!(
        "\n[[rule]]\nname = {name:?}\nclass = {:?}\n\
         input = {{ interface = \"rin0\", destination = \"{}\", port = {} }}\n\
         outputs = [ {{ interface = \"rout0\", destination = \"{}\", port = {} }} ]\n",
        flow.class, flow.input.0, flow.input.1, flow.output.0, flow.output.1
    )
}

fn receive(topo: &Topology, flow: &Flow) -> Collector {
    UdpReceiver::join(
        &topo.receiver,
        &format!("{}:{}", flow.output.0, flow.output.1),
        Topology::RECEIVER_ADDR,
    )
    .collect(N as usize, Duration::from_secs(20))
}

/// Sends datagrams 0..N of each flow, interleaved, about 2,000 per second in all.
fn send(sender: &UdpSender, flows: &[&Flow]) {
    for seq in 0..N {
        for flow in flows {
            sender
                .socket()
                .send_to(&payload(flow.tag, seq), flow.input)
                .unwrap_or_else(|e| panic!("send {seq} to {:?}: {e}", flow.input));
        }
        std::thread::sleep(Duration::from_micros(1500));
    }
}

/// Runs `ctl args` and checks that it was refused with a message containing `why`.
fn refused(ctl: &Ctl, args: &[&str], why: &str) {
    let output = ctl.run(args);
    assert!(
        !output.status.success() && output.stderr.contains(why),
        "`ctl {}` should be refused with {why:?}: {output:?}",
        args.join(" ")
    );
}

/// The counters of the worker on `cpu`.
fn worker(stats: &StatsReport, cpu: u32) -> &relay_bin::counters::WorkerCounters {
    &stats
        .workers
        .iter()
        .find(|w| w.cpu == cpu)
        .unwrap_or_else(|| panic!("no worker on cpu {cpu}: {stats:#?}"))
        .counters
}

#[test]
fn each_class_relays_only_its_rules_and_sees_only_its_frames() {
    let test = "each_class_relays_only_its_rules_and_sees_only_its_frames";
    if privileged(test)
        && let Some(cpus) = two_online_cpus(test)
    {
        classes_keep_apart("clsx", cpus, "");
    }
}

#[test]
fn classes_keep_apart_under_steer_and_shard_placement() {
    let test = "classes_keep_apart_under_steer_and_shard_placement";
    if privileged(test)
        && let Some(cpus) = two_online_cpus(test)
    {
        classes_keep_apart("clsh", cpus, "fanout = \"steer\"\nplacement = \"shard\"\n");
    }
}

/// Two classes of one CPU each, video on `cpus[0]` and bulk on `cpus[1]`, with `extra` lines in
/// `[relay]`: each relays its own rules and receives only its own frames, refusals name what is
/// wrong, and a rule added at run time to a class reaches only that class's worker.
fn classes_keep_apart(tag: &str, [video_cpu, bulk_cpu]: [u32; 2], extra: &str) {
    let video = flow(1, "video");
    let bulk = flow(2, "bulk");
    // No rule has this key: neither class's rings may take its frames.
    let stray = flow(3, "none");
    let late = flow(4, "video");
    let topo = quiet_topology(tag);
    let dir = Workdir::new(tag);
    // relay.workers names only the classes' CPUs, so no CPU is left for default workers
    // however many are online.
    let config = relay_section(
        &dir,
        &format!("workers = \"{video_cpu},{bulk_cpu}\"\n{extra}"),
    ) + &format!("\n[[class]]\nname = \"video\"\ncpus = \"{video_cpu}\"\n")
        + &format!("\n[[class]]\nname = \"bulk\"\ncpus = {bulk_cpu}\n")
        + &rule("v", &video)
        + &rule("b", &bulk);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let workers = ctl.workers();
    let classes: Vec<(u32, Option<String>)> =
        workers.iter().map(|w| (w.cpu, w.class.clone())).collect();
    assert_eq!(
        classes,
        vec![
            (video_cpu, Some("video".into())),
            (bulk_cpu, Some("bulk".into()))
        ],
        "{workers:#?}"
    );

    // A rule must name a class here (no CPU is left for default workers), and one that exists.
    let (input, output) = ("rin0:239.1.1.9:5009", "rout0:239.2.2.9:6009");
    refused(&ctl, &["add", "plain", input, output], "names no class");
    let odd = ["add", "--class", "audio", "odd", input, output];
    refused(&ctl, &odd, "no class named \"audio\"");
    // A key belongs to one class: another source on the video rule's key cannot go to bulk.
    let shared = format!("rin0:{}:{}@192.0.2.99", video.input.0, video.input.1);
    let shared = ["add", "--class", "bulk", "shared", &shared, output];
    refused(&ctl, &shared, "a key belongs to one class");
    // A class cannot take another class's CPU.
    let both = format!("{video_cpu},{bulk_cpu}");
    let taken = ["workers", "set", "--class", "video", &both];
    refused(
        &ctl,
        &taken,
        &format!("CPU {bulk_cpu} runs a worker of class bulk"),
    );

    let receivers = [receive(&topo, &video), receive(&topo, &bulk)];
    let sender = UdpSender::new(&topo.sender, Topology::SENDER_ADDR, 4);
    send(&sender, &[&video, &bulk, &stray]);
    for (flow, receiver) in [&video, &bulk].into_iter().zip(receivers) {
        if let Err(problem) = check_stream(&receiver.finish(), flow.tag, 0..N) {
            panic!("class {} flow: {problem}\n{}", flow.class, relay.log());
        }
    }
    let n = u64::from(N);
    let stats = ctl.wait_stats("both flows counted", Duration::from_secs(5), |stats| {
        stats
            .workers
            .iter()
            .map(|w| w.counters.forwarded)
            .sum::<u64>()
            >= 2 * n
    });
    // Each worker received exactly its class's frames: not the other class's, not the stray
    // key's (the kernel filtered them out of its rings), and so matched every one it got.
    for (cpu, rule, other) in [(video_cpu, "v", "b"), (bulk_cpu, "b", "v")] {
        let counters = worker(&stats, cpu);
        assert_eq!(counters.received, n, "cpu {cpu}: {counters:#?}");
        assert_eq!(counters.forwarded, n, "cpu {cpu}: {counters:#?}");
        assert_eq!(counters.no_rule, 0, "cpu {cpu}: {counters:#?}");
        assert_eq!(counters.rules.get(rule).map(|r| r.packets), Some(n));
        assert!(counters.rules.get(other).is_none_or(|r| r.packets == 0));
    }

    // Added at run time: the key joins the video class's filter, and the video CPU relays it.
    let added = ctl.run(&[
        "add",
        "--class",
        "video",
        "late",
        &format!("rin0:{}:{}", late.input.0, late.input.1),
        &format!("rout0:{}:{}", late.output.0, late.output.1),
    ]);
    assert!(added.status.success(), "{added:?}");
    ctl.wait_settled(Duration::from_secs(5));
    let receiver = receive(&topo, &late);
    send(&sender, &[&late]);
    if let Err(problem) = check_stream(&receiver.finish(), late.tag, 0..N) {
        panic!("the rule added at run time: {problem}\n{}", relay.log());
    }
    let stats = ctl.wait_stats("the late flow counted", Duration::from_secs(5), |stats| {
        worker(stats, video_cpu).forwarded >= 2 * n
    });
    let (video_worker, bulk_worker) = (worker(&stats, video_cpu), worker(&stats, bulk_cpu));
    assert_eq!(video_worker.received, 2 * n, "{stats:#?}");
    assert_eq!(bulk_worker.received, n, "{stats:#?}");
    assert_eq!(video_worker.no_rule + bulk_worker.no_rule, 0);
    relay.stop();
}
