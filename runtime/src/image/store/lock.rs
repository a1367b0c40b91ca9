//! `flock` locks on files under `locks/`: held by an open descriptor, so a process that dies (even by
//! SIGKILL) releases its locks with it, and nothing needs cleaning afterwards.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A held lock; dropping it unlocks.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

impl FileLock {
    /// Waits for the lock.
    pub(crate) fn acquire(path: &Path, mode: Mode) -> io::Result<FileLock> {
        let file = open(path)?;
        flock(&file, mode, false)?;
        Ok(FileLock { file })
    }

    /// Locks an already open file (a lease file, whose content matters too).
    pub(crate) fn on(file: File, mode: Mode, nonblocking: bool) -> io::Result<Option<FileLock>> {
        match flock(&file, mode, nonblocking) {
            Ok(()) => Ok(Some(FileLock { file })),
            Err(e) if nonblocking && e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::private::FILE_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

fn flock(file: &File, mode: Mode, nonblocking: bool) -> io::Result<()> {
    let mut op = match mode {
        Mode::Shared => libc::LOCK_SH,
        Mode::Exclusive => libc::LOCK_EX,
    };
    if nonblocking {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a descriptor this File owns; no memory is passed.
        let ret = unsafe { libc::flock(file.as_raw_fd(), op) };
        if ret == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
