//! A container's scratch directory, `<state_root>/containers/<id>/`: the directory itself is locked
//! (flock) for as long as the supervisor (or init) lives, and removed when the guard drops. No lock file:
//! every file created and removed here costs a journal write on the state root's filesystem, on every run.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::ContainerError;

pub struct ScratchDir {
    path: PathBuf,
    _lock: File,
}

impl ScratchDir {
    pub fn create(state_root: &Path, id: &str) -> Result<ScratchDir, ContainerError> {
        if id.is_empty() || id.starts_with('.') || id.contains('/') {
            return Err(ContainerError::Invalid(format!("bad container id {id:?}")));
        }
        let parent = state_root.join("containers");
        std::fs::create_dir_all(&parent).map_err(ContainerError::io("cannot create", &parent))?;
        crate::fsops::spread_subdirectories(&parent);
        let path = parent.join(id);
        if path.exists() {
            return Err(ContainerError::Exists(id.to_string()));
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
            .and_then(|f| lock_exclusive(&f, false).map(|()| f))
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
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// `flock(LOCK_EX)` (on a file or a directory), without waiting when `nonblocking`. Close-on-exec, as
/// std opens files: the job never holds it, init does (it dies with the supervisor).
pub fn lock_exclusive(file: &File, nonblocking: bool) -> std::io::Result<()> {
    let op = libc::LOCK_EX | if nonblocking { libc::LOCK_NB } else { 0 };
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
