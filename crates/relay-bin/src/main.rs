//! `fanout-relay`: parses the command line and hands over to the library.

use clap::Parser;
use relay_bin::cli::{Cli, Command};
use relay_bin::supervisor::{self, Overrides, Plan, RunOptions};
use std::process::ExitCode;
use std::time::Duration;

#[cfg(feature = "count-allocs")]
#[global_allocator]
static ALLOCATOR: fanout_core::alloc_count::CountingAllocator =
    fanout_core::alloc_count::CountingAllocator;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if let Err(error) = relay_bin::kernel_features::from_env() {
        eprintln!("fanout-relay: {error}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        // The command line is where an error becomes the text printed before exit status 1.
        Command::Ctl(args) => relay_bin::ctl::run(&args).map_err(|error| error.to_string()),
        Command::CheckSteering(args) => {
            relay_bin::steering::run(&args).map_err(|error| error.to_string())
        }
        Command::Features { config } => config
            .map(|path| relay_bin::config::ConfigFile::load(&path).map_err(|e| e.to_string()))
            .transpose()
            .map(|file| print!("{}", relay_bin::kernel_features::report(file.as_ref()))),
        Command::CheckConfig { file } => Plan::load(&file, &Overrides::default(), false)
            .map(|plan| {
                let classes: String = plan
                    .classes
                    .iter()
                    .map(|(name, cpus)| format!(", class {name} on cpus {cpus:?}"))
                    .collect();
                for (rule, missing) in &plan.waiting {
                    eprintln!(
                        "warning: rule {:?} names interface(s) {missing:?}, which do not exist: \
                         it waits for them (a typo?)",
                        rule.name
                    );
                }
                for warning in
                    relay_bin::rings::room::rule_set_warnings(&plan.config.ring, &plan.set)
                {
                    eprintln!("warning: {warning}");
                }
                println!(
                    "{}: ok: {} rule(s), {} interface(s), workers on cpus {:?}{classes}",
                    file.display(),
                    plan.set.len(),
                    plan.set.interfaces().iter().count(),
                    plan.worker_cpus()
                );
            })
            .map_err(|error| error.to_string()),
        Command::Run(args) => {
            let overrides = Overrides {
                workers: args.worker_override(),
                fanout: args.fanout,
                metrics: args.metrics,
                rps: args.rps,
            };
            let options = RunOptions {
                stats_every: (args.stats_every > 0).then(|| Duration::from_secs(args.stats_every)),
            };
            Plan::load(&args.config, &overrides, true)
                .map_err(supervisor::RunError::from)
                .and_then(|plan| supervisor::run(plan, &options))
                .map(|summary| eprint!("{}", summary.render()))
                .map_err(|error| error.to_string())
        }
        Command::Worker {
            cpu,
            supervisor,
            rings,
        } => {
            let result = relay_bin::worker::run(cpu, supervisor, rings)
                .map_err(|error| format!("worker on cpu {cpu}: {error}"));
            #[cfg(feature = "count-allocs")]
            {
                let counted = fanout_core::alloc_count::snapshot();
                log::info!(
                    "worker on cpu {cpu}: allocations={} bytes={}",
                    counted.allocations,
                    counted.bytes
                );
            }
            result
        }
        Command::Demo(args) => {
            relay_bin::demo::run(&args).map_err(|error| format!("demo: {error}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fanout-relay: {error}");
            ExitCode::FAILURE
        }
    }
}
