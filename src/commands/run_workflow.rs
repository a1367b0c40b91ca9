//! `dstack run NAME [ARGS]`: a workflow from the project's `.dstack/workflows/`, run as a container with a
//! run record.
//!
//! Everything that can be checked is checked before anything starts (the workflow, its secrets, the
//! machine's resources). Then a run is allocated and its name printed, the project is copied for
//! `/workflow`, the image pulled (with `registry_auth`), the job planned and started through the same
//! planner and runtime as `dstack run docker`, supervised to its end, and its artifacts saved however it
//! ends. `dstack` exits with the job's exit code.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use runtime::container::ExitStatus;
use runtime::image::registry::{Credentials, RegistryOptions};
use runtime::image::store::{Image, Store};
use runtime::net::{Network, NetworkConfig};

use super::run::{self, Launch};
use crate::cli::RunArgs;
use crate::error::{CliError, CliResult, Context as _};
use crate::plan::{self, Host};
use crate::project::Project;
use crate::runs::detach::{self, Side};
use crate::runs::job::{self, HostDirs};
use crate::runs::machine::Machine;
use crate::runs::{ActiveRun, RunRecord, RunStore, Status, StopRequest, cache, logs, signals};
use crate::secrets::SecretStore;
use crate::workflow::{Catalog, Context, Workflow, shell};

/// What `${{ run.name }}` reads as before a run has a name (checks, `--dry-run`).
pub(super) const UNNAMED: &str = "<run-name>";

pub fn run_workflow(args: RunArgs) -> CliResult<ExitCode> {
    let args = own_flags(args);
    // Before the user namespace: sbatch must run as the user the cluster knows.
    if let Some((project, config)) = super::slurm_submit::wanted(&args)? {
        return super::slurm_submit::submit(args, project, config);
    }
    runtime::userns::enter_rootless_namespace()?;
    let state_root = runtime::paths::state_root();
    let project = Project::current()?;
    let catalog = Catalog::load(&project)?;
    let entry = catalog.get(&args.target)?;
    let secrets = SecretStore::for_project(&state_root, &project).load()?;
    let mask = Masker::new(&secrets);
    let run_args = shell::join(&args.rest);
    let context = |run_name| Context {
        run_name,
        run_args: &run_args,
        secrets: &secrets,
    };
    check_pull_policy(&args.pull)?;

    // Everything that can fail before a run exists fails here, with nothing started.
    let preview = entry
        .resolve(&context(UNNAMED))
        .map_err(|e| mask.error(&e, 1))?;
    let machine = Machine::probe();
    machine.check(&preview.resources)?;
    if let Some(request) = gpu_request(&preview, UNNAMED) {
        // Discovery, matching and the other jobs' leases, on a throwaway spec; the lease ends at once.
        runtime::gpu::apply(&mut oci_spec::runtime::Spec::default(), &request).map_err(|e| {
            let also = match e {
                runtime::gpu::GpuError::NoGpu { .. } => format!("; it has {}", machine.summary()),
                _ => String::new(),
            };
            CliError::new(format!("{e}{also}"))
        })?;
    }
    if preview.version.is_some() {
        eprintln!(
            "note: `version` has no effect for the docker provider; the image decides what is installed"
        );
    }
    if preview.resources.interruptible {
        eprintln!(
            "note: `interruptible` has no effect on a single machine; the run is not interrupted"
        );
    }
    if args.dry_run {
        return dry_run(&preview, &project, &state_root, &secrets, &args.pull, &mask);
    }

    // What SIGKILLed supervisors left: scratch directories, cgroups, network interfaces and NAT rules.
    runtime::container::sweep_leftovers(&state_root);
    runtime::net::sweep_leftovers();
    let store = RunStore::new(&state_root);
    let record = RunRecord::new(
        "",
        entry.name(),
        project.dir().to_path_buf(),
        &mask.text(&preview.image),
    );
    let mut run = store.create(record)?;
    let workflow = match entry.resolve(&context(run.name())) {
        Ok(workflow) => workflow,
        Err(err) => {
            let _ = run.discard();
            return Err(mask.error(&err, 1));
        }
    };
    if args.detach {
        match detach::detach() {
            Ok(Side::Parent { supervisor }) => {
                // Return once the record names the supervisor, so that `dstack stop` right after `-d`
                // signals the right process.
                let name = run.name().to_string();
                run.hand_over_lock();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while std::time::Instant::now() < deadline
                    && store.get(&name).ok().and_then(|v| v.record.supervisor_pid)
                        != Some(supervisor)
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                println!("{name}");
                return Ok(ExitCode::SUCCESS);
            }
            Ok(Side::Supervisor) => run.update(|r| r.supervisor_pid = Some(std::process::id()))?,
            Err(err) => {
                let _ = run.discard();
                return Err(err.into());
            }
        }
    } else {
        eprintln!("run {}", run.name());
    }
    if let Err(err) = signals::record_stop_on_signal(&run.stop_request_path()) {
        tracing::warn!("stop signals before the job starts will abort the run: {err}");
    }
    let site = Site {
        copy_from: Some(project.dir().to_path_buf()),
        cache: cache::workflow_dir(&state_root, &project, &workflow.name),
        slurm_limits: false,
    };
    let supervised = supervise(
        &mut run,
        &workflow,
        &site,
        &state_root,
        &secrets,
        &args.pull,
        &mask,
    );
    match supervised {
        Ok(status) => {
            let code = status.code.clamp(0, 255) as u8;
            finish(&mut run, &status, &mask);
            Ok(ExitCode::from(code))
        }
        Err(failure) => Err(record_failure(&mut run, failure, &mask)),
    }
}

/// Records a run that failed before its job ended (artifacts saved all the same); the error to report.
pub(super) fn record_failure(run: &mut ActiveRun, failure: Failure, mask: &Masker) -> CliError {
    let _ = signals::ignore_stop_signals();
    append_to_log(&run.log_path(), &format!("error: {}\n", failure.message));
    mask.log(run);
    if let Err(e) = run.save_artifacts() {
        eprintln!(
            "warning: saving the artifacts of {}: {}",
            run.name(),
            mask.text(&e.to_string())
        );
    }
    let status = run
        .stop_request()
        .map_or(Status::Failed, StopRequest::status);
    let _ = run.finish(status, None, Some(&failure.message));
    CliError::new(failure.message).with_exit_code(failure.code)
}

/// `dstack run NAME --slurm -d ARGS`: `--slurm`, `--local` and `-d` right after the name are `dstack`'s
/// (everything from the first other word, or after `--`, is the workflow's).
fn own_flags(mut args: RunArgs) -> RunArgs {
    let mut taken = 0;
    for word in &args.rest {
        match word.as_str() {
            "--slurm" => args.slurm = true,
            "--local" => args.local = true,
            "-d" | "--detach" => args.detach = true,
            "--" => {
                taken += 1;
                break;
            }
            _ => break,
        }
        taken += 1;
    }
    args.rest.drain(..taken);
    args
}

/// A failure of the run before the job ended: the whole cause chain in one line, secrets masked.
pub(super) struct Failure {
    pub message: String,
    pub code: u8,
}

/// Where a run's job runs: here, or on a Slurm job's node.
pub(super) struct Site {
    /// The project to copy for `/workflow`; `None` when the run's copy exists (made at submission).
    pub copy_from: Option<PathBuf>,
    /// The workflow's cache directory.
    pub cache: PathBuf,
    /// Slurm confines the job (CPUs, memory, devices) through its cgroup: the container stays in it and
    /// gets no cgroup or limits of its own.
    pub slurm_limits: bool,
}

/// Replaces the project's secret values with `***` in anything shown or stored.
pub(super) struct Masker {
    values: Vec<String>,
}

impl Masker {
    pub(super) fn new(secrets: &BTreeMap<String, String>) -> Masker {
        let mut values: Vec<String> = Vec::new();
        for value in secrets.values().filter(|v| !v.is_empty()) {
            values.push(value.clone());
            // As it appears inside JSON strings too (`--dry-run` prints JSON).
            let quoted = serde_json::to_string(value).expect("strings serialize");
            values.push(quoted[1..quoted.len() - 1].to_string());
        }
        Masker { values }
    }

    /// The secret values (and their JSON-escaped forms) it masks.
    pub(super) fn values(&self) -> &[String] {
        &self.values
    }

    pub(super) fn text(&self, text: &str) -> String {
        logs::mask(text, &self.values)
    }

    /// Masks the run's kept output, in case the job printed a secret.
    pub(super) fn log(&self, run: &ActiveRun) {
        if let Err(e) = logs::mask_file(&run.log_path(), &self.values) {
            eprintln!("warning: masking secrets in the log of {}: {e}", run.name());
        }
    }

    /// An error and its causes as one masked line.
    fn chain(&self, err: &(dyn StdError + 'static)) -> String {
        self.text(&one_line(err))
    }

    pub(super) fn error(&self, err: &(dyn StdError + 'static), code: u8) -> CliError {
        CliError::new(self.chain(err)).with_exit_code(code)
    }

    fn failure(&self, what: &str, err: &(dyn StdError + 'static), code: u8) -> Failure {
        Failure {
            message: format!("{what}: {}", self.chain(err)),
            code,
        }
    }
}

/// Runs the job for `run` and returns how it ended; its end is recorded by the caller.
pub(super) fn supervise(
    run: &mut ActiveRun,
    workflow: &Workflow,
    site: &Site,
    state_root: &Path,
    secrets: &BTreeMap<String, String>,
    pull_policy: &str,
    mask: &Masker,
) -> Result<ExitStatus, Failure> {
    const START_FAILED: u8 = 125;
    let copy_dir = run.project_copy_dir();
    if let Some(project) = &site.copy_from {
        job::copy_project(project, &copy_dir, state_root)
            .map_err(|e| mask.failure("copying the project for /workflow", &e, START_FAILED))?;
    }
    let record = |result: Result<(), crate::runs::RunsError>| {
        result.map_err(|e| mask.failure("recording the run", &e, START_FAILED))
    };
    record(run.set_status(Status::Pulling))?;
    let images = Store::open_default()
        .map_err(|e| mask.failure("opening the image store", &e, START_FAILED))?;
    let image = pull_image(&images, workflow, pull_policy).map_err(|e| Failure {
        message: mask.text(&e.to_string()),
        code: START_FAILED,
    })?;

    let user = image_user(&image)
        .map_err(|e| mask.failure("finding the image's user", &e, START_FAILED))?;
    let dirs = HostDirs {
        project_copy: copy_dir,
        artifacts: run.artifacts_dir(),
        cache: site.cache.clone(),
    };
    let mounts = job::plan_mounts(workflow, &user.home, &dirs);
    job::prepare(&mounts, &dirs)
        .map_err(|e| mask.failure("preparing artifact and cache directories", &e, START_FAILED))?;
    if user.uid != 0 {
        // The image's user must be able to write /workflow, its artifacts and caches, as Docker users
        // expect of a working directory. Without subordinate ids (rootless) only our own id exists.
        if let Err(e) = job::hand_over(&mounts, user.uid, user.gid) {
            eprintln!(
                "warning: /workflow, artifacts and caches stay owned by root in the container, so uid {} \
                 may not write them: {}",
                user.uid,
                mask.text(&e.to_string())
            );
        }
    }
    let job_id = run::new_id();
    // Outbound access for the job, and its `ports` published on the host.
    let network = Network::prepare(&NetworkConfig::new(&job_id).ports(workflow.ports.into()))
        .map_err(|e| mask.failure("setting up the job's network", &e, START_FAILED))?;
    let ports = network.ports().to_vec();
    let mut request = job::request(workflow, run.name(), &job_id, &ports, secrets, &mounts);
    if site.slurm_limits {
        job::leave_limits_to_slurm(&mut request);
    }
    record(run.update(|r| {
        r.artifacts = mounts.artifacts.clone();
        r.ports = ports.clone();
        r.container_id = Some(job_id.clone());
    }))?;
    let spec = plan::plan(&request, &image.config, &image.layer_dirs, Host::current())
        .map_err(|e| mask.failure(&format!("planning {}", image.reference), &e, START_FAILED))?;
    let launch = Launch {
        id: job_id,
        strict_limits: request.strict_limits,
        log_file: Some(run.log_path()),
        network: Some(network),
        gpu: gpu_request(workflow, run.name()),
        in_current_cgroup: site.slurm_limits,
    };
    // `launched` also holds the image's and the GPUs' leases until the job has ended.
    let launched = run::launch(&images, &image, spec, launch).map_err(|e| Failure {
        message: mask.text(&one_line(&e)),
        code: e.code,
    })?;
    record(run.update(|r| r.container_pid = Some(launched.container.pid())))?;
    record(run.set_status(Status::Running))?;
    for (i, port) in ports.iter().enumerate() {
        eprintln!("PORT_{i}: http://127.0.0.1:{port}");
    }
    launched
        .container
        .wait()
        .map_err(|e| mask.failure("supervising the job", &e, START_FAILED))
}

/// Saves the artifacts and records how the job ended.
pub(super) fn finish(run: &mut ActiveRun, status: &ExitStatus, mask: &Masker) {
    let _ = signals::ignore_stop_signals();
    let _ = run.set_status(Status::Uploading);
    mask.log(run);
    if let Err(e) = run.save_artifacts() {
        eprintln!("warning: saving the artifacts of {}: {e}", run.name());
    }
    let (end, message) = end_of(run.stop_request(), status);
    if let Err(e) = run.finish(end, Some(status.code), message.as_deref()) {
        eprintln!("warning: recording the end of {}: {e}", run.name());
    }
}

/// How a run whose job exited with `status` ended.
fn end_of(request: Option<StopRequest>, status: &ExitStatus) -> (Status, Option<String>) {
    if let Some(request) = request {
        return (request.status(), None);
    }
    if status.oom_killed {
        return (
            Status::Failed,
            Some("out of memory: the job exceeded its memory limit".into()),
        );
    }
    match status.code {
        0 => (Status::Done, None),
        // Ended by SIGHUP, SIGINT or SIGTERM: Ctrl-C at the terminal (through the pty the supervisor
        // never sees it) or a stop signal sent to the supervisor without `dstack stop`.
        129 | 130 | 143 => (Status::Stopped, None),
        code => (
            Status::Failed,
            Some(format!("the job exited with code {code}")),
        ),
    }
}

/// `--dry-run`: the plan as JSON, secrets masked; nothing is created.
fn dry_run(
    workflow: &Workflow,
    project: &Project,
    state_root: &Path,
    secrets: &BTreeMap<String, String>,
    pull_policy: &str,
    mask: &Masker,
) -> CliResult<ExitCode> {
    let images = Store::open_default()?;
    let image = pull_image(&images, workflow, pull_policy)
        .map_err(|e| CliError::new(mask.text(&e.to_string())))?;
    let user = image_user(&image).map_err(|e| mask.error(&e, 1))?;
    let run_dir = state_root.join("runs").join(UNNAMED);
    let dirs = HostDirs {
        project_copy: run_dir.join("workflow"),
        artifacts: run_dir.join("artifacts"),
        cache: cache::workflow_dir(state_root, project, &workflow.name),
    };
    let mounts = job::plan_mounts(workflow, &user.home, &dirs);
    // Ports are chosen when the run starts; the plan shows 0 for each.
    let ports = vec![0; workflow.ports.into()];
    let request = job::request(workflow, UNNAMED, "<job-id>", &ports, secrets, &mounts);
    let mut spec = plan::plan(&request, &image.config, &image.layer_dirs, Host::current())
        .map_err(|e| mask.error(&e, 1))?;
    if let Some(gpu) = gpu_request(workflow, UNNAMED) {
        runtime::gpu::apply(&mut spec, &gpu)?;
    }
    let plan = serde_json::json!({
        "workflow": workflow.name,
        "project": project.dir(),
        "image": image.reference,
        "ports": ports,
        "artifacts": mounts.artifacts,
        "spec": spec,
    });
    let text = serde_json::to_string_pretty(&plan).expect("plans serialize");
    println!("{}", mask.text(&text));
    Ok(ExitCode::SUCCESS)
}

/// What the workflow's `resources.gpu` asks of the runtime, if anything.
pub(super) fn gpu_request(workflow: &Workflow, run_name: &str) -> Option<runtime::gpu::GpuRequest> {
    let gpu = workflow.resources.gpu.as_ref()?;
    Some(runtime::gpu::GpuRequest {
        count: gpu.count,
        name: gpu.name.clone(),
        memory: gpu.memory,
        capabilities: None,
        owner: format!("run {run_name}"),
    })
}

/// Checked before anything starts (the pull checks it again, after the run exists).
pub(super) fn check_pull_policy(policy: &str) -> CliResult<()> {
    match policy {
        "missing" | "always" | "never" => Ok(()),
        other => Err(CliError::new(format!(
            "--pull {other}: use missing, always or never"
        ))),
    }
}

/// An error and its causes in one line (each cause once).
pub(super) fn one_line(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// The workflow's image from the store, pulled first when the policy says so, with its `registry_auth`.
fn pull_image(store: &Store, workflow: &Workflow, policy: &str) -> CliResult<Image> {
    let options = RegistryOptions {
        credentials: workflow
            .registry_auth
            .as_ref()
            .map(|a| Credentials::new(&a.username, &a.password)),
        ..RegistryOptions::default()
    };
    run::image(store, &workflow.image, policy, &options)
        .context(format!("pulling {}", workflow.image))
}

/// The image's user (ids and home), from the image's own `/etc/passwd` and `/etc/group`.
fn image_user(image: &Image) -> Result<plan::ResolvedUser, plan::PlanError> {
    let read = |rel: &str| {
        runtime::rootfs::lookup_file(&image.layer_dirs, rel)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let user = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    plan::resolve_user(&user, &read("etc/passwd"), &read("etc/group"))
}

pub(super) fn append_to_log(path: &Path, line: &str) {
    use std::io::Write as _;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus {
            code,
            signal: None,
            oom_killed: false,
        }
    }

    #[test]
    fn how_a_run_ends() {
        assert_eq!(end_of(None, &exit(0)), (Status::Done, None));
        let (status, message) = end_of(None, &exit(3));
        assert_eq!(
            (status, message.as_deref()),
            (Status::Failed, Some("the job exited with code 3"))
        );
        assert_eq!(end_of(None, &exit(130)).0, Status::Stopped, "Ctrl-C");
        assert_eq!(end_of(None, &exit(143)).0, Status::Stopped, "SIGTERM");
        assert_eq!(
            end_of(Some(StopRequest::Graceful), &exit(1)).0,
            Status::Stopped
        );
        assert_eq!(
            end_of(Some(StopRequest::Abort), &exit(137)).0,
            Status::Aborted
        );
        let oom = ExitStatus {
            code: 137,
            signal: Some(9),
            oom_killed: true,
        };
        assert_eq!(end_of(None, &oom).0, Status::Failed);
    }

    #[test]
    fn secrets_are_masked_in_text_json_and_error_chains() {
        let secrets = BTreeMap::from([("T".to_string(), "p\"ss".to_string())]);
        let m = Masker::new(&secrets);
        assert_eq!(m.text("login with p\"ss"), "login with ***");
        let json = serde_json::json!({ "env": ["T=p\"ss"] }).to_string();
        assert!(!m.text(&json).contains("ss"), "{}", m.text(&json));
        let io = std::io::Error::other("bad password p\"ss");
        assert_eq!(m.chain(&io), "bad password ***");
    }
}
