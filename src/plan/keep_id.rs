//! `user: host` for a rootless run: the job's own user namespace, nested in dstack's rootless one, in
//! which the invoking user's ids are themselves.
//!
//! dstack's rootless namespace maps the user to 0 (and, with `/etc/subuid` ranges, 1.. to the subordinate
//! ids); the store's files are owned accordingly, the image's root files by the user. The job's namespace
//! maps its `uid` to that 0 (the user on the host), its 0 to the namespace's `uid` (a subordinate id) where
//! there is one, and every other id to itself: a permutation, so no file of the store loses its owner, and
//! what the job writes into a host directory is the user's. Seen from the job, the image's root files
//! are then owned by the user (the store holds them so; podman copies the image to shift them).
//!
//! The kernel lets the job keep the invoking user's supplementary groups, not choose them: the job's
//! `setgroups` is denied (crun's `run.oci.keep_original_groups`), so the groups it was started with stay in
//! force for files on the host, shown as the overflow group where the namespace maps none of them.

use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec,
};

use super::PlanError;
use super::process::ResolvedUser;

/// crun's annotation: the job keeps its caller's supplementary groups (its `setgroups` is denied).
pub use runtime::container::KEEP_ORIGINAL_GROUPS;

/// One line of a user namespace's map: ids `inside..inside+size` are `outside..` in the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub size: u32,
}

/// The job's map for one kind of id: `own` (the invoker's id on the host, 0 in `parent`) is `own` in the
/// job; `parent` is the map of dstack's rootless namespace, whose inside ids are the job map's outside.
pub fn job_map(own: u32, parent: &[IdRange]) -> Vec<IdRange> {
    let covered = |id: u32| {
        parent
            .iter()
            .any(|r| id >= r.inside && u64::from(id) < u64::from(r.inside) + u64::from(r.size))
    };
    let mut map = vec![IdRange {
        inside: own,
        outside: 0,
        size: 1,
    }];
    // The parent's `own` is a subordinate id: it becomes the job's root, so that it keeps an owner.
    if own != 0 && covered(own) {
        map.push(IdRange {
            inside: 0,
            outside: own,
            size: 1,
        });
    }
    for r in parent {
        let end = u64::from(r.inside) + u64::from(r.size);
        let mut start = u64::from(r.inside);
        for cut in [0u64, u64::from(own)] {
            if cut >= start && cut < end {
                push_identity(&mut map, start, cut);
                start = cut + 1;
            }
        }
        push_identity(&mut map, start, end);
    }
    map.sort_by_key(|r| r.inside);
    map
}

/// Ids `start..end` mapped to themselves, when there are any.
fn push_identity(map: &mut Vec<IdRange>, start: u64, end: u64) {
    if end > start {
        // Both fit: they come from ranges of u32 ids.
        let (id, size) = (start as u32, (end - start) as u32);
        map.push(IdRange {
            inside: id,
            outside: id,
            size,
        });
    }
}

/// As the Spec's `linux.uidMappings`/`gidMappings` write them.
pub fn spec_mappings(map: &[IdRange]) -> Result<Vec<LinuxIdMapping>, PlanError> {
    map.iter()
        .map(|r| {
            LinuxIdMappingBuilder::default()
                .container_id(r.inside)
                .host_id(r.outside)
                .size(r.size)
                .build()
                .map_err(|e| PlanError::Invalid(e.to_string()))
        })
        .collect()
}

/// Gives the job `user`'s own user namespace inside dstack's rootless one (`uids`, `gids`: its maps), in
/// which `user`'s ids are themselves, and keeps the groups it starts with.
pub fn give_own_namespace(
    spec: &mut Spec,
    user: &ResolvedUser,
    uids: &[IdRange],
    gids: &[IdRange],
) -> Result<(), PlanError> {
    let namespace = LinuxNamespaceBuilder::default()
        .typ(LinuxNamespaceType::User)
        .build()
        .map_err(|e| PlanError::Invalid(e.to_string()))?;
    let uid_mappings = spec_mappings(&job_map(user.uid, uids))?;
    let gid_mappings = spec_mappings(&job_map(user.gid, gids))?;
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.push(namespace);
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(Some(uid_mappings));
    linux.set_gid_mappings(Some(gid_mappings));
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(KEEP_ORIGINAL_GROUPS.into(), "1".into());
    spec.set_annotations(Some(annotations));
    Ok(())
}

/// A `/proc/PID/uid_map` text as ranges (malformed lines are skipped: the kernel writes it).
pub fn parse_map(text: &str) -> Vec<IdRange> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some(IdRange {
                inside: f.next()??,
                outside: f.next()??,
                size: f.next()??,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(inside: u32, outside: u32, size: u32) -> IdRange {
        IdRange {
            inside,
            outside,
            size,
        }
    }

    #[test]
    fn with_a_subordinate_range_the_user_and_root_trade_places() {
        // dstack's namespace: the user is 0, 65536 subordinate ids from 1.
        let parent = [r(0, 1001, 1), r(1, 100000, 65536)];
        assert_eq!(
            job_map(1001, &parent),
            vec![
                r(0, 1001, 1),
                r(1, 1, 1000),
                r(1001, 0, 1),
                r(1002, 1002, 64535)
            ]
        );
    }

    #[test]
    fn without_a_range_only_the_user_is_mapped_to_itself() {
        assert_eq!(job_map(1002, &[r(0, 1002, 1)]), vec![r(1002, 0, 1)]);
    }

    #[test]
    fn a_user_beyond_the_range_leaves_root_unmapped() {
        let parent = [r(0, 200000, 1), r(1, 100000, 10)];
        assert_eq!(job_map(200000, &parent), vec![r(1, 1, 10), r(200000, 0, 1)]);
    }

    #[test]
    fn proc_maps_parse() {
        assert_eq!(
            parse_map("         0       1001          1\n         1     100000      65536\n"),
            vec![r(0, 1001, 1), r(1, 100000, 65536)]
        );
    }
}
