//! A container's scratch directory, `<state_root>/containers/<id>/`: the directory itself is locked
//! (flock) for as long as the supervisor (or init) lives, and recycled or removed when the guard drops.
//! No lock file: every file created and removed here costs a journal write on the state root's
//! filesystem, on every run.
//!
//! Recycling: a scratch directory whose sub-directories (the overlay's upper and work directories, the
//! staging mount point) are as they were made is emptied and renamed `.free-<random>` for a later run to
//! claim, instead of being removed, up to [`POOL_SIZE`] of them. On ext4 a directory made and removed per
//! run is costly twice: making one in a top directory (`containers/` is `chattr +T`) scans the block
//! groups (0.15-0.3 ms here), and without a journal each inode freed is skipped by the next allocations in
//! its group for 30 s. A claimed directory is renamed into place under its lock; one that was changed
//! (the job chmod'ed or chown'ed its `/`, set an ACL or an extended attribute on it) is removed instead.

use std::fs::File;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ContainerError;
use crate::fsops::{FileLock, LockMode};
use crate::rootfs::{SCRATCH_DIR_MODE, xattr};

/// The prefix of a recycled scratch directory waiting to be claimed.
pub(super) const FREE_PREFIX: &str = ".free-";

/// How many recycled scratch directories a state root keeps at most: enough for the runs that end
/// about the same time, few enough to be nothing on disk.
const POOL_SIZE: usize = 4;

pub struct ScratchDir {
    path: PathBuf,
    _lock: FileLock,
}

impl ScratchDir {
    pub fn create(state_root: &Path, id: &str) -> Result<ScratchDir, ContainerError> {
        if id.is_empty() || id.starts_with('.') || id.contains('/') {
            return Err(ContainerError::Invalid(format!("bad container id {id:?}")));
        }
        let parent = state_root.join("containers");
        crate::private::create_dir_all(&parent)
            .map_err(ContainerError::io("cannot create", &parent))?;
        crate::fsops::mark_top_directory(&parent, true);
        let path = parent.join(id);
        if path.exists() {
            return Err(ContainerError::Exists(id.to_string()));
        }
        if let Some(lock) = claim_recycled(&parent, &path) {
            return Ok(ScratchDir { path, _lock: lock });
        }
        // Made and locked under a hidden name, then renamed into place (the lock goes with the inode): a
        // sweeper never sees it unlocked.
        let hidden = parent.join(format!(".new-{id}"));
        match std::fs::create_dir(&hidden) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ContainerError::Exists(id.to_string()));
            }
            Err(e) => return Err(ContainerError::io("cannot create", &hidden)(e)),
        }
        let lock = File::open(&hidden)
            .and_then(|f| FileLock::wait_on(f, LockMode::Exclusive))
            .and_then(|f| {
                crate::fsops::rename_with(&hidden, &path, libc::RENAME_NOREPLACE).map(|()| f)
            });
        let lock = match lock {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&hidden);
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    return Err(ContainerError::Exists(id.to_string()));
                }
                return Err(ContainerError::io("cannot create", path)(e));
            }
        };
        Ok(ScratchDir { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if recycle(&self.path) {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Takes a recycled scratch directory of `parent` as `path`: locked first, so that neither another
/// claimer nor a sweeper can take it, then renamed into place.
fn claim_recycled(parent: &Path, path: &Path) -> Option<FileLock> {
    let entries = std::fs::read_dir(parent).ok()?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(FREE_PREFIX) {
            continue;
        }
        let free = entry.path();
        let Ok(Ok(lock)) = File::open(&free).and_then(|f| FileLock::try_on(f, LockMode::Exclusive))
        else {
            continue;
        };
        // Locked, but perhaps claimed and renamed by another run since we listed it.
        match crate::fsops::rename_with(&free, path, libc::RENAME_NOREPLACE) {
            Ok(()) => return Some(lock),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return None,
            Err(_) => continue,
        }
    }
    None
}

/// Empties the scratch directory at `path` (locked by us; its container gone) down to its
/// sub-directories and renames it into the pool; false when it is not worth keeping (the pool is full)
/// or not as it was made, and must be removed.
fn recycle(path: &Path) -> bool {
    let Some(parent) = path.parent() else {
        return false;
    };
    let Ok(owner) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let pooled = std::fs::read_dir(parent).map_or(usize::MAX, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(FREE_PREFIX))
            .count()
    });
    if pooled >= POOL_SIZE {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    for entry in entries {
        let Ok(entry) = entry else {
            return false;
        };
        let sub = entry.path();
        if !as_made(&sub, &owner) || empty(&sub).is_err() {
            return false;
        }
    }
    let free = parent.join(format!("{FREE_PREFIX}{}", crate::fsops::random_suffix()));
    crate::fsops::rename_with(path, &free, libc::RENAME_NOREPLACE).is_ok()
}

/// A plain directory with [`SCRATCH_DIR_MODE`], the scratch directory's owner, and no ACL or extended
/// attribute but the security modules' labels (every new inode gets them). Overlay's own attributes
/// (`trusted.overlay.*`, `user.overlay.*` when rootless: the upper directory's uuid from its first mount,
/// `impure` once its entries were copied up) are removed with the entries they describe, as on a new
/// directory; a job cannot set them through the overlay, so no other process made them.
fn as_made(dir: &Path, owner: &std::fs::Metadata) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    if !meta.file_type().is_dir()
        || meta.mode() & 0o7777 != SCRATCH_DIR_MODE
        || (meta.uid(), meta.gid()) != (owner.uid(), owner.gid())
    {
        return false;
    }
    let Ok(names) = xattr::try_list(dir) else {
        return false;
    };
    names.iter().all(|name| {
        name.starts_with("security.")
            || (OVERLAY_XATTRS.iter().any(|p| name.starts_with(p))
                && xattr::remove(dir, name).is_ok())
    })
}

const OVERLAY_XATTRS: [&str; 2] = ["trusted.overlay.", "user.overlay."];

/// Removes everything inside `dir` (not following links), keeping `dir`.
fn empty(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
