//! A Docker-like default runtime `Spec`: Docker's default capabilities, masked and read-only paths and
//! mounts. The planner starts from it and fills in the process, limits and extra mounts.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilities, LinuxCapabilitiesBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default `PATH` when the image sets none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn default_capabilities() -> LinuxCapabilities {
    let set: Capabilities = DOCKER_DEFAULT_CAPS.into_iter().collect();
    LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .expect("all fields set")
}

/// Docker's rule for a job that is not root: it keeps its bounding set and no other capability (runc
/// would keep the listed ones across the user switch).
pub fn docker_user_caps(spec: &mut Spec) {
    let Some(process) = spec.process_mut().as_mut() else {
        return;
    };
    if process.user().uid() == 0 {
        return;
    }
    if let Some(caps) = process.capabilities().clone() {
        let mut caps = caps;
        caps.set_effective(Some(Capabilities::new()));
        caps.set_permitted(Some(Capabilities::new()));
        caps.set_inheritable(Some(Capabilities::new()));
        caps.set_ambient(Some(Capabilities::new()));
        process.set_capabilities(Some(caps));
    }
}

/// With a terminal, `TERM` as the user's terminal has it (`term`), unless the job sets its own.
pub fn set_term(spec: &mut Spec, term: &str) {
    let Some(process) = spec.process_mut().as_mut() else {
        return;
    };
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push(format!("TERM={term}"));
        process.set_env(Some(env));
    }
}

/// The environment variable naming a file to write the final Spec of a supervised container to (tests
/// compare it with `dstack run --dry-run`).
pub const SPEC_OUT_VAR: &str = "DSTACK_SPEC_OUT";

/// Writes `spec` as JSON to the file `$DSTACK_SPEC_OUT` names, when set: a debugging aid that shows the
/// Spec exactly as the container receives it. Failing to write it only logs.
pub fn write_debug_copy(spec: &Spec) {
    let Some(path) = std::env::var_os(SPEC_OUT_VAR) else {
        return;
    };
    let written = serde_json::to_vec_pretty(spec)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&path, bytes));
    if let Err(e) = written {
        tracing::warn!("writing the spec to {}: {e}", Path::new(&path).display());
    }
}

/// The `/etc` files a supervised container is given, written by init at start (see the builder).
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// Where the runtime stages the `/etc` files of container `id` under `state_root`: in its scratch
/// directory (`containers/<id>`, see `ScratchDir`), in init's staging tmpfs.
pub fn staged_etc_dir(state_root: &Path, id: &str) -> PathBuf {
    state_root
        .join("containers")
        .join(id)
        .join(super::mounts::STAGING)
        .join(super::mounts::STAGED_FILES)
}

/// Binds each of [`ETC_FILES`] from `staged` (see [`staged_etc_dir`]) unless the spec already mounts
/// something there; the runtime writes the contents of those it finds bound from `staged`.
pub fn add_etc_file_mounts(spec: &mut Spec, staged: &Path) -> Result<(), oci_spec::OciSpecError> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for name in ETC_FILES {
        let dest = PathBuf::from("/etc").join(name);
        if mounts.iter().any(|m| m.destination() == &dest) {
            continue;
        }
        mounts.push(
            MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(staged.join(name))
                .options(vec!["rbind".to_string(), "rprivate".to_string()])
                .build()?,
        );
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ(typ)
        .source(PathBuf::from(source))
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("all fields set")
}

/// Docker's default mounts; `/dev/shm` is `shm_size` bytes.
pub fn default_mounts(shm_size: u64) -> Vec<Mount> {
    let shm = format!("size={}k", shm_size.div_ceil(1024).max(1));
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm],
        ),
    ]
}

/// A spec that runs `args` as root in `/` with Docker's defaults; callers adjust it.
pub fn default_spec(args: Vec<String>, shm_size: u64) -> Spec {
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .expect("all fields set"),
        )
        .args(args)
        .env(vec![format!("PATH={DEFAULT_PATH}")])
        .cwd(PathBuf::from("/"))
        .capabilities(default_capabilities())
        .no_new_privileges(true)
        .rlimits(Vec::new())
        .build()
        .expect("all fields set");
    let linux = LinuxBuilder::default()
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .expect("all fields set");
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .expect("all fields set"),
        )
        .process(process)
        .hostname("dstack")
        .mounts(default_mounts(shm_size))
        .linux(linux)
        .build()
        .expect("all fields set")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_has_dockers_caps_and_sized_shm() {
        let spec = default_spec(vec!["true".into()], 1 << 30);
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        let shm = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination().to_str() == Some("/dev/shm"));
        assert!(
            shm.unwrap()
                .options()
                .as_ref()
                .unwrap()
                .contains(&"size=1048576k".to_string())
        );
    }
}
