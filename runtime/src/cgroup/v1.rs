//! cgroup v1 (and hybrid hosts, which keep the controllers on v1): one `dstack/<name>` cgroup per controller
//! hierarchy, with CFS quota, memory (and memory+swap) limits, `pids.max` and `devices.allow` lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::layout::Hierarchy;
use super::oci_path;
use super::{CgroupError, Limits, Outcome, Place, Unenforceable, fs, unenforced, v2::fresh_dir};

/// Controllers we place jobs under: the limits' and the ones we read (cpuacct) or filter with (devices).
const USED: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "devices"];

/// One job's cgroups, one directory per hierarchy.
#[derive(Debug)]
pub(crate) struct V1 {
    pub(crate) dirs: Vec<(Vec<String>, PathBuf)>,
    /// Parents created for a cgroupsPath, top first: removed with the cgroup when empty.
    pub(crate) made: Vec<PathBuf>,
}

/// For `dstack info`: why a job's CPU, memory and pids limits would not be enforced on these hierarchies.
pub(crate) fn support(controllers: &[String], as_root: bool) -> Option<Unenforceable> {
    if !as_root {
        return Some(Unenforceable {
            why: "this host keeps its cgroup controllers on v1, which cannot be delegated to you"
                .into(),
            hint: Some("run as root, or on a cgroup v2 host with Delegate=yes"),
        });
    }
    let missing: Vec<&str> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| !controllers.iter().any(|h| h == c))
        .collect();
    (!missing.is_empty()).then(|| Unenforceable {
        why: format!(
            "the cgroup v1 {} controller(s) are not mounted",
            missing.join(", ")
        ),
        hint: None,
    })
}

pub(crate) fn create(
    hierarchies: &[Hierarchy],
    place: &Place,
    limits: &Limits,
    as_root: bool,
) -> Result<Outcome<V1>, CgroupError> {
    if !as_root {
        return Ok(unenforced(
            "this host keeps its cgroup controllers on v1, which cannot be delegated to you".into(),
            Some("run as root, or on a cgroup v2 host with Delegate=yes"),
        ));
    }
    // cpu and cpuacct only for a CPU limit (each hierarchy costs a directory per job); memory (OOM readings),
    // pids and devices always.
    let cpu = limits.cpu.is_some() || limits.cpu_shares.is_some();
    let cpuset = limits.cpuset_cpus.is_some() || limits.cpuset_mems.is_some();
    let used: Vec<&Hierarchy> = hierarchies
        .iter()
        .filter(|h| {
            USED.iter()
                .any(|c| h.has(c) && (cpu || !matches!(*c, "cpu" | "cpuacct")))
                || (cpuset && h.has("cpuset"))
        })
        .collect();
    let required = [
        ("cpu", limits.cpu.is_some() || limits.cpu_shares.is_some()),
        ("memory", limits.memory.is_some()),
        ("pids", limits.pids.is_some()),
        ("devices", limits.devices.is_some()),
        ("cpuset", cpuset),
    ];
    if let Some((missing, _)) = required
        .iter()
        .find(|(c, asked)| *asked && !used.iter().any(|h| h.has(c)))
    {
        return Ok(unenforced(
            format!("the cgroup v1 {missing} controller is not mounted"),
            None,
        ));
    }

    let mut cgroup = V1 {
        dirs: Vec::new(),
        made: Vec::new(),
    };
    for hierarchy in used {
        let name = match place {
            Place::Dstack(name) => name,
            Place::Oci(path) => {
                let copy_cpuset = |dir: &Path| {
                    if hierarchy.has("cpuset") {
                        inherit_cpuset(dir)
                    } else {
                        Ok(())
                    }
                };
                match oci_path::make(&hierarchy.mount, path, &copy_cpuset) {
                    Ok(made) => {
                        cgroup.made.extend(made.parents);
                        cgroup.dirs.push((hierarchy.controllers.clone(), made.leaf));
                        continue;
                    }
                    Err(e) => {
                        let _ = cgroup.kill_and_remove();
                        return Err(e);
                    }
                }
            }
        };
        let base = hierarchy.mount.join("dstack");
        match std::fs::create_dir(&base) {
            Err(e)
                if e.kind() == std::io::ErrorKind::PermissionDenied
                    || e.raw_os_error() == Some(libc::EROFS) =>
            {
                let _ = cgroup.kill_and_remove();
                let why = format!(
                    "cgroup v1 hierarchy {} is not writable ({e})",
                    hierarchy.mount.display()
                );
                return Ok(unenforced(why, None));
            }
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                let _ = cgroup.kill_and_remove();
                return Err(CgroupError::Create {
                    path: base,
                    source: e,
                });
            }
            _ => {}
        }
        let dir = base.join(name);
        let made = fresh_dir(&dir).and_then(|()| {
            if hierarchy.has("cpuset") {
                inherit_cpuset(&base)?;
                inherit_cpuset(&dir)?;
            }
            Ok(())
        });
        if let Err(e) = made {
            let _ = cgroup.kill_and_remove();
            return Err(e);
        }
        cgroup.dirs.push((hierarchy.controllers.clone(), dir));
    }
    if let Err(e) = cgroup.apply(limits) {
        let _ = cgroup.kill_and_remove();
        return Err(e);
    }
    Ok(Outcome::Placed(cgroup))
}

impl V1 {
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(list, _)| list.iter().any(|c| c == controller))
            .map(|(_, d)| d.as_path())
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let (Some(quota), Some(dir)) = (limits.cpu_quota_us(), self.dir("cpu")) {
            fs::write(
                dir,
                "cpu.cfs_period_us",
                &limits.cpu_period_us().to_string(),
            )?;
            fs::write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
        }
        if let Some(dir) = self.dir("cpuset") {
            if let Some(cpus) = &limits.cpuset_cpus {
                fs::write(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = &limits.cpuset_mems {
                fs::write(dir, "cpuset.mems", mems)?;
            }
        }
        if let (Some(shares), Some(dir)) = (limits.cpu_shares, self.dir("cpu")) {
            fs::write(dir, "cpu.shares", &shares.to_string())?;
        }
        if let (Some(bytes), Some(dir)) = (limits.memory, self.dir("memory")) {
            fs::write(dir, "memory.limit_in_bytes", &bytes.to_string())?;
            // memory+swap equal to memory unless asked otherwise: no swap beyond the limit (the file exists
            // only with swap accounting).
            let total = match limits.memory_swap {
                Some(u64::MAX) => "-1".to_string(),
                Some(total) => total.max(bytes).to_string(),
                None => bytes.to_string(),
            };
            if dir.join("memory.memsw.limit_in_bytes").exists() {
                fs::write(dir, "memory.memsw.limit_in_bytes", &total)?;
            }
        }
        if let Some(dir) = self.dir("memory") {
            if let Some(bytes) = limits.memory_reservation {
                fs::write(dir, "memory.soft_limit_in_bytes", &bytes.to_string())?;
            }
            if let Some(swappiness) = limits.memory_swappiness {
                fs::write(dir, "memory.swappiness", &swappiness.to_string())?;
            }
            if limits.oom_kill_disable {
                fs::write(dir, "memory.oom_control", "1")?;
            }
        }
        if let (Some(pids), Some(dir)) = (limits.pids_max(), self.dir("pids")) {
            fs::write(dir, "pids.max", &pids.to_string())?;
        }
        if let (Some(policy), Some(dir)) = (&limits.devices, self.dir("devices")) {
            fs::write(dir, "devices.deny", "a")?;
            let lines: Vec<String> = policy.rules().iter().map(|r| r.v1_line()).collect();
            fs::write_each(dir, "devices.allow", &lines)?;
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir("memory")
            .or_else(|| self.dirs.first().map(|(_, d)| d.as_path()))
            .unwrap_or(Path::new("/"))
    }

    pub(crate) fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        self.dirs
            .iter()
            .try_for_each(|(_, dir)| fs::write(dir, "cgroup.procs", &pid.to_string()))
    }

    /// `oom_kill` in `memory.oom_control` (4.13+); older kernels only count limit hits in `memory.failcnt`,
    /// which the caller should combine with a SIGKILL exit.
    pub(crate) fn oom_killed(&self) -> bool {
        let Some(dir) = self.dir("memory") else {
            return false;
        };
        match fs::read_keyed(dir, "memory.oom_control", "oom_kill") {
            Some(kills) => kills > 0,
            None => fs::read_u64(dir, "memory.failcnt").is_some_and(|n| n > 0),
        }
    }

    pub(crate) fn cpu_usage(&self) -> Option<Duration> {
        fs::read_u64(self.dir("cpuacct")?, "cpuacct.usage").map(Duration::from_nanos)
    }

    pub(crate) fn memory_peak(&self) -> Option<u64> {
        fs::read_u64(self.dir("memory")?, "memory.max_usage_in_bytes")
    }

    pub(crate) fn procs(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.dirs.iter().flat_map(|(_, d)| fs::procs(d)).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    pub(crate) fn kill_and_remove(&self) -> Result<(), CgroupError> {
        kill_and_remove(&self.dirs.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>())?;
        oci_path::remove_parents(&self.made);
        Ok(())
    }
}

/// SIGKILLs what is left in the job's directories (all hierarchies, nested cgroups included) and removes them.
pub(crate) fn kill_and_remove(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    let mut all = Vec::new();
    for dir in dirs {
        fs::collect_tree(dir, &mut all);
    }
    let refs: Vec<&Path> = all.iter().map(PathBuf::as_path).collect();
    if !fs::kill_until_empty(&refs) {
        return Err(CgroupError::StillBusy {
            path: dirs.first().cloned().unwrap_or_default(),
        });
    }
    dirs.iter().try_for_each(|d| fs::rmdir_tree(d))
}

/// A new cpuset cgroup has no cpus and mems: it takes its parent's, so that processes may join it.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let parent = dir.parent().unwrap_or(dir);
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if fs::read(&dir.join(file))?.trim().is_empty() {
            let value = fs::read(&parent.join(file))?;
            fs::write(dir, file, value.trim())?;
        }
    }
    Ok(())
}

/// The `dstack` directory of every hierarchy we use.
pub(crate) fn dstack_dirs(hierarchies: &[Hierarchy]) -> Vec<PathBuf> {
    hierarchies
        .iter()
        .filter(|h| USED.iter().any(|c| h.has(c)))
        .map(|h| h.mount.join("dstack"))
        .filter(|d| d.is_dir())
        .collect()
}
