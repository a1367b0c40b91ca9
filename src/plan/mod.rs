//! The plan: what to run, as pure data. Both the ad hoc form (`dstack run docker IMAGE ...`) and workflows
//! produce a [`JobRequest`]; [`plan`] combines it with the image's configuration into the one OCI runtime
//! `Spec` the container receives: every edit (user and capabilities, environment with `TERM` and ports,
//! mounts with the `/etc` files, limits with pids, seccomp) is made here, so `--dry-run` prints what runs.
//! It is pure but for `Host::current()` and one `stat` of each volume's host path (refused when missing).
//! Only the GPUs are added by the job stage, which must lease them (`job::plan`).
//!
//! One file per concern: `process` (command line, user, environment), `mounts`, `resources`, `network`,
//! `security` (seccomp).
//!
//! Docker's rules (see `workflow-semantics.md`): commands are joined with ` && ` (a trailing `&` wrapped
//! as `{ cmd & }`) and run by `/bin/sh -c`, or passed as the last argument of a given entrypoint; an
//! entrypoint alone drops the image's CMD; neither means the image's ENTRYPOINT + CMD. Image Env < request
//! env. The image's USER is looked up by name in its own `/etc/passwd` and `/etc/group`.

mod keep_id;
mod mounts;
pub mod network;
mod process;
mod resources;
mod security;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;

pub use process::{Invoker, UserFiles, command_line};
pub use resources::{DEFAULT_PIDS_LIMIT, shm_size};
pub use security::check_seccomp;

/// What the user asked to run, before the image is known. Sizes are bytes; `cpu` is in cores.
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    /// The image reference as the user wrote it.
    pub image: String,
    /// Shell command lines; when non-empty they are joined with ` && ` and run by `/bin/sh -c` (or by
    /// `entrypoint` when given), replacing the image's CMD.
    pub commands: Vec<String>,
    /// Replaces the image's ENTRYPOINT (and drops its CMD, as Docker does).
    pub entrypoint: Option<Vec<String>>,
    /// Environment on top of the image's, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Absolute path inside the container; the image's WorkingDir otherwise.
    pub working_dir: Option<String>,
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
    pub shm_size: Option<u64>,
    /// Fail instead of warning when a limit cannot be enforced (rootless without a delegated cgroup).
    pub strict_limits: bool,
    /// Host paths bound into the container.
    pub mounts: Vec<BindMount>,
    pub hostname: Option<String>,
    /// The container's id: its scratch directory, where the `/etc` files it is given are staged.
    pub container_id: String,
    /// Most tasks at once (`<= 0`: no limit); `None` leaves dstack's default to the launcher.
    pub pids_limit: Option<i64>,
    /// The job's seccomp filter (`--security-opt seccomp=...`, a workflow's `security_opt`).
    pub seccomp: SeccompChoice,
    /// Host paths the user binds in (`-v`, `volumes:`), as written (`plan::mounts` resolves them).
    pub volumes: Vec<Volume>,
    /// What a relative volume host path is relative to: the project directory (the current one ad hoc).
    pub volume_base: PathBuf,
    /// Whose identity the job runs with (`-u/--user`, `--userns keep-id`, a workflow's `user:`).
    pub user: UserChoice,
}

pub use crate::workflow::{SeccompChoice, UserChoice, Volume};
pub use mounts::{check_volumes, recorded_volumes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// Facts about the machine and this process the plan depends on, passed in so the planner stays pure.
#[derive(Debug, Clone)]
pub struct Host {
    /// Total RAM in bytes (the default `/dev/shm` is half of it when no memory limit is set).
    pub memory: u64,
    /// The state root, under which the container's scratch directory (and its staged `/etc` files) is.
    pub state_root: PathBuf,
    /// `TERM` for a job that gets a terminal (the runtime gives it one when stdin is a terminal); `None`
    /// when it gets none.
    pub terminal: Option<String>,
    /// The invoking user's home (`$HOME`): what a volume's `~` stands for.
    pub home: Option<PathBuf>,
    /// Who runs dstack: the ids `user: host` gives the job.
    pub invoker: Invoker,
}

impl Host {
    /// This machine, from `/proc/meminfo`; this process's state root and terminal.
    pub fn current() -> Host {
        let kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(1 << 20);
        let terminal = nix::unistd::isatty(std::io::stdin())
            .unwrap_or(false)
            .then(|| std::env::var("TERM").unwrap_or_else(|_| "xterm".into()));
        Host {
            memory: kib * 1024,
            state_root: runtime::paths::state_root(),
            terminal,
            home: std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|h| h.is_absolute()),
            invoker: Invoker::current(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "image {0} has neither ENTRYPOINT nor CMD: give a command with -c (or `commands:`) or --entrypoint"
    )]
    NoCommand(String),
    #[error("user {} (the image's USER) is not in the image's /etc/passwd", runtime::text::quote(.user))]
    UnknownUser { user: String },
    #[error("group {} (the image's USER) is not in the image's /etc/group", runtime::text::quote(.group))]
    UnknownGroup { group: String },
    #[error(
        "the image's USER {} resolves to id 4294967295, which is no id (the kernel reads it as \"unchanged\"): give the image another USER",
        runtime::text::quote(.user)
    )]
    ReservedId { user: String },
    #[error(
        "user {} (asked for with --user or `user:`) is not in the image's /etc/passwd: give a user it has, or a uid",
        runtime::text::quote(.user)
    )]
    UnknownChosenUser { user: String },
    #[error(
        "group {} (asked for with --user or `user:`) is not in the image's /etc/group: give a group it has, or a gid",
        runtime::text::quote(.group)
    )]
    UnknownChosenGroup { group: String },
    #[error(
        "user {} (asked for with --user or `user:`) resolves to id 4294967295, which is no id (the kernel reads it as \"unchanged\"): give another user",
        runtime::text::quote(.user)
    )]
    ChosenReservedId { user: String },
    #[error("working directory {} must be an absolute path", runtime::text::quote(.0))]
    RelativeWorkingDir(String),
    #[error("mount source {0} must be an absolute path")]
    RelativeMount(PathBuf),
    #[error(transparent)]
    Volume(#[from] mounts::VolumeError),
    #[error("invalid plan: {0}")]
    Invalid(String),
    #[error("{0}: fix it, or run with `--security-opt seccomp=unconfined` (no filter)")]
    Seccomp(String),
}

/// Combines `req` with the image's configuration and its `/etc/passwd` and `/etc/group` into the spec the
/// container receives (GPUs apart: see the module's note).
pub fn plan(
    req: &JobRequest,
    image: &ImageConfiguration,
    users: &UserFiles,
    host: &Host,
) -> Result<Spec, PlanError> {
    let config = image.config().clone().unwrap_or_default();
    let entrypoint = config.entrypoint().clone().unwrap_or_default();
    let cmd = config.cmd().clone().unwrap_or_default();
    let args = command_line(req, &entrypoint, &cmd)?;
    let user = users.job_user(image, &req.user, host)?;
    let cwd = process::working_dir(req, config.working_dir().clone())?;
    let hostname = req.hostname.clone().unwrap_or_else(|| "dstack".into());
    let env = process::environment(
        config.env().as_deref().unwrap_or_default(),
        req,
        &hostname,
        &user,
    );

    let mut spec = runtime::container::default_spec(args.clone(), shm_size(req, host));
    process::set_process(&mut spec, args, env, &cwd, &user, host)?;
    if let (UserChoice::Host, Some((uids, gids))) = (&req.user, &host.invoker.rootless) {
        keep_id::give_own_namespace(&mut spec, &user, uids, gids)?;
    }
    spec.set_hostname(Some(hostname));
    mounts::set_mounts(&mut spec, req, host)?;
    resources::set_limits(&mut spec, req)?;
    let seccomp = security::seccomp_profile(&req.seccomp, &spec)?;
    if let Some(linux) = spec.linux_mut().as_mut() {
        linux.set_seccomp(seccomp);
    }
    Ok(spec)
}
