//! A container's scratch directory, `<state_root>/containers/<id>/`: its lock file is held (flock) for
//! as long as the supervisor (or init) lives, and the directory is removed when the guard drops.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::ContainerError;

pub const LOCK_FILE: &str = "lock";

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
        let path = parent.join(id);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ContainerError::Exists(id.to_string()));
            }
            Err(e) => return Err(ContainerError::io("cannot create", &path)(e)),
        }
        // From here on, Drop removes the directory whatever happens next.
        let lock_path = path.join(LOCK_FILE);
        let lock = File::create(&lock_path);
        let lock = match lock.and_then(|f| lock_exclusive(&f, false).map(|()| f)) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                return Err(ContainerError::io("cannot lock", lock_path)(e));
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

/// `flock(LOCK_EX)`, without waiting when `nonblocking`.
pub fn lock_exclusive(file: &File, nonblocking: bool) -> std::io::Result<()> {
    let op = libc::LOCK_EX | if nonblocking { libc::LOCK_NB } else { 0 };
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
