//! Runs as Slurm batch jobs (`dstack run NAME --slurm`).
//!
//! The login node creates the run (record, log, the copy of the project for `/workflow`) in a state
//! directory the compute nodes also see, writes the job's inputs to `runs/<name>/slurm-job.json` (mode
//! 0600: it holds the project's secrets until the run ends) and submits a batch script that runs the same
//! `dstack` binary on the node: `dstack __slurm-job --state-dir DIR NAME`. That process pulls the image into the
//! node's store and runs the container through the same path as a local run, writing the record, the log
//! and the artifacts in the shared run directory.
//!
//! Liveness: the job's `dstack` holds the run's lock while it runs; between submission and start (and
//! after a `dstack` killed on the node) Slurm's own view of the job decides. A run whose job Slurm has
//! ended (or forgotten) without its end being recorded is finished by whoever looks next, from Slurm's
//! final state (`TIMEOUT`, `NODE_FAIL`, `CANCELLED`...).
//!
//! Requeue: an `interruptible` run is submitted with `--requeue`. When Slurm requeues it (preemption, a
//! node failure, `scontrol requeue`), the job's `dstack` sees its job's restart count go up, records the
//! run as `submitted` again instead of ending it, and keeps the project copy; the next start on any node
//! continues the same run (same name, record, log, artifacts).

pub mod config;
pub mod jobs;
pub mod node;
pub mod options;
pub mod submit;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use config::SlurmConfig;
pub use jobs::JobInfo;

use crate::runs::scheduler::{JobState, Scheduler, SchedulerError};
use crate::runs::{RunStore, SlurmRecord, Status, StopRequest};

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "{tool} not found: this machine has no Slurm commands; run dstack on a login node of the cluster \
         (where `sbatch` works), or without --slurm"
    )]
    NoSlurm { tool: &'static str },
    #[error(
        "Slurm has no partition `{partition}`{known}: set `partition` in .dstack/slurm.yaml to one that \
         `sinfo` lists"
    )]
    UnknownPartition { partition: String, known: String },
    #[error(
        "no node in {partition} can run this job ({request}): {why}; ask for less in the workflow's \
         `resources`, or pick a partition with bigger nodes in .dstack/slurm.yaml{gres_hint}"
    )]
    Unsatisfiable {
        request: String,
        partition: String,
        why: String,
        /// For typed GPU requests: the type may just be spelled differently on this cluster.
        gres_hint: String,
    },
    #[error(
        "Slurm does not know the GPUs `{gres}`: map the workflow's GPU name to the cluster's GRES type in \
         .dstack/slurm.yaml (e.g. `gres: {{A100: a100}}`; `sinfo -o '%G'` lists them)"
    )]
    UnknownGres { gres: String },
    #[error("sbatch refused the job: {0}")]
    Refused(String),
    #[error("{0}")]
    Query(String),
    #[error("running {tool}")]
    Run {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
}

/// What the job's `dstack` needs besides the run record: `runs/<name>/slurm-job.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInputs {
    pub workflow: String,
    /// `${{ run.args }}`.
    pub run_args: String,
    /// The pull policy: missing, always, never.
    pub pull: String,
    /// The project's secrets (the file is 0600 and removed when the run ends).
    pub secrets: BTreeMap<String, String>,
    /// The project on the login node (the job reads the workflows from the run's copy of it).
    pub project: PathBuf,
    /// The workflow's cache directory (under the shared state directory).
    pub cache: PathBuf,
}

pub const INPUTS: &str = crate::runs::JOB_INPUTS;
pub const SCRIPT: &str = "slurm-job.sh";

/// The batch script: the node's state root for `dstack`, then `dstack` itself, replacing the shell so that
/// Slurm's signals reach it directly.
pub fn batch_script(dstack: &Path, state_dir: &Path, run_name: &str, node_root: &Path) -> String {
    format!(
        "#!/bin/sh\n# dstack run {run_name}: the workflow runs in a container on this node.\n\
         export DSTACK_HOME={}\nexec {} __slurm-job --state-dir {} {}\n",
        quote(&node_root.to_string_lossy()),
        quote(&dstack.to_string_lossy()),
        quote(&state_dir.to_string_lossy()),
        quote(run_name),
    )
}

/// Single-quoted for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The run store's view of Slurm jobs: `squeue`/`sacct` for liveness, `scancel` for stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slurm;

impl Scheduler for Slurm {
    fn state(&self, job: &SlurmRecord, stop: Option<StopRequest>) -> JobState {
        match jobs::info(&job.job_id) {
            Ok(Some(info)) if info.is_active() => JobState::Active,
            Ok(info) => {
                let (status, message) = end_from_slurm(info.as_ref(), stop);
                JobState::Ended {
                    status,
                    message,
                    state: info.map(|i| i.state),
                }
            }
            Err(err) => {
                tracing::debug!("{}", runtime::report::Chain(&err));
                JobState::Unknown
            }
        }
    }

    fn stop(
        &self,
        job: &SlurmRecord,
        how: StopRequest,
        submitted: bool,
    ) -> Result<(), SchedulerError> {
        let result = match how {
            StopRequest::Graceful if submitted => jobs::cancel(&job.job_id),
            StopRequest::Graceful => jobs::signal(&job.job_id, "TERM"),
            StopRequest::Abort => {
                jobs::signal(&job.job_id, "KILL").and_then(|()| jobs::cancel(&job.job_id))
            }
        };
        result.map_err(Into::into)
    }

    fn kill(&self, job: &SlurmRecord) -> Result<(), SchedulerError> {
        jobs::signal(&job.job_id, "KILL")
            .and_then(|()| jobs::cancel(&job.job_id))
            .map_err(Into::into)
    }
}

/// A run store that asks Slurm about the runs it submitted.
pub fn run_store(state_root: &Path) -> RunStore {
    RunStore::new(state_root).scheduled_by(std::sync::Arc::new(Slurm))
}

/// The store the run commands (`ps`, `logs`, `stop`, `rm`, `artifacts`) read: the state root's runs, and
/// those of the current project's Slurm `state_dir` when it has one.
pub fn visible_runs(state_root: &Path) -> RunStore {
    let store = run_store(state_root);
    let configured = crate::project::Project::current()
        .ok()
        .and_then(|p| SlurmConfig::load(&p).ok().flatten())
        .and_then(|c| c.state_dir);
    match configured {
        Some(dir) => store.also(&dir),
        None => store,
    }
}

/// This machine's name, as the compute nodes' users reach it.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
}

/// Why a run that reached its Slurm time limit failed.
pub const TIME_LIMIT: &str = "the Slurm job reached its time limit (`time` in .dstack/slurm.yaml)";

/// How a run whose record was left unfinished ended, from Slurm's final word on its job (`None`: Slurm
/// has forgotten it) and `dstack stop`'s request.
pub fn end_from_slurm(job: Option<&JobInfo>, stop: Option<StopRequest>) -> (Status, String) {
    if let Some(request) = stop {
        return (request.status(), "stopped through Slurm".to_string());
    }
    let Some(job) = job else {
        return (
            Status::Aborted,
            "Slurm no longer knows the job and its end was not recorded".to_string(),
        );
    };
    let state = job.state.as_str();
    let status = match state {
        "CANCELLED" => Status::Stopped,
        "TIMEOUT" | "OUT_OF_MEMORY" | "FAILED" | "DEADLINE" => Status::Failed,
        _ => Status::Aborted,
    };
    let what = match state {
        "CANCELLED" => "the Slurm job was cancelled (scancel)".to_string(),
        "TIMEOUT" => TIME_LIMIT.to_string(),
        "OUT_OF_MEMORY" => "the Slurm job ran out of memory".to_string(),
        "NODE_FAIL" => "the Slurm job's node failed".to_string(),
        "PREEMPTED" => {
            "the Slurm job was preempted (interruptible workflows are requeued)".to_string()
        }
        other => {
            format!("the Slurm job ended {other} before dstack recorded the end (see slurm.out)")
        }
    };
    (status, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_execs_dstack_with_quoted_paths() {
        let s = batch_script(
            Path::new("/opt/dstack"),
            Path::new("/shared/it's"),
            "brave-otter-1",
            Path::new("/var/tmp/dstack-me"),
        );
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(
            s.contains("export DSTACK_HOME='/var/tmp/dstack-me'\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "exec '/opt/dstack' __slurm-job --state-dir '/shared/it'\\''s' 'brave-otter-1'\n"
            ),
            "{s}"
        );
    }

    #[test]
    fn unrecorded_ends_follow_slurm() {
        let job = |state: &str| JobInfo {
            state: state.into(),
            reason: None,
            node: None,
            partition: None,
            restarts: 0,
        };
        assert_eq!(
            end_from_slurm(Some(&job("TIMEOUT")), None).0,
            Status::Failed
        );
        assert_eq!(
            end_from_slurm(Some(&job("CANCELLED")), None).0,
            Status::Stopped
        );
        assert_eq!(
            end_from_slurm(Some(&job("NODE_FAIL")), None).0,
            Status::Aborted
        );
        assert_eq!(end_from_slurm(None, None).0, Status::Aborted);
        assert_eq!(
            end_from_slurm(Some(&job("FAILED")), Some(StopRequest::Graceful)).0,
            Status::Stopped
        );
        assert!(
            end_from_slurm(Some(&job("TIMEOUT")), None)
                .1
                .contains("time limit")
        );
    }
}
