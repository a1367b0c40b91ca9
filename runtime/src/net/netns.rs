//! Reaching into the job's network namespace from the host side. A socket belongs to the namespace of
//! the thread that created it, so a thread that `setns`es into the job's namespace can make sockets
//! there that any thread then uses. Only helper threads ever switch; the supervisor's main thread stays
//! in the host namespace.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

/// Opens `/proc/<pid>/ns/net`.
pub(super) fn open(pid: i32) -> io::Result<OwnedFd> {
    open_path(std::path::Path::new(&format!("/proc/{pid}/ns/net")))
}

/// Opens a namespace file (`/proc/<pid>/ns/net`, a bind mount of one), read-only and close-on-exec.
pub(super) fn open_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// The (device, inode) of the network namespace of `pid`, while it lives.
pub(super) fn identity(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// The (device, inode) of the network namespace `ns`.
pub(super) fn identity_of(ns: &OwnedFd) -> Option<(u64, u64)> {
    let st = nix::sys::stat::fstat(ns).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// Moves the calling thread into a new network namespace (its `lo` down) and returns it. Only for a
/// helper thread that ends afterwards: the namespace lives on through the descriptor.
pub(super) fn new_for_this_thread() -> io::Result<OwnedFd> {
    // Changes only the calling thread's network namespace.
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
    open_path(std::path::Path::new("/proc/thread-self/ns/net"))
}

/// Moves the calling thread into the network namespace `ns`.
pub(super) fn enter(ns: BorrowedFd<'_>) -> io::Result<()> {
    // Changes only this thread's network namespace.
    Ok(nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)?)
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
