//! Rootless, the kernel checks the job's access to the host's device files with the user's own permissions: say
//! so before the job starts rather than letting CUDA fail inside.
//! - A GPU or control node the user cannot open is an error.
//! - A DRM node (`/dev/dri/card*`, `renderD*`, listed by the toolkit's CDI specs, 0660 root:video/render) the user
//!   cannot open is left out with a note: CUDA never opens them, only graphics would.
//! - A node the user opens only through a supplementary group (`NVreg_DeviceFileMode=0660`, group `video`) gets a
//!   warning: a rootless container that maps the user's subordinate groups drops the host's groups, and CUDA
//!   then fails with EACCES; only the kernel on real hardware shows which happens.
//!
//! The MIG capability nodes are root's by design and only checked when used.

use super::GpuError;
use super::edits::{DeviceNode, Edits};

/// How a node may be opened by this user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// As owner or as anyone (mode `o+rw`).
    Open,
    /// Only through a supplementary group.
    ThroughGroup { gid: u32 },
    /// Not at all.
    Denied { mode: u32 },
}

/// Checks the nodes of `edits` on this host; drops the DRM nodes the user cannot open.
pub(crate) fn check(edits: &mut Edits) -> Result<(), GpuError> {
    sort_out(edits, &access_of)
}

fn access_of(node: &DeviceNode) -> Result<Access, GpuError> {
    use nix::unistd::{AccessFlags, access};
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&node.host_path).map_err(GpuError::io("stat", &node.host_path))?;
    let mode = meta.mode() & 0o7777;
    if access(&node.host_path, AccessFlags::R_OK | AccessFlags::W_OK).is_err() {
        return Ok(Access::Denied { mode });
    }
    let mine = meta.uid() == nix::unistd::geteuid().as_raw();
    Ok(if mine || mode & 0o006 == 0o006 {
        Access::Open
    } else {
        Access::ThroughGroup { gid: meta.gid() }
    })
}

/// [`check`] with the access of each node told by `access`.
fn sort_out(
    edits: &mut Edits,
    access: &dyn Fn(&DeviceNode) -> Result<Access, GpuError>,
) -> Result<(), GpuError> {
    let mut left_out = Vec::new();
    let mut kept = Vec::new();
    for node in std::mem::take(&mut edits.devices) {
        if node.kind.is_none() || node.path.starts_with("/dev/nvidia-caps") {
            kept.push(node);
            continue;
        }
        match access(&node)? {
            Access::Open => kept.push(node),
            Access::ThroughGroup { gid } => {
                tracing::warn!(
                    "{} is open to you only through group {gid}: if CUDA fails with a permission error inside, \
                     the container dropped that group (ask for the node to be mode 0666, or run as root)",
                    node.host_path.display()
                );
                kept.push(node);
            }
            Access::Denied { .. } if node.path.starts_with("/dev/dri") => {
                left_out.push(node.path.display().to_string())
            }
            Access::Denied { mode } => {
                return Err(GpuError::NoAccess {
                    path: node.host_path.clone(),
                    mode,
                });
            }
        }
    }
    if !left_out.is_empty() {
        tracing::info!(
            "left out {} (you may not open them; CUDA does not need them, graphics would)",
            left_out.join(", ")
        );
    }
    edits.devices = kept;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::gpu::testing::device_paths;

    use oci_spec::runtime::LinuxDeviceType;

    use super::*;

    fn node(path: &str) -> DeviceNode {
        DeviceNode {
            path: PathBuf::from(path),
            host_path: PathBuf::from(path),
            kind: Some(LinuxDeviceType::C),
            major: 195,
            minor: 0,
            file_mode: Some(0o660),
            uid: None,
            gid: None,
            access: "rwm".into(),
        }
    }

    fn edits(paths: &[&str]) -> Edits {
        Edits {
            devices: paths.iter().map(|p| node(p)).collect(),
            ..Edits::default()
        }
    }

    /// A CDI spec of toolkit 1.18 lists the DRM nodes with the GPU: a user outside `video`/`render` still gets the
    /// GPU, without them. (The tests run as root, who may open anything: the user's access is told here.)
    #[test]
    fn drm_nodes_the_user_may_not_open_are_left_out_not_refused() {
        let mut e = edits(&[
            "/dev/nvidia0",
            "/dev/nvidiactl",
            "/dev/dri/card1",
            "/dev/dri/renderD128",
        ]);
        let only_nvidia = |n: &DeviceNode| {
            Ok(if n.path.starts_with("/dev/dri") {
                Access::Denied { mode: 0o660 }
            } else {
                Access::Open
            })
        };
        sort_out(&mut e, &only_nvidia).unwrap();
        assert_eq!(device_paths(&e), ["/dev/nvidia0", "/dev/nvidiactl"]);
    }

    #[test]
    fn a_gpu_node_the_user_may_not_open_is_refused_and_group_access_is_kept() {
        let mut e = edits(&["/dev/nvidiactl", "/dev/nvidia0"]);
        let denied = |n: &DeviceNode| {
            Ok(if n.path == Path::new("/dev/nvidia0") {
                Access::Denied { mode: 0o600 }
            } else {
                Access::Open
            })
        };
        let err = sort_out(&mut e, &denied).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot open /dev/nvidia0 (mode 600)"),
            "{err}"
        );
        let mut e = edits(&["/dev/nvidiactl", "/dev/nvidia0"]);
        sort_out(&mut e, &|_| Ok(Access::ThroughGroup { gid: 44 })).unwrap();
        assert_eq!(device_paths(&e), ["/dev/nvidiactl", "/dev/nvidia0"]);
    }
}
