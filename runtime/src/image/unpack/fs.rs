//! The raw syscalls the unpacker makes, each relative to a directory file descriptor (`openat2` is
//! [`crate::inroot`]'s).
//!
//! Parent directories are resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..` and
//! symlinks (absolute ones included) are interpreted as if the layer directory were `/`: nothing reached
//! through them can be outside it. The final component is never followed (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`, `O_EXCL` on create).

use std::ffi::{CStr, OsStr};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) use crate::fsops::c_bytes;
use crate::fsops::check;

/// What is at a name, without following a symlink there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    Nothing,
    Directory,
    Other,
}

/// Opens a directory by ordinary path (the layer root itself, which the store created).
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = c_bytes(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string; the returned descriptor is owned below.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `rel` (relative, may be empty for the root itself) inside `root`, resolving every
/// component as if `root` were `/`.
pub(crate) fn resolve_dir(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    let path = if rel.is_empty() {
        c_bytes(b".")?
    } else {
        c_bytes(rel)?
    };
    crate::inroot::openat2(
        root,
        &path,
        (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// What `name` in `dir` is, without following a symlink.
pub(crate) fn existing(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Existing> {
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, `st` is writable.
    let ret = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(Existing::Nothing),
            _ => Err(err),
        };
    }
    Ok(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        Existing::Directory
    } else {
        Existing::Other
    })
}

pub(crate) fn mkdir(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// Opens a directory that is a direct child of `dir`, refusing a symlink there.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: valid descriptor and NUL-terminated name.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates a new regular file with `mode` (less the umask; never reusing or following what is there) and
/// opens it for writing, which works whatever the mode says.
pub(crate) fn create_file(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
) -> io::Result<std::fs::File> {
    // SAFETY: valid descriptor and NUL-terminated name.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

pub(crate) fn symlink(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// A hard link `new_dir/new_name` to `old_dir/old_name`; flags 0: a symlink at `old_name` is linked itself,
/// not followed.
pub(crate) fn hardlink(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub(crate) fn mknod(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let dev = libc::makedev(major, minor);
    // SAFETY: valid descriptor and NUL-terminated name.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) }).map(drop)
}

/// Removes a non-directory.
pub(crate) fn unlink(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

/// Removes a directory and everything under it, never following symlinks.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // std's remove_dir_all opens each level with O_NOFOLLOW and works relative to it; the magic link only
    // names our own, already resolved directory.
    let path = crate::inroot::proc_path(dir).join(OsStr::from_bytes(name.to_bytes()));
    crate::fsops::remove_tree(&path)
}

/// Sets owner of `name` in `dir` without following a symlink.
pub(crate) fn chown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

fn timespec(secs: i64, nanos: u32) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    [t, t]
}

/// Sets access and modification time of an open file or directory.
pub(crate) fn futimes(fd: BorrowedFd<'_>, secs: i64, nanos: u32) -> io::Result<()> {
    let times = timespec(secs, nanos);
    // SAFETY: valid descriptor; `times` is an array of two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// Sets the times of `name` in `dir` without following a symlink (for symlinks themselves).
pub(crate) fn utimes_at(dir: BorrowedFd<'_>, name: &CStr, secs: i64, nanos: u32) -> io::Result<()> {
    let times = timespec(secs, nanos);
    // SAFETY: valid descriptor, NUL-terminated name, two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid descriptor, NUL-terminated name, value pointer and length from one slice.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// True for the errors a full filesystem or an exhausted quota gives.
pub fn is_no_space(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Like [`resolve_dir`], but the last component must itself be a directory, not a symlink to one.
pub(crate) fn resolve_dir_nofollow(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    let path = c_bytes(rel)?;
    crate::inroot::openat2(
        root,
        &path,
        (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// Whether an error says the name is already taken.
pub(crate) fn is_exists(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EEXIST)
}

/// Makes room at `name` in `dir`: removes a file, symlink or special file, or a whole directory tree.
pub(crate) fn remove_any(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    match existing(dir, name)? {
        Existing::Nothing => Ok(()),
        Existing::Directory => remove_tree(dir, name),
        Existing::Other => unlink(dir, name),
    }
}
