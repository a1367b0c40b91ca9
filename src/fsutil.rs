//! Small file-system tools the run records and secrets share: atomic replacement and `flock` locks.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use runtime::fsops::{FileLock, LockMode};

pub use runtime::fsops::write_atomic;

/// Replaces `path`, which one writer rewrites several times (a run's record; no syncs: a power loss may
/// undo the last write, and a lost status line shows the run as `aborted`, as any dead supervisor's
/// does). The bytes go into the sibling `.NAME.next` (the generation before last, rewritten in place),
/// which then trades places with `path` (`renameat2(RENAME_EXCHANGE)`): after the second write no inode
/// is created or freed, and ext4 does not push the file out to disk at each write as it does for a new
/// file renamed over an old one (`auto_da_alloc`). Readers see a whole generation, unless they hold the
/// file open across two later writes: [`read_settled`] retries what does not parse.
pub fn replace_in_turn(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let (_, next) = hidden_sibling(path, "next")?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(&next)?;
    // The mode given at creation is filtered by the umask; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    // Shrinking to a non-zero length, unlike truncating to zero, does not make ext4 flush on close.
    file.write_all_at(bytes, 0)?;
    file.set_len(bytes.len() as u64)?;
    drop(file);
    match runtime::fsops::rename_with(&next, path, libc::RENAME_EXCHANGE) {
        Ok(()) => Ok(()),
        // The first write (nothing to trade with), or a file system without exchange (NFS): a rename.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EINVAL | libc::ENOSYS)
            ) =>
        {
            fs::rename(&next, path)
        }
        Err(e) => Err(e),
    }
}

/// Reads `path` and parses it with `parse`, reading again (a few times, a millisecond apart) while it does
/// not parse: a reader of a file [`replace_in_turn`] rewrites may catch it mid-write. The last error
/// stands.
pub fn read_settled<T, E>(
    path: &Path,
    parse: impl Fn(&[u8]) -> Result<T, E>,
) -> io::Result<Result<T, E>> {
    let mut tries = 0;
    loop {
        let bytes = fs::read(path)?;
        match parse(&bytes) {
            Err(_) if tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            parsed => return Ok(parsed),
        }
    }
}

/// `path`'s directory, and `.NAME.SUFFIX` in it.
fn hidden_sibling<'a>(path: &'a Path, suffix: &str) -> io::Result<(&'a Path, PathBuf)> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a path without a directory"))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    Ok((dir, dir.join(format!(".{name}.{suffix}"))))
}

/// Creates `dir` (and its parents) and makes sure it has exactly `mode`.
pub fn private_dir(dir: &Path, mode: u32) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// An exclusive `flock` on a lock file, held until dropped (or until the process ends, however it ends).
pub type Lock = FileLock;

/// Waits for the exclusive lock on `path`.
pub fn lock(path: &Path) -> io::Result<Lock> {
    FileLock::acquire(path, LockMode::Exclusive)
}

/// Takes the exclusive lock on `path` if nobody holds it; `None` when someone does.
pub fn try_lock(path: &Path) -> io::Result<Option<Lock>> {
    FileLock::try_acquire(path, LockMode::Exclusive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn records_rewritten_in_turn_keep_two_inodes_and_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.json");
        let inode = |p: &Path| fs::metadata(p).unwrap().ino();
        replace_in_turn(&path, b"first, and longer", 0o644).unwrap();
        replace_in_turn(&path, b"second", 0o644).unwrap();
        let next = tmp.path().join(".state.json.next");
        let (a, b) = (inode(&path), inode(&next));
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::read(&next).unwrap(), b"first, and longer");
        replace_in_turn(&path, b"third", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"third");
        assert_eq!(
            (inode(&path), inode(&next)),
            (b, a),
            "the two files trade places"
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        let parsed = read_settled(&path, |b| std::str::from_utf8(b).map(str::to_string)).unwrap();
        assert_eq!(parsed.unwrap(), "third");
    }

    #[test]
    fn private_dirs_get_their_mode_even_when_they_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/secrets");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir, 0o700).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_held_lock_is_seen_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let held = lock(&path).unwrap();
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        let again = try_lock(&path).unwrap();
        assert!(again.is_some());
        drop(again);
        assert!(try_lock(&path).unwrap().is_some());
    }
}
