//! `dstack secrets add|list|delete`.

use std::process::ExitCode;

use crate::cli::SecretsCommand;
use crate::error::{CliError, CliResult};

pub fn secrets(_cmd: SecretsCommand) -> CliResult<ExitCode> {
    Err(CliError::new("dstack secrets: not implemented yet"))
}
