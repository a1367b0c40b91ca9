//! Launch: a planned job started as a container (image leased, cgroup placed, devices allowed), and a
//! run's job started and waited for, its container recorded into the run once it runs.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;

use oci_spec::runtime::Spec;
use runtime::cgroup::{SpecCgroup, SpecPlacement};
use runtime::container::exec::ExecBase;
use runtime::container::{Container, ContainerBuilder, ContainerError, ExitStatus};
use runtime::gpu::GpuLease;
use runtime::image::store::{Image, Lease, Store};

use crate::runs::record::now;
use crate::runs::supervised::{Failure, Masker, START_FAILED, one_line};
use crate::runs::{ActiveRun, Status};

/// What a job needs besides its planned Spec. Both kinds of job start through [`launch`].
pub struct Launch {
    /// The container id (scratch directory and cgroup name).
    pub id: String,
    pub strict_limits: bool,
    /// Where the job's output is also written, line by line.
    pub log_file: Option<PathBuf>,
    pub network: Option<runtime::net::Network>,
    /// The GPUs the plan leased and put into the spec.
    pub gpus: Option<GpuLease>,
    /// Make no cgroup of ours: the job stays in this process's cgroup, whose owner confines it (a Slurm
    /// job's: its CPUs and memory, and its devices with ConstrainDevices).
    pub in_current_cgroup: bool,
}

/// A started job, with what must live until it has ended (the image's lease, the GPUs').
pub struct Launched {
    pub container: Container,
    _lease: Lease,
    _gpus: Option<GpuLease>,
}

/// Why a job did not start: what was being done, the cause, and the exit code ([`START_FAILED`], or the exec's
/// 126/127 as shells use them).
#[derive(Debug)]
pub struct LaunchError {
    pub what: String,
    pub source: Box<dyn StdError + Send + Sync>,
    pub code: u8,
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source.downcast_ref::<ContainerError>() {
            // The container's own words (`exec "foo": command not found`) stand alone.
            Some(ContainerError::Start { message, .. }) => f.write_str(message),
            _ => f.write_str(&self.what),
        }
    }
}

impl StdError for LaunchError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self.source.downcast_ref::<ContainerError>() {
            Some(ContainerError::Start { .. }) => None,
            _ => Some(self.source.as_ref()),
        }
    }
}

fn failed<E: StdError + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> LaunchError {
    let what = what.into();
    move |e| LaunchError {
        what,
        source: Box::new(e),
        code: START_FAILED,
    }
}

/// Leases the image, places it in a cgroup when it has limits, and starts it
/// (returning once the job has exec'd). Call it from a process whose only other threads, if any, are the
/// network's (made `ahead`; collected before the clone).
pub fn launch(
    store: &Store,
    image: &Image,
    spec: Spec,
    launch: Launch,
) -> Result<Launched, LaunchError> {
    let lease = store.lease(image).map_err(failed("using the image"))?;
    let gpus = launch.gpus;
    // dstack's defaults, which nobody asked for: enforced where they can be, never warned about.
    let cgroup = SpecCgroup::for_run(&spec, &launch.id)
        .map_err(failed("reading the resource limits"))?
        .default_pids(crate::plan::DEFAULT_PIDS_LIMIT)
        .devices(
            runtime::paths::running_as_host_root()
                .then(|| device_policy(gpus.as_ref().map_or(&[][..], |g| g.device_rules()))),
        )
        .strict(launch.strict_limits);
    let mut builder = ContainerBuilder::new(&launch.id, spec).rootfs(image.layer_dirs.clone());
    if let Some(path) = launch.log_file {
        builder = builder.log_file(path);
    }
    if let Some(net) = launch.network {
        builder = builder.network(net);
    }
    builder = builder.in_container_step(&runtime::gpu::DRIVER_LINKS);
    if !launch.in_current_cgroup {
        let placement = cgroup
            .create()
            .map_err(failed("setting the resource limits"))?;
        match placement {
            SpecPlacement::Enforced(cg) => builder = builder.cgroup(Box::new(cg)),
            // Only limits the user asked for are worth a word (and `--strict-limits` refused them above).
            SpecPlacement::Unenforced { reason } => {
                eprintln!("warning: {reason} (see `dstack info`)")
            }
            SpecPlacement::Unplaced => {}
        }
    }
    let container = builder.build().and_then(|c| c.start()).map_err(|e| {
        let code = e.exit_code().clamp(1, 255) as u8;
        LaunchError {
            what: format!("starting {}", image.reference),
            source: Box::new(e),
            code,
        }
    })?;
    Ok(Launched {
        container,
        _lease: lease,
        _gpus: gpus,
    })
}

/// The devices a job may open or create as host root: Docker's default set, `/dev/fuse` (read and write
/// only: fuse-overlayfs, the root filesystem's fallback, runs inside the job's cgroup), and its GPUs. A
/// node mknod'ed inside for anything else cannot be opened.
fn device_policy(gpu_rules: &[runtime::cgroup::DeviceRule]) -> runtime::cgroup::DevicePolicy {
    use runtime::cgroup::{DeviceAccess, DeviceKind, DevicePolicy, DeviceRule};
    let mut policy = DevicePolicy::docker_default();
    policy.allow(DeviceRule {
        kind: DeviceKind::Char,
        major: Some(10),
        minor: Some(229),
        access: DeviceAccess::RW,
    });
    for rule in gpu_rules {
        policy.allow(*rule);
    }
    policy
}

/// Twelve hex digits from the kernel's random pool: the container id and default hostname.
pub fn new_id() -> String {
    let mut bytes = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the planned job of `run` and supervises it to its end. Once it runs, its container (id, init's
/// pid, ports) and `running` are recorded in one write, and each port's URL is printed.
pub fn start_and_wait(
    run: &mut ActiveRun,
    images: &Store,
    image: &Image,
    spec: Spec,
    launch_with: Launch,
    ports: &[u16],
    mask: &Masker,
) -> Result<ExitStatus, Failure> {
    let id = launch_with.id.clone();
    let exec_base = ExecBase::of(&spec);
    // `launched` also holds the image's and the GPUs' leases until the job has ended.
    let launched = launch(images, image, spec, launch_with).map_err(|e| Failure {
        message: mask.text(&one_line(&e)),
        code: e.code,
    })?;
    let pid = launched.container.pid();
    if let Some(base) = &exec_base
        && let Err(e) = run.keep_exec_base(base)
    {
        tracing::warn!("`dstack exec` will not reach this run: {e}");
    }
    run.update(|r| {
        r.container_id = Some(id);
        r.container_pid = Some(pid);
        r.ports = ports.to_vec();
        if r.status.can_become(Status::Running) {
            r.status = Status::Running;
            r.started_at = Some(now());
        }
    })
    .map_err(|e| mask.failure("recording the run", &e, START_FAILED))?;
    for (i, port) in ports.iter().enumerate() {
        eprintln!("PORT_{i}: http://127.0.0.1:{port}");
    }
    launched
        .container
        .wait()
        .map_err(|e| mask.failure("supervising the job", &e, START_FAILED))
}
