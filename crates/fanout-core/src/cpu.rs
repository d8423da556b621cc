//! CPU pinning: which CPUs exist, and keeping a worker on one of them.
//!
//! A fanout group in `cpu` mode hands a packet to the member whose index is the CPU that took
//! it, so each worker must stay on its CPU: these calls pin threads and processes, read the
//! affinity back, and say where the caller runs now. Everything goes through nix; no unsafe here.
//!
//! The affinity calls take CPUs below [`AFFINITY_CPUS`] (the size of glibc's `cpu_set_t`);
//! [`CpuSet`] itself holds any CPU number the kernel prints.

mod set;

pub use set::{CpuSet, CpuSetParseError, MAX_CPUS};

use std::path::PathBuf;

use nix::errno::Errno;
use nix::unistd::Pid;

/// How many CPUs the affinity syscalls here can name (the bits of a `cpu_set_t`).
pub const AFFINITY_CPUS: usize = nix::sched::CpuSet::count();

/// Where the kernel lists the CPUs that are online now (not the possible or present ones).
pub const ONLINE_PATH: &str = "/sys/devices/system/cpu/online";

/// Why a pinning or CPU query failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A kernel file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the read returned.
        source: std::io::Error,
    },
    /// A kernel file did not hold a CPU list.
    #[error("{path} does not hold a CPU list: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        source: CpuSetParseError,
    },
    /// A scheduler syscall failed, e.g. `sched_setaffinity` with EINVAL for an offline CPU or
    /// ESRCH for a thread that is gone.
    #[error("{syscall} for thread {tid} failed: {errno}")]
    Syscall {
        /// `sched_setaffinity`, `sched_getaffinity` or `sched_getcpu`.
        syscall: &'static str,
        /// The thread id passed (0 = the calling thread).
        tid: u32,
        /// The error the kernel returned.
        errno: Errno,
    },
    /// A CPU number the affinity calls cannot express.
    #[error("CPU {cpu} is beyond the {AFFINITY_CPUS} CPUs an affinity mask holds")]
    OutOfRange {
        /// The refused CPU.
        cpu: usize,
    },
    /// The requested set is empty, which would leave a thread nowhere to run.
    #[error("an affinity needs at least one CPU")]
    Empty,
}

/// The CPUs online now, from [`ONLINE_PATH`].
///
/// Workers are placed on these; a CPU taken offline later makes `pin_*` fail with EINVAL.
pub fn online_cpus() -> Result<CpuSet, CpuError> {
    read_cpu_list(ONLINE_PATH)
}

/// Reads a file holding a CPU list (`cpu/online`, `smp_affinity_list`, a cgroup's `cpuset.cpus`).
pub fn read_cpu_list(path: impl Into<PathBuf>) -> Result<CpuSet, CpuError> {
    let path = path.into();
    let text = std::fs::read_to_string(&path).map_err(|source| CpuError::Read {
        path: path.clone(),
        source,
    })?;
    CpuSet::parse_list(&text).map_err(|source| CpuError::Parse { path, source })
}

/// Pins the calling thread to `cpu`; threads it creates afterwards inherit the pin.
pub fn pin_current_thread(cpu: usize) -> Result<(), CpuError> {
    set_thread_affinity(0, &CpuSet::single(cpu))
}

/// Pins every thread of process `pid` to `cpu` (a worker process pinned from its supervisor).
///
/// Walks `/proc/<pid>/task`, so a thread the process creates during the call may keep its old
/// affinity; pin before the process starts its threads, or pin from inside it. Threads that exit
/// during the walk are skipped.
pub fn pin_process(pid: u32, cpu: usize) -> Result<(), CpuError> {
    let set = CpuSet::single(cpu);
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let entries = std::fs::read_dir(&dir).map_err(|source| CpuError::Read {
        path: dir.clone(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| CpuError::Read {
            path: dir.clone(),
            source,
        })?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        match set_thread_affinity(tid, &set) {
            Err(CpuError::Syscall {
                errno: Errno::ESRCH,
                ..
            }) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Sets the affinity of thread `tid` (0 = the calling thread) to `cpus`.
pub fn set_thread_affinity(tid: u32, cpus: &CpuSet) -> Result<(), CpuError> {
    if cpus.is_empty() {
        return Err(CpuError::Empty);
    }
    let mut raw = nix::sched::CpuSet::new();
    for cpu in cpus.iter() {
        raw.set(cpu).map_err(|_| CpuError::OutOfRange { cpu })?;
    }
    nix::sched::sched_setaffinity(pid(tid, "sched_setaffinity")?, &raw).map_err(|errno| {
        CpuError::Syscall {
            syscall: "sched_setaffinity",
            tid,
            errno,
        }
    })
}

/// The CPUs thread `tid` (0 = the calling thread) may run on, to check a pin took effect.
pub fn thread_affinity(tid: u32) -> Result<CpuSet, CpuError> {
    let raw = nix::sched::sched_getaffinity(pid(tid, "sched_getaffinity")?).map_err(|errno| {
        CpuError::Syscall {
            syscall: "sched_getaffinity",
            tid,
            errno,
        }
    })?;
    Ok((0..AFFINITY_CPUS)
        .filter(|&cpu| raw.is_set(cpu).unwrap_or(false))
        .collect())
}

/// The CPU the calling thread runs on at this instant; stable only if the thread is pinned.
pub fn current_cpu() -> Result<usize, CpuError> {
    nix::sched::sched_getcpu().map_err(|errno| CpuError::Syscall {
        syscall: "sched_getcpu",
        tid: 0,
        errno,
    })
}

/// A thread id the kernel can name; ids above `i32::MAX` cannot exist (ESRCH).
fn pid(tid: u32, syscall: &'static str) -> Result<Pid, CpuError> {
    i32::try_from(tid)
        .map(Pid::from_raw)
        .map_err(|_| CpuError::Syscall {
            syscall,
            tid,
            errno: Errno::ESRCH,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_cpus_include_the_current_one() {
        let online = online_cpus().expect("every Linux has cpu/online");
        assert!(!online.is_empty());
        assert!(online.contains(current_cpu().expect("sched_getcpu")));
    }

    #[test]
    fn empty_and_huge_sets_are_refused_before_the_syscall() {
        assert!(matches!(
            set_thread_affinity(0, &CpuSet::new()),
            Err(CpuError::Empty)
        ));
        assert!(matches!(
            set_thread_affinity(0, &CpuSet::single(AFFINITY_CPUS)),
            Err(CpuError::OutOfRange { cpu }) if cpu == AFFINITY_CPUS
        ));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = read_cpu_list("/nonexistent/cpu/online").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cpu/online"), "{err}");
    }
}
