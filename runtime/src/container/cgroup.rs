//! The seam to the cgroup module: what the container needs from a job's cgroup placement.

use std::os::fd::BorrowedFd;

/// A cgroup (v2) or set of cgroups (v1) made for one container, removed when dropped.
pub trait CgroupPlacement {
    /// A cgroup v2 directory to start init in (`clone3` with `CLONE_INTO_CGROUP`), when there is one.
    fn dir_fd(&self) -> Option<BorrowedFd<'_>>;
    /// Moves `pid` in (v1 hierarchies; v2 when `clone3` could not place it).
    fn add_pid(&self, pid: i32) -> std::io::Result<()>;
    /// True when the kernel OOM-killed a process in it.
    fn oom_killed(&self) -> bool;
    /// The memory limit in bytes, for the out-of-memory message.
    fn memory_limit(&self) -> Option<u64>;
}
