//! Where the supervisor's own threads run: off the workers' CPUs when there is a CPU without a
//! worker.
//!
//! The supervisor does the control plane's work: validating changes, joining groups, writing
//! the state file, serialising tables for workers. Left to the scheduler it shares the CPUs of
//! the workers, and every millisecond it runs on a worker's CPU is a millisecond that worker's
//! ring fills without being served. With a CPU that has no worker, all the supervisor's threads
//! move there (threads started later inherit it; worker processes pin themselves to their own
//! CPU when they start). With a worker on every CPU it stays where it is: lowering its priority
//! instead would pass to the workers it starts, which inherit the nice value.

use fanout_core::cpu::{self, CpuSet};

/// The CPUs among `allowed` that have no worker (the workers are on `workers`).
pub(super) fn spare_cpus(allowed: &CpuSet, workers: &[u32]) -> CpuSet {
    allowed
        .iter()
        .filter(|&cpu| !workers.iter().any(|&worker| worker as usize == cpu))
        .collect()
}

/// The CPUs the supervisor may use, as it started (before any move): what a later placement,
/// after the worker set changed, chooses from.
pub(crate) fn allowed_cpus() -> Option<CpuSet> {
    match cpu::thread_affinity(0) {
        Ok(allowed) => Some(allowed),
        Err(error) => {
            log::warn!("cannot read the supervisor's CPU affinity: {error}");
            None
        }
    }
}

/// Moves every thread of this process to the CPUs of `allowed` that have no worker, if there is
/// one, and otherwise back onto all of `allowed` (after a resize took its spare CPU, the
/// supervisor shares every CPU rather than one worker's); says where they went. Failures are
/// logged and leave the threads where they were: this is about latency, never a reason not to
/// relay.
pub(crate) fn keep_off_worker_cpus(allowed: &CpuSet, workers: &[u32]) -> Option<CpuSet> {
    let threads = match std::fs::read_dir("/proc/self/task") {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .collect(),
        // Without /proc, at least the calling thread, which starts all the others.
        Err(_) => vec![0],
    };
    let spare = move_threads(&threads, allowed, workers)?;
    log::info!(
        "supervisor on cpus {:?}, away from the workers' cpus {workers:?}",
        spare.iter().collect::<Vec<_>>()
    );
    Some(spare)
}

/// Moves `threads` (0: the calling one) to the CPUs of `allowed` that have no worker, or back to
/// all of `allowed` when each has one; `None` in that second case.
fn move_threads(threads: &[u32], allowed: &CpuSet, workers: &[u32]) -> Option<CpuSet> {
    let spare = spare_cpus(allowed, workers);
    let target = if spare.is_empty() {
        log::debug!(
            "every CPU the supervisor may use has a worker ({workers:?}): it shares them with \
             the workers"
        );
        allowed
    } else {
        &spare
    };
    for &tid in threads {
        match cpu::set_thread_affinity(tid, target) {
            // The thread ended since the list was read: nothing to move.
            Err(cpu::CpuError::Syscall {
                errno: nix::errno::Errno::ESRCH,
                ..
            })
            | Ok(()) => {}
            Err(error) => {
                log::warn!("cannot move supervisor thread {tid} off the workers' CPUs: {error}");
                return None;
            }
        }
    }
    (!spare.is_empty()).then_some(spare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_cpus_are_the_allowed_ones_without_a_worker() {
        let allowed: CpuSet = [0, 1, 2, 3].into_iter().collect();
        let spare = |workers: &[u32]| spare_cpus(&allowed, workers).iter().collect::<Vec<_>>();
        assert_eq!(spare(&[0]), [1, 2, 3]);
        assert_eq!(spare(&[1, 3]), [0, 2]);
        assert_eq!(spare(&[0, 1, 2, 3]), Vec::<usize>::new());
        // A worker on a CPU the supervisor may not use leaves the allowed ones spare.
        assert_eq!(spare(&[7]), [0, 1, 2, 3]);
    }

    #[test]
    fn threads_move_off_the_workers_cpus_when_they_can() {
        let allowed = cpu::thread_affinity(0).expect("sched_getaffinity of this thread");
        let Some(first) = allowed.iter().next() else {
            panic!("a thread may run somewhere");
        };
        if allowed.len() < 2 {
            eprintln!("skipped: this test may run on one CPU only");
            return;
        }
        // Only a thread of its own moves: the test harness's threads keep their affinity.
        let mine = allowed.clone();
        let (spare, now) = std::thread::spawn(move || {
            let spare = move_threads(&[0], &mine, &[first as u32]);
            (spare, cpu::thread_affinity(0).expect("sched_getaffinity"))
        })
        .join()
        .expect("the thread does not panic");
        let spare = spare.expect("another CPU is free");
        assert!(!spare.contains(first), "{spare:?}");
        assert_eq!(
            now.iter().collect::<Vec<_>>(),
            spare.iter().collect::<Vec<_>>()
        );
        let every: Vec<u32> = allowed.iter().map(|cpu| cpu as u32).collect();
        let (stays, back) = std::thread::spawn(move || {
            let everywhere: CpuSet = every.iter().map(|&cpu| cpu as usize).collect();
            // Only the affinity it leaves matters: `stays` below checks moving back from it.
            let _ = move_threads(&[0], &everywhere, &[first as u32]);
            let stays = move_threads(&[0], &everywhere, &every);
            (stays, cpu::thread_affinity(0).expect("sched_getaffinity"))
        })
        .join()
        .expect("the thread does not panic");
        assert!(
            stays.is_none(),
            "no CPU is spare when every one has a worker"
        );
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            allowed.iter().collect::<Vec<_>>(),
            "with no spare CPU the thread may run on every allowed one again"
        );
    }
}
