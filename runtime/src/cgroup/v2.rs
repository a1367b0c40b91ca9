//! cgroup v2: a `dstack/<name>` cgroup under the root (as root) or under the nearest delegated ancestor of our
//! own cgroup (rootless), with `cpu.max`, `memory.max`, `memory.swap.max`, `pids.max` and, as root, the BPF
//! device filter.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CgroupError, Limits, Outcome, Place, Unenforceable, bpf, fs, oci_path, unenforced};

/// Where the processes of a cgroup go when we must enable controllers in it ("no internal processes").
const LEAF: &str = "leaf";

/// One job's v2 cgroup.
#[derive(Debug)]
pub(crate) struct V2 {
    pub(crate) dir: PathBuf,
    fd: OwnedFd,
    /// Parents created for a cgroupsPath, top first: removed with the cgroup when empty.
    pub(crate) made: Vec<PathBuf>,
}

/// Creates `dstack/<name>` with `limits` applied, or says why limits cannot be enforced.
pub(crate) fn create(
    mount: &Path,
    own: &Path,
    place: &Place,
    limits: &Limits,
    as_root: bool,
) -> Result<Outcome<V2>, CgroupError> {
    let required = required_controllers(limits);
    let parent = if as_root {
        mount.to_path_buf()
    } else {
        match delegated_parent(mount, own, &required) {
            Ok(parent) => parent,
            Err(why) => return Ok(Outcome::Unenforced(why)),
        }
    };
    let available = controllers(&parent);
    if let Some(missing) = required.iter().find(|c| !available.iter().any(|a| a == *c)) {
        let why = format!(
            "the cgroup v2 {missing} controller is not available in {}",
            parent.display()
        );
        return Ok(unenforced(why, None));
    }
    // memory and pids are worth having without a limit too: OOM readings and a bounded cleanup.
    let wanted: Vec<&str> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| required.contains(c) || (*c != "cpu" && available.iter().any(|a| a == c)))
        .collect();

    match enable_in(&parent, &wanted) {
        Err(e) if as_root && denied(&e) => {
            let cause = io_of(&e).map(|e| e.to_string()).unwrap_or_default();
            let why = format!(
                "cgroup v2 hierarchy {} is not writable ({cause})",
                mount.display()
            );
            return Ok(unenforced(why, None));
        }
        other => other?,
    }
    let (dir, made) = match place {
        Place::Dstack(name) => {
            let base = parent.join("dstack");
            mkdir(&base)?;
            enable_in(&base, &wanted)?;
            let dir = base.join(name);
            fresh_dir(&dir)?;
            (dir, Vec::new())
        }
        Place::Oci(path) => {
            let made = oci_path::make(&parent, path, &|_| Ok(()))?;
            if let Err(e) = enable_down_to(&parent, &made.leaf, &wanted) {
                oci_path::undo(&made);
                return Err(e);
            }
            (made.leaf, made.parents)
        }
    };
    let fd = match open_dir(&dir) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = std::fs::remove_dir(&dir);
            oci_path::remove_parents(&made);
            return Err(e);
        }
    };
    let cgroup = V2 { dir, fd, made };
    if let Err(e) = cgroup.apply(limits, as_root) {
        let _ = cgroup.kill_and_remove();
        return Err(e);
    }
    Ok(Outcome::Placed(cgroup))
}

impl V2 {
    fn apply(&self, limits: &Limits, as_root: bool) -> Result<(), CgroupError> {
        if let Some(quota) = limits.cpu_quota_us() {
            let period = limits.cpu_period_us();
            fs::write(&self.dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(shares) = limits.cpu_shares {
            // The kernel's (and runc's) mapping of shares 2..262144 onto weight 1..10000.
            let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
            fs::write(&self.dir, "cpu.weight", &weight.to_string())?;
        }
        if let Some(bytes) = limits.memory {
            fs::write(&self.dir, "memory.max", &bytes.to_string())?;
            // No swap beyond the limit unless asked (OCI's swap is memory+swap); without swap accounting the
            // file is absent and there is nothing to cap.
            let swap = match limits.memory_swap {
                Some(u64::MAX) => "max".to_string(),
                Some(total) => total.saturating_sub(bytes).to_string(),
                None => "0".to_string(),
            };
            match fs::write_raw(&self.dir.join("memory.swap.max"), &swap) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(fs::classify(self.dir.join("memory.swap.max"), &swap, e));
                }
                _ => {}
            }
        }
        if let Some(bytes) = limits.memory_reservation {
            fs::write(&self.dir, "memory.low", &bytes.to_string())?;
        }
        if limits.memory_swappiness.is_some() || limits.oom_kill_disable {
            tracing::warn!(
                "cgroup v2 has no memory swappiness or OOM-killer switch: linux.resources.memory.swappiness \
                 and disableOOMKiller are ignored"
            );
        }
        match (limits.pids, limits.default_pids) {
            (Some(pids), _) => fs::write(&self.dir, "pids.max", &pids.to_string())?,
            // Only where the controller is enabled: a default requires nothing.
            (None, Some(pids)) if self.dir.join("pids.max").exists() => {
                fs::write(&self.dir, "pids.max", &pids.to_string())?
            }
            _ => {}
        }
        match &limits.devices {
            // Loading a cgroup device program needs CAP_SYS_ADMIN in the initial namespace; rootless jobs
            // cannot create device nodes anyway and only see the host's through bind mounts.
            Some(policy) if as_root => {
                bpf::attach(self.fd.as_fd(), policy).map_err(|(step, source)| {
                    CgroupError::DeviceFilter {
                        path: self.dir.clone(),
                        step,
                        source,
                    }
                })
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        fs::write(&self.dir, "cgroup.procs", &pid.to_string())
    }

    pub(crate) fn oom_killed(&self) -> bool {
        fs::read_keyed(&self.dir, "memory.events", "oom_kill").is_some_and(|n| n > 0)
    }

    pub(crate) fn cpu_usage(&self) -> Option<Duration> {
        fs::read_keyed(&self.dir, "cpu.stat", "usage_usec").map(Duration::from_micros)
    }

    pub(crate) fn memory_peak(&self) -> Option<u64> {
        fs::read_u64(&self.dir, "memory.peak")
    }

    pub(crate) fn kill_and_remove(&self) -> Result<(), CgroupError> {
        kill_and_remove(&self.dir)?;
        oci_path::remove_parents(&self.made);
        Ok(())
    }
}

/// Kills everything in `dir` (and below), waits for it to empty, and removes it.
pub(crate) fn kill_and_remove(dir: &Path) -> Result<(), CgroupError> {
    if !dir.exists() {
        return Ok(());
    }
    let populated = || fs::read_keyed(dir, "cgroup.events", "populated").unwrap_or(0) > 0;
    // cgroup.kill (5.14+) kills the whole subtree at once, fork bombs included; older kernels get the loop.
    let killed =
        fs::write_raw(&dir.join("cgroup.kill"), "1").is_ok() && fs::wait_until(|| !populated());
    if !killed {
        let mut dirs = Vec::new();
        fs::collect_tree(dir, &mut dirs);
        let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        if !fs::kill_until_empty(&refs) {
            return Err(CgroupError::StillBusy {
                path: dir.to_path_buf(),
            });
        }
    }
    fs::rmdir_tree(dir)
}

/// The `dstack` directories this process may own: under the root, or under each delegated ancestor.
pub(crate) fn dstack_dirs(mount: &Path, own: &Path, as_root: bool) -> Vec<PathBuf> {
    if as_root {
        return vec![mount.join("dstack")];
    }
    writable_chain(mount, own)
        .into_iter()
        .map(|d| d.join("dstack"))
        .filter(|d| d.is_dir())
        .collect()
}

/// For `dstack info`: where a job with CPU, memory and pids limits would go, the controllers there, and why
/// its limits would not be enforced.
pub(crate) fn support(
    mount: &Path,
    own: &Path,
    as_root: bool,
) -> (Option<PathBuf>, Vec<String>, Option<Unenforceable>) {
    const ALL: [&str; 3] = ["cpu", "memory", "pids"];
    let parent = if as_root {
        Ok(mount.to_path_buf())
    } else {
        delegated_parent(mount, own, &ALL)
    };
    match parent {
        Ok(parent) => {
            let available = controllers(&parent);
            let missing: Vec<&str> = ALL
                .into_iter()
                .filter(|c| !available.iter().any(|a| a == c))
                .collect();
            let why = (!missing.is_empty()).then(|| Unenforceable {
                why: format!(
                    "the cgroup v2 {} controller(s) are not available in {}",
                    missing.join(", "),
                    parent.display()
                ),
                hint: None,
            });
            (Some(parent), available, why)
        }
        Err(why) => {
            // What the subtree we are in offers, for the report.
            let available = controllers(own.parent().unwrap_or(mount));
            (None, available, Some(why))
        }
    }
}

fn required_controllers(limits: &Limits) -> Vec<&'static str> {
    let mut required = Vec::new();
    if limits.cpu.is_some() || limits.cpu_shares.is_some() {
        required.push("cpu");
    }
    if limits.memory.is_some() {
        required.push("memory");
    }
    if limits.pids.is_some() {
        required.push("pids");
    }
    required
}

/// The controllers a cgroup's children can use.
fn controllers(dir: &Path) -> Vec<String> {
    fs::read(&dir.join("cgroup.controllers"))
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Our own cgroup and its ancestors, nearest first, as long as we can create cgroups in them and move
/// processes through them (write access to `cgroup.procs` of the common ancestor is what the kernel checks).
fn writable_chain(mount: &Path, own: &Path) -> Vec<PathBuf> {
    let mut chain = Vec::new();
    let mut dir = own;
    while fs::writable(dir, &["cgroup.procs", "cgroup.subtree_control"]) {
        chain.push(dir.to_path_buf());
        match dir.parent() {
            Some(parent) if dir != mount && parent.starts_with(mount) => dir = parent,
            _ => break,
        }
    }
    chain
}

/// The nearest delegated ancestor-or-self with the required controllers, preferring one without processes of
/// its own (so nobody has to move), else a reason that names the subtree.
fn delegated_parent(mount: &Path, own: &Path, required: &[&str]) -> Result<PathBuf, Unenforceable> {
    let chain = writable_chain(mount, own);
    if chain.is_empty() {
        return Err(Unenforceable {
            why: format!(
                "cgroup v2 subtree {} is not delegated to you",
                own.display()
            ),
            hint: Some("ask for Delegate=yes (systemd) or run inside a Slurm job"),
        });
    }
    let has_all = |dir: &Path| {
        let available = controllers(dir);
        required.iter().all(|c| available.iter().any(|a| a == c))
    };
    if let Some(dir) = chain.iter().find(|d| has_all(d) && fs::procs(d).is_empty()) {
        return Ok(dir.clone());
    }
    if let Some(dir) = chain.iter().find(|d| has_all(d)) {
        return Ok(dir.clone());
    }
    let top = chain
        .last()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    Err(Unenforceable {
        why: format!(
            "cgroup v2 subtree {top} is delegated to you without the {} controller(s)",
            required.join(", ")
        ),
        hint: Some("ask for Delegate=yes with them (systemd)"),
    })
}

/// Enables `wanted` in `dir/cgroup.subtree_control`. When `dir` holds processes (v2 forbids controllers then,
/// except at the root) they move to `dir/leaf` first.
fn enable_in(dir: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
    match try_enable(dir, wanted)? {
        Ok(()) => Ok(()),
        Err(_busy) => {
            move_to_leaf(dir)?;
            try_enable(dir, wanted)?
                .map_err(|(value, e)| fs::classify(dir.join("cgroup.subtree_control"), &value, e))
        }
    }
}

/// One pass over the missing controllers; the inner error is the EBUSY of a cgroup that has processes.
fn try_enable(dir: &Path, wanted: &[&str]) -> Result<Result<(), (String, io::Error)>, CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read(&file)?;
    for controller in wanted
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
    {
        let value = format!("+{controller}");
        match fs::write_raw(&file, &value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(Err((value, e))),
            Err(e) => return Err(fs::classify(file, &value, e)),
        }
    }
    Ok(Ok(()))
}

/// Enables `wanted` in every cgroup from `top` down to `leaf`'s parent, none of which may hold processes
/// (a cgroupsPath never moves processes that are not ours).
fn enable_down_to(top: &Path, leaf: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
    let Ok(below) = leaf.strip_prefix(top) else {
        return Ok(());
    };
    let mut dir = top.to_path_buf();
    let mut parts: Vec<_> = below.components().collect();
    parts.pop();
    if let Err((value, e)) = try_enable(&dir, wanted)? {
        return Err(fs::classify(dir.join("cgroup.subtree_control"), &value, e));
    }
    for part in parts {
        dir.push(part);
        if let Err((value, e)) = try_enable(&dir, wanted)? {
            return Err(fs::classify(dir.join("cgroup.subtree_control"), &value, e));
        }
    }
    Ok(())
}

/// Moves every process of `dir` into `dir/leaf`, so that `dir` may enable controllers for its children.
fn move_to_leaf(dir: &Path) -> Result<(), CgroupError> {
    let leaf = dir.join(LEAF);
    mkdir(&leaf)?;
    for pid in fs::procs(dir) {
        match fs::write_raw(&leaf.join("cgroup.procs"), &pid.to_string()) {
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => {
                return Err(fs::classify(leaf.join("cgroup.procs"), &pid.to_string(), e));
            }
            _ => {}
        }
    }
    Ok(())
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(CgroupError::Create {
            path: dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Creates the job's cgroup; an empty leftover of the same name is replaced, a busy one refused.
pub(crate) fn fresh_dir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !fs::procs(dir).is_empty() {
                return Err(CgroupError::InUse {
                    path: dir.to_path_buf(),
                });
            }
            fs::rmdir_tree(dir)?;
            std::fs::create_dir(dir).map_err(|source| CgroupError::Create {
                path: dir.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(CgroupError::Create {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn open_dir(dir: &Path) -> Result<OwnedFd, CgroupError> {
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })
}

fn io_of(e: &CgroupError) -> Option<&io::Error> {
    match e {
        CgroupError::Create { source, .. }
        | CgroupError::Write { source, .. }
        | CgroupError::Read { source, .. } => Some(source),
        _ => None,
    }
}

/// Permission problems (a read-only or foreign hierarchy) as opposed to a value the kernel rejected.
fn denied(e: &CgroupError) -> bool {
    io_of(e)
        .and_then(io::Error::raw_os_error)
        .is_some_and(|n| [libc::EACCES, libc::EPERM, libc::EROFS].contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::DevicePolicy;
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};

    /// The cgroup2 mount: /sys/fs/cgroup on v2 hosts, /sys/fs/cgroup/unified on hybrid ones like this machine.
    fn cgroup2_mount() -> PathBuf {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = mountinfo
            .lines()
            .find(|l| l.contains(" - cgroup2 "))
            .expect("no cgroup2 mount on this host");
        PathBuf::from(line.split(' ').nth(4).unwrap())
    }

    /// The BPF program loads, attaches and decides for a real process, on whatever kernel runs the tests
    /// (the device controller of v2 needs no controller enabled, so this works on hybrid hosts too).
    #[test]
    fn the_bpf_device_filter_denies_unlisted_devices_to_a_real_process() {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root");
        let mount = cgroup2_mount();
        let limits = Limits {
            devices: Some(DevicePolicy::docker_default()),
            ..Limits::default()
        };
        let name = format!("test-bpf-{}", std::process::id());
        let Outcome::Placed(cg) =
            create(&mount, &mount, &Place::Dstack(&name), &limits, true).unwrap()
        else {
            panic!("not enforced as root")
        };
        let script =
            "read go; (: </dev/null) && echo null-ok; (: </dev/kmsg) && echo kmsg-ok; exit 0";
        let mut child = Command::new("/bin/sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        cg.add_pid(child.id() as i32).unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        child.wait().unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        cg.kill_and_remove().unwrap();
        assert!(!cg.dir.exists());
        assert_eq!(out.trim(), "null-ok", "stderr: {err}");
        assert!(err.contains("Operation not permitted"), "{err}");
    }
}
