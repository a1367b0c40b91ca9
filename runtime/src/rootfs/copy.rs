//! The last resort: a flattened copy of the layers, bottom to top, applying whiteouts and opaque
//! directories as overlay would, keeping hardlinks, ownership, modes, times and extended attributes.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::xattr;

/// Copies `layers` (bottom to top) into `dest`, which must not exist yet.
pub(super) fn flatten(layers: &[PathBuf], dest: &Path) -> io::Result<()> {
    fs::create_dir_all(dest)?;
    for layer in layers {
        let mut links = HashMap::new();
        apply_dir(layer, dest, &mut links)?;
        copy_metadata(&fs::symlink_metadata(layer)?, layer, dest)?;
    }
    Ok(())
}

/// A whiteout: a 0:0 character device (how the store writes `.wh.` entries).
pub(super) fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn apply_dir(src: &Path, dest: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let s = entry.path();
        let d = dest.join(entry.file_name());
        let meta = fs::symlink_metadata(&s)?;
        let existing = fs::symlink_metadata(&d).ok();
        if is_whiteout(&meta) {
            if let Some(old) = existing {
                remove(&d, &old)?;
            }
            continue;
        }
        if meta.is_dir() {
            match existing {
                Some(old) if old.is_dir() => {
                    if xattr::is_opaque(&s) {
                        for child in fs::read_dir(&d)? {
                            let child = child?.path();
                            remove(&child, &fs::symlink_metadata(&child)?)?;
                        }
                    }
                }
                Some(old) => {
                    remove(&d, &old)?;
                    fs::create_dir(&d)?;
                }
                None => fs::create_dir(&d)?,
            }
            apply_dir(&s, &d, links)?;
            copy_metadata(&meta, &s, &d)?;
            continue;
        }
        if let Some(old) = existing {
            remove(&d, &old)?;
        }
        copy_entry(&s, &d, &meta, links)?;
    }
    Ok(())
}

fn copy_entry(
    s: &Path,
    d: &Path,
    meta: &fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_file() {
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                return fs::hard_link(first, d);
            }
            links.insert(key, d.to_path_buf());
        }
        fs::copy(s, d)?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(s)?, d)?;
    } else {
        // Device nodes, fifos and sockets: recreate them where allowed (not rootless), skip otherwise.
        let kind = if ft.is_char_device() {
            nix::sys::stat::SFlag::S_IFCHR
        } else if ft.is_block_device() {
            nix::sys::stat::SFlag::S_IFBLK
        } else if ft.is_fifo() {
            nix::sys::stat::SFlag::S_IFIFO
        } else {
            nix::sys::stat::SFlag::S_IFSOCK
        };
        let mode = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
        if let Err(e) = nix::sys::stat::mknod(d, kind, mode, meta.rdev()) {
            tracing::debug!("skipping {}: {e}", s.display());
            return Ok(());
        }
    }
    copy_metadata(meta, s, d)
}

fn remove(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Owner, extended attributes (overlay's own excepted), mode and times, in the order that keeps setuid
/// bits (chown clears them).
fn copy_metadata(meta: &fs::Metadata, s: &Path, d: &Path) -> io::Result<()> {
    if let Err(e) = std::os::unix::fs::lchown(d, Some(meta.uid()), Some(meta.gid())) {
        // An id this namespace does not map: the file keeps ours.
        tracing::debug!("chown {}: {e}", d.display());
    }
    for name in xattr::list(s) {
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        if let Some(value) = xattr::get(s, &name)
            && let Err(e) = xattr::set(d, &name, &value)
        {
            tracing::debug!("xattr {name} on {}: {e}", d.display());
        }
    }
    if !meta.file_type().is_symlink() {
        fs::set_permissions(d, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let times = [
        nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec()),
        nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
    ];
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        d,
        &times[0],
        &times[1],
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_layers_replace_and_hardlinks_survive() {
        let tmp = tempfile::tempdir().unwrap();
        let (l1, l2, out) = (
            tmp.path().join("l1"),
            tmp.path().join("l2"),
            tmp.path().join("out"),
        );
        fs::create_dir_all(l1.join("etc")).unwrap();
        fs::write(l1.join("etc/a"), "1").unwrap();
        fs::write(l1.join("etc/b"), "old").unwrap();
        fs::hard_link(l1.join("etc/a"), l1.join("etc/a2")).unwrap();
        fs::create_dir_all(l2.join("etc")).unwrap();
        fs::write(l2.join("etc/b"), "new").unwrap();
        flatten(&[l1, l2], &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("etc/b")).unwrap(), "new");
        let (a, a2) = (
            fs::metadata(out.join("etc/a")).unwrap(),
            fs::metadata(out.join("etc/a2")).unwrap(),
        );
        assert_eq!(a.ino(), a2.ino());
    }
}
