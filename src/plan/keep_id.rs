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
//! Supplementary groups: a namespace keeps the groups its processes started with but names only those its
//! map holds, and an unprivileged gid map (no `newgidmap`) needs `setgroups` denied. dstack's namespace
//! maps the user's groups that `/etc/subgid` grants (`runtime::userns`), and the job's map pins them to
//! their own numbers; the job's `setgroups` is denied (crun's `run.oci.keep_original_groups`), so all of
//! its groups stay in force for files on the host, the unmapped ones shown as the overflow group.

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

/// The job's map for one kind of id. `pins` say which job id stands for which id of `parent` (the map of
/// dstack's rootless namespace, whose inside ids are the job map's outside): the invoker's own id for 0
/// there, and the supplementary groups dstack's namespace maps. Every other id of `parent` is itself in
/// the job, but those whose number a pin took, which take the numbers the pins left (the invoker's id in
/// `parent`, a subordinate one, becomes the job's root): a permutation, so no file loses its owner.
pub fn job_map(parent: &[IdRange], pins: &[(u32, u32)]) -> Vec<IdRange> {
    let in_parent = |id: u32| {
        parent
            .iter()
            .any(|r| id >= r.inside && u64::from(id) < u64::from(r.inside) + u64::from(r.size))
    };
    let taken_inside = |id: u32| pins.iter().any(|&(inside, _)| inside == id);
    let taken_outside = |id: u32| pins.iter().any(|&(_, outside)| outside == id);
    let mut map: Vec<IdRange> = pins
        .iter()
        .map(|&(inside, outside)| IdRange {
            inside,
            outside,
            size: 1,
        })
        .collect();
    // Displaced: ids of `parent` whose own number a pin took; free: numbers whose id a pin moved away.
    let displaced = pins
        .iter()
        .map(|&(inside, _)| inside)
        .filter(|&id| in_parent(id) && !taken_outside(id));
    let free = pins
        .iter()
        .map(|&(_, outside)| outside)
        .filter(|&id| !taken_inside(id));
    for (outside, inside) in displaced.zip(free) {
        map.push(IdRange {
            inside,
            outside,
            size: 1,
        });
    }
    let mut cuts: Vec<u64> = pins
        .iter()
        .flat_map(|&(inside, outside)| [u64::from(inside), u64::from(outside)])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    for r in parent {
        let end = u64::from(r.inside) + u64::from(r.size);
        let mut start = u64::from(r.inside);
        for &cut in &cuts {
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

/// The id of `parent`'s inside that stands for `host` outside, if it maps it.
pub fn inside_of(parent: &[IdRange], host: u32) -> Option<u32> {
    parent.iter().find_map(|r| {
        let offset = host.checked_sub(r.outside)?;
        (offset < r.size).then(|| r.inside + offset)
    })
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
    let uid_mappings = spec_mappings(&job_map(uids, &[(user.uid, 0)]))?;
    // The supplementary groups dstack's namespace maps (see `runtime::userns`) are themselves too.
    let mut gid_pins = vec![(user.gid, 0)];
    for &g in &user.additional_gids {
        if let Some(inside) = inside_of(gids, g).filter(|&i| i != 0 && g != user.gid) {
            gid_pins.push((g, inside));
        }
    }
    let gid_mappings = spec_mappings(&job_map(gids, &gid_pins))?;
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

/// The id outside that `parent`'s `inside` stands for, if it maps it.
pub fn outside_of(parent: &[IdRange], inside: u32) -> Option<u32> {
    parent.iter().find_map(|r| {
        let offset = inside.checked_sub(r.inside)?;
        (offset < r.size).then(|| r.outside + offset)
    })
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
            job_map(&parent, &[(1001, 0)]),
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
        assert_eq!(job_map(&[r(0, 1002, 1)], &[(1002, 0)]), vec![r(1002, 0, 1)]);
    }

    #[test]
    fn a_user_beyond_the_range_leaves_root_unmapped() {
        let parent = [r(0, 200000, 1), r(1, 100000, 10)];
        assert_eq!(
            job_map(&parent, &[(200000, 0)]),
            vec![r(1, 1, 10), r(200000, 0, 1)]
        );
    }

    #[test]
    fn mapped_supplementary_groups_are_themselves_and_every_id_keeps_a_place() {
        // Group 27 (`sudo`) granted in /etc/subgid, mapped by dstack's namespace after the range.
        let parent = [r(0, 1001, 1), r(1, 100000, 65536), r(65537, 27, 1)];
        assert_eq!(inside_of(&parent, 27), Some(65537));
        assert_eq!(inside_of(&parent, 100000), Some(1));
        assert_eq!(inside_of(&parent, 5), None);
        assert_eq!(
            job_map(&parent, &[(1001, 0), (27, 65537)]),
            vec![
                r(0, 1001, 1),
                r(1, 1, 26),
                r(27, 65537, 1),
                r(28, 28, 973),
                r(1001, 0, 1),
                r(1002, 1002, 64535),
                r(65537, 27, 1),
            ]
        );
    }

    #[test]
    fn proc_maps_parse() {
        assert_eq!(
            parse_map("         0       1001          1\n         1     100000      65536\n"),
            vec![r(0, 1001, 1), r(1, 100000, 65536)]
        );
    }
}
