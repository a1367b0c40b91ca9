//! `flock` locks, held by an open file description: a process that dies (even by SIGKILL) releases its
//! locks with it, so nothing needs cleaning afterwards. The one lock type of the runtime and the CLI.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Whether other holders may share the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held lock on a file (or a directory); dropping it (or closing every copy of its descriptor)
/// unlocks. It derefs to the file, for locks whose content matters too (a lease naming its holder).
#[derive(Debug)]
pub struct FileLock(Flock<File>);

impl FileLock {
    /// Waits for the lock on `path`, creating the file (mode 0600) when missing.
    pub fn acquire(path: &Path, mode: LockMode) -> io::Result<FileLock> {
        FileLock::wait_on(open_lock_file(path)?, mode)
    }

    /// Takes the lock on `path` (created when missing) if nobody holds it; `None` when someone does.
    pub fn try_acquire(path: &Path, mode: LockMode) -> io::Result<Option<FileLock>> {
        Ok(FileLock::try_on(open_lock_file(path)?, mode)?.ok())
    }

    /// Waits for the lock on an open file (or directory).
    pub fn wait_on(file: File, mode: LockMode) -> io::Result<FileLock> {
        lock(file, mode, false).map_err(|(_, errno)| io::Error::from(errno))
    }

    /// Takes the lock on an open file if nobody holds it; when someone does, the file comes back (to
    /// read who holds it).
    pub fn try_on(file: File, mode: LockMode) -> io::Result<Result<FileLock, File>> {
        match lock(file, mode, true) {
            Ok(held) => Ok(Ok(held)),
            Err((file, Errno::EWOULDBLOCK)) => Ok(Err(file)),
            Err((_, errno)) => Err(io::Error::from(errno)),
        }
    }

    pub fn file(&self) -> &File {
        &self.0
    }
}

impl Deref for FileLock {
    type Target = File;

    fn deref(&self) -> &File {
        &self.0
    }
}

impl DerefMut for FileLock {
    fn deref_mut(&mut self) -> &mut File {
        &mut self.0
    }
}

fn lock(file: File, mode: LockMode, nonblocking: bool) -> Result<FileLock, (File, Errno)> {
    let arg = match (mode, nonblocking) {
        (LockMode::Shared, false) => FlockArg::LockShared,
        (LockMode::Shared, true) => FlockArg::LockSharedNonblock,
        (LockMode::Exclusive, false) => FlockArg::LockExclusive,
        (LockMode::Exclusive, true) => FlockArg::LockExclusiveNonblock,
    };
    let mut file = file;
    loop {
        match Flock::lock(file, arg) {
            Ok(held) => return Ok(FileLock(held)),
            // A signal handler ran while waiting: wait again.
            Err((back, Errno::EINTR)) => file = back,
            Err(failed) => return Err(failed),
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::private::FILE_MODE)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let held = FileLock::acquire(&path, LockMode::Exclusive).unwrap();
        assert!(
            FileLock::try_acquire(&path, LockMode::Shared)
                .unwrap()
                .is_none()
        );
        drop(held);
        let shared = FileLock::try_acquire(&path, LockMode::Shared).unwrap();
        assert!(shared.is_some(), "free once dropped");
        assert!(
            FileLock::try_acquire(&path, LockMode::Shared)
                .unwrap()
                .is_some(),
            "shared holders share"
        );
        assert!(
            FileLock::try_acquire(&path, LockMode::Exclusive)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_busy_lock_gives_the_file_back() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lease");
        std::fs::write(&path, "job 7").unwrap();
        let _held = FileLock::acquire(&path, LockMode::Exclusive).unwrap();
        let busy = FileLock::try_on(File::open(&path).unwrap(), LockMode::Exclusive).unwrap();
        let mut owner = String::new();
        io::Read::read_to_string(&mut busy.unwrap_err(), &mut owner).unwrap();
        assert_eq!(owner, "job 7");
    }
}
