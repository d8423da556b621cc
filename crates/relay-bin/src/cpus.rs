//! Which CPUs get a worker: one pure choice for the start, `check-steering` and `ctl workers set`,
//! and the reading of the online CPUs it chooses from.

use crate::config::WorkersSetting;

/// Why no set of worker CPUs can be chosen.
#[derive(Debug, thiserror::Error)]
pub enum CpuChoiceError {
    /// A listed CPU is not online.
    #[error("CPU {cpu} is not online (online: {online:?})")]
    Offline {
        /// The refused CPU.
        cpu: u32,
        /// The CPUs that are online.
        online: Vec<u32>,
    },
    /// More workers than online CPUs.
    #[error("{asked} workers asked for, but only {online} CPUs are online")]
    TooMany {
        /// The number of workers asked for.
        asked: u32,
        /// How many CPUs are online (and free to take).
        online: usize,
    },
    /// An empty list of CPUs.
    #[error("no CPU listed")]
    NoCpu,
    /// A count of zero workers.
    #[error("a relay needs at least one worker")]
    Zero,
    /// The online CPUs could not be read.
    #[error("cannot list online CPUs: {0}")]
    Unreadable(#[source] fanout_core::CpuError),
}

/// The online CPUs, ascending.
pub fn online() -> Result<Vec<u32>, CpuChoiceError> {
    Ok(fanout_core::cpu::online_cpus()
        .map_err(CpuChoiceError::Unreadable)?
        .iter()
        .map(|cpu| cpu as u32)
        .collect())
}

/// The CPUs that get a worker under `setting` on this host, ascending; the error says why none
/// can.
pub fn choose(setting: &WorkersSetting) -> Result<Vec<u32>, CpuChoiceError> {
    resize(&[], setting, &online()?)
}

/// The CPUs of the worker set under `setting`, given the `current` ones and the `online` ones it
/// may use: a count keeps the current CPUs it can (the first ones) and adds the lowest free
/// online CPUs, so a resize moves as few workers as it can; a list is taken as it is (sorted);
/// `all` is every online CPU.
pub fn resize(
    current: &[u32],
    setting: &WorkersSetting,
    online: &[u32],
) -> Result<Vec<u32>, CpuChoiceError> {
    match setting {
        WorkersSetting::All => Ok(online.to_vec()),
        WorkersSetting::Count(0) => Err(CpuChoiceError::Zero),
        WorkersSetting::Count(count) => {
            let asked = *count;
            let count = asked as usize;
            if count > online.len() {
                return Err(CpuChoiceError::TooMany {
                    asked,
                    online: online.len(),
                });
            }
            let mut cpus: Vec<u32> = current.iter().copied().take(count).collect();
            let free = online.iter().copied().filter(|cpu| !current.contains(cpu));
            cpus.extend(free.take(count - cpus.len()));
            Ok(cpus)
        }
        WorkersSetting::Cpus(list) => {
            if list.is_empty() {
                return Err(CpuChoiceError::NoCpu);
            }
            if let Some(&cpu) = list.iter().find(|cpu| !online.contains(cpu)) {
                return Err(CpuChoiceError::Offline {
                    cpu,
                    online: online.to_vec(),
                });
            }
            let mut cpus = list.clone();
            cpus.sort_unstable();
            cpus.dedup();
            Ok(cpus)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_keeps_the_current_cpus_first() {
        let online = [0, 1, 2, 3];
        let grow = resize(&[2], &WorkersSetting::Count(3), &online).ok();
        assert_eq!(grow, Some(vec![2, 0, 1]));
        let shrink = resize(&[2, 0, 1], &WorkersSetting::Count(1), &online).ok();
        assert_eq!(shrink, Some(vec![2]));
        assert!(resize(&[0], &WorkersSetting::Count(5), &online).is_err());
        assert!(resize(&[0], &WorkersSetting::Count(0), &online).is_err());
        let listed = resize(&[0], &WorkersSetting::Cpus(vec![3, 1]), &online).ok();
        assert_eq!(listed, Some(vec![1, 3]));
        assert!(resize(&[0], &WorkersSetting::Cpus(vec![7]), &online).is_err());
    }

    #[test]
    fn a_start_takes_the_first_online_cpus() {
        let online = [1, 3, 4, 6];
        assert_eq!(
            resize(&[], &WorkersSetting::Count(2), &online).ok(),
            Some(vec![1, 3])
        );
        assert_eq!(
            resize(&[], &WorkersSetting::All, &online).ok(),
            Some(online.to_vec())
        );
        assert!(resize(&[], &WorkersSetting::Cpus(vec![]), &online).is_err());
    }

    #[test]
    fn each_refusal_says_what_was_asked_and_what_is_online() {
        let online = [1, 3];
        let message = |setting| {
            resize(&[], &setting, &online)
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            message(WorkersSetting::Cpus(vec![0])),
            "CPU 0 is not online (online: [1, 3])"
        );
        assert_eq!(
            message(WorkersSetting::Count(5)),
            "5 workers asked for, but only 2 CPUs are online"
        );
        assert_eq!(message(WorkersSetting::Cpus(vec![])), "no CPU listed");
        assert_eq!(
            message(WorkersSetting::Count(0)),
            "a relay needs at least one worker"
        );
        let unreadable = CpuChoiceError::Unreadable(fanout_core::CpuError::Empty);
        assert_eq!(
            unreadable.to_string(),
            "cannot list online CPUs: an affinity needs at least one CPU"
        );
        assert!(std::error::Error::source(&unreadable).is_some());
    }
}
