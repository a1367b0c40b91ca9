//! Which device nodes a job may open or create: an allow list, enforced by a BPF program on cgroup v2 and by
//! `devices.allow` on v1. Everything not listed is denied, mknod included.

/// Character, block, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
    Any,
}

/// What a rule allows: read, write and mknod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAccess {
    pub read: bool,
    pub write: bool,
    pub mknod: bool,
}

impl DeviceAccess {
    pub const RWM: DeviceAccess = DeviceAccess {
        read: true,
        write: true,
        mknod: true,
    };
    pub const RW: DeviceAccess = DeviceAccess {
        read: true,
        write: true,
        mknod: false,
    };

    /// The "rwm" form used by v1 `devices.allow` and the OCI spec.
    pub fn letters(&self) -> String {
        [(self.read, 'r'), (self.write, 'w'), (self.mknod, 'm')]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| c)
            .collect()
    }
}

/// One allowed device, or a range when `major`/`minor` is `None` (any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: DeviceAccess,
}

impl DeviceRule {
    /// A character device with read, write and mknod.
    pub fn char(major: u32, minor: Option<u32>) -> DeviceRule {
        DeviceRule {
            kind: DeviceKind::Char,
            major: Some(major),
            minor,
            access: DeviceAccess::RWM,
        }
    }

    /// A block device with read, write and mknod.
    pub fn block(major: u32, minor: Option<u32>) -> DeviceRule {
        DeviceRule {
            kind: DeviceKind::Block,
            major: Some(major),
            minor,
            access: DeviceAccess::RWM,
        }
    }

    /// The v1 `devices.allow` line, e.g. `c 136:* rwm`.
    pub(crate) fn v1_line(&self) -> String {
        let kind = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
            DeviceKind::Any => 'a',
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        format!(
            "{kind} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access.letters()
        )
    }
}

/// The devices a job may use; all others are denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    rules: Vec<DeviceRule>,
}

impl DevicePolicy {
    /// Nothing allowed.
    pub fn deny_all() -> DevicePolicy {
        DevicePolicy { rules: Vec::new() }
    }

    /// Docker's default set: null, zero, full, random, urandom, tty, ptmx and the pty slaves (pts/*).
    pub fn docker_default() -> DevicePolicy {
        let mut policy = DevicePolicy::deny_all();
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] {
            policy.allow(DeviceRule::char(major, Some(minor)));
        }
        policy.allow(DeviceRule::char(136, None));
        policy
    }

    /// Adds a device (a GPU, say) to the allowed set.
    pub fn allow(&mut self, rule: DeviceRule) -> &mut DevicePolicy {
        self.rules.push(rule);
        self
    }

    pub fn rules(&self) -> &[DeviceRule] {
        &self.rules
    }

    /// An OCI `linux.resources.devices` list (applied in order, as runc does): a deny of everything
    /// clears what came before; allows add rules; a narrower deny removes the allow rules it equals, and is
    /// refused when it would cut into a wider allow (an allow list cannot say "all but this").
    pub fn from_oci(list: &[oci_spec::runtime::LinuxDeviceCgroup]) -> Result<DevicePolicy, String> {
        use oci_spec::runtime::LinuxDeviceType as T;
        let mut policy = DevicePolicy::deny_all();
        for d in list {
            let kind = match d.typ() {
                None | Some(T::A) => DeviceKind::Any,
                Some(T::C) | Some(T::U) => DeviceKind::Char,
                Some(T::B) => DeviceKind::Block,
                Some(T::P) => {
                    return Err("device rules for FIFOs (type p) are not supported".into());
                }
            };
            let num = |n: Option<i64>| n.filter(|n| *n >= 0).map(|n| n as u32);
            let letters = d.access().clone().unwrap_or_else(|| "rwm".into());
            let rule = DeviceRule {
                kind,
                major: num(d.major()),
                minor: num(d.minor()),
                access: DeviceAccess {
                    read: letters.contains('r'),
                    write: letters.contains('w'),
                    mknod: letters.contains('m'),
                },
            };
            if d.allow() {
                policy.allow(rule);
            } else if kind == DeviceKind::Any && rule.major.is_none() && rule.minor.is_none() {
                policy.rules.clear();
            } else if policy.rules.iter().any(|r| r.covers(&rule) && *r != rule) {
                return Err(format!(
                    "the device rule deny {} cuts into a wider allow rule: not supported",
                    rule.v1_line()
                ));
            } else {
                policy.rules.retain(|r| *r != rule);
            }
        }
        Ok(policy)
    }
}

impl DeviceRule {
    /// True when this rule allows everything `other` does (and maybe more).
    fn covers(&self, other: &DeviceRule) -> bool {
        let kind = self.kind == DeviceKind::Any || self.kind == other.kind;
        let num = |mine: Option<u32>, theirs: Option<u32>| mine.is_none() || mine == theirs;
        let access = (!other.access.read || self.access.read)
            && (!other.access.write || self.access.write)
            && (!other.access.mknod || self.access.mknod);
        kind && num(self.major, other.major) && num(self.minor, other.minor) && access
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_as_v1_lines() {
        let lines: Vec<String> = DevicePolicy::docker_default()
            .rules()
            .iter()
            .map(DeviceRule::v1_line)
            .collect();
        assert!(lines.contains(&"c 1:3 rwm".to_string()));
        assert!(lines.contains(&"c 136:* rwm".to_string()));
        assert_eq!(lines.len(), 8);
        let any = DeviceRule {
            kind: DeviceKind::Any,
            major: None,
            minor: None,
            access: DeviceAccess::RW,
        };
        assert_eq!(any.v1_line(), "a *:* rw");
    }

    #[test]
    fn oci_device_lists_become_allow_lists() {
        let rules: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "type": "c", "major": 136, "access": "rw"}]"#,
        )
        .unwrap();
        let policy = DevicePolicy::from_oci(&rules).unwrap();
        let lines: Vec<String> = policy.rules().iter().map(DeviceRule::v1_line).collect();
        assert_eq!(lines, ["c 1:3 rwm", "c 136:* rw"]);
        let cut: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow": true, "access": "rwm"}, {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]"#,
        )
        .unwrap();
        assert!(DevicePolicy::from_oci(&cut).is_err());
    }
}
