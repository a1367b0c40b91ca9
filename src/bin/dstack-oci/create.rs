//! `create` and `run`: read the bundle's config.json, refuse what is not supported (by name), make the
//! state directory and the cgroup, and create the container through `runtime::container` (the OCI
//! lifecycle: hooks, start gate, no tie to this process). `run` then starts it and, unless detached,
//! waits for it and deletes it, as runc does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use oci_spec::runtime::Spec;
use runtime::cgroup::{Limits, Placement};
use runtime::container::{CgroupPlacement, ContainerBuilder, OciOptions, State, gate};

use crate::Globals;
use crate::error::{CmdResult, Failure, fail};
use crate::record::{self, Record, Status};

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The bundle: a directory holding config.json and the root filesystem
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    /// Write init's pid to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A unix socket to send the terminal's master to (process.terminal)
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for compatibility: pivot_root is always used
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for compatibility
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N descriptors beyond stdio (3..3+N, after those of $LISTEN_FDS) to the container's process;
    /// no other reaches it
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once the container runs, instead of waiting for it
    #[arg(short, long)]
    pub detach: bool,
    /// Accepted for compatibility
    #[arg(long)]
    pub keep: bool,
}

pub fn create(globals: &Globals, args: CreateArgs) -> CmdResult {
    make(globals, &args)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run(globals: &Globals, args: RunArgs) -> CmdResult {
    let pid = make(globals, &args.create)?;
    let id = &args.create.id;
    crate::start::release(globals, id)?;
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let status = crate::signals::wait_forwarding(pid);
    crate::delete::remove(globals, id, true)?;
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}

fn read_spec(bundle: &Path) -> Result<Spec, Failure> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(fail(path.display()))?;
    let spec: Spec = runtime::text::parse_json(text.as_bytes()).map_err(fail(path.display()))?;
    if !spec.version().starts_with("1.") {
        return Err(Failure::new(format!(
            "{}: ociVersion {} is not supported (1.x is)",
            path.display(),
            spec.version()
        )));
    }
    let refused = runtime::container::unsupported::fields(&spec);
    if !refused.is_empty() {
        return Err(Failure::new(format!(
            "{}: dstack-oci does not support {}",
            path.display(),
            refused.join(", ")
        )));
    }
    Ok(spec)
}

/// The cgroup's name: the last part of cgroupsPath (`slice:prefix:name` or a path), else the id.
fn cgroup_name(spec: &Spec, id: &str) -> String {
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let last = path
        .rsplit(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or(id);
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    clean.trim_start_matches('.').to_string()
}

/// `linux.resources.cpu.cpus` as this process's CPU affinity, which init and the job inherit.
fn pin_cpus(spec: &Spec) -> Result<(), Failure> {
    let Some(list) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref())
        .and_then(|c| c.cpus().clone())
        .filter(|s| !s.is_empty())
    else {
        return Ok(());
    };
    let mut set = nix::sched::CpuSet::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| Failure::new(format!("linux.resources.cpu.cpus: bad list {list:?}")))
        };
        for cpu in parse(a)?..=parse(b)? {
            set.set(cpu).map_err(fail("linux.resources.cpu.cpus"))?;
        }
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(fail(format!("linux.resources.cpu.cpus {list}")))
}

/// The cgroup for the spec's resources, when it asks for any.
fn cgroup(spec: &Spec, name: &str) -> Result<Option<Box<dyn CgroupPlacement>>, Failure> {
    let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
        return Ok(None);
    };
    let limits = Limits::from_oci(resources).map_err(fail("linux.resources"))?;
    if limits.is_unlimited() && limits.devices.is_none() {
        return Ok(None);
    }
    match runtime::cgroup::create(name, &limits, false).map_err(fail("linux.resources"))? {
        Placement::Enforced(cg) => Ok(Some(Box::new(cg))),
        Placement::Unenforced { reason } => {
            tracing::warn!("{reason}");
            Ok(None)
        }
    }
}

/// Creates the container; returns init's pid. On failure nothing is left behind.
fn make(globals: &Globals, args: &CreateArgs) -> Result<i32, Failure> {
    let id = &args.id;
    record::check_id(id)?;
    let bundle = std::fs::canonicalize(&args.bundle).map_err(fail(args.bundle.display()))?;
    let spec = read_spec(&bundle)?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Failure::new("config.json has no root"))?;
    let root_path = bundle.join(root.path());
    let readonly = root.readonly().unwrap_or(false);
    std::fs::create_dir_all(&globals.root).map_err(fail(globals.root.display()))?;
    let dir = record::dir(globals, id);
    if let Err(e) = std::fs::create_dir(&dir) {
        return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::new(format!("container {id} already exists"))
        } else {
            Failure::new(format!("{}: {e}", dir.display()))
        });
    }
    let result = make_in(&dir, &bundle, spec, &root_path, readonly, args);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn make_in(
    dir: &Path,
    bundle: &Path,
    spec: Spec,
    root_path: &Path,
    readonly: bool,
    args: &CreateArgs,
) -> Result<i32, Failure> {
    let id = &args.id;
    // No lock across the create: init would inherit it (a clone keeps our open files) and hold it for
    // the container's life. The directory is new; `make` made it and owns it until the record exists.
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&spec).expect("specs serialize"),
    )
    .map_err(fail(dir.display()))?;
    let annotations = spec.annotations().clone().unwrap_or_default();
    let state = State {
        oci_version: spec.version().clone(),
        id: id.clone(),
        status: "creating".into(),
        pid: None,
        bundle: bundle.to_path_buf(),
        annotations: annotations.clone(),
    };
    pin_cpus(&spec)?;
    let name = cgroup_name(&spec, id);
    let placement = cgroup(&spec, &name)?;
    let has_cgroup = placement.is_some();
    let mut builder = ContainerBuilder::new(id.as_str())
        .spec(spec.clone())
        .root_directory(root_path, readonly)
        .oci(OciOptions {
            state_dir: dir.to_path_buf(),
            state,
            console_socket: args.console_socket.clone(),
            preserve_fds: preserved_fds(args.preserve_fds),
        });
    if let Some(p) = placement {
        builder = builder.cgroup(p);
    }
    let created = builder.build().and_then(|c| c.create())?;
    let pid = created.pid();
    let owner = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let rec = Record {
        id: id.clone(),
        pid,
        start_time: record::start_time(pid),
        bundle: bundle.to_path_buf(),
        oci_version: spec.version().clone(),
        annotations,
        created: record::now_rfc3339(),
        owner,
        cgroup: has_cgroup.then_some(name),
    };
    let saved = record::lock(dir).and_then(|_locked| record::save(dir, &rec));
    if let Err(e) = saved.and_then(|()| write_pid_file(args, pid)) {
        kill_created(&rec, dir);
        return Err(e);
    }
    debug_assert_eq!(rec.status(dir), Status::Created);
    Ok(pid)
}

fn write_pid_file(args: &CreateArgs, pid: i32) -> Result<(), Failure> {
    if let Some(path) = &args.pid_file {
        std::fs::write(path, pid.to_string()).map_err(fail(path.display()))?;
    }
    Ok(())
}

/// Undoes a create whose bookkeeping failed after init started.
fn kill_created(rec: &Record, dir: &Path) {
    // SAFETY: signalling the init we just created.
    unsafe { libc::kill(rec.pid, libc::SIGKILL) };
    let _ = std::fs::remove_file(dir.join(gate::SOCKET));
    if let Some(name) = &rec.cgroup {
        let _ = runtime::cgroup::sweep_leftovers(|n| n != name);
    }
}

/// How many descriptors above stdio the container's process keeps: `--preserve-fds`, plus the sockets
/// systemd passes in `LISTEN_FDS` (as runc counts them).
fn preserved_fds(preserve: u32) -> u32 {
    let listen: u32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    preserve.saturating_add(listen)
}
