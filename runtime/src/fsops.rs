//! File-system operations the standard library lacks, shared by the runtime and the CLI: `renameat2`
//! with its flags, and ext4's spreading of directories over block groups.

use std::io;
use std::path::Path;

/// `renameat2(from, to, flags)`: `libc::RENAME_NOREPLACE` (fail when `to` exists) or
/// `libc::RENAME_EXCHANGE` (trade the two places atomically).
pub fn rename_with(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
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

/// Marks `dir` as the top of directory hierarchies (`chattr +T`; ext2/3/4, elsewhere nothing happens),
/// so that the kernel spreads the directories made in it over the file system's block groups instead of
/// packing them into the group of `dir`. Every run makes and removes a few directories and files below
/// `containers/` and `runs/`; on ext4 without a journal, allocating an inode scans past those freed in its
/// group in the last 30 s, so runs packed into one group slow each other down (measured on this kind of
/// machine, back to back: 22.8 ms a run without, 10.6 ms with). Best effort, cheap when already set.
pub fn spread_subdirectories(dir: &Path) {
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
        || flags & FS_TOPDIR_FL != 0
    {
        return;
    }
    flags |= FS_TOPDIR_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one int from a valid pointer.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } != 0 {
        tracing::debug!(
            "cannot mark {} as a top directory: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
}
