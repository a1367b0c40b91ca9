//! A workflow's job, the same here and on a Slurm job's node: the workflow checked before a run exists,
//! then the project copied for `/workflow`, the image pulled (with `registry_auth`), the mounts made, the
//! network set up, and the whole plan started through [`super::launch`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use runtime::container::ExitStatus;
use runtime::image::registry::{Credentials, RegistryOptions};
use runtime::image::store::{Image, ImageName, Store};
use runtime::net::{Network, NetworkConfig};

use super::PlanJobError;
use super::image::{self, PullPolicy};
use super::launch::{self, Launch};
use super::request::{self, HostDirs, MountPlan};
use crate::error::{CliError, CliResult, Context as _};
use crate::plan::{self, Host, JobRequest, UserChoice, UserFiles};
use crate::project::Project;
use crate::runs::supervised::{Failure, Masker, START_FAILED};
use crate::runs::{ActiveRun, Status, cache};
use crate::secrets::SecretStore;
use crate::workflow::{Catalog, Context, Workflow, shell};

pub use super::UNNAMED;

/// A workflow checked before any run exists, locally or on Slurm: the project's catalog and secrets, and
/// the workflow's arguments.
pub struct Checked {
    catalog: Catalog,
    target: String,
    pub secrets: BTreeMap<String, String>,
    /// Masks the secrets' values in whatever is shown or kept.
    pub mask: Masker,
    pub run_args: String,
}

impl Checked {
    /// The workflow `target` of `project`, with its arguments `rest`.
    pub fn new(
        target: &str,
        rest: &[String],
        project: &Project,
        state_root: &Path,
    ) -> CliResult<Checked> {
        let catalog = Catalog::load(project)?;
        catalog.get(target)?;
        let secrets = SecretStore::for_project(state_root, project).load()?;
        Ok(Checked {
            catalog,
            target: target.to_string(),
            mask: Masker::new(&secrets),
            secrets,
            run_args: shell::join(rest),
        })
    }

    /// The workflow with `${{ run.name }}` as `run_name` (errors masked); [`UNNAMED`] before the run
    /// has a name, when it also notes what the docker provider ignores.
    pub fn resolve(&self, run_name: &str) -> CliResult<Workflow> {
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

/// Where a run's job runs: here, or on a Slurm job's node.
pub struct Site {
    /// The project to copy for `/workflow`; `None` when the run's copy exists (made at submission).
    pub copy_from: Option<PathBuf>,
    /// The workflow's cache directory.
    pub cache: PathBuf,
    /// Slurm confines the job (CPUs, memory, devices) through its cgroup: the container stays in it and
    /// gets no cgroup or limits of its own.
    pub slurm_limits: bool,
}

/// Runs the job of `run` to its end and returns how it ended; its end is recorded by the caller.
pub fn execute(
    run: &mut ActiveRun,
    workflow: &Workflow,
    site: &Site,
    state_root: &Path,
    secrets: &BTreeMap<String, String>,
    pull_policy: PullPolicy,
    mask: &Masker,
) -> Result<ExitStatus, Failure> {
    let copy_dir = run.project_copy_dir();
    if let Some(project) = &site.copy_from {
        request::copy_project(project, &copy_dir, state_root)
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

    let users = UserFiles::read(&image.layer_dirs);
    let host = Host::current();
    let user = users
        .job_user(&image.config, &workflow.user, &host)
        .map_err(|e| mask.failure("finding the job's user", &e, START_FAILED))?;
    let dirs = HostDirs {
        project_copy: copy_dir,
        artifacts: run.artifacts_dir(),
        cache: site.cache.clone(),
    };
    let mounts = request::plan_mounts(workflow, &user.home, &dirs);
    request::prepare(&mounts, &dirs)
        .map_err(|e| mask.failure("preparing artifact and cache directories", &e, START_FAILED))?;
    // `user: host` runs as the user who made them: they are theirs already.
    if user.uid != 0 && workflow.user != UserChoice::Host {
        // The image's user must be able to write /workflow, its artifacts and caches, as Docker users
        // expect of a working directory. Without subordinate ids (rootless) only our own id exists.
        if let Err(e) = request::hand_over(&mounts, user.uid, user.gid) {
            eprintln!(
                "warning: /workflow, artifacts and caches stay owned by root in the container, so uid {} \
                 may not write them: {}",
                user.uid,
                mask.text(&crate::runs::supervised::one_line(&e))
            );
        }
    }
    let job_id = launch::new_id();
    // Outbound access for the job, and its `ports` published on the host. Made on a thread while the job
    // is planned, leased and placed; collected before the clone.
    let config = NetworkConfig::new(&job_id)
        .mode(plan::network::mode(workflow.network))
        .ports(workflow.ports.into())
        .ahead();
    let mut network = Network::prepare(&config)
        .map_err(|e| mask.failure("setting up the job's network", &e, START_FAILED))?;
    let ports = network.ports().to_vec();
    let mut request = request::request(workflow, run.name(), &job_id, &ports, secrets, &mounts);
    // A relative profile is the project's: read from the run's copy of it.
    request.seccomp = request.seccomp.relative_to(&run.project_copy_dir());
    let project = run.record().project.clone();
    request::add_volumes(&mut request, workflow, &project);
    if site.slurm_limits {
        request::leave_limits_to_slurm(&mut request);
    }
    let host = Host::current();
    let volumes = plan::recorded_volumes(&request, &host);
    // Before the job starts: its artifacts are saved even if it never does.
    if !mounts.artifacts.is_empty() || !volumes.is_empty() {
        record(run.update(|r| {
            r.artifacts = mounts.artifacts.clone();
            r.volumes = volumes;
        }))?;
    }
    let gpu = gpu_request(workflow, run.name());
    let planned = super::plan(
        &request,
        &image,
        &users,
        &host,
        gpu.as_ref(),
        Some(&mut network),
    )
    .map_err(|e| {
        // On a Slurm node a volume's host path is this node's.
        let what = e.what(&image.reference);
        let what = match (&e, site.slurm_limits) {
            (PlanJobError::Plan(plan::PlanError::Volume(_)), true) => {
                format!("{what} on this node")
            }
            _ => what,
        };
        mask.failure(&what, &e, START_FAILED)
    })?;
    let launch = Launch {
        id: job_id,
        strict_limits: request.strict_limits,
        log_file: Some(run.log_path()),
        network: Some(network),
        gpus: planned.gpus,
        in_current_cgroup: site.slurm_limits,
    };
    launch::start_and_wait(run, &images, &image, planned.spec, launch, &ports, mask)
}

/// What `--dry-run` shows of a workflow's job: the image, the request and its mounts as planned before
/// the run exists (ports 0, the run named [`UNNAMED`]).
pub struct DryRun {
    pub image: Image,
    pub request: JobRequest,
    pub mounts: MountPlan,
    pub ports: Vec<u16>,
    pub spec: oci_spec::runtime::Spec,
}

/// The whole plan of `workflow` without a run: what `--dry-run` prints. `job_id` is the container id the
/// plan names (a placeholder: the run's is chosen when it starts).
pub fn dry_run(
    workflow: &Workflow,
    project: &Project,
    state_root: &Path,
    secrets: &BTreeMap<String, String>,
    pull_policy: PullPolicy,
    mask: &Masker,
) -> CliResult<DryRun> {
    let images = Store::open_default()?;
    let image = pull_image(&images, workflow, pull_policy)
        .map_err(|e| CliError::new(mask.text(&e.to_string())))?;
    let users = UserFiles::read(&image.layer_dirs);
    let host = Host::current();
    let user = users
        .job_user(&image.config, &workflow.user, &host)
        .map_err(|e| mask.error(&e, 1))?;
    let run_dir = state_root.join("runs").join(UNNAMED);
    let dirs = HostDirs {
        project_copy: run_dir.join("workflow"),
        artifacts: run_dir.join("artifacts"),
        cache: cache::workflow_dir(state_root, project, &workflow.name),
    };
    let mounts = request::plan_mounts(workflow, &user.home, &dirs);
    // Ports are chosen when the run starts; the plan shows 0 for each.
    let ports = vec![0; workflow.ports.into()];
    let mut request = request::request(workflow, UNNAMED, "<job-id>", &ports, secrets, &mounts);
    request.seccomp = request.seccomp.relative_to(project.dir());
    request::add_volumes(&mut request, workflow, project.dir());
    let gpu = gpu_request(workflow, UNNAMED);
    let planned = super::plan(&request, &image, &users, &host, gpu.as_ref(), None)
        .map_err(|e| mask.error(&e, 1))?;
    Ok(DryRun {
        image,
        request,
        mounts,
        ports,
        spec: planned.spec,
    })
}

/// What the workflow's `resources.gpu` asks of the runtime, if anything.
pub fn gpu_request(workflow: &Workflow, run_name: &str) -> Option<runtime::gpu::GpuRequest> {
    let gpu = workflow.resources.gpu.as_ref()?;
    Some(runtime::gpu::GpuRequest {
        count: gpu.count,
        name: gpu.name.clone(),
        memory: gpu.memory,
        capabilities: None,
        owner: format!("run {run_name}"),
    })
}

/// The workflow's image from the store, pulled first when the policy says so, with its `registry_auth`.
fn pull_image(store: &Store, workflow: &Workflow, policy: PullPolicy) -> CliResult<Image> {
    let options = RegistryOptions {
        credentials: workflow
            .registry_auth
            .as_ref()
            .map(|a| Credentials::new(&a.username, &a.password)),
        ..RegistryOptions::default()
    };
    let name: ImageName = workflow
        .image
        .parse()
        .context(format!("pulling {}", workflow.image))?;
    image::acquire(store, &name, policy, &options, || {})
        .context(format!("pulling {}", workflow.image))
}
