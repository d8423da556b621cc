//! `fanout-relay`: entry point; the work happens in the library.

use clap::Parser;
use relay_bin::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => {
            eprintln!(
                "fanout-relay: check-config {}: configuration files arrive with the relay",
                file.display()
            );
            ExitCode::FAILURE
        }
    }
}
