//! `dstack __slurm-job --state-dir DIR RUN`: what a `dstack run --slurm` batch script runs on the compute
//! node (see `slurm::node`).

use std::process::ExitCode;

use crate::cli::SlurmJobArgs;
use crate::error::CliResult;

pub fn run(args: SlurmJobArgs) -> CliResult<ExitCode> {
    crate::slurm::node::run(&args.state_dir, &args.run)
}
