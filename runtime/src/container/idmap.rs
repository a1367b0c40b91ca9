//! The id maps of a container's new user namespace, written by the caller while init waits for its go.
//!
//! As root (of the host, or of rootless dstack's namespace, for a job's namespace nested in it) the maps
//! are written directly. An ordinary user may write only its own id (after
//! `setgroups` is denied); anything else goes through the setuid `newuidmap`/`newgidmap`, which check
//! `/etc/subuid` and `/etc/subgid` — the same tools and ranges as dstack's own rootless namespace
//! (`runtime::userns`). Without mappings in the spec, the rootless model of `runtime::userns` is used: the
//! user (and group) becomes 0, and the subordinate range follows when there is one.

use std::process::Command;

use oci_spec::runtime::LinuxIdMapping;

use super::ContainerError;

/// One line of a map: container id, host id, count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl From<&LinuxIdMapping> for IdMap {
    fn from(m: &LinuxIdMapping) -> IdMap {
        IdMap {
            container: m.container_id(),
            host: m.host_id(),
            size: m.size(),
        }
    }
}

/// dstack's rootless mapping for the calling user: `0 -> uid`, then the subordinate range from 1 when
/// the user has one and the helpers are installed (none for root).
pub fn default_maps() -> (Vec<IdMap>, Vec<IdMap>) {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    if nix::unistd::geteuid().is_root() {
        // Root has no "own" range to fall back on: the spec must say what to map.
        return (Vec::new(), Vec::new());
    }
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let own = |id| IdMap {
        container: 0,
        host: id,
        size: 1,
    };
    let mut uids = vec![own(uid)];
    let mut gids = vec![own(gid)];
    let sub_u = crate::userns::subordinate_range(std::path::Path::new("/etc/subuid"), &user, uid);
    let sub_g = crate::userns::subordinate_range(std::path::Path::new("/etc/subgid"), &user, uid);
    if let (Some(u), Some(g), true) = (sub_u, sub_g, helpers_installed()) {
        uids.push(IdMap {
            container: 1,
            host: u.start,
            size: u.count,
        });
        gids.push(IdMap {
            container: 1,
            host: g.start,
            size: g.count,
        });
    }
    (uids, gids)
}

fn helpers_installed() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    ["newuidmap", "newgidmap"]
        .iter()
        .all(|t| std::env::split_paths(&path).any(|d| d.join(t).is_file()))
}

fn text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
        .collect()
}

/// Only the caller's own id, which it may map without help.
fn own_only(maps: &[IdMap], id: u32) -> bool {
    matches!(maps, [m] if m.host == id && m.size == 1)
}

/// crun's annotation, honoured here too: the job keeps its caller's supplementary groups, which it could
/// not name in its namespace (`setgroups` denied there).
pub const KEEP_ORIGINAL_GROUPS: &str = "run.oci.keep_original_groups";

/// The spec asks for [`KEEP_ORIGINAL_GROUPS`].
pub fn keeps_original_groups(spec: &oci_spec::runtime::Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(KEEP_ORIGINAL_GROUPS))
        .is_some_and(|v| v == "1")
}

/// True when the new namespace's setgroups is denied (asked for, inherited, or an unprivileged user mapping
/// only its own gid): the job then keeps the groups it has.
pub fn denies_setgroups(gids: &[IdMap], keep_groups: bool) -> bool {
    // A new namespace inherits its parent's deny (rootless dstack's own, without a subordinate range).
    keep_groups
        || !super::builder::setgroups_allowed()
        || (!may_map_any() && own_only(gids, nix::unistd::getegid().as_raw()))
}

/// Root of the namespace this process is in (the host's, or rootless dstack's own) may write any map
/// of ids mapped there: the kernel asks for CAP_SETUID/CAP_SETGID in the parent namespace, which it has.
fn may_map_any() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Writes `pid`'s uid and gid maps; `keep_groups` denies its setgroups first (see
/// [`KEEP_ORIGINAL_GROUPS`]).
pub fn write(
    pid: i32,
    uids: &[IdMap],
    gids: &[IdMap],
    keep_groups: bool,
) -> Result<(), ContainerError> {
    if uids.is_empty() || gids.is_empty() {
        return Err(ContainerError::Invalid(
            "a new user namespace needs uidMappings and gidMappings".into(),
        ));
    }
    let direct = |file: &str, body: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), body).map_err(ContainerError::io(
            "cannot write",
            format!("/proc/{pid}/{file}"),
        ))
    };
    if keep_groups {
        direct("setgroups", "deny".into())?;
    }
    if may_map_any() {
        direct("uid_map", text(uids))?;
        return direct("gid_map", text(gids));
    }
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    if own_only(uids, uid) {
        direct("uid_map", text(uids))?;
    } else {
        helper("newuidmap", pid, uids)?;
    }
    if own_only(gids, gid) {
        // An unprivileged gid_map needs setgroups denied first; the job then keeps its groups as they are.
        if !keep_groups {
            direct("setgroups", "deny".into())?;
        }
        direct("gid_map", text(gids))
    } else {
        helper("newgidmap", pid, gids)
    }
}

fn helper(tool: &str, pid: i32, maps: &[IdMap]) -> Result<(), ContainerError> {
    let mut cmd = Command::new(tool);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.container.to_string(),
            m.host.to_string(),
            m.size.to_string(),
        ]);
    }
    let out = cmd.output().map_err(|e| {
        ContainerError::Invalid(format!(
            "{tool}: {e} (install the uidmap package to map more than your own id)"
        ))
    })?;
    if !out.status.success() {
        return Err(ContainerError::Invalid(format!(
            "{tool} refused the mapping: {} (the ranges must be yours in /etc/subuid and /etc/subgid)",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_render_as_the_kernel_reads_them() {
        let maps = [
            IdMap {
                container: 0,
                host: 1000,
                size: 1,
            },
            IdMap {
                container: 1,
                host: 100000,
                size: 65536,
            },
        ];
        assert_eq!(text(&maps), "0 1000 1\n1 100000 65536\n");
        assert!(own_only(&maps[..1], 1000));
        assert!(!own_only(&maps, 1000));
    }

    #[test]
    fn keeping_the_original_groups_denies_setgroups() {
        let mut spec = oci_spec::runtime::Spec::default();
        assert!(!keeps_original_groups(&spec));
        spec.set_annotations(Some(
            [(KEEP_ORIGINAL_GROUPS.to_string(), "1".to_string())].into(),
        ));
        assert!(keeps_original_groups(&spec));
        assert!(denies_setgroups(&[], true));
    }
}
