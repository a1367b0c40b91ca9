//! `delete [--force] ID`: removes a stopped container (with `--force`, kills it first): its processes, its
//! cgroup, then the `poststop` hooks (a failure is a warning) and the state directory.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use runtime::container::{HookPoint, hooks};

use crate::Globals;
use crate::error::{CmdResult, Failure};
use crate::record::{self, Status};

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill the container first when it still runs; a container that does not exist is not an error
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

pub fn delete(globals: &Globals, args: DeleteArgs) -> CmdResult {
    remove(globals, &args.id, args.force)?;
    Ok(ExitCode::SUCCESS)
}

pub fn remove(globals: &Globals, id: &str, force: bool) -> Result<(), Failure> {
    let (locked, rec) = match record::load(globals, id) {
        Ok(found) => found,
        Err(_) if force && !record::dir(globals, id).join("state.json").exists() => {
            // A create that never finished may have left a directory without a record.
            let _ = std::fs::remove_dir_all(record::dir(globals, id));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let status = rec.status(&locked.dir);
    if status != Status::Stopped {
        if !force {
            return Err(Failure::new(format!(
                "container {id} is {}: stop it first, or use --force",
                status.as_str()
            )));
        }
        crate::kill::signal(&rec, libc::SIGKILL, true)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while rec.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if let Some(dirs) = &rec.cgroup
        && let Err(e) = dirs.remove()
    {
        tracing::warn!(
            "removing the cgroup of container {id}: {}",
            runtime::report::Chain(&e)
        );
    }
    let spec = record::config(&locked.dir).ok();
    let state = rec.state(Status::Stopped).json();
    if let Err(e) = hooks::run(
        spec.as_ref().and_then(|s| s.hooks().as_ref()),
        HookPoint::Poststop,
        &state,
    ) {
        tracing::warn!("{}", runtime::report::Chain(&e));
    }
    std::fs::remove_dir_all(&locked.dir)
        .map_err(|e| Failure::new(format!("{}: {e}", locked.dir.display())))
}
