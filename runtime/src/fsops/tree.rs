//! Removal of whole trees, including those an unprivileged owner cannot empty as they are.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Removes a file or a whole tree (not following symlinks); a missing path is fine. Where removal fails
/// (image layers hold directories with mode 0555, which stop an unprivileged owner from deleting their
/// children), every directory below is given owner write and search permission and removal tried again.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    open_up(path);
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// Adds owner write and search permission to every directory below `path` (best effort: what stays
/// closed shows up as the removal's error).
fn open_up(path: &Path) {
    if let Ok(meta) = fs::symlink_metadata(path)
        && meta.is_dir()
    {
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
        }
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                open_up(&entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_trees_and_missing_paths_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("layer");
        fs::create_dir_all(top.join("usr/lib")).unwrap();
        fs::write(top.join("usr/lib/file"), "x").unwrap();
        std::os::unix::fs::symlink("/", top.join("usr/root")).unwrap();
        fs::set_permissions(top.join("usr"), fs::Permissions::from_mode(0o555)).unwrap();
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        remove_tree(&top).unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
    }
}
