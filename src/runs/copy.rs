//! Copying and moving directory trees: the run's copy of the project, saved artifacts, downloads.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};

/// What a copy did, for messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
}

/// An I/O error with the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
pub struct CopyError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies `src` (a directory, file or symlink) to `dst`, keeping modes and symlinks as they are; `skip`
/// names paths not to descend into (e.g. a state root inside the project). Device nodes, sockets and
/// fifos are left out. Directories that already exist at `dst` are merged into.
pub fn copy_tree(src: &Path, dst: &Path, skip: &[PathBuf]) -> Result<Copied, CopyError> {
    let mut copied = Copied::default();
    copy_entry(src, dst, skip, &mut copied)?;
    Ok(copied)
}

fn copy_entry(
    src: &Path,
    dst: &Path,
    skip: &[PathBuf],
    copied: &mut Copied,
) -> Result<(), CopyError> {
    if skip.iter().any(|s| s == src) {
        return Ok(());
    }
    let meta = fs::symlink_metadata(src).map_err(at(src))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(src).map_err(at(src))?;
        match fs::remove_file(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(dst)(e)),
        }
        symlink(&target, dst).map_err(at(dst))?;
    } else if kind.is_dir() {
        match fs::create_dir(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
            Err(e) => return Err(at(dst)(e)),
        }
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(at(src))?
            .collect::<Result<_, _>>()
            .map_err(at(src))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            copy_entry(&entry.path(), &dst.join(entry.file_name()), skip, copied)?;
        }
        // Last, so that a read-only directory can still be filled.
        fs::set_permissions(
            dst,
            fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
        )
        .map_err(at(dst))?;
    } else if kind.is_file() {
        let bytes = fs::copy(src, dst).map_err(at(src))?;
        copied.files += 1;
        copied.bytes += bytes;
    }
    Ok(())
}

/// Moves `src` to `dst` (creating `dst`'s parents): a rename where it can, else a copy and removal.
pub fn move_tree(src: &Path, dst: &Path) -> Result<(), CopyError> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(at(parent))?;
    }
    match fs::rename(src, dst) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e)
            if e.raw_os_error() == Some(libc::ENOTEMPTY)
                || e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(at(src)(e)),
    }
    copy_tree(src, dst, &[])?;
    remove_tree(src)
}

/// Removes a file or a whole tree; a missing path is fine. Read-only directories are opened up first.
pub fn remove_tree(path: &Path) -> Result<(), CopyError> {
    runtime::fsops::remove_tree(path).map_err(at(path))
}

/// Changes the owner of `path` and everything below it (symlinks themselves, not their targets).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), CopyError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(at(path))?;
    if fs::symlink_metadata(path).map_err(at(path))?.is_dir() {
        for entry in fs::read_dir(path).map_err(at(path))? {
            chown_tree(&entry.map_err(at(path))?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Files (regular files, counted once each) and their bytes below `path`.
pub fn measure(path: &Path) -> Copied {
    let mut total = Copied::default();
    let Ok(meta) = fs::symlink_metadata(path) else {
        return total;
    };
    if meta.is_file() {
        total.files = 1;
        total.bytes = meta.len();
    } else if meta.is_dir()
        && let Ok(entries) = fs::read_dir(path)
    {
        for entry in entries.flatten() {
            let sub = measure(&entry.path());
            total.files += sub.files;
            total.bytes += sub.bytes;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/file.txt"), "hello").unwrap();
        fs::write(root.join("top.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("top.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("a/b/file.txt", root.join("link")).unwrap();
        symlink("/etc/passwd", root.join("abs-link")).unwrap();
    }

    #[test]
    fn copies_files_modes_and_symlinks_as_they_are() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        tree(&src);
        let copied = copy_tree(&src, &dst, &[]).unwrap();
        assert_eq!(
            copied,
            Copied {
                files: 2,
                bytes: 15
            }
        );
        assert_eq!(
            fs::read_to_string(dst.join("a/b/file.txt")).unwrap(),
            "hello"
        );
        assert_eq!(
            fs::metadata(dst.join("top.sh")).unwrap().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("a/b/file.txt")
        );
        assert_eq!(
            fs::read_link(dst.join("abs-link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(measure(&dst), copied);
    }

    #[test]
    fn skipped_paths_are_not_copied() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("project");
        tree(&src);
        fs::create_dir_all(src.join("state/runs")).unwrap();
        fs::write(src.join("state/runs/big"), "x").unwrap();
        let dst = tmp.path().join("copy");
        copy_tree(&src, &dst, &[src.join("state")]).unwrap();
        assert!(!dst.join("state").exists());
        assert!(dst.join("a/b/file.txt").exists());
    }

    #[test]
    fn chown_reaches_every_entry_and_leaves_link_targets_alone() {
        use std::os::unix::fs::MetadataExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        tree(&root);
        chown_tree(&root, 1234, 5678).unwrap();
        for p in ["", "a", "a/b", "a/b/file.txt", "top.sh"] {
            let meta = fs::symlink_metadata(root.join(p)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (1234, 5678), "{p}");
        }
        let link = fs::symlink_metadata(root.join("abs-link")).unwrap();
        assert_eq!(link.uid(), 1234);
        assert_eq!(
            fs::metadata("/etc/passwd").unwrap().uid(),
            0,
            "the link's target is untouched"
        );
    }

    #[test]
    fn moves_and_removes_trees() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        tree(&src);
        let dst = tmp.path().join("deep/er/dst");
        move_tree(&src, &dst).unwrap();
        assert!(!src.exists());
        assert_eq!(
            fs::read_to_string(dst.join("a/b/file.txt")).unwrap(),
            "hello"
        );
        fs::set_permissions(dst.join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&dst).unwrap();
        assert!(!dst.exists());
        remove_tree(&dst).unwrap();
    }
}
