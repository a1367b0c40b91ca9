//! `dstack artifacts list|download`.

use std::process::ExitCode;

use crate::cli::ArtifactsCommand;
use crate::error::{CliError, CliResult};

pub fn artifacts(_cmd: ArtifactsCommand) -> CliResult<ExitCode> {
    Err(CliError::new("dstack artifacts: not implemented yet"))
}
