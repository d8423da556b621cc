//! A named network namespace owned by a test.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::process::{Command, Output};
use std::sync::Once;

use nix::sched::{CloneFlags, setns, unshare};

use crate::{check_output, next_id, run_checked};

/// A network namespace that exists exactly as long as this guard.
///
/// The name is `fr-<tag>-<pid>-<counter>`, unique among concurrently running tests and processes.
/// `Drop` kills every process still inside and deletes the namespace, which also destroys its
/// interfaces (a veth pair dies with either end), so a panicking test leaves nothing behind.
/// Namespaces left by a test process that was killed outright are removed by the next
/// [`Netns::new`] of any later test process (their pid no longer exists).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace with `lo` up; `tag` only makes the name readable in `ip netns`.
    ///
    /// Panics if the namespace cannot be made: call [`crate::privileged`] first.
    pub fn new(tag: &str) -> Netns {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let name = format!("fr-{tag}-{}-{}", std::process::id(), next_id());
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        // From here on the guard exists, so a failure below still deletes the namespace.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The name under which `ip netns` and `/run/netns/` know this namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `args[0]` with the other arguments inside the namespace and returns what it did.
    ///
    /// Unchecked: the caller decides whether failure is an error (see [`Netns::exec_checked`]).
    /// Panics only if `ip` itself cannot be started.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.cmd_args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    /// Like [`Netns::exec`], but returns stdout and panics with stderr on failure.
    pub fn exec_checked(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        check_output(&format!("{args:?} in {}", self.name), &out)
    }

    /// A `Command` that runs `program` inside the namespace; add arguments, then spawn it.
    ///
    /// `ip netns exec` also gives the program a `/sys` that shows this namespace. A process left
    /// running is killed when the guard drops.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    fn cmd_args(&self, args: &[&str]) -> Command {
        let (program, rest) = args
            .split_first()
            .expect("exec needs at least the program name");
        let mut cmd = self.cmd(program);
        cmd.args(rest);
        cmd
    }

    /// Runs `ip -n <ns> <args>` checked and returns its stdout (`ip -j` gives JSON).
    pub fn ip(&self, args: &[&str]) -> String {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Adds an IPv4 address with prefix length, e.g. `add_addr("veth0", "10.1.0.1/24")`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", ifname]);
    }

    /// Sets an interface's MTU.
    pub fn set_mtu(&self, ifname: &str, mtu: u32) {
        self.ip(&["link", "set", "dev", ifname, "mtu", &mtu.to_string()]);
    }

    /// Brings an interface up.
    pub fn link_up(&self, ifname: &str) {
        self.ip(&["link", "set", "dev", ifname, "up"]);
    }

    /// Routes all IPv4 multicast (224.0.0.0/4) out of `ifname`, so a plain UDP socket can send to
    /// a group without choosing the interface itself.
    pub fn add_multicast_route(&self, ifname: &str) {
        self.ip(&["route", "add", "224.0.0.0/4", "dev", ifname]);
    }

    /// Turns off checksum and segmentation offloads on `ifname` with `ethtool`.
    ///
    /// On veth, frames sent through a UDP socket otherwise carry a partial checksum
    /// (`CHECKSUM_PARTIAL`) that a packet socket on the peer sees unfilled, and GRO can merge
    /// frames. Panics if `ethtool` is missing (check [`crate::have_program`]) or fails.
    pub fn disable_offloads(&self, ifname: &str) {
        self.exec_checked(&[
            "ethtool", "-K", ifname, "rx", "off", "tx", "off", "tso", "off", "gso", "off", "gro",
            "off",
        ]);
    }

    /// Writes a sysctl of this namespace, e.g. `sysctl("net.ipv4.conf.all.rp_filter", "1")`.
    ///
    /// `/proc/sys/net` shows the namespace of the thread that opens it, so the write happens on
    /// a thread inside the namespace. Panics with the key on failure.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("sysctl {key}={value} in {}: {e}", self.name));
    }

    /// Runs `f` on a new thread that first enters this namespace, and returns its result.
    ///
    /// Sockets made inside `f` belong to the namespace; `if_nametoindex`, `getifaddrs` and ioctls
    /// on such sockets see its interfaces. The mount namespace is not changed, so `/sys` still
    /// shows the namespace that mounted it: use [`Netns::run_with_sysfs`] for sysfs. A panic in
    /// `f` is re-raised here.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        self.on_thread(false, f)
    }

    /// Like [`Netns::run`], but the thread also gets a private mount namespace with a fresh
    /// sysfs on `/sys`, which shows this network namespace (what `ip netns exec` does for a
    /// process). The mount is invisible outside the thread and vanishes with it.
    pub fn run_with_sysfs<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        self.on_thread(true, f)
    }

    fn on_thread<F, R>(&self, sysfs: bool, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        let joined = std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                setns(&fd, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns(CLONE_NEWNET) into {path}: {e}"));
                if sysfs {
                    private_sysfs();
                }
                f()
            })
            .join()
        });
        joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// Gives the calling thread its own mount namespace with a sysfs of its network namespace.
fn private_sysfs() {
    // unshare(CLONE_NEWNS) implies CLONE_FS, which a thread of a multithreaded process may
    // unshare: the new mount namespace belongs to this thread only.
    unshare(CloneFlags::CLONE_NEWNS).unwrap_or_else(|e| panic!("unshare(CLONE_NEWNS): {e}"));
    // Stop propagation first, so the sysfs mount below never shows up in the parent namespace.
    mount(None, "/", None, libc::MS_REC | libc::MS_SLAVE);
    mount(Some("sysfs"), "/sys", Some("sysfs"), 0);
}

fn mount(source: Option<&str>, target: &str, fstype: Option<&str>, flags: libc::c_ulong) {
    let cstr = |s: &str| CString::new(s).expect("mount arguments are literals without NUL");
    let source = source.map(cstr);
    let fstype = fstype.map(cstr);
    let target_c = cstr(target);
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is either null (allowed by mount(2) for source and fstype with these
    // flags) or a NUL-terminated string that outlives the call; data is null.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fstype),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        panic!("mount {target}: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// Kills what runs in namespace `name` and deletes it; quiet, because it runs during unwinding.
fn destroy(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    match Command::new("ip").args(["netns", "del", name]).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "warning: ip netns del {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("warning: ip netns del {name}: {e}"),
    }
}

/// Deletes `fr-*-<pid>-*` namespaces whose test process no longer exists (killed by SIGKILL or
/// a timeout, so its guards never ran).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(pid) = owner_pid(name)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            destroy(name);
        }
    }
}

/// The pid in a name made by [`Netns::new`], or `None` for any other namespace.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("fr-")?;
    let mut parts = rest.rsplitn(3, '-');
    let counter = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    counter.parse::<u32>().ok()?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn owner_pid_reads_only_our_names() {
        assert_eq!(owner_pid("fr-ring_rx-4242-7"), Some(4242));
        assert_eq!(owner_pid("fr-a-b-17-0"), Some(17));
        assert_eq!(owner_pid("fr-17-0"), None);
        assert_eq!(owner_pid("fr-x-abc-0"), None);
        assert_eq!(owner_pid("blue"), None);
        assert_eq!(owner_pid("fr-x-17-zz"), None);
    }
}
