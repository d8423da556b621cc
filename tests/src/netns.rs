//! A named network namespace owned by a test: the relay's [`relay_bin::netns::Netns`], with an
//! API that panics instead of returning errors (setup that fails leaves a test meaningless) and a
//! sysfs of the namespace for steering facts.

use std::ffi::{CString, OsStr};
use std::process::{Command, Output};
use std::sync::Once;

use nix::sched::{CloneFlags, unshare};
use relay_bin::netns as inner;

/// Prefix of the harness's namespace names, and what the stale sweep looks for.
const PREFIX: &str = "fr";

/// A network namespace that exists exactly as long as this guard.
///
/// The name is `fr-<tag>-<pid>-<counter>`, unique among concurrently running tests and processes.
/// `Drop` kills every process still inside and deletes the namespace, which also destroys its
/// interfaces (a veth pair dies with either end), so a panicking test leaves nothing behind.
/// Namespaces left by a test process that was killed outright are removed by the next
/// [`Netns::new`] of any later test process (their pid no longer exists).
#[derive(Debug)]
pub struct Netns {
    pub(crate) inner: inner::Netns,
}

impl Netns {
    /// Creates a fresh namespace with `lo` up; `tag` only makes the name readable in `ip netns`.
    ///
    /// Panics if the namespace cannot be made: call [`crate::privileged`] first.
    pub fn new(tag: &str) -> Netns {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| {
            inner::sweep_stale(PREFIX);
        });
        Netns {
            inner: inner::Netns::new(PREFIX, tag).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// The name under which `ip netns` and `/run/netns/` know this namespace.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Runs `args[0]` with the other arguments inside the namespace and returns what it did.
    ///
    /// Unchecked: the caller decides whether failure is an error (see [`Netns::exec_checked`]).
    /// Panics only if `ip` itself cannot be started.
    pub fn exec(&self, args: &[&str]) -> Output {
        assert!(!args.is_empty(), "exec needs at least the program name");
        self.inner
            .exec(args)
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name()))
    }

    /// Like [`Netns::exec`], but returns stdout and panics with stderr on failure.
    pub fn exec_checked(&self, args: &[&str]) -> String {
        assert!(!args.is_empty(), "exec needs at least the program name");
        self.inner
            .exec_checked(args)
            .unwrap_or_else(|e| panic!("{args:?} in {}: {e}", self.name()))
    }

    /// A `Command` that runs `program` inside the namespace; add arguments, then spawn it.
    ///
    /// `ip netns exec` also gives the program a `/sys` that shows this namespace. A process left
    /// running is killed when the guard drops.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        self.inner.cmd(program)
    }

    /// Runs `ip -n <ns> <args>` checked and returns its stdout (`ip -j` gives JSON).
    pub fn ip(&self, args: &[&str]) -> String {
        self.inner.ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Adds an IPv4 address with prefix length, e.g. `add_addr("veth0", "10.1.0.1/24")`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) {
        self.inner
            .add_addr(ifname, cidr)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Sets an interface's MTU.
    pub fn set_mtu(&self, ifname: &str, mtu: u32) {
        self.inner
            .set_mtu(ifname, mtu)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits (at most three seconds, stretched by [`crate::slowdown`]) until `ifname` is
    /// running: a veth's peer coming up is seen by the kernel's link watch up to a second later,
    /// and until then the interface drops what it is given to send.
    pub fn wait_running(&self, ifname: &str) {
        let deadline = std::time::Instant::now() + crate::scaled(std::time::Duration::from_secs(3));
        self.run(|| {
            while std::time::Instant::now() < deadline {
                let info = fanout_core::InterfaceInfo::lookup(ifname)
                    .unwrap_or_else(|e| panic!("{ifname} in the namespace: {e}"));
                if info.flags.running {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!(
                "{ifname} is not running after {:?}",
                crate::scaled(std::time::Duration::from_secs(3))
            );
        });
    }

    /// Brings an interface up.
    pub fn link_up(&self, ifname: &str) {
        self.inner.link_up(ifname).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Routes all IPv4 multicast (224.0.0.0/4) out of `ifname`, so a plain UDP socket can send to
    /// a group without choosing the interface itself.
    pub fn add_multicast_route(&self, ifname: &str) {
        self.inner
            .add_multicast_route(ifname)
            .unwrap_or_else(|e| panic!("{e}"));
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
        self.inner
            .sysctl(key, value)
            .unwrap_or_else(|e| panic!("{e}"));
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
        self.inner.run(f).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Netns::run`], but the thread also gets a private mount namespace with a fresh
    /// sysfs on `/sys`, which shows this network namespace (what `ip netns exec` does for a
    /// process). The mount is invisible outside the thread and vanishes with it.
    pub fn run_with_sysfs<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        // `run` gives every call a thread of its own, so the private mount namespace made
        // first thing on it dies with that thread.
        self.run(|| {
            private_sysfs();
            f()
        })
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
