//! `dstack run NAME --slurm` (or with `default: true` in `.dstack/slurm.yaml`): the workflow as a Slurm
//! batch job. Checked here as for a local run (the workflow, its secrets); the resources are Slurm's to
//! check. The run is created in the shared state directory with its copy of the project, submitted with
//! `sbatch`, and then followed: its output streamed from the shared log until the job's `dstack` records
//! the end, and `dstack` exits with the job's exit code. `-d` returns once it is submitted.
//! See `node` for what happens on the node.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{JobInputs, SlurmConfig, SlurmError, jobs, options};
use crate::cli::RunArgs;
use crate::error::{CliError, CliResult, Context as _};
use crate::fsutil;
use crate::job::image::PullPolicy;
use crate::job::workflow::{Checked, UNNAMED};
use crate::project::Project;
use crate::runs::supervised::{Masker, START_FAILED};
use crate::runs::{RunRecord, RunStore, SlurmRecord, Status, StopRequest, cache, copy};
use crate::slurm;

/// The project and its Slurm settings when this run goes to Slurm: `--slurm`, or `default: true` without
/// `--local`.
pub fn wanted(args: &RunArgs) -> CliResult<Option<(Project, SlurmConfig)>> {
    if args.local && args.slurm {
        return Err(CliError::new("--slurm and --local: choose one"));
    }
    if args.local {
        return Ok(None);
    }
    let project = Project::current()?;
    let config = SlurmConfig::load(&project)?;
    match config {
        Some(config) if args.slurm || config.default => Ok(Some((project, config))),
        None if args.slurm => Ok(Some((project, SlurmConfig::default()))),
        _ => Ok(None),
    }
}

pub fn submit(args: RunArgs, project: Project, config: SlurmConfig) -> CliResult<ExitCode> {
    let state_root = runtime::paths::state_root();
    let checked = Checked::new(&args.target, &args.rest, &project, &state_root)?;
    let pull: PullPolicy = args.pull.parse()?;
    let mask = &checked.mask;
    let preview = checked.resolve(UNNAMED)?;
    if preview
        .resources
        .gpu
        .as_ref()
        .is_some_and(|g| g.memory.is_some())
    {
        eprintln!(
            "note: Slurm has no GPU memory request; `gpu.memory` is checked on the node only"
        );
    }
    let state_dir = config
        .state_dir
        .clone()
        .unwrap_or_else(|| state_root.clone());
    if args.dry_run {
        let run_dir = state_dir.join("runs").join(UNNAMED);
        let plan = serde_json::json!({
            "workflow": preview.name,
            "sbatch": options::sbatch_args(&preview.resources, &config, UNNAMED, &run_dir),
            "script": slurm::batch_script(&dstack_binary()?, &state_dir, UNNAMED, &config.node_root()),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plans serialize")
        );
        return Ok(ExitCode::SUCCESS);
    }
    // No Slurm here: say so before anything is created.
    if !on_path("sbatch") {
        return Err(SlurmError::NoSlurm { tool: "sbatch" }.into());
    }

    let store = slurm::run_store(&state_dir).also(&state_root);
    let record = RunRecord::new(
        "",
        &preview.name,
        project.dir().to_path_buf(),
        &mask.text(&preview.image),
    );
    let mut run = store.create(record)?;
    let name = run.name().to_string();
    let submitted = (|| -> CliResult<(String, Vec<String>)> {
        let workflow = checked.resolve(&name)?;
        // The code as it is now: the job may start much later.
        let skip: Vec<PathBuf> = [&state_root, &state_dir]
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        copy::copy_tree(project.dir(), &run.project_copy_dir(), &skip)
            .context("copying the project for /workflow")?;
        let inputs = JobInputs {
            workflow: workflow.name.clone(),
            run_args: checked.run_args.clone(),
            pull: pull.to_string(),
            secrets: checked.secrets.clone(),
            project: project.dir().to_path_buf(),
            cache: cache::workflow_dir(&state_dir, &project, &workflow.name),
        };
        let bytes = serde_json::to_vec_pretty(&inputs).expect("inputs serialize");
        let inputs_path = run.dir().join(slurm::INPUTS);
        fsutil::write_atomic(&inputs_path, &bytes, 0o600)
            .context(format!("writing {}", inputs_path.display()))?;
        let script = run.dir().join(slurm::SCRIPT);
        let text = slurm::batch_script(&dstack_binary()?, &state_dir, &name, &config.node_root());
        fsutil::write_atomic(&script, text.as_bytes(), 0o755)
            .context(format!("writing {}", script.display()))?;
        let sbatch = options::sbatch_args(&workflow.resources, &config, &name, run.dir());
        let job_id = jobs::submit(&sbatch, &script)?;
        Ok((job_id, sbatch))
    })();
    let (job_id, sbatch) = match submitted {
        Ok(done) => done,
        Err(err) => {
            let _ = run.discard();
            return Err(err);
        }
    };
    let partition = sbatch
        .iter()
        .find_map(|a| a.strip_prefix("--partition="))
        .map(str::to_string)
        .or_else(|| jobs::info(&job_id).ok().flatten().and_then(|i| i.partition));
    run.update(|r| {
        r.supervisor_pid = None;
        r.slurm = Some(SlurmRecord {
            job_id: job_id.clone(),
            partition: partition.clone(),
            login: super::hostname(),
            node: None,
            restarts: 0,
            state: None,
        });
    })?;
    // From here the job's `dstack` (or, until it starts, Slurm) says whether the run is alive.
    drop(run);
    let limits = options::describe(&sbatch);
    let job_line = format!(
        "slurm job {job_id} (partition {}; {limits}, enforced by Slurm)",
        partition.as_deref().unwrap_or("default")
    );
    if args.detach {
        println!("{name}");
        eprintln!("{job_line}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("run {name}");
    eprintln!("{job_line}");
    follow(&store, &name, mask)
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP seen while following.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_interrupt(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

/// Streams the run's log until its end is recorded; the job's exit code. The first Ctrl-C stops the run
/// (through Slurm, with the grace period), a second one leaves it running.
fn follow(store: &RunStore, name: &str, mask: &Masker) -> CliResult<ExitCode> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(count_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only increments an atomic counter, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.context("installing the stop signal handlers")?;
    }
    let view = store.get(name)?;
    let log = view.log_path();
    let mut announced = false;
    let mut stop_asked: Option<Instant> = None;
    let mut forced = false;
    let mut left = false;
    let live = || {
        let interrupts = INTERRUPTS.load(Ordering::SeqCst);
        if interrupts >= 2 {
            left = true;
            return false;
        }
        if interrupts == 1 && stop_asked.is_none() {
            eprintln!("stopping {name} (Ctrl-C again to leave it running)");
            if let Err(e) = store.request_stop(name, StopRequest::Graceful) {
                eprintln!("warning: stopping {name}: {}", runtime::report::Chain(&e));
            }
            stop_asked = Some(Instant::now());
        }
        if let Some(asked) = stop_asked
            && !forced
            && asked.elapsed() > STOP_GRACE
        {
            forced = true;
            let _ = store.force_stop(name);
        }
        let Ok(view) = store.get(name) else {
            return false;
        };
        if !announced && view.record.status == Status::Running {
            announced = true;
            announce_ports(&view.record);
        }
        view.live
    };
    let mut out = std::io::stdout().lock();
    match crate::runs::logs::print(
        &log,
        &mut out,
        &mask_values(mask),
        true,
        Duration::from_millis(200),
        live,
    ) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context(format!("reading the output of {name}")),
    }
    if left {
        eprintln!(
            "left {name} running; `dstack logs -f {name}` follows it, `dstack stop {name}` stops it"
        );
        return Ok(ExitCode::from(130));
    }
    let record = store.get(name)?.record;
    if let Some(code) = record.exit_code {
        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
    }
    let message = record
        .message
        .unwrap_or_else(|| format!("the run {}", record.status));
    let code = if record.status == Status::Failed {
        START_FAILED
    } else {
        1
    };
    Err(CliError::new(message).with_exit_code(code))
}

/// How long a stopped job gets before it is killed (the runtime's own grace is 10 s).
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The secret values to mask in the output (the Masker's, without its JSON forms).
fn mask_values(mask: &Masker) -> Vec<String> {
    mask.values().to_vec()
}

/// `PORT_0: node7:8080` and the `ssh -L` line that reaches it from the user's machine through the login
/// node.
fn announce_ports(record: &RunRecord) {
    let Some(job) = &record.slurm else {
        return;
    };
    let node = job.node.as_deref().unwrap_or("NODE");
    for (i, port) in record.ports.iter().enumerate() {
        eprintln!("PORT_{i}: {node}:{port}");
        match &job.login {
            Some(login) => eprintln!("  reach it with: ssh -L {port}:{node}:{port} {login}"),
            None => eprintln!("  reach it with: ssh -L {port}:{node}:{port} LOGIN-NODE"),
        }
    }
}

/// The running `dstack` binary: compute nodes run the same file, so it must be on a shared path.
fn dstack_binary() -> CliResult<PathBuf> {
    std::env::current_exe().context("finding the dstack binary to run on the compute node")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| is_executable(&d.join(tool))))
        .unwrap_or(false)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
