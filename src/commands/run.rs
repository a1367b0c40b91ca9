//! `dstack run`: the ad hoc form (`dstack run docker IMAGE ...`) here; workflows (`dstack run NAME`) are
//! routed to the workflow runner. Thin on purpose: parse, get the image, plan, run, exit with the job's code.
//! Both forms are recorded runs (`recorded`: a run name, `output.log`, `ps`, `logs`, `stop`, `-d`) and start
//! their jobs through [`launch`]; an ad hoc run has no project copy, artifacts or cache.

pub(crate) mod recorded;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use oci_spec::runtime::Spec;
use runtime::cgroup::Limits;
use runtime::container::{Container, ContainerBuilder, ContainerError, ExitStatus};
use runtime::gpu::{GpuLease, GpuRequest};
use runtime::image::pull::{NoProgress, PullOptions, pull};
use runtime::image::registry::{RegistryClient, RegistryOptions};
use runtime::image::source::Source;
use runtime::image::store::{Image, ImageName, Lease, Store, StoreError};
use runtime::net::{Network, NetworkConfig, NetworkMode};

use self::recorded::{Failure, Masker, START_FAILED};
use crate::cli::RunArgs;
use crate::error::{CliError, CliResult, Context};
use crate::plan::{self, Host, JobRequest, SeccompChoice};
use crate::runs::{ActiveRun, RunRecord, RunStore, Status};
use crate::workflow::{shell, size};

/// The workflow column of an ad hoc run in `dstack ps` (the image is in `ps --json`).
const ADHOC_WORKFLOW: &str = "docker";

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NetworkFlag {
    /// Its own network namespace with outbound access (rootless: pasta or slirp4netns when usable)
    Private,
    /// The host's network (for MPI and NCCL)
    Host,
    /// Its own network namespace with loopback only (published ports still reach it)
    None,
}

impl From<NetworkFlag> for NetworkMode {
    fn from(flag: NetworkFlag) -> NetworkMode {
        match flag {
            NetworkFlag::Private => NetworkMode::Private,
            NetworkFlag::Host => NetworkMode::Host,
            NetworkFlag::None => NetworkMode::None,
        }
    }
}

/// The ad hoc form's own flags, which may come before or after the image.
#[derive(Debug, Parser)]
#[command(name = "dstack run docker", about = "Run an image as a container")]
struct AdHoc {
    /// The image: `ubuntu`, `ghcr.io/org/img:tag`, `oci:/path/to/layout:tag`
    image: String,
    /// A shell command line (repeatable: joined with ` && `)
    #[arg(
        short = 'c',
        long = "command",
        value_name = "COMMAND",
        allow_hyphen_values = true
    )]
    commands: Vec<String>,
    /// An environment variable, `K=V` (or `K` to pass this process's value)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Replace the image's ENTRYPOINT (split shell-style; `""` clears it)
    #[arg(long, allow_hyphen_values = true)]
    entrypoint: Option<String>,
    /// CPU cores (fractions allowed: 0.5)
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory limit: `512MB`, `16GB` (decimal), `16GiB` (binary)
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Size of /dev/shm (default: half the memory limit, else half of RAM)
    #[arg(long, value_name = "SIZE")]
    shm_size: Option<String>,
    /// NVIDIA GPUs to give the job
    #[arg(long, value_name = "N")]
    gpu: Option<u32>,
    /// Only GPUs of this model, e.g. A100 (alone: one such GPU)
    #[arg(long, value_name = "NAME")]
    gpu_name: Option<String>,
    /// Only GPUs with at least this much memory, e.g. 40GB (alone: one such GPU)
    #[arg(long, value_name = "SIZE")]
    gpu_memory: Option<String>,
    /// Most processes and threads the job may have at once (`-1` or `0`: no limit; default 2048 where the
    /// pids controller is available)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Fail instead of warning when the limits asked for cannot be enforced
    #[arg(long)]
    strict_limits: bool,
    /// Publish N host ports: `PORT_0`.. (and `JOB_PORT_0`..) hold them; the job listens on the same numbers
    #[arg(short = 'p', long = "ports", value_name = "N", default_value_t = 0)]
    ports: u16,
    /// The job's network
    #[arg(long, value_enum, default_value_t = NetworkFlag::Private)]
    network: NetworkFlag,
    /// Return at once, printing the run's name, and leave the run going in the background
    #[arg(short = 'd', long)]
    detach: bool,
    /// The working directory inside the container
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    working_dir: Option<String>,
    /// Print the plan and stop
    #[arg(long)]
    dry_run: bool,
    /// Docker's security options: `seccomp=unconfined` (no filter) or `seccomp=FILE` (a Docker seccomp
    /// profile; default: Docker's default profile)
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
}

impl AdHoc {
    /// The GPUs asked for (`--gpu-name` or `--gpu-memory` alone ask for one), held by `owner`.
    fn gpu_request(&self, owner: &str) -> CliResult<Option<GpuRequest>> {
        let named = self.gpu_name.is_some() || self.gpu_memory.is_some();
        let count = self.gpu.unwrap_or(u32::from(named));
        if count == 0 {
            return Ok(None);
        }
        Ok(Some(GpuRequest {
            count,
            name: self.gpu_name.clone(),
            memory: self
                .gpu_memory
                .as_deref()
                .map(size::parse)
                .transpose()
                .context("--gpu-memory")?,
            capabilities: None,
            owner: owner.to_string(),
        }))
    }

    fn request(&self) -> CliResult<JobRequest> {
        let parse_size = |flag: &str, v: &Option<String>| -> CliResult<Option<u64>> {
            v.as_deref()
                .map(size::parse)
                .transpose()
                .context(format!("--{flag}"))
        };
        let env = self
            .env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), std::env::var(kv).unwrap_or_default()),
            })
            .collect();
        let entrypoint = self
            .entrypoint
            .as_deref()
            .map(shell::split)
            .transpose()
            .context("--entrypoint")?;
        let mut seccomp = SeccompChoice::Default;
        for option in &self.security_opt {
            match SeccompChoice::parse_security_opt(option) {
                Ok(Some(choice)) => seccomp = choice,
                Ok(None) => {}
                Err(message) => return Err(CliError::new(format!("--security-opt: {message}"))),
            }
        }
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Ok(JobRequest {
            seccomp: seccomp.relative_to(&cwd),
            image: self.image.clone(),
            commands: self.commands.clone(),
            entrypoint,
            env,
            working_dir: self.working_dir.clone(),
            cpu: self.cpu,
            memory: parse_size("memory", &self.memory)?,
            shm_size: parse_size("shm-size", &self.shm_size)?,
            strict_limits: self.strict_limits,
            ..JobRequest::default()
        })
    }
}

pub fn run(args: RunArgs) -> CliResult<ExitCode> {
    if args.target != "docker" {
        return super::run_workflow::run_workflow(args);
    }
    let adhoc = AdHoc::try_parse_from(
        std::iter::once("dstack run docker".to_string()).chain(args.rest.clone()),
    )
    .unwrap_or_else(|e| e.exit());
    // Everything that can be checked is checked before a run exists.
    let mut req = adhoc.request()?;
    let mut gpu = adhoc.gpu_request("")?;
    let _: ImageName = req.image.parse()?;
    plan::check_seccomp(&req.seccomp)?;
    super::run_workflow::check_pull_policy(&args.pull)?;
    runtime::userns::enter_rootless_namespace()?;
    let state_root = runtime::paths::state_root();
    let id = new_id();
    req.hostname.get_or_insert_with(|| id.clone());
    if args.dry_run || adhoc.dry_run {
        return dry_run(&req, &args.pull, adhoc.pids_limit, gpu.as_mut(), &id);
    }

    if let Some(gpu) = &gpu {
        // Discovery, matching and the other jobs' leases, on a throwaway spec: an unmet request fails
        // before a run exists. The lease ends at once; the job takes its own when it starts.
        runtime::gpu::apply(&mut Spec::default(), gpu)?;
    }
    // What SIGKILLed supervisors left: scratch directories, cgroups, network interfaces and NAT rules.
    runtime::container::sweep_leftovers(&state_root);
    runtime::net::sweep_leftovers();
    let project = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let store = RunStore::new(&state_root);
    let run = store.create(RunRecord::new("", ADHOC_WORKFLOW, project, &req.image))?;
    let Some(mut run) = recorded::begin(&store, run, args.detach || adhoc.detach)? else {
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(gpu) = gpu.as_mut() {
        gpu.owner = format!("run {}", run.name());
    }
    // No secrets in an ad hoc run: nothing to mask.
    let mask = Masker::new(&BTreeMap::new());
    let job = AdHocJob {
        req,
        id,
        gpu,
        pids_limit: adhoc.pids_limit,
        network: NetworkConfig::new("")
            .mode(adhoc.network.into())
            .ports(adhoc.ports.into())
            .ahead(),
        pull: &args.pull,
    };
    match job.supervise(&mut run, &mask) {
        Ok(status) => {
            let code = status.code.clamp(0, 255) as u8;
            recorded::finish(&mut run, &status, &mask);
            Ok(ExitCode::from(code))
        }
        Err(failure) => Err(recorded::record_failure(&mut run, failure, &mask)),
    }
}

/// What an ad hoc run starts, once its run exists.
struct AdHocJob<'a> {
    req: JobRequest,
    /// The container id (also the hostname).
    id: String,
    gpu: Option<GpuRequest>,
    pids_limit: Option<i64>,
    /// Mode and ports; the id is the container's.
    network: NetworkConfig,
    pull: &'a str,
}

impl AdHocJob<'_> {
    /// Pulls when needed, networks, plans and runs the job to its end.
    fn supervise(mut self, run: &mut ActiveRun, mask: &Masker) -> Result<ExitStatus, Failure> {
        let images = Store::open_default()
            .map_err(|e| mask.failure("opening the image store", &e, START_FAILED))?;
        let image = image_with(
            &images,
            &self.req.image,
            self.pull,
            &RegistryOptions::default(),
            || {
                let _ = run.set_status(Status::Pulling);
            },
        )
        .map_err(|e| Failure {
            message: mask.text(&format!("pulling {}: {}", self.req.image, e)),
            code: START_FAILED,
        })?;
        self.network.id = self.id.clone();
        let network = Network::prepare(&self.network)
            .map_err(|e| mask.failure("setting up the job's network", &e, START_FAILED))?;
        let ports = network.ports().to_vec();
        // Injected variables first: the user's `-e` win.
        let mut env = network.env();
        env.push(("RUN_NAME".into(), run.name().to_string()));
        env.append(&mut self.req.env);
        self.req.env = env;
        let mut spec = plan::plan(&self.req, &image.config, &image.layer_dirs, Host::current())
            .map_err(|e| {
                mask.failure(&format!("planning {}", image.reference), &e, START_FAILED)
            })?;
        if let Some(limit) = self.pids_limit {
            plan::limit_pids(&mut spec, limit);
        }
        let launch = Launch {
            id: self.id,
            strict_limits: self.req.strict_limits,
            log_file: Some(run.log_path()),
            network: Some(network),
            gpu: self.gpu,
            in_current_cgroup: false,
        };
        recorded::start_and_wait(run, &images, &image, spec, launch, &ports, mask)
    }
}

/// `--dry-run`: the image (pulled if needed) and the plan as JSON, GPUs included; nothing is started.
fn dry_run(
    req: &JobRequest,
    pull: &str,
    pids_limit: Option<i64>,
    gpu: Option<&mut GpuRequest>,
    id: &str,
) -> CliResult<ExitCode> {
    let store = Store::open_default()?;
    let image = image(&store, &req.image, pull, &RegistryOptions::default())
        .context(format!("pulling {}", req.image))?;
    let mut spec = plan::plan(req, &image.config, &image.layer_dirs, Host::current())
        .context(format!("planning {}", image.reference))?;
    if let Some(limit) = pids_limit {
        plan::limit_pids(&mut spec, limit);
    }
    if let Some(gpu) = gpu {
        gpu.owner = format!("container {id} (dry run)");
        runtime::gpu::apply(&mut spec, gpu)?;
    }
    let plan = serde_json::json!({
        "image": image.reference,
        "layers": image.layer_dirs,
        "spec": spec,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&plan).expect("plans serialize")
    );
    Ok(ExitCode::SUCCESS)
}

/// The image from the store, pulled first when the policy (`missing`, `always`, `never`) says so.
pub(crate) fn image(
    store: &Store,
    reference: &str,
    policy: &str,
    options: &RegistryOptions,
) -> CliResult<Image> {
    image_with(store, reference, policy, options, || {})
}

/// [`image`], calling `before_pull` when it is about to pull.
fn image_with(
    store: &Store,
    reference: &str,
    policy: &str,
    options: &RegistryOptions,
    before_pull: impl FnOnce(),
) -> CliResult<Image> {
    let name: ImageName = reference.parse()?;
    match policy {
        "always" => {}
        "missing" | "never" => match store.lookup(&name) {
            Ok(image) => return Ok(image),
            Err(StoreError::NotFound(_)) if policy == "missing" => {}
            Err(e) => return Err(e.into()),
        },
        other => {
            return Err(CliError::new(format!(
                "--pull {other}: use missing, always or never"
            )));
        }
    }
    let source: Box<dyn Source> = match &name {
        ImageName::Registry(r) => Box::new(RegistryClient::new(r, options)?),
        ImageName::Layout { dir, .. } => Box::new(runtime::image::layout::OciLayout::open(dir)?),
    };
    before_pull();
    eprintln!("pulling {name}");
    Ok(pull(
        store,
        source.as_ref(),
        &name,
        &PullOptions::new(&NoProgress),
    )?)
}

/// What a job needs besides its plan. Both run forms start jobs through [`launch`].
pub(crate) struct Launch {
    /// The container id (scratch directory and cgroup name).
    pub id: String,
    pub strict_limits: bool,
    /// Where the job's output is also written, line by line.
    pub log_file: Option<PathBuf>,
    pub network: Option<runtime::net::Network>,
    pub gpu: Option<runtime::gpu::GpuRequest>,
    /// Make no cgroup of ours: the job stays in this process's cgroup, whose owner confines it (a Slurm
    /// job's: its CPUs and memory, and its devices with ConstrainDevices).
    pub in_current_cgroup: bool,
}

/// A started job, with what must live until it has ended (the image's lease, the GPUs').
pub(crate) struct Launched {
    pub container: Container,
    _lease: Lease,
    _gpus: Option<GpuLease>,
}

/// Why a job did not start: what was being done, the cause, and the exit code (125, or the exec's
/// 126/127 as shells use them).
#[derive(Debug)]
pub(crate) struct LaunchError {
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
        code: 125,
    }
}

/// Leases the image, gives the job its GPUs, places it in a cgroup when it has limits, and starts it
/// (returning once the job has exec'd). Call it from a process whose only other threads, if any, are the
/// network's (made `ahead`; collected before the clone).
pub(crate) fn launch(
    store: &Store,
    image: &Image,
    mut spec: Spec,
    mut launch: Launch,
) -> Result<Launched, LaunchError> {
    if launch.gpu.is_some()
        && let Some(net) = launch.network.as_mut()
    {
        // GPU discovery asks NVML from a forked child, which wants a single-threaded process.
        net.ready()
            .map_err(failed("setting up the job's network"))?;
    }
    let lease = store.lease(image).map_err(failed("using the image"))?;
    let gpus = match &launch.gpu {
        Some(request) => Some(
            runtime::gpu::apply(&mut spec, request).map_err(failed("giving the job its GPUs"))?,
        ),
        None => None,
    };
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let mut limits = match resources {
        Some(r) => Limits::from_oci(r).map_err(failed("reading the resource limits"))?,
        None => Limits::default(),
    };
    // dstack's defaults, which nobody asked for: enforced where they can be, never warned about.
    if resources.and_then(|r| r.pids().as_ref()).is_none() {
        limits.default_pids = Some(plan::DEFAULT_PIDS_LIMIT);
    }
    limits.devices = runtime::paths::running_as_host_root()
        .then(|| device_policy(gpus.as_ref().map_or(&[][..], |g| g.device_rules())));
    let mut builder = ContainerBuilder::new(&launch.id)
        .spec(spec)
        .rootfs(image.layer_dirs.clone());
    if let Some(path) = launch.log_file {
        builder = builder.log_file(path);
    }
    if let Some(net) = launch.network {
        builder = builder.network(net);
    }
    if !launch.in_current_cgroup {
        let placement = runtime::cgroup::create(&launch.id, &limits, launch.strict_limits)
            .map_err(failed("setting the resource limits"))?;
        match placement {
            runtime::cgroup::Placement::Enforced(cg) => builder = builder.cgroup(Box::new(cg)),
            // Only limits the user asked for are worth a word (and `--strict-limits` refused them above).
            runtime::cgroup::Placement::Unenforced { reason } if !limits.is_unlimited() => {
                eprintln!("warning: {reason} (see `dstack info`)")
            }
            runtime::cgroup::Placement::Unenforced { reason } => {
                tracing::debug!("dstack's default limits are not enforced: {reason}")
            }
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
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> AdHoc {
        AdHoc::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_may_come_before_or_after_the_image() {
        let a = parse(&[
            "-c", "echo hi", "busybox", "-e", "A=1", "--memory", "512MB", "-c", "exit 3",
        ]);
        let r = a.request().unwrap();
        assert_eq!(r.image, "busybox");
        assert_eq!(r.commands, ["echo hi", "exit 3"]);
        assert_eq!(r.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(r.memory, Some(512_000_000));
        let b = parse(&[
            "--shm-size",
            "1GiB",
            "--cpu",
            "0.5",
            "img",
            "--entrypoint",
            "/bin/echo -n",
        ]);
        let r = b.request().unwrap();
        assert_eq!((r.shm_size, r.cpu), (Some(1 << 30), Some(0.5)));
        assert_eq!(
            r.entrypoint,
            Some(vec!["/bin/echo".to_string(), "-n".to_string()])
        );
    }

    #[test]
    fn bad_sizes_name_the_flag() {
        let err = parse(&["img", "--memory", "12XB"]).request().unwrap_err();
        assert!(err.to_string().contains("--memory"), "{err}");
    }
}
