//! `Cgroup` as the container runtime sees it (`container::CgroupPlacement`), so a placement can be handed to
//! the container builder as it is.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::{Cgroup, CgroupError, Version};
use crate::container::CgroupPlacement;

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
