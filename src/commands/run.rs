//! `dstack run`: the ad hoc form (`dstack run docker IMAGE ...`) and workflows (`dstack run NAME`).

use std::process::ExitCode;

use crate::cli::RunArgs;
use crate::error::{CliError, CliResult};

pub fn run(_args: RunArgs) -> CliResult<ExitCode> {
    Err(CliError::new("dstack run: not implemented yet"))
}
