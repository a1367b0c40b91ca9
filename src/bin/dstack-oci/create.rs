//! `create` and `run`: read the bundle's config.json, refuse what is not supported (by name), make the
//! state directory and the cgroup, and create the container through `runtime::container` (the OCI
//! lifecycle: hooks, start gate, no tie to this process). `run` then starts it and, unless detached,
//! waits for it and deletes it, as runc does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use oci_spec::runtime::Spec;
use runtime::cgroup::{CgroupError, CgroupPlacement, SpecCgroup, SpecPlacement};
use runtime::container::{ContainerBuilder, OciOptions, State, gate};

use crate::Globals;
use crate::error::{CmdResult, Failure, fail};
use crate::record::{self, CgroupDirs, Record, Status};

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
    let spec: Spec = runtime::text::parse_json(text.as_bytes()).map_err(|e| {
        let what = unknown_name(&text).unwrap_or_else(|| e.to_string());
        Failure::new(format!("{}: {what}", path.display()))
    })?;
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
    let own = runtime::container::validate::OwnNamespaces::of(&spec).map_err(Failure::new)?;
    runtime::container::validate::spec(&spec, own)
        .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    Ok(spec)
}

/// The field a config.json that does not parse names wrongly, when it is a capability or an rlimit type
/// this runtime does not know (serde's message names only the value): "process.capabilities.bounding[3]:
/// unknown capability \"CAP_TEST\"". Only read on failure.
fn unknown_name(text: &str) -> Option<String> {
    use oci_spec::runtime::{Capability, PosixRlimitType};
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let process = value.get("process")?;
    let known = |v: &serde_json::Value, cap: bool| {
        if cap {
            serde_json::from_value::<Capability>(v.clone()).is_ok()
        } else {
            serde_json::from_value::<PosixRlimitType>(v.clone()).is_ok()
        }
    };
    let echo = |v: &serde_json::Value| runtime::container::validate::echo(&v.to_string());
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        let list = process
            .pointer(&format!("/capabilities/{set}"))
            .and_then(|l| l.as_array());
        for (i, cap) in list.into_iter().flatten().enumerate() {
            if !known(cap, true) {
                return Some(format!(
                    "process.capabilities.{set}[{i}]: unknown capability {}: use the kernel's names (CAP_CHOWN, CAP_NET_ADMIN...)",
                    echo(cap)
                ));
            }
        }
    }
    let rlimits = process.get("rlimits").and_then(|r| r.as_array());
    for (i, r) in rlimits.into_iter().flatten().enumerate() {
        if let Some(typ) = r.get("type").filter(|t| !known(t, false)) {
            return Some(format!(
                "process.rlimits[{i}].type: unknown resource {}: use the kernel's names (RLIMIT_NOFILE, RLIMIT_NPROC...)",
                echo(typ)
            ));
        }
    }
    None
}

/// A kernel list (`0-3,8`) of `field` as numbers.
fn parse_list(list: &str, field: &str) -> Result<Vec<usize>, Failure> {
    let bad = || {
        Failure::new(format!(
            "{field}: bad list {:?}: give numbers and ranges, as 0-3,8",
            runtime::container::validate::echo(list)
        ))
    };
    let mut out = Vec::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| s.trim().parse::<usize>().map_err(|_| bad());
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b || b >= 1 << 16 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// `linux.resources.cpu.cpus` as this process's CPU affinity, which init and the job inherit.
fn pin_cpus(spec: &Spec) -> Result<(), Failure> {
    let Some(list) = cpu_field(spec, |c| c.cpus().clone()) else {
        return Ok(());
    };
    let mut set = nix::sched::CpuSet::new();
    for cpu in parse_list(&list, "linux.resources.cpu.cpus")? {
        set.set(cpu).map_err(fail("linux.resources.cpu.cpus"))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(fail(format!("linux.resources.cpu.cpus {list}")))
}

/// `linux.resources.cpu.mems` as this process's memory policy (bind to those NUMA nodes), which init and
/// the job inherit, as the CPUs are pinned. All the online nodes need nothing; a kernel without NUMA
/// support is warned about and the field ignored.
fn bind_mems(spec: &Spec) -> Result<(), Failure> {
    const FIELD: &str = "linux.resources.cpu.mems";
    let Some(list) = cpu_field(spec, |c| c.mems().clone()) else {
        return Ok(());
    };
    let nodes = parse_list(&list, FIELD)?;
    let online = std::fs::read_to_string("/sys/devices/system/node/online")
        .ok()
        .and_then(|l| parse_list(l.trim(), "online nodes").ok())
        .unwrap_or_else(|| vec![0]);
    if let Some(n) = nodes.iter().find(|n| !online.contains(n)) {
        return Err(Failure::new(format!(
            "{FIELD}: memory node {n} is not online here (online: {online:?})"
        )));
    }
    let mut wanted = nodes.clone();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted == online {
        return Ok(());
    }
    let mut mask = vec![
        0 as libc::c_ulong;
        1 + wanted.iter().max().unwrap_or(&0) / libc::c_ulong::BITS as usize
    ];
    for n in &wanted {
        mask[n / libc::c_ulong::BITS as usize] |= 1 << (n % libc::c_ulong::BITS as usize);
    }
    const MPOL_BIND: libc::c_long = 2;
    // SAFETY: set_mempolicy reads `mask.len()` words from a live vector.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_set_mempolicy,
            MPOL_BIND,
            mask.as_ptr(),
            (mask.len() * libc::c_ulong::BITS as usize) as libc::c_ulong,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            tracing::warn!("{FIELD} {list}: this kernel has no NUMA memory policies; ignored");
            return Ok(());
        }
        return Err(Failure::new(format!("{FIELD} {list}: {e}")));
    }
    Ok(())
}

fn cpu_field(
    spec: &Spec,
    get: impl Fn(&oci_spec::runtime::LinuxCpu) -> Option<String>,
) -> Option<String> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref())
        .and_then(get)
        .filter(|s| !s.is_empty())
}

/// A cgroup for the container builder, and what to record of it.
type MadeCgroup = (Box<dyn CgroupPlacement>, CgroupDirs);

/// The container's cgroup (see `SpecCgroup::for_oci`), with the directories made, for `delete`.
fn cgroup(spec: &Spec, id: &str) -> Result<Option<MadeCgroup>, Failure> {
    let cgroup_failure = |e: CgroupError| match e {
        e @ CgroupError::CgroupsPath { .. } => Failure::new(e.to_string()),
        e => Failure::new(format!("linux.resources: {}", runtime::report::Chain(&e))),
    };
    match SpecCgroup::for_oci(spec, id)
        .and_then(SpecCgroup::create)
        .map_err(cgroup_failure)?
    {
        SpecPlacement::Enforced(cg) => {
            let dirs = CgroupDirs {
                leaves: cg.dirs().iter().map(|d| d.to_path_buf()).collect(),
                made_parents: cg.made_parents().to_vec(),
            };
            Ok(Some((Box::new(cg), dirs)))
        }
        SpecPlacement::Unenforced { reason } => {
            tracing::warn!("{reason}");
            Ok(None)
        }
        SpecPlacement::Unplaced => Ok(None),
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
    bind_mems(&spec)?;
    let (placement, cgroup_dirs) = cgroup(&spec, id)?.unzip();
    let options = OciOptions {
        state_dir: dir.to_path_buf(),
        state,
        console_socket: args.console_socket.clone(),
        preserve_fds: preserved_fds(args.preserve_fds),
    };
    let mut builder =
        ContainerBuilder::new(id.as_str(), spec.clone()).oci(root_path, readonly, options);
    if let Some(p) = placement {
        builder = builder.cgroup(p);
    }
    builder = builder.in_container_step(&runtime::gpu::DRIVER_LINKS);
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
        cgroup: cgroup_dirs,
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
    if let Some(dirs) = &rec.cgroup {
        let _ = dirs.remove();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lists_parse_and_bad_ones_name_the_field() {
        assert_eq!(parse_list("0-2,5", "f").ok(), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_list("3", "f").ok(), Some(vec![3]));
        for bad in ["", "a", "2-1", "0-99999999", "1,,2"] {
            let e = parse_list(bad, "linux.resources.cpu.mems").unwrap_err();
            assert!(
                e.message.starts_with("linux.resources.cpu.mems: bad list"),
                "{bad}: {}",
                e.message
            );
        }
    }
}
