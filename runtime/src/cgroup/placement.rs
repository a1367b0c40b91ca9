//! What a container needs from its cgroup placement: the trait the container runtime starts a job through
//! (it depends on `cgroup`, never the other way), and `Cgroup`'s implementation of it.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::{Cgroup, CgroupError, Version};

/// A cgroup (v2) or set of cgroups (v1) made for one container, removed when dropped.
pub trait CgroupPlacement {
    /// A cgroup v2 directory to start init in (`clone3` with `CLONE_INTO_CGROUP`), when there is one.
    fn dir_fd(&self) -> Option<BorrowedFd<'_>>;
    /// Moves `pid` in (v1 hierarchies; v2 when `clone3` could not place it).
    fn add_pid(&self, pid: i32) -> io::Result<()>;
    /// The files, opened for writing, through which a single-threaded process moves itself in by writing
    /// `0` (v1: `tasks`). Init does that instead of the supervisor's `add_pid`: the kernel moves a thread
    /// that moves itself without its global threadgroup lock, whose RCU grace period costs ~10 ms a start.
    fn self_join_files(&self) -> io::Result<Vec<OwnedFd>>;
    /// True when the kernel OOM-killed a process in it.
    fn oom_killed(&self) -> bool;
    /// The memory limit in bytes, for the out-of-memory message.
    fn memory_limit(&self) -> Option<u64>;
}

impl CgroupPlacement for Cgroup {
    fn dir_fd(&self) -> Option<BorrowedFd<'_>> {
        self.clone_into_fd()
    }

    fn add_pid(&self, pid: i32) -> io::Result<()> {
        Cgroup::add_pid(self, pid).map_err(|e| match e {
            CgroupError::Write { source, .. } => source,
            other => io::Error::other(crate::report::chain(&other)),
        })
    }

    fn self_join_files(&self) -> io::Result<Vec<OwnedFd>> {
        // v1's `tasks` moves the writing thread alone, which (written `0`, by a single-threaded process)
        // the kernel does without its global lock; v2 has no such file outside threaded subtrees.
        let file = match self.version() {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.procs",
        };
        self.dirs()
            .into_iter()
            .map(|dir| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join(file))
                    .map(OwnedFd::from)
            })
            .collect()
    }

    fn oom_killed(&self) -> bool {
        Cgroup::oom_killed(self)
    }

    fn memory_limit(&self) -> Option<u64> {
        Cgroup::memory_limit(self)
    }
}
