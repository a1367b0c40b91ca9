//! fuse-overlayfs, for where the kernel overlay cannot be used. It runs inside the container's mount
//! namespace (and pid namespace: it dies with the container).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::RootfsError;

/// Why fuse-overlayfs cannot be used here, if it cannot.
pub(super) fn unavailable() -> Option<String> {
    if which().is_none() {
        return Some("fuse-overlayfs is not installed (package fuse-overlayfs)".into());
    }
    let rw = nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK;
    if nix::unistd::access("/dev/fuse", rw).is_err() {
        return Some(
            "fuse-overlayfs needs read-write access to /dev/fuse, which this user lacks".into(),
        );
    }
    None
}

fn which() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join("fuse-overlayfs"))
        .find(|p| p.is_file())
}

/// Mounts `lowers` (top first) with `dir/upper` and `dir/work` at `target`.
pub(super) fn mount(lowers: &[PathBuf], dir: &Path, target: &Path) -> Result<(), RootfsError> {
    let tool =
        which().ok_or_else(|| RootfsError::Fuse("fuse-overlayfs is not installed".into()))?;
    let (common, rel) = super::common_parent(lowers);
    let lowerdir: Vec<String> = rel
        .iter()
        .map(|p| p.display().to_string().replace(':', "\\:"))
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={},fsync=0",
        lowerdir.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let out = Command::new(tool)
        .current_dir(&common)
        .arg("-o")
        .arg(options)
        .arg(target)
        .output()
        .map_err(|e| RootfsError::Fuse(e.to_string()))?;
    if !out.status.success() {
        return Err(RootfsError::Fuse(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}
