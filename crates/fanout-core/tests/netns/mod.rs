//! A network namespace of a test's own, named uniquely and deleted when dropped, and a way to
//! run code inside it.

#![allow(
    dead_code,
    reason = "each test binary uses its own part of this module"
)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use std::time::{Duration, Instant};

use fanout_core::InterfaceInfo;
use nix::sched::CloneFlags;

/// A named network namespace (`ip netns add`), deleted on drop, even after a failed test.
pub(crate) struct Netns {
    name: String,
}

/// Whether privileged tests must run rather than skip.
fn required() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

impl Netns {
    /// A new namespace whose name starts with `tag`, with its loopback up; `None` (after saying
    /// why) when this process may not create one, unless CI=true, where that fails the test.
    pub(crate) fn new(tag: &str) -> Option<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let skip = |why: String| {
            assert!(!required(), "CI=true, yet the test cannot run: {why}");
            println!("skipped: {why}");
            None
        };
        if !nix::unistd::geteuid().is_root() {
            return skip("needs root to create a network namespace".into());
        }
        let name = format!(
            "{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return skip(format!(
                    "ip netns add {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(error) => return skip(format!("cannot run ip: {error}")),
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`, failing the test if it fails.
    pub(crate) fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Waits (at most three seconds) until `ifname` is running: a veth's peer coming up is
    /// seen by the kernel's link watch up to a second later, and until then the interface
    /// drops what it is given to send.
    pub(crate) fn wait_running(&self, ifname: &str) {
        self.run(|| {
            let deadline = Instant::now() + Duration::from_secs(3);
            for _ in 0..300 {
                let info = InterfaceInfo::lookup(ifname)
                    .unwrap_or_else(|e| panic!("{ifname} in the namespace: {e}"));
                if info.flags.running {
                    return;
                }
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("{ifname} is not running after 3 s");
        });
    }

    /// Runs `f` on a thread that has moved into the namespace: every socket it opens, interface
    /// it looks up and `/proc/thread-self/net` or `/proc/sys/net` file it reads is the
    /// namespace's. A panic in `f` fails the caller.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path).expect("open the namespace");
                    nix::sched::setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
