//! A minimal `/dev`: the usual character devices (device nodes as root, bind mounts of the host's when
//! rootless, where mknod is not allowed), the standard symlinks, and the spec's extra devices.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknodat};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::inroot::{self, Root};

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const LINKS: [(&str, &str); 6] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];

/// Fills the fresh tmpfs `dev` (a descriptor of the container's `/dev`, resolved after the tmpfs was
/// mounted) by `*at` calls relative to it; the spec's extra devices are placed by their own paths,
/// resolved inside `root`.
pub(super) fn populate(
    root: &Root,
    dev: BorrowedFd<'_>,
    extra: &[LinuxDevice],
    rootless: bool,
) -> Result<(), String> {
    for (name, major, minor) in DEFAULT_DEVICES {
        let c_name = CString::new(name).map_err(|e| e.to_string())?;
        let node = Node {
            kind: SFlag::S_IFCHR,
            major,
            minor,
            mode: 0o666,
        };
        create(dev, &c_name, &Path::new("/dev").join(name), node, rootless)?;
    }
    for (name, target) in LINKS {
        let c_name = CString::new(name).map_err(|e| e.to_string())?;
        nix::unistd::symlinkat(target, dev, c_name.as_c_str())
            .map_err(|e| format!("/dev/{name}: {e}"))?;
    }
    for d in extra {
        let shown = d.path().display();
        let (parent, name) = root
            .make_parent(d.path())
            .map_err(|e| format!("creating the device {e}"))?;
        let node = Node {
            kind: match d.typ() {
                LinuxDeviceType::B => SFlag::S_IFBLK,
                LinuxDeviceType::P => SFlag::S_IFIFO,
                _ => SFlag::S_IFCHR,
            },
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666),
        };
        create(parent.as_fd(), &name, d.path(), node, rootless)?;
        if !rootless && (d.uid().is_some() || d.gid().is_some()) {
            nix::unistd::fchownat(
                parent.as_fd(),
                name.as_c_str(),
                d.uid().map(nix::unistd::Uid::from_raw),
                d.gid().map(nix::unistd::Gid::from_raw),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| format!("chown {shown}: {e}"))?;
        }
    }
    Ok(())
}

/// A device node's type, numbers and exact mode.
#[derive(Clone, Copy)]
struct Node {
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
}

/// Creates the node `name` in `dir`: mknod as root; where that is not allowed (rootless), an empty
/// file with the host's `host` bound on it.
fn create(
    dir: BorrowedFd<'_>,
    name: &CStr,
    host: &Path,
    node: Node,
    rootless: bool,
) -> Result<(), String> {
    let what = |e: &dyn std::fmt::Display| format!("creating {}: {e}", host.display());
    let mode = Mode::from_bits_truncate(node.mode);
    if !rootless && mknodat(dir, name, node.kind, mode, makedev(node.major, node.minor)).is_ok() {
        // mknod applies the umask; the mode must be exact. The node was just made: no link to follow.
        return nix::sys::stat::fchmodat(
            dir,
            name,
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| what(&e));
    }
    // SAFETY: a valid descriptor and NUL-terminated name; O_NOFOLLOW refuses a link planted there.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(what(&std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    mount(
        Some(host),
        &inroot::proc_path(file.as_fd()),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| what(&e))
}
