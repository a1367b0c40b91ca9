//! `state ID`: the runtime spec's state JSON.

use std::process::ExitCode;

use clap::Args;

use crate::Globals;
use crate::error::CmdResult;
use crate::record;

#[derive(Debug, Args)]
pub struct StateArgs {
    pub id: String,
}

pub fn state(globals: &Globals, args: StateArgs) -> CmdResult {
    let (locked, rec) = record::load(globals, &args.id)?;
    let state = rec.state(rec.status(&locked.dir));
    println!(
        "{}",
        serde_json::to_string_pretty(&state).expect("states serialize")
    );
    Ok(ExitCode::SUCCESS)
}
