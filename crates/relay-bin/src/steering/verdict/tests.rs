//! Every case of the verdict, on reports built by hand.

use super::*;
use fanout_core::steering::{QueueCounts, RxQueue};
use nix::errno::Errno;

fn cpus(list: &str) -> CpuSet {
    CpuSet::parse_list(list).expect("a CPU list")
}

/// An interface with `rps.len()` RX queues whose RPS masks are `rps` (CPU lists), no IRQ.
fn report(rps: &[&str]) -> SteeringReport {
    SteeringReport {
        interface: "eth9".into(),
        queues: QueueCounts {
            rx: rps.len(),
            tx: rps.len(),
        },
        channels: None,
        rx_queues: rps
            .iter()
            .enumerate()
            .map(|(index, mask)| RxQueue {
                index,
                rps_cpus: cpus(mask),
                rps_flow_cnt: 0,
            })
            .collect(),
        rps_sock_flow_entries: None,
        irqs: Vec::new(),
        rss: RssIndirection::NotExposed {
            errno: Errno::EOPNOTSUPP,
        },
    }
}

fn irq(number: u32, description: &str, affinity: &str, effective: Option<&str>) -> Irq {
    Irq {
        number,
        description: description.into(),
        counts: Vec::new(),
        affinity: Some(cpus(affinity)),
        effective_affinity: effective.map(cpus),
    }
}

/// A NIC with one queue per entry of `effective`, each queue's IRQ delivered to that CPU.
fn nic(effective: &[&str]) -> SteeringReport {
    let mut report = report(&vec![""; effective.len()]);
    report.irqs = effective
        .iter()
        .enumerate()
        .map(|(queue, cpu)| {
            irq(
                40 + queue as u32,
                &format!("IR-PCI-MSI eth9-TxRx-{queue}"),
                "0-3",
                Some(cpu),
            )
        })
        .collect();
    report
}

#[test]
fn veth_without_rps_feeds_one_worker_under_fanout_cpu() {
    let v = verdict(&report(&[""]), &[0, 1], FanoutSetting::Cpu);
    assert_eq!(v.level, Level::Bad, "{v:?}");
    assert!(
        v.summary.starts_with("1 RX queue and no RPS"),
        "{}",
        v.summary
    );
    assert!(v.summary.contains("sender's CPU"), "{}", v.summary);
    assert!(v.advice[0].contains("--rps auto"), "{:?}", v.advice);
    assert!(v.advice[0].contains("--fanout hash"), "{:?}", v.advice);
    assert_eq!(v.workers_reached, None);
}

#[test]
fn rps_over_the_workers_cpus_is_good() {
    let v = verdict(&report(&["0-1"]), &[0, 1], FanoutSetting::Cpu);
    assert_eq!(v.level, Level::Good, "{v:?}");
    assert!(v.summary.contains("cpus 0-1 (by RPS)"), "{}", v.summary);
    assert!(v.summary.contains("evenly"), "{}", v.summary);
    assert!(v.advice.is_empty());
    assert!(v.notes.iter().any(|n| n.contains("flow hash")), "{v:?}");
    assert_eq!(v.workers_reached, Some(vec![0, 1]));
}

#[test]
fn rps_on_one_cpu_feeds_one_worker() {
    let v = verdict(&report(&["1"]), &[0, 1], FanoutSetting::Cpu);
    assert_eq!(v.level, Level::Bad, "{v:?}");
    assert!(v.summary.contains("worker on cpu 1"), "{}", v.summary);
    assert!(
        v.summary.ends_with("the other worker gets nothing"),
        "{}",
        v.summary
    );
    assert!(
        v.advice[0].contains("echo 3 > /sys/class/net/eth9"),
        "{:?}",
        v.advice
    );
    assert_eq!(v.workers_reached, Some(vec![1]));
}

#[test]
fn three_rps_cpus_over_two_workers_is_uneven() {
    // cpu 2 % 2 = 0: the worker on cpu 0 gets the packets of cpus 0 and 2.
    let v = verdict(&report(&["0-2"]), &[0, 1], FanoutSetting::Cpu);
    assert_eq!(v.level, Level::Warning, "{v:?}");
    assert!(v.summary.contains("unevenly"), "{}", v.summary);
    assert!(v.summary.contains("cpu 0 gets cpus 0,2"), "{}", v.summary);
    assert!(
        v.notes.iter().any(|n| n.starts_with("cpus 2 process")),
        "{v:?}"
    );
}

#[test]
fn queues_with_irqs_on_every_worker_cpu_are_good() {
    let v = verdict(
        &nic(&["0", "1", "2", "3"]),
        &[0, 1, 2, 3],
        FanoutSetting::Cpu,
    );
    assert_eq!(v.level, Level::Good, "{v:?}");
    assert!(
        v.summary.contains("by the queues' interrupts"),
        "{}",
        v.summary
    );
    assert_eq!(v.workers_reached, Some(vec![0, 1, 2, 3]));
    assert!(v.notes.is_empty(), "{:?}", v.notes);
}

#[test]
fn queues_whose_irqs_all_go_to_one_cpu_feed_one_worker() {
    let v = verdict(
        &nic(&["0", "0", "0", "0"]),
        &[0, 1, 2, 3],
        FanoutSetting::Cpu,
    );
    assert_eq!(v.level, Level::Bad, "{v:?}");
    assert!(
        v.summary.contains("the other 3 workers get nothing"),
        "{}",
        v.summary
    );
    assert!(v.advice[0].contains("smp_affinity_list"), "{:?}", v.advice);
    assert_eq!(v.workers_reached, Some(vec![0]));
}

#[test]
fn irqs_on_two_cpus_leave_two_of_four_workers_idle() {
    let v = verdict(
        &nic(&["0", "1", "0", "1"]),
        &[0, 1, 2, 3],
        FanoutSetting::Cpu,
    );
    assert_eq!(v.level, Level::Warning, "{v:?}");
    assert!(
        v.summary.contains("workers on cpus 2-3 get nothing"),
        "{}",
        v.summary
    );
    assert_eq!(v.workers_reached, Some(vec![0, 1]));
}

#[test]
fn irqs_on_other_cpus_still_reach_every_worker() {
    // Workers on 2 and 3; packets processed on 0 and 1 go to members 0 and 1 = cpus 2 and 3.
    let v = verdict(&nic(&["0", "1"]), &[2, 3], FanoutSetting::Cpu);
    assert_eq!(v.level, Level::Good, "{v:?}");
    assert_eq!(v.workers_reached, Some(vec![2, 3]));
    assert!(v.notes.iter().any(|n| n.contains("run no worker")), "{v:?}");
}

#[test]
fn an_allowed_affinity_without_effective_affinity_is_flagged() {
    let mut report = report(&[""]);
    report.irqs = vec![irq(30, "virtio0-input.0", "0-1", None)];
    let v = verdict(&report, &[0, 1], FanoutSetting::Cpu);
    assert_eq!(v.level, Level::Good, "{v:?}");
    assert!(
        v.notes.iter().any(|n| n.contains("no effective affinity")),
        "{v:?}"
    );
}

#[test]
fn link_and_transmit_interrupts_do_not_count() {
    let mut report = report(&[""]);
    report.irqs = vec![
        irq(30, "virtio0-config", "1", Some("1")),
        irq(31, "virtio0-input.0", "0", Some("0")),
        irq(32, "virtio0-output.0", "1", Some("1")),
    ];
    let v = verdict(&report, &[0, 1], FanoutSetting::Cpu);
    assert_eq!(v.level, Level::Bad, "{v:?}");
    assert_eq!(v.workers_reached, Some(vec![0]));
    assert!(v.advice[0].contains("--rps auto"), "{:?}", v.advice);
}

#[test]
fn virtual_multiqueue_depends_on_the_senders() {
    let v = verdict(&report(&["", ""]), &[0, 1], FanoutSetting::Cpu);
    assert_eq!(v.level, Level::Warning, "{v:?}");
    assert!(v.summary.contains("where the senders run"), "{}", v.summary);
    assert!(v.advice[0].contains("mask 3"), "{:?}", v.advice);
}

#[test]
fn a_queue_without_rps_or_irq_next_to_one_with_rps_is_a_warning() {
    let v = verdict(&report(&["0-1", ""]), &[0, 1], FanoutSetting::Cpu);
    assert_eq!(v.level, Level::Warning, "{v:?}");
    assert!(
        v.notes.iter().any(|n| n.starts_with("queues rx-1")),
        "{v:?}"
    );
}

#[test]
fn hash_lb_and_rnd_spread_whatever_the_queues() {
    for fanout in [FanoutSetting::Hash, FanoutSetting::Lb, FanoutSetting::Rnd] {
        let v = verdict(&report(&[""]), &[0, 1], fanout);
        assert_eq!(v.level, Level::Good, "{fanout:?}: {v:?}");
        assert_eq!(v.workers_reached, Some(vec![0, 1]));
        assert!(
            v.notes
                .iter()
                .any(|n| n.contains("on one CPU before the fanout")),
            "{fanout:?}: {v:?}"
        );
    }
    let spread = verdict(&report(&["0-1"]), &[0, 1], FanoutSetting::Hash);
    assert!(
        !spread.notes.iter().any(|n| n.contains("before the fanout")),
        "{spread:?}"
    );
}

#[test]
fn rollover_warns_of_one_busy_worker() {
    let v = verdict(&report(&["0-1"]), &[0, 1], FanoutSetting::Rollover);
    assert_eq!(v.level, Level::Warning, "{v:?}");
    assert!(v.summary.contains("one busy worker"), "{}", v.summary);
}

#[test]
fn queue_mapping_needs_queues() {
    let one = verdict(&report(&[""]), &[0, 1], FanoutSetting::Qm);
    assert_eq!(one.level, Level::Bad, "{one:?}");
    assert_eq!(one.workers_reached, Some(vec![0]));
    let four = verdict(&nic(&["0", "1", "2", "3"]), &[0, 1], FanoutSetting::Qm);
    assert_eq!(four.level, Level::Good, "{four:?}");
    // RSS sends everything to queues 0 and 1: two of four workers.
    let mut rss = nic(&["0", "1", "2", "3"]);
    rss.rss = RssIndirection::Table(vec![0, 1, 0, 1]);
    let two = verdict(&rss, &[0, 1, 2, 3], FanoutSetting::Qm);
    assert_eq!(two.level, Level::Warning, "{two:?}");
    assert_eq!(two.workers_reached, Some(vec![0, 1]));
}

#[test]
fn one_worker_has_nothing_to_spread() {
    let v = verdict(&report(&[""]), &[3], FanoutSetting::Cpu);
    assert_eq!(v.level, Level::Good, "{v:?}");
    assert!(v.summary.contains("one worker (cpu 3)"), "{}", v.summary);
}
