//! Which CPUs get a worker: one pure choice for the start, `check-steering` and `ctl workers set`,
//! and the reading of the online CPUs it chooses from.

use crate::config::WorkersSetting;

/// The online CPUs, ascending.
pub fn online() -> Result<Vec<u32>, String> {
    Ok(fanout_core::cpu::online_cpus()
        .map_err(|error| format!("cannot list online CPUs: {error}"))?
        .iter()
        .map(|cpu| cpu as u32)
        .collect())
}

/// The CPUs that get a worker under `setting` on this host, ascending; the error says why none
/// can.
pub fn choose(setting: &WorkersSetting) -> Result<Vec<u32>, String> {
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
) -> Result<Vec<u32>, String> {
    match setting {
        WorkersSetting::All => Ok(online.to_vec()),
        WorkersSetting::Count(0) => Err("a relay needs at least one worker".into()),
        WorkersSetting::Count(count) => {
            let count = *count as usize;
            if count > online.len() {
                return Err(format!(
                    "{count} workers asked for, but only {} CPUs are online",
                    online.len()
                ));
            }
            let mut cpus: Vec<u32> = current.iter().copied().take(count).collect();
            let free = online.iter().copied().filter(|cpu| !current.contains(cpu));
            cpus.extend(free.take(count - cpus.len()));
            Ok(cpus)
        }
        WorkersSetting::Cpus(list) => {
            if list.is_empty() {
                return Err("no CPU listed".into());
            }
            if let Some(cpu) = list.iter().find(|cpu| !online.contains(cpu)) {
                return Err(format!("CPU {cpu} is not online (online: {online:?})"));
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
        let grow = resize(&[2], &WorkersSetting::Count(3), &online);
        assert_eq!(grow, Ok(vec![2, 0, 1]));
        let shrink = resize(&[2, 0, 1], &WorkersSetting::Count(1), &online);
        assert_eq!(shrink, Ok(vec![2]));
        assert!(resize(&[0], &WorkersSetting::Count(5), &online).is_err());
        assert!(resize(&[0], &WorkersSetting::Count(0), &online).is_err());
        let listed = resize(&[0], &WorkersSetting::Cpus(vec![3, 1]), &online);
        assert_eq!(listed, Ok(vec![1, 3]));
        assert!(resize(&[0], &WorkersSetting::Cpus(vec![7]), &online).is_err());
    }

    #[test]
    fn a_start_takes_the_first_online_cpus() {
        let online = [1, 3, 4, 6];
        assert_eq!(
            resize(&[], &WorkersSetting::Count(2), &online),
            Ok(vec![1, 3])
        );
        assert_eq!(
            resize(&[], &WorkersSetting::All, &online),
            Ok(online.to_vec())
        );
        let error = resize(&[], &WorkersSetting::Cpus(vec![0]), &online).expect_err("offline");
        assert!(error.contains("CPU 0 is not online"), "{error}");
        assert!(resize(&[], &WorkersSetting::Cpus(vec![]), &online).is_err());
    }
}
