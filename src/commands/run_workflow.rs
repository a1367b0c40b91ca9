//! `dstack run NAME [ARGS]`: a workflow from the project's `.dstack/workflows/`, run as a container with a
//! run record.
//!
//! Everything that can be checked is checked before anything starts (the workflow, its secrets, the
//! machine's resources). Then a run is allocated and its name printed, the project is copied for
//! `/workflow`, the image pulled (with `registry_auth`), the job planned and started through the same
//! planner and runtime as `dstack run docker`, supervised to its end, and its artifacts saved however it
//! ends. `dstack` exits with the job's exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use runtime::container::ExitStatus;
use runtime::image::registry::{Credentials, RegistryOptions};
use runtime::image::store::{Image, Store};
use runtime::net::{Network, NetworkConfig, NetworkMode};

use super::run::recorded::{self, START_FAILED};
// The recorded-run pieces the Slurm commands share with this one.
pub(super) use super::run::recorded::{
    Failure, Masker, append_to_log, finish, finish_as, one_line, record_failure,
};
use super::run::{self, Launch};
use crate::cli::RunArgs;
use crate::error::{CliError, CliResult, Context as _};
use crate::plan::{self, Host, SeccompChoice};
use crate::project::Project;
use crate::runs::job::{self, HostDirs};
use crate::runs::machine::Machine;
use crate::runs::{ActiveRun, RunRecord, RunStore, Status, cache};
use crate::secrets::SecretStore;
use crate::workflow::model::NetworkChoice;
use crate::workflow::{Catalog, Context, Workflow, shell};
use runtime::container::seccomp_profile;

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
    // Everything that can fail before a run exists fails here, with nothing started.
    let checked = Checked::new(&args, &project, &state_root)?;
    let (secrets, mask) = (&checked.secrets, &checked.mask);
    let preview = checked.resolve(UNNAMED)?;
    plan::check_seccomp(&preview.seccomp.clone().relative_to(project.dir()))?;
    let machine = Machine::probe();
    machine.check(&preview.resources)?;
    if let Some(request) = gpu_request(&preview, UNNAMED) {
        // Discovery, matching and the other jobs' leases, on a throwaway spec; the lease ends at once.
        runtime::gpu::apply(&mut oci_spec::runtime::Spec::default(), &request).map_err(|e| {
            let also = match e {
                runtime::gpu::GpuError::NoGpu { .. } => format!("; it has {}", machine.summary()),
                _ => String::new(),
            };
            CliError::new(format!("{}{also}", runtime::report::Chain(&e)))
        })?;
    }
    if preview.resources.interruptible {
        eprintln!(
            "note: `interruptible` has no effect on a single machine; the run is not interrupted"
        );
    }
    if args.dry_run {
        return dry_run(&preview, &project, &state_root, secrets, &args.pull, mask);
    }

    // What SIGKILLed supervisors left: scratch directories, cgroups, network interfaces and NAT rules.
    runtime::container::sweep_leftovers(&state_root);
    runtime::net::sweep_leftovers();
    let store = RunStore::new(&state_root);
    let record = RunRecord::new(
        "",
        &preview.name,
        project.dir().to_path_buf(),
        &mask.text(&preview.image),
    );
    let run = store.create(record)?;
    let workflow = match checked.resolve(run.name()) {
        Ok(workflow) => workflow,
        Err(err) => {
            let _ = run.discard();
            return Err(err);
        }
    };
    let Some(mut run) = recorded::begin(&store, run, args.detach)? else {
        return Ok(ExitCode::SUCCESS);
    };
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
        secrets,
        &args.pull,
        mask,
    );
    match supervised {
        Ok(status) => {
            let code = status.code.clamp(0, 255) as u8;
            finish(&mut run, &status, mask);
            Ok(ExitCode::from(code))
        }
        Err(failure) => Err(record_failure(&mut run, failure, mask)),
    }
}

/// A workflow checked before any run exists, locally or on Slurm: the project's catalog and secrets, and
/// the workflow's arguments.
pub(super) struct Checked {
    catalog: Catalog,
    target: String,
    pub secrets: BTreeMap<String, String>,
    /// Masks the secrets' values in whatever is shown or kept.
    pub mask: Masker,
    pub run_args: String,
}

impl Checked {
    pub(super) fn new(args: &RunArgs, project: &Project, state_root: &Path) -> CliResult<Checked> {
        let catalog = Catalog::load(project)?;
        catalog.get(&args.target)?;
        let secrets = SecretStore::for_project(state_root, project).load()?;
        check_pull_policy(&args.pull)?;
        Ok(Checked {
            catalog,
            target: args.target.clone(),
            mask: Masker::new(&secrets),
            secrets,
            run_args: shell::join(&args.rest),
        })
    }

    /// The workflow with `${{ run.name }}` as `run_name` (errors masked); [`UNNAMED`] before the run
    /// has a name, when it also notes what the docker provider ignores.
    pub(super) fn resolve(&self, run_name: &str) -> CliResult<Workflow> {
        let entry = self.catalog.get(&self.target)?;
        let context = Context {
            run_name,
            run_args: &self.run_args,
            secrets: &self.secrets,
        };
        let workflow = entry
            .resolve(&context)
            .map_err(|e| self.mask.error(&e, 1))?;
        if run_name == UNNAMED && workflow.version.is_some() {
            eprintln!(
                "note: `version` has no effect for the docker provider; the image decides what is installed"
            );
        }
        Ok(workflow)
    }
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
                mask.text(&one_line(&e))
            );
        }
    }
    let job_id = run::new_id();
    // Outbound access for the job, and its `ports` published on the host.
    let mode = match workflow.network {
        NetworkChoice::Private => NetworkMode::Private,
        NetworkChoice::Host => NetworkMode::Host,
        NetworkChoice::None => NetworkMode::None,
    };
    // Made on a thread while the job is planned, leased and placed; collected before the clone.
    let config = NetworkConfig::new(&job_id)
        .mode(mode)
        .ports(workflow.ports.into())
        .ahead();
    let network = Network::prepare(&config)
        .map_err(|e| mask.failure("setting up the job's network", &e, START_FAILED))?;
    let ports = network.ports().to_vec();
    let mut request = job::request(workflow, run.name(), &job_id, &ports, secrets, &mounts);
    // A relative profile is the project's: read from the run's copy of it.
    request.seccomp = request.seccomp.relative_to(&run.project_copy_dir());
    if site.slurm_limits {
        job::leave_limits_to_slurm(&mut request);
    }
    // Before the job starts: its artifacts are saved even if it never does.
    if !mounts.artifacts.is_empty() {
        record(run.update(|r| r.artifacts = mounts.artifacts.clone()))?;
    }
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
    recorded::start_and_wait(run, &images, &image, spec, launch, &ports, mask)
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
    let mut request = job::request(workflow, UNNAMED, "<job-id>", &ports, secrets, &mounts);
    request.seccomp = request.seccomp.relative_to(project.dir());
    let mut spec = plan::plan(&request, &image.config, &image.layer_dirs, Host::current())
        .map_err(|e| mask.error(&e, 1))?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let seccomp = match &request.seccomp {
        SeccompChoice::Default => format!(
            "Docker's default profile: {}",
            seccomp_profile::summary(seccomp)
        ),
        SeccompChoice::Unconfined => seccomp_profile::summary(None),
        SeccompChoice::File(path) => {
            format!("{}: {}", path.display(), seccomp_profile::summary(seccomp))
        }
    };
    if let Some(gpu) = gpu_request(workflow, UNNAMED) {
        runtime::gpu::apply(&mut spec, &gpu)?;
    }
    let plan = serde_json::json!({
        "workflow": workflow.name,
        "project": project.dir(),
        "image": image.reference,
        "ports": ports,
        "artifacts": mounts.artifacts,
        "seccomp": seccomp,
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
