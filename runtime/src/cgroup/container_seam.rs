//! `Cgroup` as the container runtime sees it (`container::CgroupPlacement`), so a placement can be handed to
//! the container builder as it is.

use std::io;
use std::os::fd::BorrowedFd;

use super::{Cgroup, CgroupError};
use crate::container::CgroupPlacement;

impl CgroupPlacement for Cgroup {
    fn dir_fd(&self) -> Option<BorrowedFd<'_>> {
        self.clone_into_fd()
    }

    fn add_pid(&self, pid: i32) -> io::Result<()> {
        Cgroup::add_pid(self, pid).map_err(|e| match e {
            CgroupError::Write { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })
    }

    fn oom_killed(&self) -> bool {
        Cgroup::oom_killed(self)
    }

    fn memory_limit(&self) -> Option<u64> {
        Cgroup::memory_limit(self)
    }
}
