//! A minimal `/dev`: the usual character devices (device nodes as root, bind mounts of the host's when
//! rootless, where mknod is not allowed), the standard symlinks, and the spec's extra devices.

use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

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

pub(super) fn populate(dev: &Path, extra: &[LinuxDevice], rootless: bool) -> Result<(), String> {
    for (name, major, minor) in DEFAULT_DEVICES {
        create(
            &dev.join(name),
            &Path::new("/dev").join(name),
            SFlag::S_IFCHR,
            major,
            minor,
            0o666,
            rootless,
        )?;
    }
    for (name, target) in LINKS {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(|e| format!("/dev/{name}: {e}"))?;
    }
    for d in extra {
        let rel = d.path().strip_prefix("/dev").unwrap_or(d.path());
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let target = dev.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mode = d.file_mode().unwrap_or(0o666);
        create(
            &target,
            d.path(),
            kind,
            d.major() as u64,
            d.minor() as u64,
            mode,
            rootless,
        )?;
        if !rootless && (d.uid().is_some() || d.gid().is_some()) {
            nix::unistd::chown(
                &target,
                d.uid().map(nix::unistd::Uid::from_raw),
                d.gid().map(nix::unistd::Gid::from_raw),
            )
            .map_err(|e| format!("chown {}: {e}", d.path().display()))?;
        }
    }
    Ok(())
}

fn create(
    target: &Path,
    host: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    rootless: bool,
) -> Result<(), String> {
    let what = |e: &dyn std::fmt::Display| format!("creating {}: {e}", host.display());
    if !rootless
        && mknod(
            target,
            kind,
            Mode::from_bits_truncate(mode),
            makedev(major, minor),
        )
        .is_ok()
    {
        // mknod applies the umask; the mode must be exact.
        return nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            target,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| what(&e));
    }
    std::fs::File::create(target).map_err(|e| what(&e))?;
    mount(
        Some(host),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| what(&e))
}
