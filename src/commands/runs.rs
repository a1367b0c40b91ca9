//! `dstack ps`, `logs`, `stop`, `rm`, `prune cache`: everything that reads or changes run records.

use std::process::ExitCode;

use crate::cli::{LogsArgs, PsArgs, RmArgs, StopArgs};
use crate::error::{CliError, CliResult};

pub fn ps(_args: PsArgs) -> CliResult<ExitCode> {
    Err(CliError::new("dstack ps: not implemented yet"))
}

pub fn logs(_args: LogsArgs) -> CliResult<ExitCode> {
    Err(CliError::new("dstack logs: not implemented yet"))
}

pub fn stop(_args: StopArgs) -> CliResult<ExitCode> {
    Err(CliError::new("dstack stop: not implemented yet"))
}

pub fn rm(_args: RmArgs) -> CliResult<ExitCode> {
    Err(CliError::new("dstack rm: not implemented yet"))
}

pub fn prune_cache(_workflow: &str) -> CliResult<ExitCode> {
    Err(CliError::new("dstack prune cache: not implemented yet"))
}
