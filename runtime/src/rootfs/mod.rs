//! The container's root filesystem: the image's layer directories (read-only, shared, in the store) under a
//! private upper directory per container, so nothing the job writes reaches the store.
//!
//! Kernel overlay first (`userxattr` when rootless, the new mount API so any number of layers fits);
//! where it cannot be used (mount refused, an upper directory on NFS or Lustre) fuse-overlayfs when it is
//! installed, else a flattened copy of the layers. [`Rootfs::mount`] runs inside the container's mount
//! namespace and says which it used.

mod copy;
mod fuse;
mod lookup;
mod overlay;
pub(crate) mod xattr;

use std::fmt;
use std::path::{Path, PathBuf};

/// The mode of the directories made in a scratch directory. The upper directory's is the mode of the
/// container's `/` (overlay takes the root's attributes from it): 0755 as Docker makes it, whatever the
/// caller's umask.
pub const SCRATCH_DIR_MODE: u32 = 0o755;

pub use lookup::lookup_file;

/// Set to `overlay`, `fuse-overlayfs` or `copy` to force a driver (tests use it for the fallbacks).
pub const DRIVER_ENV: &str = "DSTACK_ROOTFS_DRIVER";

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("unknown {DRIVER_ENV} value {0:?}: use overlay, fuse-overlayfs or copy")]
    UnknownDriver(String),
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("overlay mount failed: {0}")]
    Overlay(String),
    #[error("fuse-overlayfs failed: {0}")]
    Fuse(String),
    #[error("copying the image's layers into {path} failed")]
    Copy {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind {path} as the root filesystem")]
    Bind { path: PathBuf, source: nix::Error },
}

/// How the root filesystem is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Overlay,
    FuseOverlayfs,
    Copy,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Overlay => "overlay",
            Driver::FuseOverlayfs => "fuse-overlayfs",
            Driver::Copy => "copy",
        })
    }
}

impl std::str::FromStr for Driver {
    type Err = RootfsError;
    fn from_str(s: &str) -> Result<Driver, RootfsError> {
        match s {
            "overlay" => Ok(Driver::Overlay),
            "fuse-overlayfs" => Ok(Driver::FuseOverlayfs),
            "copy" => Ok(Driver::Copy),
            other => Err(RootfsError::UnknownDriver(other.to_string())),
        }
    }
}

/// A container's root filesystem: layers bottom to top, and the container's scratch directory holding
/// `upper/` and `work/` (or `rootfs/` for the copy); the caller picks where it is mounted.
#[derive(Debug, Clone)]
pub struct Rootfs {
    layers: Vec<PathBuf>,
    dir: PathBuf,
    rootless: bool,
    forced: Option<Driver>,
}

/// What [`Rootfs::mount`] did: where the root is, with which driver, and why a fallback was taken.
#[derive(Debug, Clone)]
pub struct Mounted {
    pub path: PathBuf,
    pub driver: Driver,
    pub fallback_reason: Option<String>,
}

impl Rootfs {
    /// `layers` bottom to top (as the image lists them); `dir` the container's scratch directory.
    pub fn new(layers: Vec<PathBuf>, dir: &Path) -> Result<Rootfs, RootfsError> {
        let forced = match std::env::var(DRIVER_ENV) {
            Ok(v) if !v.is_empty() => Some(v.parse()?),
            _ => None,
        };
        Ok(Rootfs {
            layers,
            dir: dir.to_path_buf(),
            rootless: crate::paths::in_child_user_namespace(),
            forced,
        })
    }

    /// Use `userxattr` (the rootless overlay) even outside a user namespace; for tests.
    pub fn rootless(mut self, rootless: bool) -> Rootfs {
        self.rootless = rootless;
        self
    }

    /// Creates the scratch directories (a recycled scratch directory has them); run it before the
    /// container is cloned.
    pub fn prepare(&self) -> Result<(), RootfsError> {
        for sub in ["upper", "work"] {
            let path = self.dir.join(sub);
            crate::fsops::make_dir(&path, SCRATCH_DIR_MODE)
                .map_err(|source| RootfsError::Create { path, source })?;
        }
        Ok(())
    }

    /// Mounts the root filesystem at `target` (an existing directory), with `top` (when given) as one
    /// more read-only layer above the image's: mount points the container needs (`/etc/hosts`) then exist
    /// without being created in the upper directory on disk. Call it in the container's own mount
    /// namespace: the mount disappears with it.
    pub fn mount(&self, target: &Path, top: Option<&Path>) -> Result<Mounted, RootfsError> {
        let mut reason = match self.forced {
            Some(Driver::Overlay) | None => None,
            Some(d) => Some(format!("{DRIVER_ENV}={d}")),
        };
        if reason.is_none() {
            reason =
                unsupported_upper(&self.dir).map(|fs| format!("the upper directory is on {fs}"));
        }
        if reason.is_none() {
            match overlay::mount(&self.lowers(top), &self.dir, target, self.rootless) {
                Ok(()) => return Ok(self.mounted(target, Driver::Overlay, None)),
                Err(e) if self.forced == Some(Driver::Overlay) => return Err(e),
                Err(e) => reason = Some(crate::report::chain(&e)),
            }
        }
        if self.forced != Some(Driver::Copy) {
            let tried = match fuse::unavailable() {
                Some(why) => Err(RootfsError::Fuse(why)),
                None => fuse::mount(&self.lowers(top), &self.dir, target),
            };
            match tried {
                Ok(()) => return Ok(self.mounted(target, Driver::FuseOverlayfs, reason)),
                Err(e) if self.forced == Some(Driver::FuseOverlayfs) => return Err(e),
                Err(e) => {
                    reason = Some(format!(
                        "{}; {}",
                        reason.unwrap_or_default(),
                        crate::report::Chain(&e)
                    ))
                }
            }
        }
        let root = self.dir.join("rootfs");
        let layers: Vec<PathBuf> = self
            .layers
            .iter()
            .cloned()
            .chain(top.map(Path::to_path_buf))
            .collect();
        copy::flatten(&layers, &root).map_err(|source| RootfsError::Copy {
            path: root.clone(),
            source,
        })?;
        nix::mount::mount(
            Some(&root),
            target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|source| RootfsError::Bind {
            path: root.clone(),
            source,
        })?;
        Ok(self.mounted(target, Driver::Copy, reason))
    }

    /// Lower directories top first, as overlay wants them; an empty image gets one empty lower.
    fn lowers(&self, top: Option<&Path>) -> Vec<PathBuf> {
        let mut lowers: Vec<PathBuf> = top.map(Path::to_path_buf).into_iter().collect();
        lowers.extend(self.layers.iter().rev().cloned());
        if lowers.is_empty() {
            let empty = self.dir.join("empty");
            let _ = std::fs::create_dir_all(&empty);
            lowers.push(empty);
        }
        lowers
    }

    fn mounted(&self, target: &Path, driver: Driver, fallback_reason: Option<String>) -> Mounted {
        Mounted {
            path: target.to_path_buf(),
            driver,
            fallback_reason,
        }
    }
}

/// The name of the filesystem holding `dir` when overlay cannot use it as an upper directory.
fn unsupported_upper(dir: &Path) -> Option<&'static str> {
    let fs = nix::sys::statfs::statfs(dir).ok()?;
    match fs.filesystem_type().0 as u64 {
        0x6969 => Some("NFS"),
        0x0BD0_0BD0 => Some("Lustre"),
        0x4750_4653 => Some("GPFS"),
        0x1983_0326 => Some("BeeGFS"),
        0xFF53_4D42 | 0xFE53_4D42 => Some("SMB"),
        0x794C_7630 => Some("overlayfs"),
        _ => None,
    }
}

/// The directory `paths` share and each path relative to it: keeps long layer lists short where a
/// mount option string must name them all.
fn common_parent(paths: &[PathBuf]) -> (PathBuf, Vec<PathBuf>) {
    let mut common = paths
        .first()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    while !paths.iter().all(|p| p.starts_with(&common)) {
        if !common.pop() {
            break;
        }
    }
    let rel = paths
        .iter()
        .map(|p| {
            p.strip_prefix(&common)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| p.clone())
        })
        .collect();
    (common, rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_parent_shortens_layer_paths() {
        let paths = vec![
            PathBuf::from("/s/store/layers/aa/fs"),
            PathBuf::from("/s/store/layers/bb/fs"),
        ];
        let (common, rel) = common_parent(&paths);
        assert_eq!(common, PathBuf::from("/s/store/layers"));
        assert_eq!(rel, vec![PathBuf::from("aa/fs"), PathBuf::from("bb/fs")]);
    }

    #[test]
    fn driver_names_round_trip() {
        for d in [Driver::Overlay, Driver::FuseOverlayfs, Driver::Copy] {
            assert_eq!(d.to_string().parse::<Driver>().unwrap(), d);
        }
        assert!("aufs".parse::<Driver>().is_err());
    }
}
