//! Finding a file in an image without mounting it: the topmost layer that has it, unless a layer above
//! whites it (or a directory on its path) out, or makes a directory on its path opaque.

use std::path::{Path, PathBuf};

use super::copy::is_whiteout;
use super::xattr;

/// The path of `rel` (e.g. `etc/passwd`) in the topmost of `layers` (bottom to top) that has it as the
/// image would show it, or `None` when the image has no such file.
pub fn lookup_file(layers: &[PathBuf], rel: impl AsRef<Path>) -> Option<PathBuf> {
    let rel = rel.as_ref();
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let parts: Vec<_> = rel.components().collect();
    for layer in layers.iter().rev() {
        let mut dir = layer.clone();
        let mut opaque = false;
        for (i, part) in parts.iter().enumerate() {
            let path = dir.join(part);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                break;
            };
            if is_whiteout(&meta) {
                return None;
            }
            if i + 1 == parts.len() {
                return Some(path);
            }
            if !meta.is_dir() {
                // A file or link where a directory should be hides the lower layers' directory.
                return None;
            }
            opaque |= xattr::is_opaque(&path);
            dir = path;
        }
        if opaque {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn topmost_layer_wins_and_whiteouts_hide() {
        let tmp = tempfile::tempdir().unwrap();
        let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
        fs::create_dir_all(l1.join("etc")).unwrap();
        fs::create_dir_all(l2.join("etc")).unwrap();
        fs::write(l1.join("etc/passwd"), "old").unwrap();
        fs::write(l1.join("etc/group"), "g").unwrap();
        fs::write(l2.join("etc/passwd"), "new").unwrap();
        let layers = vec![l1.clone(), l2.clone()];
        assert_eq!(
            lookup_file(&layers, "etc/passwd"),
            Some(l2.join("etc/passwd"))
        );
        assert_eq!(
            lookup_file(&layers, "/etc/group"),
            Some(l1.join("etc/group"))
        );
        assert_eq!(lookup_file(&layers, "etc/shadow"), None);
        if nix::unistd::geteuid().is_root() {
            // A whiteout is a 0:0 character device; only root may create one outside a namespace.
            nix::sys::stat::mknod(
                &l2.join("etc/group"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .unwrap();
            assert_eq!(lookup_file(&layers, "etc/group"), None);
            xattr::set(&l2.join("etc"), "trusted.overlay.opaque", b"y").unwrap();
            fs::remove_file(l2.join("etc/group")).unwrap();
            assert_eq!(lookup_file(&layers, "etc/group"), None);
        }
    }
}
