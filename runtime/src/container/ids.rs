//! The job's user and groups, checked before anything starts.
//!
//! 4294967295 (`(uid_t)-1`) is no id: `setresuid(-1, -1, -1)` means "leave it unchanged", so such a job
//! would keep init's identity, root. An id the job's user namespace does not map cannot be taken either;
//! refusing both here gives one clear message instead of a job running as the wrong user or a late EINVAL.

use oci_spec::runtime::Spec;

use super::ContainerError;
use super::idmap::IdMap;

/// The id the kernel reads as "unchanged".
const RESERVED_ID: u32 = u32::MAX;

/// Where the job's ids must be mapped.
pub(super) enum IdSpace {
    /// A new user namespace with these (uid, gid) maps.
    New(Vec<IdMap>, Vec<IdMap>),
    /// The namespace this process is in.
    Current,
    /// A namespace joined by path: its maps are its owner's business.
    Joined,
}

/// Refuses a process user or group that is 4294967295 or not mapped in `space`.
pub(super) fn check(spec: &Spec, space: IdSpace) -> Result<(), ContainerError> {
    let Some(user) = spec.process().as_ref().map(|p| p.user()) else {
        return Ok(());
    };
    let extra = user.additional_gids().as_deref().unwrap_or_default();
    let ids = [
        ("user", "process.user.uid", user.uid()),
        ("group", "process.user.gid", user.gid()),
    ];
    for (what, field, id) in ids.into_iter().chain(
        extra
            .iter()
            .map(|g| ("group", "process.user.additionalGids", *g)),
    ) {
        if id == RESERVED_ID {
            return Err(ContainerError::Invalid(format!(
                "the job's {what} id {id} ({field}) is not a valid id (the kernel reads it as \"unchanged\", \
                 which would leave the job root): use another id (the image's USER, or process.user in a bundle)"
            )));
        }
    }
    // Root is mapped wherever dstack runs a job; reading the maps is only needed for other ids.
    if user.uid() == 0 && user.gid() == 0 {
        return Ok(());
    }
    let (uid_maps, gid_maps, hint) = match space {
        IdSpace::Joined => return Ok(()),
        IdSpace::New(uids, gids) => (
            uids,
            gids,
            (
                "the spec's uidMappings and gidMappings",
                "map it there or run the process as a mapped id",
            ),
        ),
        IdSpace::Current => (
            current_maps("uid_map"),
            current_maps("gid_map"),
            (
                "this rootless user namespace",
                "add a range for your user to /etc/subuid and /etc/subgid (and install the uidmap \
                 package), or run the job as a mapped id",
            ),
        ),
    };
    for (what, field, id, maps) in [
        ("user", "process.user.uid", user.uid(), &uid_maps),
        ("group", "process.user.gid", user.gid(), &gid_maps),
    ] {
        if !maps.is_empty() && !is_mapped(maps, id) {
            let (space, remedy) = hint;
            return Err(ContainerError::Invalid(format!(
                "the job's {what} id {id} ({field}) is not mapped in {space} (mapped: {}): {remedy}",
                describe(maps)
            )));
        }
    }
    Ok(())
}

/// The maps of this process's user namespace, as container ranges (empty when unreadable: not checked).
fn current_maps(file: &str) -> Vec<IdMap> {
    std::fs::read_to_string(format!("/proc/self/{file}"))
        .map(|text| parse_map(&text))
        .unwrap_or_default()
}

fn parse_map(text: &str) -> Vec<IdMap> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some(IdMap {
                container: f.next()??,
                host: f.next()??,
                size: f.next()??,
            })
        })
        .collect()
}

fn is_mapped(maps: &[IdMap], id: u32) -> bool {
    maps.iter()
        .any(|m| id >= m.container && u64::from(id) < u64::from(m.container) + u64::from(m.size))
}

fn describe(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| {
            let last = u64::from(m.container) + u64::from(m.size).max(1) - 1;
            format!("{}-{last}", m.container)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{ProcessBuilder, SpecBuilder, UserBuilder};

    fn spec(uid: u32, gid: u32, extra: Vec<u32>) -> Spec {
        let user = UserBuilder::default()
            .uid(uid)
            .gid(gid)
            .additional_gids(extra)
            .build()
            .unwrap();
        let process = ProcessBuilder::default()
            .user(user)
            .args(vec!["id".to_string()])
            .build()
            .unwrap();
        SpecBuilder::default().process(process).build().unwrap()
    }

    fn map(container: u32, size: u32) -> IdMap {
        IdMap {
            container,
            host: 100_000,
            size,
        }
    }

    #[test]
    fn the_unchanged_id_is_refused_wherever_it_is() {
        for s in [
            spec(RESERVED_ID, 0, vec![]),
            spec(0, RESERVED_ID, vec![]),
            spec(0, 0, vec![RESERVED_ID]),
        ] {
            let err = check(&s, IdSpace::Joined).unwrap_err().to_string();
            assert!(
                err.contains("4294967295") && err.contains("not a valid id"),
                "{err}"
            );
        }
    }

    #[test]
    fn ids_outside_the_maps_are_refused() {
        let maps = || IdSpace::New(vec![map(0, 1), map(1, 65536)], vec![map(0, 65537)]);
        check(&spec(1000, 1000, vec![]), maps()).unwrap();
        check(&spec(65536, 0, vec![]), maps()).unwrap();
        let err = check(&spec(200_000, 0, vec![]), maps())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("user id 200000") && err.contains("0-0, 1-65536"),
            "{err}"
        );
        let err = check(&spec(0, 65537, vec![]), maps())
            .unwrap_err()
            .to_string();
        assert!(err.contains("group id 65537"), "{err}");
    }

    #[test]
    fn the_kernels_map_text_parses() {
        let maps =
            parse_map("         0       1000          1\n         1     100000      65536\n");
        assert_eq!(
            maps,
            vec![
                IdMap {
                    container: 0,
                    host: 1000,
                    size: 1
                },
                map(1, 65536)
            ]
        );
        assert!(is_mapped(&parse_map("0 0 4294967295\n"), 4_294_967_294));
    }
}
