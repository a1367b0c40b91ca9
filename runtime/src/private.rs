//! Private state: the state root and the directories below it are reachable by their owner only.
//!
//! The store holds layer trees exactly as images ship them (setuid files included) and the run records
//! hold output and secrets: anyone else who could reach them could run an image's setuid-root file or
//! read another user's jobs. So the state root and every directory dstack makes under it are 0700, its
//! files 0600 — given at creation, not by a later chmod. A state root an older dstack left open is closed
//! in place when we own it ([`secure_state_root`]); one owned by someone else is refused. Closing the
//! top directories is enough: everything else is below them.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Mode of every directory dstack makes under the state root.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file dstack makes under the state root.
pub const FILE_MODE: u32 = 0o600;

/// The directories under the state root checked at each start, besides the root itself.
const TOP_DIRS: [&str; 3] = ["store", "runs", "containers"];

#[derive(Debug, thiserror::Error)]
pub enum PrivateStateError {
    #[error(
        "{path} belongs to user {owner}, not to you (user {me}): dstack keeps its state where only you can \
         reach it; set DSTACK_HOME to a directory of your own (or have that directory's owner remove it)"
    )]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error("{0} is not a directory: move it away or set DSTACK_HOME to a directory of your own")]
    NotADirectory(PathBuf),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PrivateStateError {
    let path = path.to_path_buf();
    move |source| PrivateStateError::Io { what, path, source }
}

/// Creates `path` and any missing parents with mode 0700 (less what the umask takes); one there already
/// is left as it is.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Creates the one directory `path` with mode 0700 (less what the umask takes).
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(path)
}

/// Makes sure the state root `root` exists and that it and its top directories (`store/`, `runs/`,
/// `containers/`) are ours and reachable by no one else: missing, the root is made 0700 (its parents as
/// usual); open to others and ours, it is closed in place; someone else's is refused. One `stat` per
/// directory: no walk.
pub fn secure_state_root(root: &Path) -> Result<(), PrivateStateError> {
    match secure_dir(root) {
        Err(PrivateStateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                // The parents are the user's own business (`~/.local/share`): made as usual.
                fs::create_dir_all(parent).map_err(io_err("create", parent))?;
            }
            return match create_dir(root) {
                Ok(()) => Ok(()),
                // Made meanwhile by a concurrent dstack: check it as any other.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => secure_dir(root),
                Err(e) => Err(io_err("create", root)(e)),
            };
        }
        other => other?,
    }
    for name in TOP_DIRS {
        let dir = root.join(name);
        match secure_dir(&dir) {
            Err(PrivateStateError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Checks one existing directory: ours and 0700, closed in place when it is ours and open to others.
fn secure_dir(dir: &Path) -> Result<(), PrivateStateError> {
    let meta = fs::metadata(dir).map_err(io_err("inspect", dir))?;
    if !meta.is_dir() {
        return Err(PrivateStateError::NotADirectory(dir.to_path_buf()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(PrivateStateError::NotOwned {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.mode() & 0o077 != 0 {
        tracing::info!(
            "{}: closing to other users (mode {:o} -> 700)",
            dir.display(),
            meta.mode() & 0o7777
        );
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(io_err("make private", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_state_root_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b/dstack");
        secure_state_root(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
    }

    #[test]
    fn an_open_state_root_is_closed_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        for dir in ["", "store", "runs", "containers", "store/layers"] {
            let d = root.join(dir);
            fs::create_dir_all(&d).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        secure_state_root(&root).unwrap();
        for dir in ["", "store", "runs", "containers"] {
            assert_eq!(mode(&root.join(dir)), 0o700, "{dir}");
        }
        // Below a closed top directory, nothing needs to change.
        assert_eq!(mode(&root.join("store/layers")), 0o755);
    }

    #[test]
    fn a_state_root_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        fs::write(&root, "").unwrap();
        let err = secure_state_root(&root).unwrap_err();
        assert!(matches!(err, PrivateStateError::NotADirectory(_)), "{err}");
    }

    #[test]
    fn someone_elses_state_root_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::chown(&root, Some(12345), Some(12345)).unwrap();
        let err = secure_state_root(&root).unwrap_err();
        assert!(err.to_string().contains("belongs to user 12345"), "{err}");
    }
}
