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

/// Starts a child that shares this process's memory until it execs or exits (`CLONE_VM | CLONE_VFORK`, as
/// `posix_spawn` does), running `child` on a stack of its own; returns its pid once the child has exec'd or
/// ended. Unlike a fork of this (large) process, no page table is copied and neither side takes
/// copy-on-write faults. `child` must end in an exec or `_exit`; it must leave this process's values
/// alone (close raw descriptors, never drop them), and what it allocates stays allocated here.
pub(super) fn vfork_child(child: &mut dyn FnMut() -> i32) -> Result<i32, ContainerError> {
    const STACK: usize = 1 << 20;
    let page = 4096;
    extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&mut &mut dyn FnMut` below, alive until the child execs or exits (the
        // parent is suspended until then).
        let child = unsafe { &mut *(arg as *mut &mut dyn FnMut() -> i32) };
        let code = child();
        // SAFETY: ending the child without unwinding into frames that are not its own.
        unsafe { libc::_exit(code) }
    }
    // SAFETY: a private anonymous mapping for the child's stack, unmapped below on every path.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(ContainerError::Clone(std::io::Error::last_os_error()));
    }
    // A guard page at the low end: an overflow faults instead of writing over the heap.
    // SAFETY: the first page of the mapping made above.
    unsafe { libc::mprotect(stack, page, libc::PROT_NONE) };
    let mut child = child;
    // SAFETY: the stack grows down from the mapping's end (16-byte aligned); `trampoline` gets a pointer
    // to `child`, which outlives the child's use of it: CLONE_VFORK returns once it has exec'd or exited.
    let pid = unsafe {
        libc::clone(
            trampoline,
            stack.cast::<u8>().add(STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut child as *mut &mut dyn FnMut() -> i32).cast(),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: unmapping the stack made above; the child no longer runs on it.
    unsafe { libc::munmap(stack, STACK) };
    if pid < 0 {
        return Err(ContainerError::Clone(err));
    }
    Ok(pid)
}
