//! One module per command family; `dispatch` routes the parsed command line to them.

mod artifacts;
mod images;
mod run;
mod run_workflow;
mod runs;
mod secrets;

use std::process::ExitCode;

use crate::cli::Command;
use crate::error::CliResult;

pub fn dispatch(command: Command) -> CliResult<ExitCode> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Pull(args) => images::pull(args),
        Command::Images(args) => images::list(args),
        Command::Rmi(args) => images::remove(args),
        Command::Prune(crate::cli::PruneCommand::Images) => images::prune(),
        Command::Prune(crate::cli::PruneCommand::Cache { workflow }) => {
            runs::prune_cache(&workflow)
        }
        Command::Ps(args) => runs::ps(args),
        Command::Logs(args) => runs::logs(args),
        Command::Stop(args) => runs::stop(args),
        Command::Rm(args) => runs::rm(args),
        Command::Artifacts(cmd) => artifacts::artifacts(cmd),
        Command::Secrets(cmd) => secrets::secrets(cmd),
    }
}
