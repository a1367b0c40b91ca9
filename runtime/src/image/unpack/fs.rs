//! The system calls the unpacker makes, through nix's wrappers, each relative to a directory file
//! descriptor (`openat2` is [`crate::inroot`]'s).
//!
//! Parent directories are resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..` and
//! symlinks (absolute ones included) are interpreted as if the layer directory were `/`: nothing reached
//! through them can be outside it. The final component is never followed (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`, `O_EXCL` on create).

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};

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
    Ok(fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
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
        crate::inroot::Scope::InRoot,
    )
}

/// What `name` in `dir` is, without following a symlink.
pub(crate) fn existing(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Existing> {
    match stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(Existing::Directory),
        Ok(_) => Ok(Existing::Other),
        Err(Errno::ENOENT) => Ok(Existing::Nothing),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn mkdir(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    Ok(stat::mkdirat(dir, name, Mode::from_bits_retain(mode))?)
}

/// Opens a directory that is a direct child of `dir`, refusing a symlink there.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates a new regular file with `mode` (less the umask; never reusing or following what is there) and
/// opens it for writing, which works whatever the mode says.
pub(crate) fn create_file(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
) -> io::Result<std::fs::File> {
    let fd = fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_retain(mode),
    )?;
    Ok(std::fs::File::from(fd))
}

pub(crate) fn symlink(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    Ok(unistd::symlinkat(target, dir, name)?)
}

/// A hard link `new_dir/new_name` to `old_dir/old_name`; no flags: a symlink at `old_name` is linked
/// itself, not followed.
pub(crate) fn hardlink(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> io::Result<()> {
    Ok(unistd::linkat(
        old_dir,
        old_name,
        new_dir,
        new_name,
        AtFlags::empty(),
    )?)
}

/// Makes the node `name` in `dir`; `mode` holds its type (`S_IFCHR`, `S_IFBLK`, `S_IFIFO`) and
/// permissions.
pub(crate) fn mknod(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let kind = SFlag::from_bits_retain(mode & libc::S_IFMT);
    let perm = Mode::from_bits_retain(mode & !libc::S_IFMT);
    let dev = stat::makedev(u64::from(major), u64::from(minor));
    Ok(stat::mknodat(dir, name, kind, perm, dev)?)
}

/// Removes a non-directory.
pub(crate) fn unlink(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    Ok(unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?)
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
    Ok(unistd::fchownat(
        dir,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    Ok(unistd::fchown(
        fd,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )?)
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(stat::fchmod(fd, Mode::from_bits_retain(mode))?)
}

fn timespec(secs: i64, nanos: u32) -> TimeSpec {
    TimeSpec::new(secs as libc::time_t, nanos as libc::c_long)
}

/// Sets access and modification time of an open file or directory.
pub(crate) fn futimes(fd: BorrowedFd<'_>, secs: i64, nanos: u32) -> io::Result<()> {
    let time = timespec(secs, nanos);
    Ok(stat::futimens(fd, &time, &time)?)
}

/// Sets the times of `name` in `dir` without following a symlink (for symlinks themselves).
pub(crate) fn utimes_at(dir: BorrowedFd<'_>, name: &CStr, secs: i64, nanos: u32) -> io::Result<()> {
    let time = timespec(secs, nanos);
    Ok(stat::utimensat(
        dir,
        name,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )?)
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
        crate::inroot::Scope::InRoot,
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
