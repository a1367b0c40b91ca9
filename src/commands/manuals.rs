//! `dstack completions SHELL` and `dstack man DIR`: made from the command line itself (`crate::manuals`).

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::CliResult;
use crate::manuals;

pub fn completions(args: CompletionsArgs) -> CliResult<ExitCode> {
    manuals::print_completions(args.shell, Cli::command());
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: ManArgs) -> CliResult<ExitCode> {
    let pages = manuals::write_man_pages(Cli::command(), &args.dir)?;
    eprintln!("{pages} man pages written to {}", args.dir.display());
    Ok(ExitCode::SUCCESS)
}
