//! `dstack ps`, `logs`, `stop`, `rm`, `prune cache`: everything that reads or changes run records.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::table::print_table;
use crate::cli::{LogsArgs, PsArgs, RmArgs, StopArgs};
use crate::error::{CliError, CliResult, Context as _};
use crate::project::Project;
use crate::runs::record::{self, RunRecord};
use crate::runs::{RunStore, RunView, StopRequest, cache, logs};
use crate::secrets::SecretStore;

fn store() -> RunStore {
    crate::slurm::visible_runs(&runtime::paths::state_root())
}

pub fn ps(args: PsArgs) -> CliResult<ExitCode> {
    let runs: Vec<RunView> = store()
        .list()?
        .into_iter()
        .filter(|v| args.all || !v.record.status.is_finished())
        .collect();
    let now = record::now();
    let slurm: Vec<Option<String>> = runs.iter().map(slurm_column).collect();
    if args.json {
        let rows: Vec<PsJson<'_>> = runs
            .iter()
            .zip(&slurm)
            .map(|(v, s)| PsJson::new(&v.record, now, s.as_deref()))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![[
        "RUN".to_string(),
        "WORKFLOW".to_string(),
        "STATUS".to_string(),
        "EXIT".to_string(),
        "STARTED".to_string(),
        "DURATION".to_string(),
        "SLURM".to_string(),
    ]];
    for (view, slurm) in runs.iter().zip(&slurm) {
        let r = &view.record;
        rows.push([
            r.name.clone(),
            r.workflow.clone(),
            r.status.to_string(),
            r.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            record::ago(now - r.submitted_at),
            record::duration(r.duration(now)),
            slurm.clone().unwrap_or_default(),
        ]);
    }
    if slurm.iter().all(Option::is_none) {
        // No Slurm runs: no Slurm column.
        let rows: Vec<[String; 6]> = rows
            .into_iter()
            .map(|r| std::array::from_fn(|i| r[i].clone()))
            .collect();
        print_table(&rows);
    } else {
        print_table(&rows);
    }
    if runs.is_empty() && !args.all {
        eprintln!("(no runs going; `dstack ps -a` shows finished ones too)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `1234 RUNNING on node7` for a Slurm run: its job and what Slurm says of it now (or, once Slurm has
/// forgotten the job, what was recorded).
fn slurm_column(view: &RunView) -> Option<String> {
    let job = view.record.slurm.as_ref()?;
    let info = crate::slurm::jobs::info(&job.job_id).ok().flatten();
    let state = info
        .as_ref()
        .map(|i| i.state.clone())
        .or_else(|| job.state.clone())
        .unwrap_or_else(|| "-".into());
    let node = info.and_then(|i| i.node).or_else(|| job.node.clone());
    Some(match node {
        Some(node) if state != "PENDING" => format!("{} {state} on {node}", job.job_id),
        _ => format!("{} {state}", job.job_id),
    })
}

/// One row of `ps --json`.
#[derive(Serialize)]
struct PsJson<'a> {
    run: &'a str,
    workflow: &'a str,
    status: String,
    exit_code: Option<i32>,
    project: &'a Path,
    image: &'a str,
    submitted_at: f64,
    started_at: Option<f64>,
    finished_at: Option<f64>,
    duration_seconds: f64,
    ports: &'a [u16],
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slurm: Option<SlurmJson<'a>>,
}

/// `ps --json`'s `slurm`: the job id, Slurm's state and the node.
#[derive(Serialize)]
struct SlurmJson<'a> {
    job_id: &'a str,
    partition: Option<&'a str>,
    node: Option<&'a str>,
    restarts: u32,
    /// `1234 RUNNING on node7`, as the table shows it.
    summary: Option<&'a str>,
}

impl<'a> PsJson<'a> {
    fn new(r: &'a RunRecord, now: f64, summary: Option<&'a str>) -> PsJson<'a> {
        PsJson {
            run: &r.name,
            workflow: &r.workflow,
            status: r.status.to_string(),
            exit_code: r.exit_code,
            project: &r.project,
            image: &r.image,
            submitted_at: r.submitted_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_seconds: (r.duration(now) * 10.0).round() / 10.0,
            ports: &r.ports,
            message: r.message.as_deref(),
            slurm: r.slurm.as_ref().map(|s| SlurmJson {
                job_id: &s.job_id,
                partition: s.partition.as_deref(),
                node: s.node.as_deref(),
                restarts: s.restarts,
                summary,
            }),
        }
    }
}

pub fn logs(args: LogsArgs) -> CliResult<ExitCode> {
    let store = store();
    let view = store.get(&args.run)?;
    let secrets = project_secret_values(&view.record.project);
    let name = view.record.name.clone();
    let live = || store.get(&name).map(|v| v.live).unwrap_or(false);
    let mut out = std::io::stdout().lock();
    let result = logs::print(
        &view.log_path(),
        &mut out,
        &secrets,
        args.follow,
        Duration::from_millis(200),
        live,
    );
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `dstack logs RUN | head`: the reader went away.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context(format!("reading the output of {name}")),
    }
}

/// The values of the secrets of the project a run belongs to, for masking; none if they cannot be read.
pub(super) fn project_secret_values(project_dir: &Path) -> Vec<String> {
    let Ok(project) = Project::at(project_dir) else {
        return Vec::new();
    };
    SecretStore::for_project(&runtime::paths::state_root(), &project)
        .load()
        .map(|s| s.into_values().collect())
        .unwrap_or_default()
}

pub fn stop(args: StopArgs) -> CliResult<ExitCode> {
    let store = store();
    let how = if args.abort {
        StopRequest::Abort
    } else {
        StopRequest::Graceful
    };
    let targets: Vec<String> = match &args.run {
        Some(run) => vec![store.get(run)?.record.name],
        None => store
            .list()?
            .into_iter()
            .filter(|v| v.live)
            .map(|v| v.record.name)
            .collect(),
    };
    if targets.is_empty() {
        eprintln!("no runs are going");
    }
    let mut asked = Vec::new();
    for name in targets {
        if store.request_stop(&name, how)? {
            asked.push(name);
        } else {
            let status = store.get(&name)?.record.status;
            eprintln!("{name} has already ended ({status})");
        }
    }
    // A graceful stop gives the job the runtime's grace period (10 s) before SIGKILL. A Slurm job gets
    // that grace too, then is killed through Slurm, which may take a while longer to report it ended.
    let slurm = asked
        .iter()
        .any(|n| store.get(n).is_ok_and(|v| v.record.slurm.is_some()));
    let patience = match (how, slurm) {
        (StopRequest::Graceful, false) => Duration::from_secs(20),
        (StopRequest::Abort, false) => Duration::from_secs(10),
        (_, true) => Duration::from_secs(45),
    };
    let started = Instant::now();
    let deadline = started + patience;
    for name in asked {
        let mut forced = false;
        loop {
            let view = store.get(&name)?;
            if !view.live {
                eprintln!("{name} {}", view.record.status);
                break;
            }
            if !forced && view.record.slurm.is_some() && started.elapsed() > SLURM_GRACE {
                forced = true;
                store.force_stop(&name)?;
            }
            if Instant::now() >= deadline {
                return Err(CliError::new(format!(
                    "{name} has not ended yet after {}s; try `dstack stop -x {name}`",
                    patience.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long a Slurm job has to end after SIGTERM before it is killed.
const SLURM_GRACE: Duration = Duration::from_secs(15);

pub fn rm(args: RmArgs) -> CliResult<ExitCode> {
    // A rootless job's files may belong to the user's subordinate ids: only the user namespace can
    // remove them.
    runtime::userns::enter_rootless_namespace()?;
    let store = store();
    match &args.run {
        Some(run) => {
            store.remove(run)?;
            eprintln!("removed {run}");
        }
        None => {
            let mut removed = 0;
            for view in store.list()?.into_iter().filter(|v| !v.live) {
                store.remove(&view.record.name)?;
                removed += 1;
            }
            eprintln!(
                "removed {removed} finished run{}",
                if removed == 1 { "" } else { "s" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn prune_cache(workflow: &str) -> CliResult<ExitCode> {
    runtime::userns::enter_rootless_namespace()?;
    let project = Project::current()?;
    if cache::prune(&runtime::paths::state_root(), &project, workflow)? {
        eprintln!(
            "removed the cache of `{workflow}` in {}",
            project.dir().display()
        );
    } else {
        eprintln!("`{workflow}` has no cache in {}", project.dir().display());
    }
    Ok(ExitCode::SUCCESS)
}
