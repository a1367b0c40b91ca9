//! The clone: new mount, pid, uts, ipc, net (and cgroup) namespaces, born in its cgroup when a v2
//! directory is given (`clone3` with `CLONE_INTO_CGROUP`). Refused from a multi-threaded process, whose
//! clone could deadlock on a lock held by a thread that does not exist in the child.

use std::os::fd::RawFd;

use super::ContainerError;

pub(super) const NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET) as u64;

/// `libc::CLONE_INTO_CGROUP` overflows its type in the libc crate.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Clones a child that runs `child` and never returns; returns its pid.
pub(super) fn clone_child(
    flags: u64,
    cgroup: Option<RawFd>,
    child: impl FnOnce(),
) -> Result<i32, ContainerError> {
    let threads = crate::userns::settled_thread_count();
    if threads > 1 {
        return Err(ContainerError::ThreadsRunning(threads));
    }
    // SAFETY: clone_args is plain data; zero is the documented "unset" for every field.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags;
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: clone3 without CLONE_VM and with no stack: the child gets a copy of this single-threaded
    // process (as with fork) and runs `child`, which never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    let pid = if pid < 0
        && cgroup.is_none()
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS)
    {
        // SAFETY: as above, with the older clone(2) and a null stack.
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags | libc::SIGCHLD as u64,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        }
    } else {
        pid
    };
    if pid < 0 {
        return Err(ContainerError::Clone(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        child();
        // SAFETY: `child` does not return; should it, end the cloned process without unwinding.
        unsafe { libc::_exit(125) }
    }
    Ok(pid as i32)
}
