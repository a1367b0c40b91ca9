//! An OCI bundle's `linux.cgroupsPath`. The bundle is not trusted: the path is checked component by component,
//! and the container's own (leaf) cgroup is always created here, never found, so a bundle cannot name a
//! cgroup of the host to join it, or to have `delete` kill and remove it.

use std::io;
use std::path::{Path, PathBuf};

use super::CgroupError;

/// Where relative cgroupsPaths hang from on each hierarchy (not `dstack/`, whose entries `dstack run` sweeps).
pub const RELATIVE_PARENT: &str = "dstack-oci";
const MAX_DEPTH: usize = 32;
const MAX_COMPONENT: usize = 255;

/// A validated `linux.cgroupsPath`: absolute (relative to each hierarchy's root) or relative (under
/// `RELATIVE_PARENT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupsPath {
    absolute: bool,
    parts: Vec<String>,
}

impl CgroupsPath {
    /// Checks `text`: no empty, `.` or `..` components, no hidden or odd names, not the root itself, and not
    /// systemd's `slice:prefix:name` form (unsupported).
    pub fn parse(text: &str) -> Result<CgroupsPath, CgroupError> {
        let bad = |reason: &str| CgroupError::CgroupsPath {
            path: crate::text::clip(text),
            reason: reason.to_string(),
        };
        let absolute = text.starts_with('/');
        if !absolute && let [_slice, _prefix, name] = text.split(':').collect::<Vec<_>>()[..] {
            // systemd's slice:prefix:name (podman --cgroup-manager systemd): dstack-oci does not ask systemd
            // for a scope; the container's cgroup is `RELATIVE_PARENT/<name>`.
            return CgroupsPath::parse(name)
                .map_err(|_| bad("the name after the last : must be a plain cgroup name"));
        }
        let body = text.strip_prefix('/').unwrap_or(text);
        if body.is_empty() {
            return Err(bad(
                "names no cgroup of its own (the root); give a path such as /mygroup/ctr",
            ));
        }
        let parts: Vec<String> = body.split('/').map(str::to_string).collect();
        if parts.len() > MAX_DEPTH {
            return Err(bad(&format!("deeper than {MAX_DEPTH} levels")));
        }
        for part in &parts {
            match part.as_str() {
                "" => return Err(bad("an empty component (// or a trailing /)")),
                "." | ".." => return Err(bad(". and .. components are not allowed")),
                p if p.starts_with('.') || p.len() > MAX_COMPONENT => {
                    return Err(bad("a component is hidden (.x) or longer than 255 bytes"));
                }
                p if !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@+=:,".contains(c)) =>
                {
                    return Err(bad(
                        "a component holds characters other than letters, digits and -_.@+=:,",
                    ));
                }
                _ => {}
            }
        }
        Ok(CgroupsPath { absolute, parts })
    }

    /// The container's directory in the hierarchy rooted at `root`.
    pub fn dir_under(&self, root: &Path) -> PathBuf {
        let mut dir = self.base(root);
        dir.extend(&self.parts);
        dir
    }

    fn base(&self, root: &Path) -> PathBuf {
        if self.absolute {
            root.to_path_buf()
        } else {
            root.join(RELATIVE_PARENT)
        }
    }

    fn text(&self) -> String {
        let joined = self.parts.join("/");
        if self.absolute {
            format!("/{joined}")
        } else {
            joined
        }
    }
}

/// A leaf made by `make`, and the parents it had to create on the way (top first).
#[derive(Debug, Default)]
pub(crate) struct Made {
    pub(crate) leaf: PathBuf,
    pub(crate) parents: Vec<PathBuf>,
}

/// Creates the container's cgroup under `root`: missing parents are created (and recorded), the leaf must
/// not exist. `prepare` runs on each new directory before anything can join it (v1 cpuset copies its parent's
/// cpus and mems). On failure whatever was created is removed again.
pub(crate) fn make(
    root: &Path,
    path: &CgroupsPath,
    prepare: &dyn Fn(&Path) -> Result<(), CgroupError>,
) -> Result<Made, CgroupError> {
    let mut made = Made::default();
    let result = make_into(root, path, prepare, &mut made);
    if result.is_err() {
        undo(&made);
    }
    result.map(|()| made)
}

fn make_into(
    root: &Path,
    path: &CgroupsPath,
    prepare: &dyn Fn(&Path) -> Result<(), CgroupError>,
    made: &mut Made,
) -> Result<(), CgroupError> {
    let mut dir = path.base(root);
    if !path.absolute {
        parent_dir(&dir, prepare, made)?;
    }
    let (leaf, parents) = path.parts.split_last().expect("parse keeps one part");
    for part in parents {
        dir.push(part);
        parent_dir(&dir, prepare, made)?;
    }
    dir.push(leaf);
    match std::fs::create_dir(&dir) {
        Ok(()) => made.leaf = dir.clone(),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(CgroupError::CgroupsPath {
                path: crate::text::clip(&path.text()),
                reason: format!(
                    "cgroup {} already exists: dstack-oci never joins an existing cgroup; choose another \
                     path, or remove it (rmdir) if it is a leftover",
                    dir.display()
                ),
            });
        }
        Err(source) => return Err(CgroupError::Create { path: dir, source }),
    }
    prepare(&dir)
}

/// A parent on the way: kept when it exists, created and recorded when not.
fn parent_dir(
    dir: &Path,
    prepare: &dyn Fn(&Path) -> Result<(), CgroupError>,
    made: &mut Made,
) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            made.parents.push(dir.to_path_buf());
            prepare(dir)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(source) => Err(CgroupError::Create {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Removes an empty leaf and the parents made for it (deepest first); a parent another container
/// uses meanwhile stays.
pub(crate) fn undo(made: &Made) {
    if !made.leaf.as_os_str().is_empty() {
        let _ = std::fs::remove_dir(&made.leaf);
    }
    remove_parents(&made.parents);
}

/// Removes the parents we made, deepest first; one that holds another cgroup (the kernel refuses) stays.
pub(crate) fn remove_parents(parents: &[PathBuf]) {
    for dir in parents.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_escape_or_confuse_are_refused_with_the_field_name() {
        for bad in [
            "",
            "/",
            "/a/../b",
            "../x",
            "a//b",
            "/a/",
            "/./a",
            "/.hidden",
            "/a b",
            "/a\nb",
            "system.slice:dstack:..",
        ] {
            let e = CgroupsPath::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("linux.cgroupsPath"), "{bad:?}: {e}");
        }
        let long = format!("/{}", "a/".repeat(40));
        assert!(CgroupsPath::parse(&long).is_err());
    }

    #[test]
    fn absolute_paths_hang_from_the_root_and_relative_ones_from_ours() {
        let root = Path::new("/sys/fs/cgroup/memory");
        let abs = CgroupsPath::parse("/cgrouptest").unwrap();
        assert_eq!(abs.dir_under(root), root.join("cgrouptest"));
        let rel = CgroupsPath::parse("testdir/cgrouptest/container").unwrap();
        assert_eq!(
            rel.dir_under(root),
            root.join("dstack-oci/testdir/cgrouptest/container")
        );
        assert_eq!(rel.text(), "testdir/cgrouptest/container");
        let systemd = CgroupsPath::parse("machine.slice:libpod:abc").unwrap();
        assert_eq!(systemd.dir_under(root), root.join("dstack-oci/abc"));
    }

    #[test]
    fn an_existing_leaf_is_refused_and_nothing_made_is_left() {
        let tmp = std::env::temp_dir().join(format!("oci-path-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("dstack-oci/a/taken")).unwrap();
        let path = CgroupsPath::parse("a/b/c").unwrap();
        let made = make(&tmp, &path, &|_| Ok(())).unwrap();
        assert_eq!(made.leaf, tmp.join("dstack-oci/a/b/c"));
        assert_eq!(made.parents, vec![tmp.join("dstack-oci/a/b")]);
        undo(&made);
        assert!(!tmp.join("dstack-oci/a/b").exists());
        let taken = CgroupsPath::parse("a/taken").unwrap();
        let e = make(&tmp, &taken, &|_| Ok(())).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert!(tmp.join("dstack-oci/a/taken").is_dir(), "untouched");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
