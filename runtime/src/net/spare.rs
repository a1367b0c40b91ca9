//! Spare network namespaces, made by a run's clean-up for the runs after it (host root only).
//!
//! Making a network namespace is the dearest part of a container's clone (0.3-0.5 ms here: the kernel
//! registers `lo` and each protocol's per-namespace state). A run's detached clean-up, off the clock, makes
//! one (its `lo` up, nothing else in it) and keeps it alive by a bind mount at
//! `/run/dstack/netns/ns-<random>`, as `ip netns add` does; a later run takes it (open, lazy unmount,
//! unlink: ~20 us) instead of cloning with `CLONE_NEWNET`. A taken namespace was never entered by
//! any process. At most [`SPARES`] wait; none after a reboot (`/run` is a tmpfs). Not for rootless runs:
//! a namespace belongs to the user namespace it was made in, and each rootless run has its own.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::fsops::{FileLock, LockMode};

/// How many spare namespaces wait at most: enough for runs started one after another.
const SPARES: usize = 2;

const PREFIX: &str = "ns-";

fn dir() -> PathBuf {
    PathBuf::from("/run/dstack/netns")
}

/// A spare namespace, taken: nobody else can have it. None when there is none (or not as host root).
pub(super) fn take() -> Option<OwnedFd> {
    if !crate::paths::running_as_host_root() {
        return None;
    }
    for entry in std::fs::read_dir(dir()).ok()?.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        // Not mounted yet (being made) or gone: another's.
        let Ok(ns) = open_netns(&path) else {
            continue;
        };
        // Of the runs that opened it, the one whose unmount succeeds has it (a mount point is not renamed,
        // so the unmount is the claim); the others see EINVAL and go on. The namespace lives on
        // through `ns`.
        if nix::mount::umount2(&path, MntFlags::MNT_DETACH).is_ok() {
            let _ = std::fs::remove_file(&path);
            return Some(ns);
        }
    }
    None
}

/// Opens `path` and checks that it is a network namespace (a bind mount of one).
fn open_netns(path: &Path) -> io::Result<OwnedFd> {
    let ns = super::netns::open_path(path)?;
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and returns the namespace's CLONE_NEW* type.
    let kind = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&ns), NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(io::Error::other("not a network namespace"));
    }
    Ok(ns)
}

/// Makes spare namespaces up to [`SPARES`]. For a process that ends right after (a run's detached
/// clean-up): it moves the calling thread into the last one it makes. Best effort.
pub(crate) fn replenish() {
    if !crate::paths::running_as_host_root() {
        return;
    }
    let dir = dir();
    if crate::fsops::make_dir(&dir, 0o700).is_err() {
        return;
    }
    // One clean-up at a time counts and makes, so that those of runs ending together keep to SPARES.
    let Ok(_counting) = FileLock::acquire(&dir.with_extension("lock"), LockMode::Exclusive) else {
        return;
    };
    let waiting = std::fs::read_dir(&dir).map_or(SPARES, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
            .count()
    });
    for _ in waiting..SPARES {
        if let Err(e) = make_one(&dir) {
            tracing::debug!("making a spare network namespace: {e}");
            return;
        }
    }
}

fn make_one(dir: &Path) -> io::Result<()> {
    // Mounted where it stays (a mount point cannot be renamed): a run that finds the file before the
    // mount sees no namespace in it and leaves it.
    let path = dir.join(format!("{PREFIX}{}", crate::fsops::random_suffix()));
    std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let made = (|| {
        // Changes only the calling thread's network namespace.
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
        let mut nl = super::netlink::Netlink::open()?;
        let lo = nl.link_index("lo")?;
        nl.set_up(lo)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    made
}

/// Removes what a clean-up killed while making one left behind: a file older than a minute with no
/// namespace mounted on it.
pub(super) fn sweep() {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 60);
        if old && open_netns(&entry.path()).is_err() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
