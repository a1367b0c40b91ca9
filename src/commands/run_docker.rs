//! `dstack run docker IMAGE ...`: the ad hoc form. Thin on purpose: parse the flags, check, then hand the
//! job to the stages (a supervised run in `runs`, the job in `job::adhoc`) and exit with the job's code.
//! Workflows (`dstack run NAME`) are `run_workflow`'s; `dispatch` routes between them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use oci_spec::runtime::Spec;
use runtime::gpu::GpuRequest;
use runtime::image::store::ImageName;
use runtime::net::NetworkConfig;

use crate::cli::RunArgs;
use crate::error::{CliError, CliResult, Context};
use crate::job::adhoc::{self, AdHocJob};
use crate::job::image::PullPolicy;
use crate::job::launch::new_id;
use crate::plan::{self, Host, JobRequest, SeccompChoice, UserChoice, Volume};
use crate::runs::supervised::{self, Masker};
use crate::runs::{RunRecord, RunStore};
use crate::workflow::model::NetworkChoice;
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

impl From<NetworkFlag> for NetworkChoice {
    fn from(flag: NetworkFlag) -> NetworkChoice {
        match flag {
            NetworkFlag::Private => NetworkChoice::Private,
            NetworkFlag::Host => NetworkChoice::Host,
            NetworkFlag::None => NetworkChoice::None,
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
    #[arg(long, value_name = "CORES", allow_negative_numbers = true, value_parser = cores)]
    cpu: Option<f64>,
    /// Memory limit: `512MB`, `16GB` (decimal), `16GiB` (binary)
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = unsigned_size)]
    memory: Option<String>,
    /// Size of /dev/shm (default: half the memory limit, else half of RAM)
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = unsigned_size)]
    shm_size: Option<String>,
    /// NVIDIA GPUs to give the job
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..))]
    gpu: Option<u32>,
    /// Only GPUs of this model, e.g. A100 (alone: one such GPU)
    #[arg(long, value_name = "NAME")]
    gpu_name: Option<String>,
    /// Only GPUs with at least this much memory, e.g. 40GB (alone: one such GPU)
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = unsigned_size)]
    gpu_memory: Option<String>,
    /// Most processes and threads the job may have at once (`-1` or `0`: no limit, as Docker's API and
    /// podman take them; default 2048 where the pids controller is available)
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = pids_limit)]
    pids_limit: Option<i64>,
    /// Fail instead of warning when the limits asked for cannot be enforced
    #[arg(long)]
    strict_limits: bool,
    /// Publish N host ports: `PORT_0`.. (and `JOB_PORT_0`..) hold them; the job listens on the same numbers
    #[arg(short = 'p', long = "ports", value_name = "N", default_value_t = 0,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(0..))]
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
    /// Bind a host path into the container, `HOST:CONTAINER[:ro]` as Docker writes it (repeatable; a
    /// relative host path is below the current directory; the host path must exist)
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    volumes: Vec<String>,
    /// The job's user: `NAME`, `UID`, `NAME:GROUP` or `UID:GID` (names from the image's /etc/passwd and
    /// /etc/group); default: the image's USER
    #[arg(
        short = 'u',
        long = "user",
        value_name = "USER",
        conflicts_with = "userns"
    )]
    user: Option<String>,
    /// `keep-id`: run the job as you (your uid, gid and groups), so that what it writes is yours
    #[arg(long, value_enum, value_name = "MODE")]
    userns: Option<UsernsFlag>,
}

/// `--userns` (podman's word; only its `keep-id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UsernsFlag {
    /// The invoking user's ids, mapped to themselves (a workflow's `user: host`)
    KeepId,
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
            .map(|kv| {
                let (name, value) = match kv.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (kv.as_str(), None),
                };
                if name.is_empty() {
                    return Err(CliError::new(format!(
                        "-e {kv:?}: a variable needs a name (`-e NAME=VALUE` or `-e NAME`)"
                    )));
                }
                let value = match value {
                    Some(v) => v.to_string(),
                    None => std::env::var(name).unwrap_or_default(),
                };
                Ok((name.to_string(), value))
            })
            .collect::<CliResult<_>>()?;
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
        let volumes = self
            .volumes
            .iter()
            .map(|v| {
                Volume::parse(v).map_err(|message| CliError::new(format!("--volume: {message}")))
            })
            .collect::<CliResult<Vec<_>>>()?;
        let user = match (&self.user, self.userns) {
            (_, Some(UsernsFlag::KeepId)) => UserChoice::Host,
            (Some(user), None) => UserChoice::parse_named(user)
                .map_err(|message| CliError::new(format!("--user {message}")))?,
            (None, None) => UserChoice::Image,
        };
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Ok(JobRequest {
            volumes,
            volume_base: cwd.clone(),
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
            pids_limit: self.pids_limit,
            user,
            ..JobRequest::default()
        })
    }
}

/// `--cpu`: a positive, finite number of cores.
fn cores(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(cores) if cores.is_finite() && cores > 0.0 => Ok(cores),
        Ok(_) => Err("out of range: give a number of cores above 0, e.g. 2 or 0.5".into()),
        Err(_) => Err("not a number of cores: give e.g. 2 or 0.5".into()),
    }
}

/// `--memory` and the other sizes: parsed later by `size::parse`, but a negative one (`-1`, `-64MB`) is a
/// range error here, and a flag taken as the value (`--memory --cpu 1`) is said to be one, as Docker does.
fn unsigned_size(text: &str) -> Result<String, String> {
    let text = text.trim();
    match text.strip_prefix('-') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') => {
            Err("out of range: a size cannot be negative (e.g. 512MB, 16GB, 16GiB)".into())
        }
        Some(_) => {
            Err("not a size: the size goes right after the option (e.g. 512MB, 16GiB)".into())
        }
        None => Ok(text.to_string()),
    }
}

/// `--pids-limit`: a number of processes, or `-1`/`0` for none; below `-1` is a mistake, not "unlimited".
fn pids_limit(text: &str) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(limit) if limit >= -1 => Ok(limit),
        Ok(_) => Err("out of range: give a number of processes, or -1 (or 0) for no limit".into()),
        Err(_) => Err("not a number of processes".into()),
    }
}

pub fn run(args: RunArgs) -> CliResult<ExitCode> {
    let adhoc = AdHoc::try_parse_from(
        std::iter::once("dstack run docker".to_string()).chain(args.rest.clone()),
    )
    .unwrap_or_else(|e| e.exit());
    // Everything that can be checked is checked before a run exists.
    let mut req = adhoc.request()?;
    let mut gpu = adhoc.gpu_request("")?;
    let image: ImageName = req.image.parse()?;
    plan::check_seccomp(&req.seccomp)?;
    let pull: PullPolicy = args.pull.parse()?;
    runtime::userns::enter_rootless_namespace()?;
    let state_root = runtime::paths::state_root();
    let id = new_id();
    req.hostname.get_or_insert_with(|| id.clone());
    req.container_id = id.clone();
    if args.dry_run || adhoc.dry_run {
        if let Some(gpu) = gpu.as_mut() {
            gpu.owner = format!("container {id} (dry run)");
        }
        let (image, planned) = adhoc::dry_run(&req, adhoc.ports, &image, pull, gpu.as_ref())?;
        let plan = serde_json::json!({
            "image": image.reference,
            "layers": image.layer_dirs,
            "spec": planned.spec,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plans serialize")
        );
        return Ok(ExitCode::SUCCESS);
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
    let mut record = RunRecord::new("", ADHOC_WORKFLOW, project, &req.image);
    if !req.volumes.is_empty() {
        let host = Host::current();
        plan::check_volumes(&req, &host)?;
        record.volumes = plan::recorded_volumes(&req, &host);
    }
    let run = store.create(record)?;
    let Some(mut run) = supervised::begin(&store, run, args.detach || adhoc.detach)? else {
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(gpu) = gpu.as_mut() {
        gpu.owner = format!("run {}", run.name());
    }
    // No secrets in an ad hoc run: nothing to mask.
    let mask = Masker::new(&BTreeMap::new());
    let network_mode = plan::network::mode(adhoc.network.into());
    let job = AdHocJob {
        req,
        image,
        gpu,
        network: NetworkConfig::new("")
            .mode(network_mode)
            .ports(adhoc.ports.into())
            .ahead(),
        pull,
    };
    match job.execute(&mut run, &mask) {
        Ok(status) => {
            let code = status.code.clamp(0, 255) as u8;
            supervised::finish(&mut run, &status, &mask);
            Ok(ExitCode::from(code))
        }
        Err(failure) => Err(supervised::record_failure(&mut run, failure, &mask)),
    }
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

    fn parse_error(args: &[&str]) -> String {
        AdHoc::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn negative_numbers_are_range_errors_not_unknown_flags() {
        for (flag, value) in [
            ("--memory", "-1"),
            ("--shm-size", "-1"),
            ("--gpu-memory", "-1"),
            ("--cpu", "-1"),
            ("--cpu", "0"),
            ("-p", "-1"),
            ("--gpu", "-1"),
            ("--pids-limit", "-5"),
        ] {
            let e = parse_error(&["img", flag, value]);
            assert!(
                e.contains(&format!("invalid value '{value}'"))
                    && !e.contains("unexpected argument"),
                "{flag} {value}: {e}"
            );
        }
        assert!(parse_error(&["img", "-p", "-1"]).contains("-1 is not in 0..="));
        assert!(parse_error(&["img", "--memory", "-1"]).contains("cannot be negative"));
        for unlimited in ["-1", "0"] {
            assert_eq!(
                parse(&["img", "--pids-limit", unlimited]).pids_limit,
                Some(unlimited.parse().unwrap())
            );
        }
    }

    #[test]
    fn a_variable_without_a_name_is_refused() {
        for bad in ["=x", "=", ""] {
            let err = parse(&["img", "-e", bad]).request().unwrap_err();
            assert!(err.to_string().contains("needs a name"), "{err}");
        }
        let r = parse(&["img", "-e", "A=", "-e", "B==c"]).request().unwrap();
        assert_eq!(
            r.env,
            [("A".into(), String::new()), ("B".into(), "=c".into())]
        );
    }

    #[test]
    fn bad_sizes_name_the_flag() {
        let err = parse(&["img", "--memory", "12XB"]).request().unwrap_err();
        assert!(err.to_string().contains("--memory"), "{err}");
    }
}
