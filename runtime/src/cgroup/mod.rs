//! Resource limits for a job: cgroup v2 first (as root under `dstack/`, rootless in a delegated subtree), the
//! v1 controllers on v1 and hybrid hosts, and a clear reason when limits cannot be enforced. A container's
//! Spec becomes its cgroup through [`SpecCgroup`]; the container starts in it through [`CgroupPlacement`].
//!
//! ```no_run
//! use runtime::cgroup::{self, Limits, Placement};
//! let limits = Limits { memory: Some(64 << 20), cpu: Some(0.5), ..Limits::default() };
//! match cgroup::create("c0ffee", &limits, false)? {
//!     Placement::Enforced(cg) => { /* clone3 into cg.clone_into_fd(), or cg.add_pid(pid) */ }
//!     Placement::Unenforced { reason } => eprintln!("warning: {reason}"),
//! }
//! # Ok::<(), cgroup::CgroupError>(())
//! ```

mod bpf;
mod devices;
mod error;
mod fs;
mod layout;
mod limits;
mod oci_path;
mod placement;
mod spec;
mod v1;
mod v2;

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use devices::{DeviceAccess, DeviceKind, DevicePolicy, DeviceRule};
pub use error::CgroupError;
pub use layout::{Hierarchy, Layout, detect};
pub use limits::{CPU_PERIOD_US, Limits};
pub use oci_path::{CgroupsPath, RELATIVE_PARENT};
pub use placement::CgroupPlacement;
pub use spec::{SpecCgroup, SpecPlacement};

/// Where a job's cgroup goes on each hierarchy.
pub(crate) enum Place<'a> {
    /// `dstack/<name>`, for dstack's own runs (swept when the run is gone).
    Dstack(&'a str),
    /// An OCI bundle's cgroupsPath, whose leaf must not exist yet.
    Oci(&'a CgroupsPath),
}

/// Where a job runs: in a cgroup that enforces its limits, or without one, with the reason.
#[derive(Debug)]
pub enum Placement {
    Enforced(Cgroup),
    /// The caller prints `reason` as a one-line warning.
    Unenforced {
        reason: String,
    },
}

/// Which cgroup version enforces a job's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

pub(crate) enum Outcome<T> {
    Placed(T),
    Unenforced(Unenforceable),
}

/// Why limits cannot be enforced here, and what the user can do about it.
pub(crate) struct Unenforceable {
    pub(crate) why: String,
    pub(crate) hint: Option<&'static str>,
}

/// Shorthand for an `Outcome::Unenforced`.
pub(crate) fn unenforced<T>(why: String, hint: Option<&'static str>) -> Outcome<T> {
    Outcome::Unenforced(Unenforceable { why, hint })
}

impl Unenforceable {
    /// The one-line warning for `Placement::Unenforced`.
    fn warning(&self) -> String {
        match self.hint {
            Some(hint) => format!(
                "{}: limits are not enforced; {hint}, or pass --strict-limits to refuse",
                self.why
            ),
            None => format!("{}: limits are not enforced", self.why),
        }
    }

    /// The line `dstack info` prints: why, and what to do.
    fn advice(&self) -> String {
        match self.hint {
            Some(hint) => format!("{}: limits are not enforced; {hint}", self.why),
            None => format!("{}: limits are not enforced", self.why),
        }
    }

    /// The error when strict limits were asked for.
    fn refusal(&self) -> String {
        match self.hint {
            Some(hint) => format!(
                "{}, so the limits asked for cannot be enforced; {hint}",
                self.why
            ),
            None => format!("{}, so the limits asked for cannot be enforced", self.why),
        }
    }
}

/// A job's cgroup. Dropping it (or `remove`) kills whatever still runs in it and removes it.
#[derive(Debug)]
pub struct Cgroup {
    name: String,
    memory_limit: Option<u64>,
    backend: Backend,
    removed: bool,
}

#[derive(Debug)]
enum Backend {
    V2(v2::V2),
    V1(v1::V1),
}

/// Creates the cgroup `dstack/<name>` with `limits` applied. Name it after the container id, so that
/// `sweep_leftovers` can ask whether its run is still alive.
///
/// When limits cannot be enforced (rootless without a delegated subtree, a v1 host as non-root, no cgroup
/// filesystem) this returns `Placement::Unenforced`, or `CgroupError::NotEnforced` when `strict` is set and a
/// CPU, memory or pids limit was asked for.
pub fn create(name: &str, limits: &Limits, strict: bool) -> Result<Placement, CgroupError> {
    validate_name(name)?;
    create_at(&Place::Dstack(name), name, limits, strict)
}

/// Creates the cgroup an OCI bundle's `linux.cgroupsPath` names (absolute: from each hierarchy's root;
/// relative: under `RELATIVE_PARENT`), with `limits` applied. Its leaf is always new: an existing one is
/// refused, so a bundle never joins, nor later removes, a cgroup it did not get from us. `Cgroup::dirs` and
/// `Cgroup::made_parents` are what `remove_created` needs later.
pub fn create_oci(path: &CgroupsPath, limits: &Limits) -> Result<Placement, CgroupError> {
    create_at(&Place::Oci(path), "", limits, false)
}

fn create_at(
    place: &Place,
    name: &str,
    limits: &Limits,
    strict: bool,
) -> Result<Placement, CgroupError> {
    limits.validate()?;
    let as_root = crate::paths::running_as_host_root();
    let outcome = match detect()? {
        Layout::Unified { mount, own } => match v2::create(&mount, &own, place, limits, as_root)? {
            Outcome::Placed(cg) => Outcome::Placed(Backend::V2(cg)),
            Outcome::Unenforced(reason) => Outcome::Unenforced(reason),
        },
        Layout::Legacy { hierarchies, .. } => {
            match v1::create(&hierarchies, place, limits, as_root)? {
                Outcome::Placed(cg) => Outcome::Placed(Backend::V1(cg)),
                Outcome::Unenforced(reason) => Outcome::Unenforced(reason),
            }
        }
        Layout::Missing => unenforced("no cgroup filesystem is mounted".into(), None),
    };
    match outcome {
        Outcome::Placed(backend) => Ok(Placement::Enforced(Cgroup {
            name: name.to_string(),
            memory_limit: limits.memory,
            backend,
            removed: false,
        })),
        Outcome::Unenforced(why) if strict && !limits.is_unlimited() => {
            Err(CgroupError::NotEnforced {
                reason: why.refusal(),
            })
        }
        Outcome::Unenforced(why) => Ok(Placement::Unenforced {
            reason: why.warning(),
        }),
    }
}

/// What this host offers for limits, as `dstack info` reports it. Reads only; creates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    /// `v2`, `hybrid` (v1 controllers beside an empty cgroup2 mount), `v1` or `none`.
    pub layout: &'static str,
    /// Where a job's cgroup would go: the v2 mount (root), the delegated subtree (rootless), or none.
    pub parent: Option<PathBuf>,
    /// The controllers a job's cgroup could use there (v2), or the v1 hierarchies' controllers.
    pub controllers: Vec<String>,
    /// Why a job's CPU, memory and pids limits would not be enforced, with what to do; `None` when they are.
    pub unenforced: Option<String>,
}

/// Reports what `create` would find for a job with CPU, memory and pids limits, without creating anything.
pub fn support() -> Result<Support, CgroupError> {
    let as_root = crate::paths::running_as_host_root();
    Ok(match detect()? {
        Layout::Unified { mount, own } => {
            let (parent, controllers, why) = v2::support(&mount, &own, as_root);
            Support {
                layout: "v2",
                parent,
                controllers,
                unenforced: why.map(|w| w.advice()),
            }
        }
        Layout::Legacy {
            hierarchies,
            hybrid,
        } => {
            let mut controllers: Vec<String> = hierarchies
                .iter()
                .flat_map(|h| h.controllers.iter().cloned())
                .collect();
            controllers.sort();
            controllers.dedup();
            let why = v1::support(&controllers, as_root);
            Support {
                layout: if hybrid { "hybrid" } else { "v1" },
                parent: None,
                controllers,
                unenforced: why.map(|w| w.advice()),
            }
        }
        Layout::Missing => Support {
            layout: "none",
            parent: None,
            controllers: Vec::new(),
            unenforced: Some(
                Unenforceable {
                    why: "no cgroup filesystem is mounted".into(),
                    hint: Some("mount cgroup2 on /sys/fs/cgroup"),
                }
                .advice(),
            ),
        },
    })
}

impl Cgroup {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Version {
        match self.backend {
            Backend::V2(_) => Version::V2,
            Backend::V1(_) => Version::V1,
        }
    }

    /// The cgroup directory (v2), or the memory hierarchy's directory (v1).
    pub fn path(&self) -> &Path {
        match &self.backend {
            Backend::V2(cg) => &cg.dir,
            Backend::V1(cg) => cg.path(),
        }
    }

    /// The memory limit it enforces, for the out-of-memory message.
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// Every directory of this cgroup: one on v2, one per controller hierarchy on v1.
    pub fn dirs(&self) -> Vec<&Path> {
        match &self.backend {
            Backend::V2(cg) => vec![cg.dir.as_path()],
            Backend::V1(cg) => cg.dirs.iter().map(|(_, d)| d.as_path()).collect(),
        }
    }

    /// The parents created on the way to a cgroupsPath's leaf (top first), removed with it when empty.
    pub fn made_parents(&self) -> &[PathBuf] {
        match &self.backend {
            Backend::V2(cg) => &cg.made,
            Backend::V1(cg) => &cg.made,
        }
    }

    /// An `O_DIRECTORY` fd for `clone3(CLONE_INTO_CGROUP)`, so the child is born inside (v2 only; on v1 use
    /// `add_pid` before the child runs the job).
    pub fn clone_into_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backend {
            Backend::V2(cg) => Some(cg.fd()),
            Backend::V1(_) => None,
        }
    }

    /// Moves a process (all its threads) into the cgroup.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V2(cg) => cg.add_pid(pid),
            Backend::V1(cg) => cg.add_pid(pid),
        }
    }

    /// The processes in the cgroup (not in cgroups a job created below it).
    pub fn procs(&self) -> Vec<i32> {
        match &self.backend {
            Backend::V2(cg) => fs::procs(&cg.dir),
            Backend::V1(cg) => cg.procs(),
        }
    }

    /// True when the kernel's OOM killer killed a process of this cgroup. On v1 kernels older than 4.13 this
    /// only says the memory limit was hit: combine it with a SIGKILL exit.
    pub fn oom_killed(&self) -> bool {
        match &self.backend {
            Backend::V2(cg) => cg.oom_killed(),
            Backend::V1(cg) => cg.oom_killed(),
        }
    }

    /// CPU time used by the cgroup's processes so far.
    pub fn cpu_usage(&self) -> Option<Duration> {
        match &self.backend {
            Backend::V2(cg) => cg.cpu_usage(),
            Backend::V1(cg) => cg.cpu_usage(),
        }
    }

    /// Highest memory use in bytes, where the kernel records it (v2 from 5.19, v1 always).
    pub fn memory_peak(&self) -> Option<u64> {
        match &self.backend {
            Backend::V2(cg) => cg.memory_peak(),
            Backend::V1(cg) => cg.memory_peak(),
        }
    }

    /// Kills what is left, waits for it to go, and removes the cgroup; `Drop` does the same, ignoring errors.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.removed = true;
        self.kill_and_remove()
    }

    fn kill_and_remove(&self) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V2(cg) => cg.kill_and_remove(),
            Backend::V1(cg) => cg.kill_and_remove(),
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = self.kill_and_remove()
        {
            tracing::warn!("{}", crate::report::Chain(&e));
        }
    }
}

/// Removes the cgroup directories a `create_oci` made (`leaves`, then the empty `parents`, deepest first),
/// killing what still runs in them. Only ever pass directories this process's records say it created.
pub fn remove_created(leaves: &[PathBuf], parents: &[PathBuf]) -> Result<(), CgroupError> {
    let (v2, v1): (Vec<PathBuf>, Vec<PathBuf>) = leaves
        .iter()
        .filter(|d| d.is_dir())
        .cloned()
        .partition(|d| d.join("cgroup.events").exists());
    v2.iter().try_for_each(|d| v2::kill_and_remove(d))?;
    v1::kill_and_remove(&v1)?;
    oci_path::remove_parents(parents);
    Ok(())
}

/// Removes the `dstack/*` cgroups whose run is gone (`run_alive(name)` is false, e.g. its container's lock is
/// no longer held), killing anything still inside them. Returns the names removed.
pub fn sweep_leftovers(run_alive: impl Fn(&str) -> bool) -> Result<Vec<String>, CgroupError> {
    let as_root = crate::paths::running_as_host_root();
    let (parents, v2) = match detect()? {
        Layout::Unified { mount, own } => (v2::dstack_dirs(&mount, &own, as_root), true),
        Layout::Legacy { hierarchies, .. } if as_root => (v1::dstack_dirs(&hierarchies), false),
        _ => return Ok(Vec::new()),
    };
    let mut names: Vec<String> = parents
        .iter()
        .flat_map(|p| fs::subdirs(p))
        .filter_map(|d| d.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .filter(|n| validate_name(n).is_ok() && !run_alive(n))
        .collect();
    names.sort();
    names.dedup();
    for name in &names {
        let dirs: Vec<PathBuf> = parents
            .iter()
            .map(|p| p.join(name))
            .filter(|d| d.is_dir())
            .collect();
        if v2 {
            dirs.iter().try_for_each(|d| v2::kill_and_remove(d))?;
        } else {
            v1::kill_and_remove(&dirs)?;
        }
    }
    Ok(names)
}

fn validate_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_dstack_directory() {
        assert!(validate_name("3f2a9c1e0b7d").is_ok());
        assert!(validate_name("job-1.2_x").is_ok());
        for bad in ["", "..", "a/b", ".hidden", "a b", "cgroup.procs\n"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
