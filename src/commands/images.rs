//! `dstack pull`, `images`, `rmi`, `prune images`.

use std::process::ExitCode;

use crate::cli::{ListArgs, PullArgs, RmiArgs};
use crate::error::{CliError, CliResult};

pub fn pull(_args: PullArgs) -> CliResult<ExitCode> {
    Err(CliError::new("dstack pull: not implemented yet"))
}

pub fn list(_args: ListArgs) -> CliResult<ExitCode> {
    Err(CliError::new("dstack images: not implemented yet"))
}

pub fn remove(_args: RmiArgs) -> CliResult<ExitCode> {
    Err(CliError::new("dstack rmi: not implemented yet"))
}

pub fn prune() -> CliResult<ExitCode> {
    Err(CliError::new("dstack prune images: not implemented yet"))
}
