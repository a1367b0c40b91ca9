//! `start`: opens the start gate of a created container; its program runs (after its `startContainer`
//! hooks), then the `poststart` hooks run here (a failure there is a warning, as the spec says).

use std::process::ExitCode;

use clap::Args;
use runtime::container::{HookPoint, gate, hooks};

use crate::Globals;
use crate::error::{CmdResult, Failure};
use crate::record::{self, Status};

#[derive(Debug, Args)]
pub struct StartArgs {
    pub id: String,
}

pub fn start(globals: &Globals, args: StartArgs) -> CmdResult {
    release(globals, &args.id)?;
    Ok(ExitCode::SUCCESS)
}

/// Starts a created container and runs its poststart hooks.
pub fn release(globals: &Globals, id: &str) -> Result<(), Failure> {
    let (locked, rec) = record::load(globals, id)?;
    match rec.status(&locked.dir) {
        Status::Created => {}
        other => {
            return Err(Failure::new(format!(
                "container {id} is {}: only a created container can start",
                other.as_str()
            )));
        }
    }
    gate::open(&locked.dir).map_err(|e| Failure::new(format!("starting container {id}: {e}")))?;
    let spec = record::config(&locked.dir)?;
    // As the start left it (the program may already have ended: the hooks still learn its pid).
    let state = rec.state(Status::Running).json();
    if let Err(e) = hooks::run(spec.hooks().as_ref(), HookPoint::Poststart, &state) {
        tracing::warn!("{}", runtime::report::Chain(&e));
    }
    Ok(())
}
