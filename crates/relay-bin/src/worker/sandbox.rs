//! Boxing a worker in once it holds everything it needs.
//!
//! A worker parses every frame from the wire, so it is the part of the relay that most needs
//! to hold nothing it does not use. By the time it serves, its receive rings, transmit rings
//! and output sockets are open (the supervisor opened them and handed them over, as it does
//! for every output a later change needs), so the worker gives up the rest: it becomes the
//! configured user (when it runs as root), drops every capability, sets `PR_SET_NO_NEW_PRIVS`,
//! and installs a seccomp filter that kills the process at any system call its loop does not
//! make ([`ALLOWED`]). The supervisor sees such a death as `SIGSYS`, counts it as
//! `forbidden_syscall`, and starts a new worker.

use crate::protocol::WorkerUser;
use caps::CapSet;
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};
use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
use std::collections::BTreeMap;

/// Why the worker could not box itself in; it then exits rather than serve unboxed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The user switch failed.
    #[error("becoming user {user} (uid {uid}, gid {gid}): {call}: {errno}")]
    User {
        /// The user's name.
        user: String,
        /// Its uid.
        uid: u32,
        /// Its gid.
        gid: u32,
        /// The call that failed.
        call: &'static str,
        /// Its errno.
        errno: nix::errno::Errno,
    },
    /// A capability set could not be cleared.
    #[error("clearing the {set:?} capability set: {source}")]
    Capabilities {
        /// The set.
        set: CapSet,
        /// Why.
        source: caps::errors::CapsError,
    },
    /// A `prctl` failed.
    #[error("prctl({call}): {errno}")]
    Prctl {
        /// The option.
        call: &'static str,
        /// Its errno.
        errno: nix::errno::Errno,
    },
    /// The supervisor went away while the worker switched users.
    #[error("the supervisor (pid {0}) is gone")]
    Orphaned(u32),
    /// The seccomp filter could not be built or installed.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
}

/// The system calls a serving worker makes, each with what makes it. Everything else kills it.
const ALLOWED: &[(i64, &str)] = &[
    // Its loop: waiting for rings and the control socket, and reading the control socket with
    // the descriptors beside it.
    #[cfg(target_arch = "x86_64")]
    (
        libc::SYS_poll,
        "poll: waiting for rings and the control socket",
    ),
    (libc::SYS_ppoll, "ppoll: poll where libc implements it so"),
    (
        libc::SYS_recvmsg,
        "recvmsg: control lines and handed descriptors",
    ),
    (libc::SYS_recvfrom, "recvfrom: reads of the control socket"),
    (libc::SYS_read, "read: reads of the control socket"),
    (
        libc::SYS_write,
        "write: replies to the supervisor, and the log on stderr",
    ),
    (libc::SYS_writev, "writev: the log, written by parts"),
    (
        libc::SYS_sendto,
        "sendto: transmit ring kicks (send with no data)",
    ),
    (
        libc::SYS_sendmsg,
        "sendmsg: replies written through a socket call",
    ),
    (libc::SYS_sendmmsg, "sendmmsg: batches of socket outputs"),
    (
        libc::SYS_getsockopt,
        "getsockopt: ring statistics, SO_ERROR, a handed ring's settings",
    ),
    (
        libc::SYS_pread64,
        "pread64: /proc/stat and schedstat, opened before, when busy polling",
    ),
    (
        libc::SYS_close,
        "close: outputs no rule uses any more, the descriptors of a change",
    ),
    (libc::SYS_fcntl, "fcntl: descriptor flags of handed sockets"),
    // Memory: tables grow and shrink with rule changes; handed transmit rings are mapped.
    (libc::SYS_mmap, "mmap: the heap, and handed transmit rings"),
    (
        libc::SYS_munmap,
        "munmap: the heap, and closed transmit rings",
    ),
    (
        libc::SYS_mremap,
        "mremap: the heap growing a large allocation",
    ),
    (
        libc::SYS_madvise,
        "madvise: MADV_DONTFORK on rings, heap trimming",
    ),
    (libc::SYS_brk, "brk: the heap"),
    (libc::SYS_mprotect, "mprotect: the heap's guard pages"),
    // Time and scheduling.
    (
        libc::SYS_clock_gettime,
        "clock_gettime: where the vDSO cannot answer",
    ),
    (
        libc::SYS_gettimeofday,
        "gettimeofday: where the vDSO cannot answer",
    ),
    (
        libc::SYS_clock_nanosleep,
        "clock_nanosleep: backing off when rings are empty",
    ),
    (libc::SYS_nanosleep, "nanosleep: likewise"),
    (
        libc::SYS_sched_yield,
        "sched_yield: spinning politely in low-latency mode",
    ),
    (
        libc::SYS_futex,
        "futex: the standard library's locks (stderr, the allocator)",
    ),
    (libc::SYS_getrandom, "getrandom: hash map keys"),
    // Signals and the end.
    (
        libc::SYS_rt_sigreturn,
        "rt_sigreturn: returning from SIGTERM's handler",
    ),
    (
        libc::SYS_rt_sigprocmask,
        "rt_sigprocmask: signal masks around aborts",
    ),
    (
        libc::SYS_restart_syscall,
        "restart_syscall: a sleep interrupted by a signal",
    ),
    (libc::SYS_getpid, "getpid: aborting on a panic"),
    (libc::SYS_gettid, "gettid: aborting on a panic"),
    (
        libc::SYS_tgkill,
        "tgkill: aborting on a panic (SIGABRT to itself)",
    ),
    (
        libc::SYS_sigaltstack,
        "sigaltstack: the main thread's stack guard at exit",
    ),
    (libc::SYS_exit, "exit: the end of a thread"),
    (libc::SYS_exit_group, "exit_group: the end of the worker"),
];

/// Boxes the calling process in: `user` (when given), no capabilities, no new privileges,
/// and [`ALLOWED`] system calls only. `supervisor` is the parent, whose death must still end
/// the worker after the user switch (which clears the parent-death signal).
pub(super) fn enter(user: Option<&WorkerUser>, supervisor: u32) -> Result<(), SandboxError> {
    let clear =
        |set| caps::clear(None, set).map_err(|source| SandboxError::Capabilities { set, source });
    // Dropping from the bounding set takes CAP_SETPCAP, which the user switch below loses:
    // first, and only where held (a worker without it holds no capability to drop there
    // that it could regain: no new privileges follows).
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        clear(CapSet::Bounding)?;
    }
    if let Some(user) = user {
        become_user(user)?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        clear(set)?;
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(|errno| SandboxError::Prctl {
        call: "PR_SET_PDEATHSIG",
        errno,
    })?;
    if nix::unistd::getppid().as_raw() as u32 != supervisor {
        return Err(SandboxError::Orphaned(supervisor));
    }
    nix::sys::prctl::set_no_new_privs().map_err(|errno| SandboxError::Prctl {
        call: "PR_SET_NO_NEW_PRIVS",
        errno,
    })?;
    install_filter()
}

fn become_user(user: &WorkerUser) -> Result<(), SandboxError> {
    let failed = |call, errno| SandboxError::User {
        user: user.name.clone(),
        uid: user.uid,
        gid: user.gid,
        call,
        errno,
    };
    let gid = Gid::from_raw(user.gid);
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setgroups(&[gid]).map_err(|errno| failed("setgroups", errno))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|errno| failed("setresgid", errno))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|errno| failed("setresuid", errno))
}

fn install_filter() -> Result<(), SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|error| SandboxError::Seccomp(format!("{}: {error:?}", std::env::consts::ARCH)))?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = ALLOWED
        .iter()
        .map(|&(call, _)| (call, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch_action(), SeccompAction::Allow, arch)
        .map_err(|error| SandboxError::Seccomp(error.to_string()))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|error: seccompiler::BackendError| SandboxError::Seccomp(error.to_string()))?;
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|error| SandboxError::Seccomp(error.to_string()))
}

/// What a call outside the list does: kill the process, or with
/// `FANOUT_RELAY_SECCOMP=log` only log it (to the kernel log), to find a call that a new
/// kernel, libc or code path makes.
fn mismatch_action() -> SeccompAction {
    match std::env::var("FANOUT_RELAY_SECCOMP").as_deref() {
        Ok("log") => SeccompAction::Log,
        _ => SeccompAction::KillProcess,
    }
}
