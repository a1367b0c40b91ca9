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
}
