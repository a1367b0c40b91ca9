//! A container's Spec as a cgroup: its `linux.resources` as limits, placed at `dstack/<name>` (dstack's runs)
//! or at its `linux.cgroupsPath` (OCI bundles). Both front ends place their containers through here.

use oci_spec::runtime::{LinuxDeviceType, Spec};

use super::{
    Cgroup, CgroupError, CgroupsPath, DeviceAccess, DeviceKind, DevicePolicy, DeviceRule, Limits,
    Placement,
};

/// The cgroup a Spec asks for, before it is made: see [`SpecCgroup::for_run`] and [`SpecCgroup::for_oci`].
#[derive(Debug)]
pub struct SpecCgroup {
    limits: Limits,
    /// The spec has a `linux.resources.pids` (even an unlimited one): no default replaces it.
    spec_sets_pids: bool,
    place: SpecPlace,
}

#[derive(Debug)]
enum SpecPlace {
    Run {
        name: String,
        strict: bool,
    },
    Oci {
        /// `linux.cgroupsPath` when the spec names one, else the container's id.
        path: String,
        asked_path: bool,
        kernel_memory: bool,
    },
}

/// Where a container runs, as [`SpecCgroup::create`] placed it.
#[derive(Debug)]
pub enum SpecPlacement {
    /// In a cgroup that enforces its limits.
    Enforced(Cgroup),
    /// Without a cgroup: the limits the spec asks for are not enforced; the caller warns with `reason`.
    Unenforced { reason: String },
    /// Without a cgroup, and nothing the spec asks for goes unenforced (it asks for none, or only the
    /// runtime's own defaults could not be applied).
    Unplaced,
}

impl SpecCgroup {
    /// dstack's runs: the cgroup `dstack/<name>` (named after the container, for `sweep_leftovers`) with the
    /// spec's limits.
    pub fn for_run(spec: &Spec, name: &str) -> Result<SpecCgroup, CgroupError> {
        Ok(SpecCgroup {
            limits: limits_of(spec)?,
            spec_sets_pids: sets_pids(spec),
            place: SpecPlace::Run {
                name: name.to_string(),
                strict: false,
            },
        })
    }

    /// OCI bundles (`dstack-oci`): the cgroup at `linux.cgroupsPath` (else at `id`, relative), made when the
    /// spec names a path or asks for limits or devices; the devices a spec lists are allowed on top of what
    /// runc allows every container (see [`allow_implicit_devices`]).
    pub fn for_oci(spec: &Spec, id: &str) -> Result<SpecCgroup, CgroupError> {
        let linux = spec.linux().as_ref();
        let asked_path = linux
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty());
        let mut limits = limits_of(spec)?;
        if let Some(policy) = limits.devices.as_mut() {
            allow_implicit_devices(policy, spec);
        }
        let memory = linux
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref());
        Ok(SpecCgroup {
            limits,
            spec_sets_pids: sets_pids(spec),
            place: SpecPlace::Oci {
                asked_path: asked_path.is_some(),
                path: asked_path.unwrap_or_else(|| id.to_string()),
                kernel_memory: memory
                    .is_some_and(|m| m.kernel().is_some() || m.kernel_tcp().is_some()),
            },
        })
    }

    /// A tasks limit the runtime sets when the spec has none: enforced where it can be, never warned about.
    pub fn default_pids(mut self, limit: u64) -> SpecCgroup {
        if !self.spec_sets_pids {
            self.limits.default_pids = Some(limit);
        }
        self
    }

    /// The devices the job may use, instead of the spec's list (`None`: no device filter).
    pub fn devices(mut self, policy: Option<DevicePolicy>) -> SpecCgroup {
        self.limits.devices = policy;
        self
    }

    /// Refuse (`CgroupError::NotEnforced`) rather than warn when the limits asked for cannot be enforced
    /// (dstack's runs; an OCI bundle's are always warned about).
    pub fn strict(mut self, strict: bool) -> SpecCgroup {
        if let SpecPlace::Run { strict: s, .. } = &mut self.place {
            *s = strict;
        }
        self
    }

    /// The limits the cgroup will enforce.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Makes the cgroup with the limits applied; see [`SpecPlacement`] for when none is made.
    pub fn create(self) -> Result<SpecPlacement, CgroupError> {
        let placement = match &self.place {
            SpecPlace::Run { name, strict } => super::create(name, &self.limits, *strict)?,
            SpecPlace::Oci {
                path,
                asked_path,
                kernel_memory,
            } => {
                if self.limits.is_unlimited() && self.limits.devices.is_none() && !asked_path {
                    return Ok(SpecPlacement::Unplaced);
                }
                if *kernel_memory {
                    tracing::warn!(
                        "linux.resources.memory.kernel and kernelTCP are ignored: kernels since 5.16 have no such limit"
                    );
                }
                super::create_oci(&CgroupsPath::parse(path)?, &self.limits)?
            }
        };
        Ok(match placement {
            Placement::Enforced(cg) => SpecPlacement::Enforced(cg),
            // The limits of dstack's own (the pids default, devices) are not worth a warning.
            Placement::Unenforced { reason }
                if matches!(self.place, SpecPlace::Run { .. }) && self.limits.is_unlimited() =>
            {
                tracing::debug!("dstack's default limits are not enforced: {reason}");
                SpecPlacement::Unplaced
            }
            Placement::Unenforced { reason } => SpecPlacement::Unenforced { reason },
        })
    }
}

/// The limits of a Spec's `linux.resources` (none without them).
fn limits_of(spec: &Spec) -> Result<Limits, CgroupError> {
    match spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        Some(resources) => Limits::from_oci(resources),
        None => Ok(Limits::default()),
    }
}

fn sets_pids(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .is_some_and(|r| r.pids().is_some())
}

/// What runc allows on top of `linux.resources.devices`: the nodes every container gets (null, zero, full,
/// random, urandom, tty, console, ptmx, the pty slaves), mknod of any node, and the spec's own
/// `linux.devices`, which would otherwise be listed and yet denied.
fn allow_implicit_devices(policy: &mut DevicePolicy, spec: &Spec) {
    let mknod_only = |kind| DeviceRule {
        kind,
        major: None,
        minor: None,
        access: DeviceAccess {
            read: false,
            write: false,
            mknod: true,
        },
    };
    policy.allow(mknod_only(DeviceKind::Char));
    policy.allow(mknod_only(DeviceKind::Block));
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        policy.allow(DeviceRule::char(major, Some(minor)));
    }
    policy.allow(DeviceRule::char(136, None));
    let devices = spec.linux().as_ref().and_then(|l| l.devices().as_ref());
    for d in devices.into_iter().flatten() {
        let (Ok(major), Ok(minor)) = (u32::try_from(d.major()), u32::try_from(d.minor())) else {
            continue;
        };
        match d.typ() {
            LinuxDeviceType::B => policy.allow(DeviceRule::block(major, Some(minor))),
            LinuxDeviceType::C | LinuxDeviceType::U => {
                policy.allow(DeviceRule::char(major, Some(minor)))
            }
            // FIFOs are not device nodes; `a` is not a node type.
            LinuxDeviceType::P | LinuxDeviceType::A => continue,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        let mut spec = Spec::default();
        let linux: oci_spec::runtime::Linux = serde_json::from_str(json).unwrap();
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn a_default_pids_limit_never_replaces_the_specs_own() {
        let unlimited = spec(r#"{"resources": {"pids": {"limit": -1}}}"#);
        let c = SpecCgroup::for_run(&unlimited, "x")
            .unwrap()
            .default_pids(2048);
        assert_eq!((c.limits().pids, c.limits().default_pids), (None, None));
        let none = spec(r#"{}"#);
        let c = SpecCgroup::for_run(&none, "x").unwrap().default_pids(2048);
        assert_eq!(c.limits().default_pids, Some(2048));
        assert!(c.limits().is_unlimited());
    }

    #[test]
    fn an_oci_spec_without_limits_or_path_needs_no_cgroup() {
        let c = SpecCgroup::for_oci(&spec(r#"{}"#), "abc").unwrap();
        assert!(matches!(c.create(), Ok(SpecPlacement::Unplaced)));
    }

    #[test]
    fn an_oci_device_list_allows_runcs_implicit_devices_and_the_specs_nodes() {
        let s = spec(
            r#"{"resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]}"#,
        );
        let c = SpecCgroup::for_oci(&s, "abc").unwrap();
        let rules = c.limits().devices.as_ref().unwrap().rules();
        assert!(rules.contains(&DeviceRule::char(1, Some(3))), "{rules:?}");
        assert!(
            rules.contains(&DeviceRule::char(10, Some(229))),
            "{rules:?}"
        );
    }
}
