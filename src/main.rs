//! `dstack`: run dstack docker-provider workflows in containers, without a Docker daemon.

mod cli;
mod commands;
mod error;
mod fsutil;
mod job;
mod manuals;
mod plan;
mod probes;
mod project;
mod runs;
mod secrets;
mod slurm;
mod units;
mod workflow;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`dstack ps | head`), as command-line tools do, instead of panicking.
    // SAFETY: called first thing, before any thread exists; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    match commands::dispatch(cli.command) {
        Ok(code) => code,
        Err(err) => {
            error::report(&err);
            ExitCode::from(err.exit_code())
        }
    }
}

/// `-v` shows our info lines, `-vv` debug, `-vvv` everything; `RUST_LOG` overrides.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "dstack=info,runtime=info",
        2 => "dstack=debug,runtime=debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
