//! The seam to the cgroup module: what the container needs from a job's cgroup placement.

use std::os::fd::{BorrowedFd, OwnedFd};

/// A cgroup (v2) or set of cgroups (v1) made for one container, removed when dropped.
pub trait CgroupPlacement {
    /// A cgroup v2 directory to start init in (`clone3` with `CLONE_INTO_CGROUP`), when there is one.
    fn dir_fd(&self) -> Option<BorrowedFd<'_>>;
    /// Moves `pid` in (v1 hierarchies; v2 when `clone3` could not place it).
    fn add_pid(&self, pid: i32) -> std::io::Result<()>;
    /// The files, opened for writing, through which a single-threaded process moves itself in by writing
    /// `0` (v1: `tasks`). Init does that instead of the supervisor's `add_pid`: the kernel moves a thread
    /// that moves itself without its global threadgroup lock, whose RCU grace period costs ~10 ms a start.
    fn self_join_files(&self) -> std::io::Result<Vec<OwnedFd>>;
    /// True when the kernel OOM-killed a process in it.
    fn oom_killed(&self) -> bool;
    /// The memory limit in bytes, for the out-of-memory message.
    fn memory_limit(&self) -> Option<u64>;
}
