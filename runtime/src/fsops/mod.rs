//! File-system primitives the standard library lacks, the one set shared by the runtime and the CLI:
//! locks ([`FileLock`]), atomic replacement ([`write_atomic`]), tree removal ([`remove_tree`]),
//! `renameat2` with its flags, ext4's spreading of directories over block groups, and the two helpers
//! of every raw system call on a path ([`c_bytes`], [`check`]).

mod atomic;
mod lock;
mod tree;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

pub use atomic::{TEMP_PREFIX, write_atomic};
pub use lock::{FileLock, LockMode};
pub use tree::remove_tree;

/// `bytes` as the NUL-terminated string a system call takes (a NUL inside is an error).
pub(crate) fn c_bytes(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
}

/// `path` as the NUL-terminated string a system call takes (a path with a NUL in it is an error).
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    c_bytes(path.as_os_str().as_bytes())
}

/// The result of a raw system call that returns -1 and sets `errno` on failure.
pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `renameat2(from, to, flags)`: `libc::RENAME_NOREPLACE` (fail when `to` exists) or
/// `libc::RENAME_EXCHANGE` (trade the two places atomically).
pub fn rename_with(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (from, to) = (c_path(from)?, c_path(to)?);
    // SAFETY: renameat2 with two NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks `dir` as the top of directory hierarchies, or not (`chattr +T` / `-T`; ext2/3/4, elsewhere
/// nothing happens). The kernel spreads the directories made in a top directory over the file system's
/// block groups instead of packing them near their parent. That matters where directories and files
/// are made and removed run after run (scratch directories, a run's copy of the project): on ext4
/// without a journal, allocating an inode scans past those freed in its group in the last 30 s, so runs
/// packed into one group slow each other down (measured on this kind of machine, back to back: 22.8 ms
/// a run without, 10.6 ms with). But making a directory in a top directory scans the groups for the
/// best one (0.15-0.3 ms here, against 0.02-0.05 ms), so a directory whose subdirectories stay should
/// not be one. Best effort, cheap when already so.
pub fn mark_top_directory(dir: &Path, top: bool) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
    else {
        return;
    };
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int to a valid pointer; an fs without flags refuses it.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } != 0
        || (flags & FS_TOPDIR_FL != 0) == top
    {
        return;
    }
    flags ^= FS_TOPDIR_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one int from a valid pointer.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } != 0 {
        tracing::debug!(
            "cannot change the top directory flag of {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// Makes the directory `path` with exactly `mode` (whatever the umask); one there already is fine.
pub fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::create_dir(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sixteen hex digits from the kernel's random pool (the clock's where it has none yet), for names made
/// with `O_EXCL` or `RENAME_NOREPLACE`.
pub fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom fills at most 8 bytes of a local buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
    let value = if n == 8 {
        u64::from_ne_bytes(bytes)
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    };
    format!("{value:016x}")
}
