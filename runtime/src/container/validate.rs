//! The checks a runtime spec must pass before anything is made for it: config.json is not trusted (a
//! bundle is anyone's), so every field that reaches the host or a path is checked here, each refusal
//! naming the field as config.json spells it. Sysctls follow runc's rules (libcontainer/configs/validate):
//! a key is written only in a namespace the container has of its own. Paths (device nodes, mount
//! destinations, `process.cwd`) must be absolute and must not climb out of the root with `..`; where they
//! land is resolved inside the root by the mount code, this only refuses what is wrong on its face.

use std::path::{Component, Path};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// The namespaces a container has of its own (created, or joined by a path that is not the caller's).
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnNamespaces {
    pub ipc: bool,
    pub net: bool,
    pub uts: bool,
}

impl OwnNamespaces {
    /// Every namespace of its own (dstack's supervised runs).
    pub const ALL: OwnNamespaces = OwnNamespaces {
        ipc: true,
        net: true,
        uts: true,
    };

    /// What the spec's `linux.namespaces` give: a namespace listed without a path is new; one joined by
    /// path is the container's own unless it is the namespace this process is in (runc's `isHostNetNS`).
    pub fn of(spec: &Spec) -> Result<OwnNamespaces, String> {
        let mut own = OwnNamespaces::default();
        let list = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        for n in &list {
            let (slot, proc_name) = match n.typ() {
                LinuxNamespaceType::Ipc => (&mut own.ipc, "ipc"),
                LinuxNamespaceType::Network => (&mut own.net, "net"),
                LinuxNamespaceType::Uts => (&mut own.uts, "uts"),
                _ => continue,
            };
            *slot = match n.path() {
                None => true,
                Some(path) => !same_file(path, Path::new(&format!("/proc/self/ns/{proc_name}")))
                    .map_err(|e| {
                        format!(
                            "linux.namespaces {} path {}: {e}",
                            n.typ(),
                            echo(&path.to_string_lossy())
                        )
                    })?,
            };
        }
        Ok(own)
    }
}

fn same_file(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Checks `spec`; the error names the first field that is wrong and says why.
pub fn spec(spec: &Spec, own: OwnNamespaces) -> Result<(), String> {
    if let Some(process) = spec.process() {
        inside_root("process.cwd", process.cwd())?;
        for (i, r) in process.rlimits().iter().flatten().enumerate() {
            if r.soft() > r.hard() {
                return Err(format!(
                    "process.rlimits[{i}] ({}): soft limit {} is above hard limit {}: make soft <= hard",
                    rlimit_name(r),
                    r.soft(),
                    r.hard()
                ));
            }
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        inside_root(&format!("mounts[{i}].destination"), m.destination())?;
    }
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        inside_root(&format!("linux.devices[{i}].path"), d.path())?;
    }
    let mut keys: Vec<&String> = linux.sysctl().iter().flat_map(|s| s.keys()).collect();
    keys.sort();
    for key in keys {
        sysctl(key, own)?;
    }
    if let Some(r) = linux.resources() {
        if let Some(m) = r.memory() {
            for (name, value) in [
                ("limit", m.limit()),
                ("swap", m.swap()),
                ("reservation", m.reservation()),
            ] {
                if let Some(v) = value.filter(|v| *v < -1) {
                    return Err(format!(
                        "linux.resources.memory.{name}: {v} is negative: give bytes, or -1 for no limit"
                    ));
                }
            }
            if let (Some(limit), Some(swap)) = (m.limit(), m.swap())
                && limit > 0
                && swap > 0
                && swap < limit
            {
                return Err(format!(
                    "linux.resources.memory.swap: {swap} is below the memory limit {limit}: swap is memory plus swap, so it must be at least the limit"
                ));
            }
        }
        if let Some(p) = r.pids()
            && p.limit() < -1
        {
            return Err(format!(
                "linux.resources.pids.limit: {} is negative: give a count, or -1 (or 0) for no limit",
                p.limit()
            ));
        }
        if let Some(c) = r.cpu() {
            if let Some(q) = c.quota().filter(|q| *q < -1 || (*q > 0 && *q < 1000)) {
                return Err(format!(
                    "linux.resources.cpu.quota: {q} is out of range: give at least 1000 (microseconds), or -1 for no limit"
                ));
            }
            if let Some(p) = c
                .period()
                .filter(|p| *p != 0 && !(1000..=1_000_000).contains(p))
            {
                return Err(format!(
                    "linux.resources.cpu.period: {p} is out of range: give 1000 to 1000000 (microseconds)"
                ));
            }
        }
    }
    Ok(())
}

/// runc's rule: a sysctl is written only where the container has the namespace it belongs to.
fn sysctl(key: &str, own: OwnNamespaces) -> Result<(), String> {
    let field = format!("linux.sysctl[{:?}]", echo(key));
    const IPC_KEYS: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if key.is_empty() || key.contains('/') || key.split('.').any(|p| p.is_empty()) {
        return Err(format!("{field}: not a kernel parameter name"));
    }
    if IPC_KEYS.contains(&key) || key.starts_with("fs.mqueue.") {
        if own.ipc {
            return Ok(());
        }
        return Err(format!(
            "{field}: needs an ipc namespace of the container's own (add {{\"type\": \"ipc\"}} to linux.namespaces)"
        ));
    }
    if key.starts_with("net.") {
        if own.net {
            return Ok(());
        }
        return Err(format!(
            "{field}: not allowed in the host's network namespace (add {{\"type\": \"network\"}} to linux.namespaces)"
        ));
    }
    if own.uts {
        match key {
            "kernel.domainname" => return Ok(()),
            "kernel.hostname" => {
                return Err(format!(
                    "{field}: conflicts with the spec's hostname field: set hostname instead"
                ));
            }
            _ => {}
        }
    }
    Err(format!(
        "{field}: not namespaced: it would change the host's kernel (only ipc, net.* and uts keys in namespaces of the container's own are allowed)"
    ))
}

/// `path` is absolute and its `..` never climb above `/`.
fn inside_root(field: &str, path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!(
            "{field}: {:?} is not an absolute path: give it from the container's root (/...)",
            echo(&path.to_string_lossy())
        ));
    }
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir if depth == 0 => {
                return Err(format!(
                    "{field}: {:?} climbs out of the root filesystem with '..': remove the '..'",
                    echo(&path.to_string_lossy())
                ));
            }
            Component::ParentDir => depth -= 1,
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(())
}

fn rlimit_name(r: &oci_spec::runtime::PosixRlimit) -> String {
    serde_json::to_value(r.typ())
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", r.typ()))
}

/// `s`, cut to 200 characters (one rule for every echoed value: `runtime::text::clip`).
pub fn echo(s: &str) -> String {
    crate::text::clip(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Spec {
        serde_json::from_str(json).expect("test spec parses")
    }

    fn check(json: &str, own: OwnNamespaces) -> Result<(), String> {
        spec(&parse(json), own)
    }

    #[test]
    fn sysctls_follow_runcs_namespace_rules() {
        let with = |key: &str, own| {
            check(
                &format!(r#"{{"ociVersion":"1.0.0","linux":{{"sysctl":{{"{key}":"1"}}}}}}"#),
                own,
            )
        };
        let none = OwnNamespaces::default();
        let err = with("kernel.panic", OwnNamespaces::ALL).unwrap_err();
        assert!(
            err.starts_with(r#"linux.sysctl["kernel.panic"]: not namespaced"#),
            "{err}"
        );
        assert!(with("net.ipv4.ip_forward", OwnNamespaces::ALL).is_ok());
        let err = with("net.ipv4.ip_forward", none).unwrap_err();
        assert!(err.contains("host's network namespace"), "{err}");
        assert!(with("kernel.shmmax", OwnNamespaces::ALL).is_ok());
        assert!(with("fs.mqueue.msg_max", OwnNamespaces::ALL).is_ok());
        assert!(with("kernel.shmmax", none).unwrap_err().contains("ipc"));
        assert!(with("kernel.domainname", OwnNamespaces::ALL).is_ok());
        assert!(with("kernel.domainname", none).is_err());
        assert!(with("kernel.hostname", OwnNamespaces::ALL).is_err());
        assert!(with("net..x", OwnNamespaces::ALL).is_err());
        assert!(with("net/ipv4", OwnNamespaces::ALL).is_err());
    }

    #[test]
    fn paths_must_be_absolute_and_stay_inside_the_root() {
        assert!(inside_root("f", Path::new("/dev/../dev/x")).is_ok());
        assert!(inside_root("f", Path::new("/")).is_ok());
        let err = inside_root("linux.devices[0].path", Path::new("/dev/../../tmp/x")).unwrap_err();
        assert!(err.starts_with("linux.devices[0].path:"), "{err}");
        assert!(err.contains("climbs out"), "{err}");
        assert!(inside_root("f", Path::new("/..")).is_err());
        let err = inside_root("process.cwd", Path::new("tmp")).unwrap_err();
        assert!(err.contains("not an absolute path"), "{err}");
        assert!(inside_root("f", Path::new("")).is_err());
    }

    #[test]
    fn limits_are_checked() {
        let base = |linux: &str| {
            check(
                &format!(r#"{{"ociVersion":"1.0.0","linux":{linux}}}"#),
                OwnNamespaces::ALL,
            )
        };
        let err = base(r#"{"resources":{"memory":{"limit":-5}}}"#).unwrap_err();
        assert!(err.starts_with("linux.resources.memory.limit: -5"), "{err}");
        assert!(base(r#"{"resources":{"memory":{"limit":-1,"swap":-1}}}"#).is_ok());
        assert!(base(r#"{"resources":{"memory":{"limit":1000,"swap":500}}}"#).is_err());
        assert!(base(r#"{"resources":{"memory":{"reservation":-2}}}"#).is_err());
        assert!(base(r#"{"resources":{"pids":{"limit":-2}}}"#).is_err());
        assert!(base(r#"{"resources":{"pids":{"limit":-1}}}"#).is_ok());
        assert!(base(r#"{"resources":{"cpu":{"quota":-1,"period":100000}}}"#).is_ok());
        assert!(base(r#"{"resources":{"cpu":{"quota":5}}}"#).is_err());
        assert!(base(r#"{"resources":{"cpu":{"period":5}}}"#).is_err());
        let rl = check(
            r#"{"ociVersion":"1.0.0","process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0},
                "rlimits":[{"type":"RLIMIT_NOFILE","soft":10,"hard":5}]}}"#,
            OwnNamespaces::ALL,
        )
        .unwrap_err();
        assert!(
            rl.starts_with("process.rlimits[0] (RLIMIT_NOFILE): soft limit 10"),
            "{rl}"
        );
    }

    #[test]
    fn docker_default_spec_passes() {
        spec(
            &crate::container::default_spec(vec!["sh".into()], 64 << 20),
            OwnNamespaces::ALL,
        )
        .expect("default spec is valid");
        spec(
            &Spec::default(),
            OwnNamespaces::of(&Spec::default()).unwrap(),
        )
        .expect("oci-spec's default is valid");
    }

    #[test]
    fn echoed_values_are_cut() {
        let long = "a".repeat(1000);
        let err = inside_root("f", Path::new(&long)).unwrap_err();
        assert!(err.len() < 400, "{}", err.len());
    }
}
