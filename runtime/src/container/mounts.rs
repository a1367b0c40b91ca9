//! Inside the container's mount namespace: the spec's mounts under the new root, pivot_root, then the
//! masked and read-only paths. Every mount lives and dies with the namespace.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use oci_spec::runtime::{Mount, Spec};

use super::dev;
use crate::inroot::{self, Create, Root, Scope};

type Step = Result<(), String>;

/// The scratch directory's mount point for init's staging tmpfs, and the staged files' folder in it.
pub(super) const STAGING: &str = "merged";
pub(super) const STAGED_FILES: &str = "files";

/// A small tmpfs at `staging`, visible only in this mount namespace, holding the root filesystem's mount
/// point, the files bound into the container, and a layer with their (empty) mount points under `/etc`
/// for the root filesystem's top: transient files never touch the state root's disk, where each creation
/// and removal costs a journal write. Returns (mount point, top layer).
pub(super) fn stage(
    staging: &Path,
    files: &[(String, String)],
) -> Result<(PathBuf, PathBuf), String> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("tmpfs"),
        staging,
        Some("tmpfs"),
        flags,
        Some("mode=755,size=1m"),
    )
    .map_err(|e| format!("mounting the staging tmpfs on {}: {e}", staging.display()))?;
    let root = staging.join("root");
    let dir = staging.join(STAGED_FILES);
    let fail = |e: std::io::Error| format!("staging the container's files: {e}");
    std::fs::create_dir(&root).map_err(fail)?;
    std::fs::create_dir(&dir).map_err(fail)?;
    let layer = staging.join("layer");
    std::fs::create_dir_all(layer.join("etc")).map_err(fail)?;
    for (name, text) in files {
        std::fs::write(layer.join("etc").join(name), "").map_err(fail)?;
        std::fs::write(dir.join(name), text).map_err(fail)?;
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &dir.join(name),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| format!("staging {name}: {e}"))?;
    }
    for (path, mode) in [(layer.clone(), 0o755), (layer.join("etc"), 0o755)] {
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(fail)?;
    }
    Ok((root, layer))
}

/// Stops mount events from leaking out to the host (and in from it): `/` becomes recursively private, or
/// takes the spec's `rootfsPropagation`.
pub(super) fn make_private(propagation: Option<&str>) -> Step {
    let flags = match propagation {
        None | Some("") => MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        Some(p) => propagation_flags(p)
            .ok_or_else(|| format!("unknown rootfsPropagation {p:?}: use private, slave, shared or unbindable (r-prefixed too)"))?,
    };
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(|e| {
        format!("setting the propagation of / in the container's mount namespace: {e}")
    })
}

/// `MS_*` flags of a propagation option (`rslave` = `MS_SLAVE | MS_REC`).
fn propagation_flags(option: &str) -> Option<MsFlags> {
    let kind = |name: &str| match name {
        "private" => Some(MsFlags::MS_PRIVATE),
        "slave" => Some(MsFlags::MS_SLAVE),
        "shared" => Some(MsFlags::MS_SHARED),
        "unbindable" => Some(MsFlags::MS_UNBINDABLE),
        _ => None,
    };
    kind(option).or_else(|| {
        option
            .strip_prefix('r')
            .and_then(kind)
            .map(|k| k | MsFlags::MS_REC)
    })
}

/// True when the spec's `rootfsPropagation` lets mount events cross between the container and the host
/// (shared or slave): the old root must then be made a slave before it is detached, and with shared the
/// root's parent mount private, as runc does.
pub(super) fn propagates(propagation: Option<&str>) -> bool {
    propagation
        .and_then(propagation_flags)
        .is_some_and(|f| f.intersects(MsFlags::MS_SHARED | MsFlags::MS_SLAVE))
}

/// Makes the mount that holds `path` private (not recursively): pivot_root refuses a new root whose
/// parent mount is shared (EINVAL), and a bind made under a shared mount would show on the host.
fn make_parent_private(path: &Path) -> Step {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let parent = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| "/".into());
    mount(
        None::<&str>,
        &parent,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making {} private: {e}", parent.display()))
}

/// A mountinfo field: spaces, tabs, newlines and backslashes come as `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Binds a ready root directory (an OCI bundle's `root.path`) onto itself, so it is a mount point that
/// pivot_root accepts. Recursive, as runc does: mounts below it come along. With `parent_private` (a
/// shared `rootfsPropagation`) the mount holding it is made private first.
pub(super) fn bind_root(path: &Path, parent_private: bool) -> Step {
    if parent_private {
        make_parent_private(path)?;
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("binding the root filesystem {}: {e}", path.display()))
}

/// Remounts the new root read-only (`root.readonly`), once everything is mounted under it.
pub(super) fn readonly_root() -> Step {
    remount_bind(Path::new("/"), MsFlags::MS_RDONLY)
        .map_err(|e| format!("making the root filesystem read-only: {e}"))
}

/// Mounts the spec's mounts under `root`, in order, and fills `/dev` when it is a tmpfs. Every target
/// is resolved inside `root` by [`inroot`] and mounted on through its descriptor.
pub(super) fn mount_all(spec: &Spec, root: &Path, rootless: bool) -> Step {
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    let root = Root::open(root, Scope::InRoot)
        .map_err(|e| format!("opening the root filesystem {}: {e}", root.display()))?;
    for m in spec.mounts().as_deref().unwrap_or_default() {
        mount_one(m, &root, rootless)?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            // Opened again: the tmpfs now on top, wherever the image's /dev led.
            let dev = root
                .open_dir(Path::new("/dev"))
                .map_err(|e| format!("filling /dev: {e}"))?;
            dev::populate(&root, dev.as_fd(), &devices, rootless)?;
        }
    }
    Ok(())
}

/// A mount target inside the root: its path as the container sees it and a descriptor of it.
struct Target<'a> {
    root: &'a Root,
    path: &'a Path,
    fd: OwnedFd,
}

impl Target<'_> {
    /// The target as mount(2) takes it (`/proc/self/fd/N`).
    fn here(&self) -> PathBuf {
        inroot::proc_path(self.fd.as_fd())
    }

    /// Resolves the target again, so that it refers to what was just mounted there, not to what lies
    /// under it (a remount or a propagation change needs the mount itself).
    fn reopen(&mut self) -> Result<PathBuf, String> {
        self.fd = self.root.open_path(self.path).map_err(|e| e.to_string())?;
        Ok(self.here())
    }
}

/// Mount flags, propagation flags and the remaining data string of an OCI options list.
fn parse_options(options: &[String]) -> (MsFlags, Option<MsFlags>, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut propagation = None;
    let mut data = Vec::new();
    for o in options {
        if let Some(p) = propagation_flags(o) {
            propagation = Some(p);
            continue;
        }
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "async" | "atime" | "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            _ => {
                data.push(o.clone());
                (MsFlags::empty(), MsFlags::empty())
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, propagation, data)
}

fn mount_one(m: &Mount, root: &Root, rootless: bool) -> Step {
    let typ = m.typ().clone().unwrap_or_else(|| "bind".into());
    let options = m.options().clone().unwrap_or_default();
    let (flags, propagation, data) = parse_options(&options);
    let what =
        |e: &dyn std::fmt::Display| format!("mounting {} ({typ}): {e}", m.destination().display());
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
    let bind = typ == "bind" || flags.contains(MsFlags::MS_BIND);
    let create = match std::fs::metadata(&source) {
        Ok(meta) if bind && !meta.is_dir() => Create::File,
        Err(_) if bind => return Err(what(&format!("{} does not exist", source.display()))),
        _ => Create::Dir,
    };
    let fd = root
        .make(m.destination(), create)
        .map_err(|e| format!("mounting {typ} in the container: {e}"))?;
    let mut target = Target {
        root,
        path: m.destination(),
        fd,
    };
    mount_by_type(&source, &mut target, &typ, flags, &data, rootless).map_err(|e| what(&e))?;
    if let Some(p) = propagation {
        let here = target.reopen().map_err(|e| what(&e))?;
        mount(None::<&str>, &here, None::<&str>, p, None::<&str>).map_err(|e| what(&e))?;
    }
    Ok(())
}

fn mount_by_type(
    source: &Path,
    target: &mut Target,
    typ: &str,
    flags: MsFlags,
    data: &[String],
    rootless: bool,
) -> Result<(), String> {
    let dest = target.here();
    if typ == "bind" || flags.contains(MsFlags::MS_BIND) {
        let rec = flags & MsFlags::MS_REC;
        mount(
            Some(source),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .map_err(|e| e.to_string())?;
        // A bind takes its flags (ro, nosuid, nodev, noexec...) only from a remount.
        let remount = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !remount.is_empty() {
            let here = target.reopen()?;
            if rec.is_empty() {
                remount_bind(&here, remount).map_err(|e| e.to_string())?;
            } else {
                restrict_recursively(target, remount)?;
            }
        }
        return Ok(());
    }
    match typ {
        "cgroup" | "cgroup2" => return mount_cgroup(target, flags),
        "sysfs" => {
            if mount(Some("sysfs"), &dest, Some("sysfs"), flags, None::<&str>).is_err() {
                // Refused where the network namespace is not ours: bind the host's, read-only.
                mount(
                    Some("/sys"),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| e.to_string())?;
                remount_bind(&target.reopen()?, MsFlags::MS_RDONLY).map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        _ => {}
    }
    let joined = data.join(",");
    let result = mount(Some(source), &dest, Some(typ), flags, Some(joined.as_str()));
    match result {
        Ok(()) => Ok(()),
        // A rootless namespace without a subordinate range has no gid 5 for devpts.
        Err(_) if typ == "devpts" && rootless => {
            let data: Vec<_> = data
                .iter()
                .filter(|d| !d.starts_with("gid="))
                .cloned()
                .collect();
            mount(
                Some(source),
                &dest,
                Some("devpts"),
                flags,
                Some(data.join(",").as_str()),
            )
            .map_err(|e| e.to_string())
        }
        // Without an IPC namespace of its own a rootless user may not mount mqueue; it is optional.
        Err(_) if typ == "mqueue" && rootless => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// `mount_setattr`'s attributes (linux/mount.h), which the libc crate does not export on every target.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `struct mount_attr` of linux/mount.h.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets `flags` on a recursive bind and on every mount it brought along: a remount reaches only the top
/// one, which would leave a host mount below a read-only volume writable (for root in the job too).
/// `mount_setattr(AT_RECURSIVE)` (Linux 5.12) does it in one call; older kernels get a remount of each
/// mount found below the target in mountinfo.
fn restrict_recursively(target: &mut Target, flags: MsFlags) -> Result<(), String> {
    let attributes = [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
    ];
    let known = attributes
        .iter()
        .fold(MsFlags::empty(), |all, (flag, _)| all | *flag);
    let here = target.here();
    if known.contains(flags) {
        let attr = MountAttr {
            attr_set: attributes
                .iter()
                .filter(|(flag, _)| flags.contains(*flag))
                .fold(0, |set, (_, attr)| set | attr),
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: the descriptor is open for the call, the path is a NUL-terminated empty string and
        // `attr` a live `struct mount_attr` whose size is passed with it.
        let result = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                target.fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if result == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOSYS) {
            return Err(err.to_string());
        }
    }
    remount_bind(&here, flags).map_err(|e| e.to_string())?;
    // The target as this namespace's mountinfo names it, and each mount below it.
    let top = std::fs::read_link(&here).map_err(|e| e.to_string())?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    for point in info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(&top) && *p != top)
    {
        remount_bind(&point, flags).map_err(|e| format!("{}: {e}", point.display()))?;
    }
    Ok(())
}

/// Bind-remounts `path` read-only, keeping the flags the kernel locks in a user namespace.
fn remount_readonly(path: &Path) -> nix::Result<()> {
    remount_bind(path, MsFlags::MS_RDONLY)
}

/// Bind-remounts `path` with `extra` flags (`MS_RDONLY`, `MS_NOSUID`...), keeping the flags it has (the
/// kernel refuses to drop the ones it locks in a user namespace).
fn remount_bind(path: &Path, extra: MsFlags) -> nix::Result<()> {
    let locked = nix::sys::statvfs::statvfs(path)
        .map(|s| s.flags())
        .unwrap_or(nix::sys::statvfs::FsFlags::empty());
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra;
    use nix::sys::statvfs::FsFlags as F;
    for (f, m) in [
        (F::ST_NOSUID, MsFlags::MS_NOSUID),
        (F::ST_NODEV, MsFlags::MS_NODEV),
        (F::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (F::ST_NOATIME, MsFlags::MS_NOATIME),
        (F::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (F::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if locked.contains(f) {
            flags |= m;
        }
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
}

const CGROUP2_MAGIC: i64 = 0x6367_7270;

/// `/sys/fs/cgroup` as the job's cgroup namespace shows it: cgroup2 on unified hosts; on v1/hybrid
/// hosts a tmpfs holding each v1 hierarchy (and the unified one), all read-only.
fn mount_cgroup(target: &mut Target, flags: MsFlags) -> Result<(), String> {
    let flags = flags | MsFlags::MS_RDONLY;
    let host = Path::new("/sys/fs/cgroup");
    let dest = target.here();
    let tmpfs = |dest: &Path| {
        mount(
            Some("tmpfs"),
            dest,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )
    };
    let unified = nix::sys::statfs::statfs(host).map(|s| s.filesystem_type().0 == CGROUP2_MAGIC);
    if unified.unwrap_or(false) {
        let cgroup2 =
            |dest: &Path| mount(Some("cgroup2"), dest, Some("cgroup2"), flags, None::<&str>);
        match cgroup2(&dest) {
            Ok(()) => return Ok(()),
            // `dest` is the host's cgroup2 mount (the host's /sys bound where the network namespace is not
            // ours): the kernel refuses the same superblock on the same mount point. A tmpfs between them.
            Err(nix::errno::Errno::EBUSY)
                if tmpfs(&dest).is_ok() && target.reopen().is_ok_and(|d| cgroup2(&d).is_ok()) =>
            {
                return Ok(());
            }
            Err(_) => return bind_readonly(host, target),
        }
    }
    tmpfs(&dest).map_err(|e| e.to_string())?;
    target.reopen()?;
    // Our own, fresh tmpfs: its directories are made by descriptor all the same.
    let dir = inroot::Root::open(&target.here(), Scope::Beneath).map_err(|e| e.to_string())?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        let (left, right) = line.split_once(" - ").unwrap_or((line, ""));
        let point = left.split_whitespace().nth(4).unwrap_or("");
        let mut r = right.split_whitespace();
        let (fstype, superopts) = (r.next().unwrap_or(""), r.nth(1).unwrap_or(""));
        let Some(name) = point.strip_prefix("/sys/fs/cgroup/") else {
            continue;
        };
        if name.contains('/') || !(fstype == "cgroup" || fstype == "cgroup2") {
            continue;
        }
        let mut hierarchy = Target {
            root: &dir,
            path: Path::new(name),
            fd: dir
                .make(Path::new(name), Create::Dir)
                .map_err(|e| e.to_string())?,
        };
        let data: Vec<&str> = superopts
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect();
        let data = data.join(",");
        if mount(
            Some(fstype),
            &hierarchy.here(),
            Some(fstype),
            flags,
            Some(data.as_str()),
        )
        .is_err()
        {
            bind_readonly(&host.join(name), &mut hierarchy)?;
        }
    }
    remount_tmpfs_readonly(&target.here())
}

fn bind_readonly(src: &Path, target: &mut Target) -> Result<(), String> {
    mount(
        Some(src),
        &target.here(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| e.to_string())?;
    remount_readonly(&target.reopen()?).map_err(|e| e.to_string())
}

fn remount_tmpfs_readonly(dest: &Path) -> Result<(), String> {
    let flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), dest, Some("tmpfs"), flags, Some("mode=755")).map_err(|e| e.to_string())
}

/// Makes `root` the root directory and detaches the old one. With `keep_daemon_root` (fuse-overlayfs
/// serves `root` from this namespace), init first moves into a recursive bind of `/`: pivot_root only
/// re-roots the processes whose root was the caller's, so the daemon keeps the real one instead of
/// being re-rooted into its own mount, where its first path lookup would wait on itself.
/// With `slave_old_root` (a propagating `rootfsPropagation`) the old root is made a slave before it is
/// detached, so that the detach does not unmount the host's mounts through their peers.
pub(super) fn pivot(root: &Path, keep_daemon_root: bool, slave_old_root: bool) -> Step {
    let fail = |what: &str, e: nix::Error| format!("pivot_root to {}: {what}: {e}", root.display());
    if keep_daemon_root {
        let host = root.with_file_name("host");
        std::fs::create_dir_all(&host).map_err(|e| format!("creating {}: {e}", host.display()))?;
        mount(
            Some("/"),
            &host,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail("binding /", e))?;
        nix::unistd::chroot(&host).map_err(|e| fail("chroot", e))?;
    }
    nix::unistd::chdir(root).map_err(|e| fail("chdir", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| fail("pivot_root", e))?;
    if slave_old_root {
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail("making the old root a slave", e))?;
    }
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detaching the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir /", e))
}

/// Opens `path` under the new `/` (after pivot_root), `None` where it does not exist: masked and
/// read-only paths are resolved with the same resolver as the mounts, so a symlink in a path the
/// image controls cannot point them elsewhere.
fn open_after_pivot(root: &Root, path: &str) -> Result<Option<OwnedFd>, String> {
    match root.open_path(Path::new(path)) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn new_root() -> Result<Root, String> {
    Root::open(Path::new("/"), Scope::InRoot)
        .map_err(|e| format!("opening the container's root directory: {e}"))
}

/// Docker's masking: files get `/dev/null` bound over them, directories an empty read-only tmpfs.
/// Runs after pivot_root, on the container's paths.
pub(super) fn mask(paths: &[String]) -> Step {
    if paths.is_empty() {
        return Ok(());
    }
    let root = new_root()?;
    for p in paths {
        let fail = |e: &dyn std::fmt::Display| format!("masking {p}: {e}");
        let Some(fd) = open_after_pivot(&root, p).map_err(|e| fail(&e))? else {
            continue;
        };
        let path = inroot::proc_path(fd.as_fd());
        let meta = std::fs::metadata(&path).map_err(|e| fail(&e))?;
        let r = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                &path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0k"),
            )
        } else {
            mount(
                Some("/dev/null"),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        r.map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// Bind-remounts each existing path read-only. Runs after pivot_root.
pub(super) fn readonly(paths: &[String]) -> Step {
    if paths.is_empty() {
        return Ok(());
    }
    let root = new_root()?;
    for p in paths {
        let fail = |e: &dyn std::fmt::Display| format!("making {p} read-only: {e}");
        let Some(fd) = open_after_pivot(&root, p).map_err(|e| fail(&e))? else {
            continue;
        };
        let mut target = Target {
            root: &root,
            path: Path::new(p),
            fd,
        };
        let here = target.here();
        mount(
            Some(&here),
            &here,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail(&e))?;
        remount_readonly(&target.reopen().map_err(|e| fail(&e))?).map_err(|e| fail(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, propagation, data) = parse_options(&[
            "nosuid".into(),
            "ro".into(),
            "size=65536k".into(),
            "rslave".into(),
            "mode=755".into(),
        ]);
        assert!(flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_RDONLY));
        assert_eq!(propagation, Some(MsFlags::MS_SLAVE | MsFlags::MS_REC));
        assert_eq!(propagation_flags("ro"), None);
        assert_eq!(
            data,
            vec!["size=65536k".to_string(), "mode=755".to_string()]
        );
    }
}
