//! Support for the end-to-end tests: network namespaces and veth pairs that clean up after themselves.
//!
//! Every test that touches the network builds its own world from these pieces, so a test never
//! sees another test's traffic and leaves nothing behind, even when it panics:
//!
//! - [`privileged`] decides whether a namespace test can run here (skip, or fail under `CI=true`),
//!   [`skip`] reports any other missing prerequisite the same way, and [`unchecked`] what a test
//!   could not check for want of hardware that is the documented reason;
//! - [`online_cpus`] and [`two_online_cpus`] give tests their CPUs from the online set;
//! - [`Netns`] owns a named network namespace and deletes it (and kills what runs in it) on drop;
//!   [`Netns::run`] runs a closure on a thread that lives in the namespace, so sockets it opens
//!   belong there, and [`Netns::run_with_sysfs`] also gives that thread a `/sys` of the namespace;
//! - [`veth_pair`] links two namespaces; [`Topology`] is the sender ↔ relay ↔ receiver world the
//!   relay's end-to-end tests need.
//!
//! ```no_run
//! use fanout_relay_tests::{privileged, veth_pair, Netns};
//!
//! if !privileged("example") {
//!     return;
//! }
//! let a = Netns::new("ex");
//! let b = Netns::new("ex");
//! let _link = veth_pair(&a, "va", &b, "vb");
//! a.add_addr("va", "10.9.0.1/24");
//! b.add_addr("vb", "10.9.0.2/24");
//! let out = a.exec(&["ping", "-c", "1", "-W", "1", "10.9.0.2"]);
//! assert!(out.status.success());
//! ```
//!
//! Interface names inside a fresh namespace need only be unique in that namespace, so the fixed
//! names of [`Topology`] are safe; use [`unique_ifname`] for interfaces in the root namespace.

pub mod ctl;
mod netns;
pub mod obs;
pub mod relay;
mod topology;
mod veth;

pub use netns::Netns;
pub use topology::Topology;
pub use veth::{Veth, veth_pair};

use std::ffi::OsStr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Shared by the interface names and files this crate makes, so that no two of one process collide.
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Says whether a test that needs root and network namespaces can run on this machine.
///
/// A namespace test calls this first and returns when it says `false`, so that `cargo test` as an
/// ordinary user passes while saying on stderr what it skipped (`skipping <test>: <why>`). With the
/// environment variable `CI=true` a skip would hide a broken setup, so this panics with the reason
/// instead.
pub fn privileged(test: &str) -> bool {
    match why_unprivileged() {
        None => true,
        Some(why) => {
            skip(test, &why);
            false
        }
    }
}

/// Reports that `test` cannot run because of `why`, for a test that then returns early; with
/// `CI=true` it panics instead, because there a skip would hide a broken setup.
///
/// Use it for any missing prerequisite (a tool such as `ping`, a device such as
/// `/dev/net/tun`), so every skip looks and behaves the same.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run and CI=true: {why}");
    }
    // Written to the process's stderr directly, not through eprintln!, which the test
    // harness captures: a skip must be visible in an ordinary `cargo test` run.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
}

/// The kernel features a relay started by a test finds: the running kernel's, as fanout-core
/// probes them in this process, less those `FANOUT_RELAY_FORCE_NO_FEATURES` in this process's
/// environment forces off (which the relays the tests start inherit). Tests that depend on a
/// feature ask this and check the fallback where it is missing.
pub fn kernel_features() -> fanout_core::Features {
    static FORCED: std::sync::Once = std::sync::Once::new();
    FORCED.call_once(|| {
        if let Err(error) = relay_bin::kernel_features::from_env() {
            panic!("{error}");
        }
    });
    fanout_core::Features::get()
}

/// Reports what `test` could not check because this host lacks what it needs (`what` says
/// which part, and what was missing), for a test that checks everything else and passes.
///
/// Unlike [`skip`] it never panics, also not under `CI=true`: use it only where the test's doc
/// comment names the missing thing as the documented reason: hardware (a VM whose NICs are
/// virtual, a container), or a CPU that no other task wants (a busy shared machine), so that such
/// a host passes while saying on stderr what went unchecked.
pub fn unchecked(test: &str, what: &str) {
    use std::io::Write as _;
    // Straight to stderr, as in `skip`: the harness would capture eprintln!.
    let _ = writeln!(std::io::stderr(), "unchecked in {test}: {what}");
}

/// How many times slower than the development host this machine runs the tests:
/// `FANOUT_RELAY_TEST_SLOWDOWN` (a whole number, at least 1), which `scripts/test-kernel` sets
/// when it boots a kernel under plain emulation, where everything takes 10 to 50 times longer;
/// 1 when unset, so an ordinary run checks the bounds as written.
///
/// Only deadlines and CPU shares that measure the machine's speed are scaled by it, never
/// what a test counts (frames, drops, restarts).
pub fn slowdown() -> u32 {
    match std::env::var("FANOUT_RELAY_TEST_SLOWDOWN") {
        Err(_) => 1,
        Ok(value) => match value.parse::<u32>() {
            Ok(factor) if factor >= 1 => factor,
            _ => panic!("FANOUT_RELAY_TEST_SLOWDOWN={value:?}: not a whole number of at least 1"),
        },
    }
}

/// `deadline` stretched by [`slowdown`].
pub fn scaled(deadline: std::time::Duration) -> std::time::Duration {
    deadline * slowdown()
}

/// The online CPUs in ascending order (`/sys/devices/system/cpu/online`): the CPUs the relay
/// gives workers, which are not those of this process's affinity (`available_parallelism`).
///
/// Tests take the CPUs they use from here rather than assuming CPUs 0 and 1, so that they run
/// on any machine with enough CPUs, whichever are online.
pub fn online_cpus() -> Vec<u32> {
    fanout_core::cpu::online_cpus()
        .unwrap_or_else(|e| panic!("cannot list the online CPUs: {e}"))
        .iter()
        .map(|cpu| u32::try_from(cpu).expect("a CpuSet holds CPUs below MAX_CPUS"))
        .collect()
}

/// The first two online CPUs, for a test that needs two CPUs (and works with any number
/// above); when fewer are online, `None` after [`skip`], which panics under `CI=true`.
pub fn two_online_cpus(test: &str) -> Option<[u32; 2]> {
    match online_cpus()[..] {
        [first, second, ..] => Some([first, second]),
        ref fewer => {
            skip(
                test,
                &format!("needs two online CPUs, and only {fewer:?} is online"),
            );
            None
        }
    }
}

/// Held by a test whose check depends on the CPUs' time (a worker that spins, a busy task
/// pinned to a worker's CPU) for as long as it runs, so that the other tests of its binary,
/// which the harness runs in parallel, neither take that time nor lose theirs to it.
///
/// A test that failed while holding it leaves it usable: the lock only orders tests.
pub fn cpu_time_alone() -> std::sync::MutexGuard<'static, ()> {
    static CPU_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    CPU_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn why_unprivileged() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "not running as root (namespace tests need CAP_NET_ADMIN and CAP_NET_RAW)".into(),
        );
    }
    // Root in a container may lack the capabilities; namespaces need all three.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    for (bit, cap) in [
        (12, "CAP_NET_ADMIN"),
        (13, "CAP_NET_RAW"),
        (21, "CAP_SYS_ADMIN"),
    ] {
        if cap_eff & (1u64 << bit) == 0 {
            return Some(format!("{cap} is not in the effective capabilities"));
        }
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Err(e) => Some(format!("cannot run `ip` (install iproute2): {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// Clock ticks (utime + stime, fields 14 and 15 of `/proc/<pid>/stat`) process `pid` has used;
/// `None` once it is gone.
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// Says whether `program` can be started, for tests that need an optional tool (`ping`, `ethtool`).
pub fn have_program(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Runs a setup command and returns its stdout; panics with the command and its stderr on failure.
///
/// Setup that fails leaves the test meaningless, so a panic naming the exact command is the most
/// useful outcome (the guards still clean up what was made so far).
pub fn run_checked(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    check_output(&format!("{cmd:?}"), &out)
}

fn check_output(what: &str, out: &Output) -> String {
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip` with `args` in the current namespace, checked (see [`run_checked`]).
pub fn ip<S: AsRef<OsStr>>(args: &[S]) -> String {
    run_checked(Command::new("ip").args(args))
}

/// Makes an interface name that no other test (in this or another process) uses at the same time.
///
/// The kernel limits interface names to 15 bytes, so the name is `fr`, at most 6 bytes of `tag`,
/// the pid in 5 base-36 digits and a 2-digit base-36 counter. The suffix has a fixed width, so
/// two names are equal only if tag, pid and counter are; the counter wraps after 1296 names per
/// process, far more than a test keeps alive at once.
pub fn unique_ifname(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(6)
        .collect();
    let name = format!(
        "fr{tag}{}{}",
        base36(std::process::id(), 5),
        base36(next_id() % (36 * 36), 2)
    );
    debug_assert!(name.len() <= 15, "interface names are at most 15 bytes");
    name
}

fn base36(mut n: u32, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out).expect("base-36 digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames_fit_and_differ() {
        let a = unique_ifname("a-very-long-tag");
        let b = unique_ifname("a-very-long-tag");
        assert!(a.len() <= 15, "{a}");
        assert!(a.starts_with("fraveryl"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn base36_is_fixed_width() {
        assert_eq!(base36(0, 5), "00000");
        assert_eq!(base36(35, 2), "0z");
        assert_eq!(base36(36 * 36 - 1, 2), "zz");
        // pid_max is at most 2^22, which needs 5 digits.
        assert_eq!(base36(1 << 22, 5).len(), 5);
    }
}
