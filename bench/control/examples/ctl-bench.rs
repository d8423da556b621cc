//! `ctl-bench`: measures fanout-relay's control plane in network namespaces (run as root).
//!
//! ```text
//! ctl-bench stall   [--rules 10000] [--per-group 1] [--pps 20000] [--quiet-seconds 10] [--sender-cpu 1]
//!                   [--supervisor-cpu C]
//! ctl-bench restart [--rules 1,10000,100000] [--pps 10000] [--quick]
//! ```
//!
//! Build the relay first with the same target directory and profile (the tool runs
//! `<target>/<profile>/fanout-relay`), e.g. `cargo build --release -p relay-bin`.

use ctl_bench::{restart, stall};

fn value<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> T {
    match args.iter().position(|a| a == flag) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a value")),
        None => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !fanout_relay_tests::privileged("ctl-bench") {
        std::process::exit(2);
    }
    match args.first().map(String::as_str) {
        Some("stall") => {
            let options = stall::Options {
                rules: value(&args, "--rules", 10_000),
                per_group: value(&args, "--per-group", 1),
                pps: value(&args, "--pps", 20_000),
                quiet_seconds: value(&args, "--quiet-seconds", 10),
                sender_cpu: value(&args, "--sender-cpu", 1),
                supervisor_cpu: args
                    .iter()
                    .position(|a| a == "--supervisor-cpu")
                    .map(|_| value(&args, "--supervisor-cpu", 1)),
            };
            let report = stall::run(options);
            print!("{}", stall::render(&options, &report));
        }
        Some("restart") => {
            let sizes: String = value(&args, "--rules", "1,10000,100000".to_owned());
            for rules in sizes.split(',') {
                let options = restart::Options {
                    rules: rules.trim().parse().expect("--rules takes numbers"),
                    pps: value(&args, "--pps", 10_000),
                    healthy: !args.iter().any(|a| a == "--quick"),
                };
                let report = restart::run(options);
                print!("{}", restart::render(&options, &report));
            }
        }
        _ => {
            eprintln!(
                "usage: ctl-bench stall [--rules N] [--per-group N] [--pps N] [--quiet-seconds S] [--sender-cpu C] [--supervisor-cpu C]\n\
                 \x20      ctl-bench restart [--rules N,N,...] [--pps N] [--quick]"
            );
            std::process::exit(2);
        }
    }
}
