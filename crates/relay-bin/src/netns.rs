//! Named network namespaces and veth pairs that remove themselves when dropped.
//!
//! `fanout-relay demo` builds a small network of its own (sender, relay, receivers), and the
//! end-to-end tests build one per test. Both need the same three things, done by `ip` from
//! iproute2 so that what they make is visible to (and removable with) the operator's usual tools:
//!
//! - [`Netns`]: a namespace with a name no other process uses, deleted in `Drop` together with
//!   the processes still inside it, so a failure or a panic leaves nothing behind;
//! - [`Netns::run`]: a closure on a thread that has entered the namespace, so the sockets it
//!   opens belong there (and keep belonging there when used from any other thread);
//! - [`veth_pair`]: a link between two namespaces.
//!
//! Every operation returns [`NetnsError`], which names the command that failed and its
//! message, because the person reading it is an operator running the demo, not a test.
//!
//! ```no_run
//! use relay_bin::netns::{Netns, NetnsError, veth_pair};
//!
//! # fn main() -> Result<(), NetnsError> {
//! let a = Netns::new("example", "a")?;
//! let b = Netns::new("example", "b")?;
//! let _link = veth_pair(&a, "va", &b, "vb")?;
//! a.add_addr("va", "10.9.0.1/24")?;
//! b.add_addr("vb", "10.9.0.2/24")?;
//! let socket = b.run(|| std::net::UdpSocket::bind("10.9.0.2:0"))?;
//! # drop(socket);
//! # Ok(())
//! # }
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The kernel's limit on interface names (IFNAMSIZ without the terminating NUL).
pub const IFNAME_MAX: usize = 15;

/// Numbers the namespaces of this process, so two made by it never share a name.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why a namespace, a link or an address could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `ip` (or another program) could not be started at all.
    #[error("cannot start `{command}`: {source} (is iproute2 installed?)")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it did not start.
        source: std::io::Error,
    },
    /// The command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to standard error (or, if nothing, to standard output).
        stderr: String,
    },
    /// A thread could not be started in, or moved into, the namespace.
    #[error("cannot enter network namespace {name}: {what}: {source}")]
    Enter {
        /// The namespace.
        name: String,
        /// The step that failed (`open /run/netns/...`, `setns(CLONE_NEWNET)`, ...).
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A sysctl of the namespace could not be written.
    #[error("sysctl {key}={value} in {name}: {source}")]
    Sysctl {
        /// The namespace.
        name: String,
        /// The key, dotted (`net.ipv4.conf.all.rp_filter`).
        key: String,
        /// The value that was to be written.
        value: String,
        /// Why the write failed.
        source: std::io::Error,
    },
    /// An interface name does not fit the kernel's limit.
    #[error("interface name `{0}` is longer than {IFNAME_MAX} bytes")]
    IfnameTooLong(String),
}

/// A network namespace that exists exactly as long as this guard.
///
/// Its name is `<prefix>-<tag>-<pid>-<counter>`: unique among the namespaces of this process
/// (the counter) and of all processes alive at the same time (the pid). `Drop` kills every
/// process still inside and deletes the namespace, which also destroys its interfaces (a veth
/// pair dies with either end). Namespaces left behind by a process that was killed outright,
/// so that its guards never ran, are found by their pid and removed by [`sweep_stale`].
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace named after `prefix` and `tag`, with `lo` up.
    ///
    /// `prefix` says who made it (and is what [`sweep_stale`] looks for); `tag` only makes the
    /// name readable in `ip netns`: characters other than ASCII letters and digits become `_`.
    pub fn new(prefix: &str, tag: &str) -> Result<Netns, NetnsError> {
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let name = format!(
            "{prefix}-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        checked(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on the guard exists, so a failure below still deletes the namespace.
        let ns = Netns { name };
        ns.link_up("lo")?;
        Ok(ns)
    }

    /// The name under which `ip netns` and `/run/netns/` know this namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside the namespace (through `ip netns exec`, which
    /// also gives it a `/sys` that shows this namespace); add arguments, then spawn it.
    ///
    /// `ip netns exec` replaces itself with `program`, so the child's pid is the program's. A
    /// process still running when the guard drops is killed.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `args[0]` with the other arguments inside the namespace and returns what it did,
    /// whether it succeeded or not; fails only if `ip` cannot be started.
    pub fn exec(&self, args: &[&str]) -> Result<Output, NetnsError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd.output().map_err(|source| NetnsError::Spawn {
            command: describe(&cmd),
            source,
        })
    }

    /// Like [`Netns::exec`], but a non-zero exit status is an error; returns standard output.
    pub fn exec_checked(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        checked(&mut cmd)
    }

    /// Runs `ip -n <namespace> <args>` and returns its standard output (`-j` gives JSON).
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Adds an IPv4 address with its prefix length, e.g. `add_addr("veth0", "10.1.0.1/24")`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<(), NetnsError> {
        self.ip(&["addr", "add", cidr, "dev", ifname]).map(drop)
    }

    /// Sets an interface's MTU.
    pub fn set_mtu(&self, ifname: &str, mtu: u32) -> Result<(), NetnsError> {
        self.ip(&["link", "set", "dev", ifname, "mtu", &mtu.to_string()])
            .map(drop)
    }

    /// Brings an interface up.
    pub fn link_up(&self, ifname: &str) -> Result<(), NetnsError> {
        self.ip(&["link", "set", "dev", ifname, "up"]).map(drop)
    }

    /// Routes all IPv4 multicast (224.0.0.0/4) out of `ifname`, so that a plain UDP socket can
    /// send to a group without choosing the interface itself.
    pub fn add_multicast_route(&self, ifname: &str) -> Result<(), NetnsError> {
        self.ip(&["route", "add", "224.0.0.0/4", "dev", ifname])
            .map(drop)
    }

    /// Writes a sysctl of this namespace, e.g. `sysctl("net.ipv4.conf.all.rp_filter", "1")`.
    ///
    /// `/proc/sys/net` shows the namespace of the thread that opens it, so the write happens on
    /// a thread inside the namespace (no `sysctl` program needed).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))?
            .map_err(|source| NetnsError::Sysctl {
                name: self.name.clone(),
                key: key.to_owned(),
                value: value.to_owned(),
                source,
            })
    }

    /// Runs `f` on a new thread that first enters this namespace, and returns its result.
    ///
    /// Sockets made inside `f` belong to the namespace for their whole life, also when they are
    /// moved to and used by other threads; `if_nametoindex`, `getifaddrs` and ioctls see its
    /// interfaces. Only the network namespace changes: `/sys` still shows the namespace that
    /// mounted it. A panic in `f` is re-raised here.
    pub fn run<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        let enter = |what: String, source: std::io::Error| NetnsError::Enter {
            name: self.name.clone(),
            what,
            source,
        };
        let joined = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name(format!("netns {}", self.name))
                .spawn_scoped(scope, || {
                    let fd = File::open(&path).map_err(|e| enter(format!("open {path}"), e))?;
                    setns(&fd, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| enter("setns(CLONE_NEWNET)".into(), e.into()))?;
                    Ok(f())
                })
                .map(|thread| thread.join())
        });
        match joined {
            Err(source) => Err(enter("starting a thread".into(), source)),
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// Kills what runs in namespace `name` and deletes it; quiet except for a logged warning,
/// because it runs during unwinding and on paths that are already reporting an error.
fn destroy(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // One already gone is what is wanted; `netns del` below reports what is left.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    match Command::new("ip").args(["netns", "del", name]).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => log::warn!(
            "ip netns del {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(error) => log::warn!("ip netns del {name}: {error}"),
    }
}

/// Deletes the namespaces named `<prefix>-*-<pid>-<counter>` whose process no longer exists
/// (it was killed outright, so its guards never ran), with whatever still runs inside them.
///
/// Namespaces of live processes and namespaces named otherwise are left alone. Returns the
/// names it removed.
pub fn sweep_stale(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(pid) = owner_pid(prefix, name)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            destroy(name);
            removed.push(name.to_owned());
        }
    }
    removed
}

/// The pid in a name that [`Netns::new`] made with `prefix`, or `None` for any other name.
pub fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let mut parts = rest.rsplitn(3, '-');
    let counter = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    counter.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// A veth pair with one end in each of two namespaces, both ends up.
///
/// The pair dies with either namespace, so normally [`Netns`]'s `Drop` removes it; this guard
/// deletes it too, so that a pair between long-lived namespaces does not outlive its user.
/// Deleting a pair that is already gone is not an error.
#[derive(Debug)]
pub struct Veth {
    a_ns: String,
    a_if: String,
    b_ns: String,
    b_if: String,
}

/// Creates a veth pair `a_if` (in `a`) ↔ `b_if` (in `b`) and brings both ends up.
///
/// The names only need to be unique within their namespace, and fit [`IFNAME_MAX`]. The pair is
/// created directly inside `a` with its peer directly inside `b`, so the names never pass
/// through, or clash in, the root namespace.
pub fn veth_pair(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<Veth, NetnsError> {
    for name in [a_if, b_if] {
        if name.len() > IFNAME_MAX {
            return Err(NetnsError::IfnameTooLong(name.to_owned()));
        }
    }
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    // From here on the guard exists, so a failure below still deletes the pair.
    let veth = Veth {
        a_ns: a.name().to_owned(),
        a_if: a_if.to_owned(),
        b_ns: b.name().to_owned(),
        b_if: b_if.to_owned(),
    };
    a.link_up(a_if)?;
    b.link_up(b_if)?;
    Ok(veth)
}

impl Veth {
    /// The end in the first namespace given to [`veth_pair`].
    pub fn a_if(&self) -> &str {
        &self.a_if
    }

    /// The end in the second namespace given to [`veth_pair`].
    pub fn b_if(&self) -> &str {
        &self.b_if
    }

    /// The namespace holding [`Veth::a_if`].
    pub fn a_ns(&self) -> &str {
        &self.a_ns
    }

    /// The namespace holding [`Veth::b_if`].
    pub fn b_ns(&self) -> &str {
        &self.b_ns
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Quiet: the namespace (and with it the pair) is usually gone already.
        let _ = Command::new("ip")
            .args(["-n", &self.a_ns, "link", "del", &self.a_if])
            .output();
    }
}

/// Runs `cmd`, and returns its standard output if it succeeded.
fn checked(cmd: &mut Command) -> Result<String, NetnsError> {
    let out = cmd.output().map_err(|source| NetnsError::Spawn {
        command: describe(cmd),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(NetnsError::Failed {
            command: describe(cmd),
            status: out.status,
            stderr: if stderr.is_empty() {
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            } else {
                stderr
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cmd` as a person would type it.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_names_with_the_prefix() {
        assert_eq!(owner_pid("fr", "fr-ring_rx-4242-7"), Some(4242));
        assert_eq!(owner_pid("fr", "fr-a-b-17-0"), Some(17));
        assert_eq!(owner_pid("fr", "fr-17-0"), None);
        assert_eq!(owner_pid("fr", "fr-x-abc-0"), None);
        assert_eq!(owner_pid("fr", "blue"), None);
        assert_eq!(owner_pid("fr", "fr-x-17-zz"), None);
        assert_eq!(owner_pid("frdemo", "frdemo-relay-99-3"), Some(99));
        // One prefix never claims another's names, even when one starts with the other.
        assert_eq!(owner_pid("fr", "frdemo-relay-99-3"), None);
        assert_eq!(owner_pid("frdemo", "fr-relay-99-3"), None);
    }

    #[test]
    fn a_failed_command_is_named_with_its_message() {
        let error = checked(Command::new("sh").args(["-c", "echo nope >&2; exit 3"]))
            .expect_err("exit 3 is a failure");
        let text = error.to_string();
        assert!(
            text.starts_with("`sh -c echo nope >&2; exit 3` failed"),
            "{text}"
        );
        assert!(text.ends_with(": nope"), "{text}");
        let error = checked(&mut Command::new("/nonexistent/ip")).expect_err("no such program");
        assert!(matches!(error, NetnsError::Spawn { .. }), "{error:?}");
        assert_eq!(
            checked(Command::new("sh").args(["-c", "echo out"])).expect("exit 0"),
            "out\n"
        );
    }

    #[test]
    fn long_interface_names_are_refused_before_running_ip() {
        // No namespace exists behind these guards; veth_pair must refuse before using them.
        let a = std::mem::ManuallyDrop::new(Netns {
            name: "unused-a".into(),
        });
        let error = veth_pair(&a, "a-name-that-is-too-long", &a, "b").expect_err("16+ bytes");
        assert!(
            matches!(error, NetnsError::IfnameTooLong(ref n) if n == "a-name-that-is-too-long")
        );
    }
}
