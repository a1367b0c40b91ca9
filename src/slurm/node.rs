//! On the compute node (`dstack __slurm-job --state-dir DIR RUN`): what a `dstack run --slurm` batch script runs on the compute
//! node. It takes the run over (its lock, its record), reads the workflow from the run's copy of the
//! project as it was submitted, and runs it exactly as a local run does, except that the job's cgroup
//! (Slurm's) holds the limits. `DSTACK_HOME` (set by the script) is the node's state root: image store and
//! container scratch. A job that Slurm requeues leaves the run unfinished for its next start.

use std::path::Path;
use std::process::ExitCode;

use super::{JobInputs, jobs};
use crate::error::{CliError, CliResult};
use crate::job::image::PullPolicy;
use crate::job::workflow::{Site, execute};
use crate::project::Project;
use crate::runs::supervised::{
    Failure, Masker, START_FAILED, append_to_log, finish, finish_as, one_line, record_failure,
};
use crate::runs::{ActiveRun, Status, signals};
use crate::slurm;
use crate::workflow::{Catalog, Context};

/// Takes over the run `run_name` in the shared `state_dir` and runs its job on this node to its end.
pub fn run(state_dir: &Path, run_name: &str) -> CliResult<ExitCode> {
    runtime::userns::enter_rootless_namespace()?;
    let node_root = runtime::paths::state_root();
    let store = slurm::run_store(state_dir);
    let mut run = store.attach(run_name)?;
    if run.record().status.is_finished() {
        eprintln!("{} has already ended ({})", run.name(), run.record().status);
        run.remove_inputs();
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(request) = run.stop_request() {
        run.remove_inputs();
        run.finish(request.status(), None, Some("stopped before it started"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let inputs_path = run.dir().join(slurm::INPUTS);
    let inputs: JobInputs = match std::fs::read(&inputs_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(inputs) => inputs,
        Err(e) => {
            let failure = Failure {
                message: format!("reading the job's inputs {}: {e}", inputs_path.display()),
                code: START_FAILED,
            };
            return Err(record_failure(
                &mut run,
                failure,
                &Masker::new(&Default::default()),
            ));
        }
    };
    let mask = Masker::new(&inputs.secrets);
    let restarts: u32 = std::env::var("SLURM_RESTART_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let node = std::env::var("SLURMD_NODENAME")
        .ok()
        .or_else(super::hostname);
    if restarts > 0 || run.record().status != Status::Submitted {
        run.requeued(restarts)?;
        append_to_log(
            &run.log_path(),
            &format!(
                "[dstack] requeued by Slurm: starting again on {} (restart {restarts})\n",
                node.as_deref().unwrap_or("a new node")
            ),
        );
    }
    run.update(|r| {
        r.supervisor_pid = Some(std::process::id());
        if let Some(s) = r.slurm.as_mut() {
            s.node = node.clone();
        }
    })?;

    // The workflow as submitted, from the run's copy of the project.
    let context = Context {
        run_name,
        run_args: &inputs.run_args,
        secrets: &inputs.secrets,
    };
    let resolved = Project::at(&run.project_copy_dir())
        .map_err(|e| one_line(&e))
        .and_then(|p| Catalog::load(&p).map_err(|e| one_line(&e)))
        .and_then(|c| {
            c.get(&inputs.workflow)
                .map_err(|e| one_line(&e))?
                .resolve(&context)
                .map_err(|e| one_line(&e))
        });
    let workflow = match resolved {
        Ok(workflow) => workflow,
        Err(message) => {
            let failure = Failure {
                message: mask.text(&format!("reading the workflow: {message}")),
                code: START_FAILED,
            };
            return Err(finish_failed(&mut run, failure, &mask));
        }
    };
    runtime::container::sweep_leftovers(&node_root);
    runtime::net::sweep_leftovers();
    let job_id = run
        .record()
        .slurm
        .as_ref()
        .map(|s| s.job_id.clone())
        .unwrap_or_default();
    eprintln!(
        "{}: CPU and memory limits are enforced by Slurm (job {job_id})",
        run.name()
    );
    let site = Site {
        copy_from: None,
        cache: inputs.cache.clone(),
        slurm_limits: true,
    };
    let pull: PullPolicy = match inputs.pull.parse() {
        Ok(pull) => pull,
        Err(e) => {
            let failure = Failure {
                message: e.to_string(),
                code: START_FAILED,
            };
            return Err(finish_failed(&mut run, failure, &mask));
        }
    };
    let ended = execute(
        &mut run,
        &workflow,
        &site,
        &node_root,
        &inputs.secrets,
        pull,
        &mask,
    );
    let status = match ended {
        Ok(status) => status,
        Err(failure) => return Err(finish_failed(&mut run, failure, &mask)),
    };
    let code = status.code.clamp(0, 255) as u8;
    // Ended by a signal nobody asked for through dstack: Slurm's word says why.
    let slurm_end = if run.stop_request().is_none() && status.code >= 128 {
        jobs::info(&job_id).ok().flatten()
    } else {
        None
    };
    // Slurm is requeueing the job: the run goes on at its next start, with its project copy (and what
    // the job wrote there) as it is.
    if let Some(info) = &slurm_end
        && info.restarts > restarts
    {
        let _ = signals::ignore_stop_signals();
        mask.log(&run);
        run.requeued(info.restarts)?;
        run.update(|r| {
            r.message = Some("requeued by Slurm; it goes on when it starts again".into())
        })?;
        append_to_log(
            &run.log_path(),
            "[dstack] interrupted: Slurm requeued the job\n",
        );
        return Ok(ExitCode::from(code));
    }
    // The time limit ends a job with the same SIGTERM as `scancel`: a failure, not a stop.
    if slurm_end.is_some_and(|i| i.hit_time_limit()) {
        append_to_log(
            &run.log_path(),
            &format!("[dstack] {}\n", slurm::TIME_LIMIT),
        );
        let end = (Status::Failed, Some(slurm::TIME_LIMIT.to_string()));
        finish_as(&mut run, &status, &mask, end);
    } else {
        finish(&mut run, &status, &mask);
    }
    run.remove_inputs();
    Ok(ExitCode::from(code))
}

/// `record_failure`, and the inputs (with their secrets) removed.
fn finish_failed(run: &mut ActiveRun, failure: Failure, mask: &Masker) -> CliError {
    let err = record_failure(run, failure, mask);
    run.remove_inputs();
    err
}
