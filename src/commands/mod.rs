//! One module per command family; `dispatch` routes the parsed command line to them.

mod artifacts;
mod exec;
mod images;
mod info;
mod manuals;
mod run_docker;
mod run_workflow;
mod runs;
mod secrets;
mod slurm_job;
mod table;

use std::process::ExitCode;

use crate::cli::Command;
use crate::error::CliResult;

pub fn dispatch(command: Command) -> CliResult<ExitCode> {
    // Before anything reads or writes the state: it must be ours and closed to other users. `dstack info`
    // only looks, and reports a missing, open or foreign state root instead; completions and man pages
    // need no state.
    if !matches!(
        command,
        Command::Info(_) | Command::Completions(_) | Command::Man(_)
    ) {
        runtime::private::secure_state_root(&runtime::paths::state_root())?;
    }
    if matches!(
        command,
        Command::Pull(_)
            | Command::Images(_)
            | Command::Rmi(_)
            | Command::Prune(_)
            | Command::Ps(_)
            | Command::Rm(_)
    ) {
        // `dstack run` sweeps on its own, after its checks.
        sweep_leftovers()?;
    }
    match command {
        Command::Run(args) if args.target == "docker" => run_docker::run(args),
        Command::Run(args) => run_workflow::run_workflow(args),
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
        Command::Exec(args) => exec::exec(args),
        Command::Rm(args) => runs::rm(args),
        Command::Artifacts(cmd) => artifacts::artifacts(cmd),
        Command::Secrets(cmd) => secrets::secrets(cmd),
        Command::SlurmJob(args) => slurm_job::run(args),
        Command::Info(args) => info::info(args),
        Command::Completions(args) => manuals::completions(args),
        Command::Man(args) => manuals::man(args),
    }
}

/// Enters dstack's user namespace (rootless) and removes what a SIGKILLed supervisor left behind: container
/// scratch directories, cgroups and network leases whose holder is gone.
fn sweep_leftovers() -> CliResult<()> {
    runtime::userns::enter_rootless_namespace()?;
    runtime::container::sweep_leftovers(&runtime::paths::state_root());
    runtime::net::sweep_leftovers();
    Ok(())
}
