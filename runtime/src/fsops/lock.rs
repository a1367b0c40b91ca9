//! `flock` locks, held by an open file description: a process that dies (even by SIGKILL) releases its
//! locks with it, so nothing needs cleaning afterwards. The one lock type of the runtime and the CLI.
//!
//! Dropping a [`FileLock`] closes its descriptor and does not unlock: the lock belongs to the open file
//! description, which a forked process (init, a run's detached clean-up) shares, and it must stay held
//! until the last of them closes it. nix's `Flock` unlocks on drop, which would free a scratch directory
//! or an address lease while the clean-up still works on it (the next run then swept it itself).

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use nix::errno::Errno;
use std::os::fd::AsRawFd;

/// Whether other holders may share the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held lock on a file (or a directory); dropping it (or closing every copy of its descriptor)
/// unlocks. It derefs to the file, for locks whose content matters too (a lease naming its holder).
#[derive(Debug)]
pub struct FileLock(File);

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
    let op = match mode {
        LockMode::Shared => libc::LOCK_SH,
        LockMode::Exclusive => libc::LOCK_EX,
    } | if nonblocking { libc::LOCK_NB } else { 0 };
    loop {
        // SAFETY: flock on a descriptor `file` owns for the whole call.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(FileLock(file));
        }
        match Errno::last() {
            // A signal handler ran while waiting: wait again.
            Errno::EINTR => continue,
            errno => return Err((file, errno)),
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

    /// A copy of the descriptor (as a forked clean-up or init holds) keeps the lock when the FileLock drops.
    #[test]
    fn a_shared_description_keeps_the_lock_after_a_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let held = FileLock::acquire(&path, LockMode::Exclusive).unwrap();
        let copy = held.file().try_clone().unwrap();
        drop(held);
        assert!(
            FileLock::try_acquire(&path, LockMode::Shared)
                .unwrap()
                .is_none(),
            "still held through the copy"
        );
        drop(copy);
        assert!(
            FileLock::try_acquire(&path, LockMode::Shared)
                .unwrap()
                .is_some()
        );
    }

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
