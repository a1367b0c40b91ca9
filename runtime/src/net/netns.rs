//! Reaching into the job's network namespace from the host side. A socket belongs to the namespace of
//! the thread that created it, so a thread that `setns`es into the job's namespace can make sockets
//! there that any thread then uses. Only helper threads ever switch; the supervisor's main thread stays
//! in the host namespace.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Opens `/proc/<pid>/ns/net`.
pub(super) fn open(pid: i32) -> io::Result<OwnedFd> {
    open_path(std::path::Path::new(&format!("/proc/{pid}/ns/net")))
}

/// Opens a namespace file (`/proc/<pid>/ns/net`, a bind mount of one), read-only and close-on-exec.
pub(super) fn open_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    let path = crate::fsops::c_path(path)?;
    // SAFETY: open with a NUL-terminated path; the descriptor is checked and owned below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The (device, inode) of the network namespace of `pid`, while it lives.
pub(super) fn identity(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// The (device, inode) of the network namespace `ns`.
pub(super) fn identity_of(ns: &OwnedFd) -> Option<(u64, u64)> {
    // SAFETY: fstat on a descriptor we hold, into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer and `ns` is open.
    if unsafe { libc::fstat(ns.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

/// Moves the calling thread into a new network namespace (its `lo` down) and returns it. Only for a
/// helper thread that ends afterwards: the namespace lives on through the descriptor.
pub(super) fn new_for_this_thread() -> io::Result<OwnedFd> {
    // SAFETY: unshare of the network namespace changes only the calling thread's.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let path = c"/proc/thread-self/ns/net";
    // SAFETY: open with a NUL-terminated path; the descriptor is checked and owned below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling thread into the network namespace `ns`.
pub(super) fn enter(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns with a namespace descriptor we hold; it changes only this thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a short-lived thread inside the namespace `ns` and returns its result.
pub(super) fn run_in<T: Send>(
    ns: BorrowedFd<'_>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("a network helper thread panicked")))
    })
}
