//! Only root or the relay's own user may use the control socket. Two layers refuse anyone else:
//! the socket file's mode (0600: the kernel refuses `connect`), and the relay itself, which
//! checks the peer's credentials (`SO_PEERCRED`) of every connection and answers "permission
//! denied". The second layer is tested by opening the socket's mode for a moment.
//!
//! The other user is created by the test (`useradd`) and removed afterwards; its processes are
//! `fanout-relay ctl` and this test binary itself, re-executed under `setpriv` in the role of a
//! client that connects and only listens (see [`peer_connects_and_listens`]).

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fanout_relay_tests::ctl::{Ctl, CtlOutput, Workdir, relay_section, rule, run_bounded};
use fanout_relay_tests::relay::{RelayProcess, quiet_topology, relay_binary};
use fanout_relay_tests::{have_program, privileged, run_checked, skip};

/// Set in the environment of the re-executed test binary: the socket to connect to.
const PEER_SOCKET: &str = "FR_CTL_PEER_SOCKET";
/// Prefix of the lines the peer role prints.
const PEER: &str = "PEER ";

/// A system user that exists as long as this guard.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn create() -> TestUser {
        let name = format!(
            "frctl{}x{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() % 10_000)
        );
        let mut useradd = Command::new("useradd");
        useradd.args([
            "--system",
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
            &name,
        ]);
        // Another process may hold the lock on /etc/passwd for a moment.
        for _ in 0..10 {
            if useradd.output().is_ok_and(|o| o.status.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if nix::unistd::User::from_name(&name).ok().flatten().is_none() {
            run_checked(&mut useradd);
        }
        let user = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("useradd made no user {name}"));
        TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }

    /// Runs `program args` as this user, with no supplementary groups.
    fn run(&self, program: &Path, args: &[&str]) -> CtlOutput {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(program)
            .args(args);
        run_bounded(cmd, Duration::from_secs(20))
    }

    /// Runs this test binary's peer role as this user against `socket`; returns its lines.
    fn peer(&self, socket: &Path) -> Vec<String> {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(exe)
            .args([
                "peer_connects_and_listens",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PEER_SOCKET, socket);
        let out = run_bounded(cmd, Duration::from_secs(30));
        out.stdout
            .lines()
            // The harness prints `test <name> ... ` before the role's first line.
            .filter_map(|line| line.split_once(PEER).map(|(_, rest)| rest))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let out = Command::new("userdel").arg(&self.name).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("userdel {} failed: {out:?}", self.name);
        }
    }
}

/// Puts the socket's mode back to 0600 when dropped, even if the test fails in between.
struct ModeGuard<'a>(&'a Path);

impl Drop for ModeGuard<'_> {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o600));
    }
}

/// Not a test on its own: the role of the other user's client in
/// [`a_non_owner_is_refused_by_the_socket_and_by_the_relay`], which re-executes this binary
/// under `setpriv`. It connects, writes nothing, and prints what the relay says. Without
/// `FR_CTL_PEER_SOCKET` in the environment it does nothing.
#[test]
fn peer_connects_and_listens() {
    let Some(socket) = std::env::var_os(PEER_SOCKET) else {
        return;
    };
    let stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(e) => {
            println!("{PEER}connect-error {}", e.raw_os_error().unwrap_or(0));
            return;
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("SO_RCVTIMEO");
    let mut reader = BufReader::new(stream);
    for _ in 0..2 {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => {
                println!("{PEER}closed");
                return;
            }
            Ok(_) => println!("{PEER}answer {}", line.trim_end()),
            Err(e) => {
                println!("{PEER}read-error {e}");
                return;
            }
        }
    }
}

/// What a test needs to run as another user, or why it cannot.
fn prerequisites() -> Result<(), String> {
    for program in ["useradd", "userdel", "setpriv"] {
        if !have_program(program) {
            return Err(format!(
                "`{program}` is missing (Debian: packages passwd and util-linux)"
            ));
        }
    }
    Ok(())
}

#[test]
fn a_non_owner_is_refused_by_the_socket_and_by_the_relay() {
    let test = "a_non_owner_is_refused_by_the_socket_and_by_the_relay";
    if !privileged(test) {
        return;
    }
    if let Err(why) = prerequisites() {
        skip(test, &why);
        return;
    }
    let user = TestUser::create();
    let binary = relay_binary();
    let version = user.run(&binary, &["--version"]);
    if !version.status.success() {
        skip(
            test,
            &format!(
                "user {} cannot run {}: {}",
                user.name,
                binary.display(),
                version.stderr.trim()
            ),
        );
        return;
    }
    let topo = quiet_topology("ctlacc");
    let dir = Workdir::new("access");
    let config = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let ctl = Ctl::new(&dir);
    let socket = ctl.socket().to_owned();
    let socket_arg = socket.display().to_string();
    let before = ctl.rules();
    let add = [
        "ctl",
        "--socket",
        socket_arg.as_str(),
        "add",
        "intruder",
        "rin0:239.1.1.9:5009",
        "rout0:239.2.2.9:6009",
    ];

    // Layer 1: the socket file is 0600, so the kernel refuses the connection.
    let mode = std::fs::metadata(&socket)
        .expect("the socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket's mode");
    let out = user.run(&binary, &add);
    assert!(!out.status.success(), "a non-owner's add succeeded");
    assert!(
        out.stderr.contains("Permission denied (os error 13)"),
        "ctl as {}: {}",
        user.name,
        out.stderr
    );
    assert_eq!(user.peer(&socket), ["connect-error 13"]);

    // Layer 2: with the mode opened, the relay checks the peer's credentials itself.
    {
        let _restore = ModeGuard(&socket);
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
            .expect("chmod 0666 the socket");
        let lines = user.peer(&socket);
        assert_eq!(lines.len(), 2, "the peer saw {lines:?}");
        assert!(
            lines[0].starts_with("answer {\"ok\":false,\"error\":\"permission denied")
                && lines[0].contains(&format!("only root or uid {}", nix::unistd::geteuid())),
            "the relay answered the non-owner with {:?}",
            lines[0]
        );
        assert_eq!(
            lines[1], "closed",
            "the connection stays open after a refusal"
        );
        let out = user.run(&binary, &add);
        assert!(!out.status.success(), "a non-owner's add succeeded");
        relay.wait_for_log("the refusal in the log", Duration::from_secs(5), |line| {
            line.contains(&format!(
                "control: refused a connection from uid {}",
                user.uid
            ))
        });
        // The owner is still served.
        ctl.ok(&["list"]);
    }
    let mode = std::fs::metadata(&socket)
        .expect("the socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket's mode was not restored");
    assert_eq!(ctl.rules(), before, "a non-owner changed the rules");
    relay.stop();
}

/// The `ctl` client run by a refused user must print the relay's reason. Today it often
/// prints "Broken pipe" instead: the relay answers and closes without reading the request, and
/// the client gives up when its write fails, before it reads the answer.
#[test]
fn a_refused_ctl_client_prints_the_relays_reason() {
    let test = "a_refused_ctl_client_prints_the_relays_reason";
    if !privileged(test) {
        return;
    }
    if let Err(why) = prerequisites() {
        skip(test, &why);
        return;
    }
    let user = TestUser::create();
    let topo = quiet_topology("ctlrfc");
    let dir = Workdir::new("refusedctl");
    let config = relay_section(&dir, "") + &rule("base", "239.1.1.1", 5000, "239.2.2.2", 6000);
    let relay = RelayProcess::start(&topo.relay, &config, &[]);
    let socket = dir.socket();
    let socket_arg = socket.display().to_string();
    let _restore = ModeGuard(&socket);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod 0666 the socket");
    for attempt in 0..20 {
        let out = user.run(&relay_binary(), &["ctl", "--socket", &socket_arg, "list"]);
        assert!(!out.status.success());
        assert!(
            out.stderr.contains("permission denied: only root"),
            "attempt {attempt}: ctl printed {:?}",
            out.stderr
        );
    }
    drop(relay);
}
