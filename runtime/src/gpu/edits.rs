//! The one shape both injection paths (the driver's files, or a CDI spec) produce: edits to the OCI `Spec` that
//! the container runtime already applies — environment, device nodes with their cgroup rules, bind mounts,
//! hooks, extra groups — plus the linker set-up that `finish_in_container` performs inside.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Hook, LinuxBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, Mount,
    MountBuilder, Spec,
};

use super::GpuError;
use super::setup::{ANNOTATION, Setup};
use crate::cgroup::{DeviceAccess, DeviceKind, DeviceRule};
use crate::container::HookPoint;

/// A device node to give the container: created with mknod as root, bound from the host rootless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceNode {
    /// The path inside the container.
    pub path: PathBuf,
    pub host_path: PathBuf,
    /// `None` when the host path is not a device (a fake driver tree's plain file): it is bound, not created.
    pub kind: Option<LinuxDeviceType>,
    pub major: i64,
    pub minor: i64,
    pub file_mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// cgroup access, `rwm` by default.
    pub access: String,
}

impl DeviceNode {
    /// Type, numbers and mode from stat-ing `host_path`.
    pub fn from_host(path: impl Into<PathBuf>, host_path: &Path) -> std::io::Result<DeviceNode> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::metadata(host_path)?;
        let kind = if meta.file_type().is_char_device() {
            Some(LinuxDeviceType::C)
        } else if meta.file_type().is_block_device() {
            Some(LinuxDeviceType::B)
        } else {
            None
        };
        let rdev = meta.rdev();
        Ok(DeviceNode {
            path: path.into(),
            host_path: host_path.to_path_buf(),
            kind,
            major: nix::sys::stat::major(rdev) as i64,
            minor: nix::sys::stat::minor(rdev) as i64,
            file_mode: Some(meta.mode() & 0o7777),
            uid: None,
            gid: None,
            access: "rwm".into(),
        })
    }
}

/// A host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BindMount {
    pub host: PathBuf,
    pub container: PathBuf,
    pub options: Vec<String>,
}

impl BindMount {
    pub fn read_only(host: PathBuf, container: PathBuf) -> BindMount {
        BindMount {
            host,
            container,
            options: ["ro", "nosuid", "nodev", "bind"].map(String::from).to_vec(),
        }
    }

    pub fn writable(host: PathBuf, container: PathBuf) -> BindMount {
        BindMount {
            host,
            container,
            options: ["nosuid", "nodev", "bind"].map(String::from).to_vec(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Edits {
    pub env: Vec<(String, String)>,
    pub devices: Vec<DeviceNode>,
    pub mounts: Vec<BindMount>,
    pub hooks: Vec<(HookPoint, Hook)>,
    pub additional_gids: Vec<u32>,
    /// Paths the job must not see (`linux.maskedPaths`): other GPUs' entries under `/proc/driver/nvidia`.
    pub masked: Vec<String>,
    pub setup: Setup,
}

impl Edits {
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Adds `other` after these edits (its environment wins).
    pub fn extend(&mut self, other: Edits) {
        for (k, v) in other.env {
            self.set_env(&k, &v);
        }
        for d in other.devices {
            if !self.devices.iter().any(|x| x.path == d.path) {
                self.devices.push(d);
            }
        }
        for m in other.mounts {
            self.mounts.retain(|x| x.container != m.container);
            self.mounts.push(m);
        }
        self.hooks.extend(other.hooks);
        self.additional_gids.extend(other.additional_gids);
        for m in other.masked {
            if !self.masked.contains(&m) {
                self.masked.push(m);
            }
        }
        self.setup.extend(other.setup);
    }

    /// Writes the edits into `spec`; returns the cgroup device rules for the nodes made with mknod (none
    /// rootless, where the kernel checks the host nodes' file permissions instead).
    pub fn apply(self, spec: &mut Spec, rootless: bool) -> Result<Vec<DeviceRule>, GpuError> {
        let bad = |e: oci_spec::OciSpecError| GpuError::Spec(e.to_string());
        if let Some(process) = spec.process_mut() {
            let mut env = process.env().clone().unwrap_or_default();
            for (k, v) in &self.env {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(name, _)| name) != k);
                env.push(format!("{k}={v}"));
            }
            process.set_env(Some(env));
            if !self.additional_gids.is_empty() {
                let user = process.user_mut();
                let mut gids = user.additional_gids().clone().unwrap_or_default();
                gids.extend(
                    self.additional_gids
                        .iter()
                        .filter(|g| !gids.contains(g))
                        .collect::<Vec<_>>(),
                );
                user.set_additional_gids(Some(gids));
            }
        }
        let mut linux = spec
            .linux()
            .clone()
            .unwrap_or(LinuxBuilder::default().build().map_err(bad)?);
        let mut devices = linux.devices().clone().unwrap_or_default();
        let mut resources = linux.resources().clone().unwrap_or_default();
        let mut allowed = resources.devices().clone().unwrap_or_default();
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        let mut rules = Vec::new();
        for d in &self.devices {
            match d.kind {
                Some(kind) if !rootless => {
                    devices.retain(|x| x.path() != &d.path);
                    let mut node = LinuxDeviceBuilder::default()
                        .path(d.path.clone())
                        .typ(kind)
                        .major(d.major)
                        .minor(d.minor);
                    if let Some(mode) = d.file_mode {
                        node = node.file_mode(mode);
                    }
                    if let Some(uid) = d.uid {
                        node = node.uid(uid);
                    }
                    if let Some(gid) = d.gid {
                        node = node.gid(gid);
                    }
                    devices.push(node.build().map_err(bad)?);
                    allowed.push(
                        LinuxDeviceCgroupBuilder::default()
                            .allow(true)
                            .typ(kind)
                            .major(d.major)
                            .minor(d.minor)
                            .access(d.access.clone())
                            .build()
                            .map_err(bad)?,
                    );
                    rules.push(rule(kind, d));
                }
                _ => push_mount(
                    &mut mounts,
                    bind(&d.host_path, &d.path, &["bind", "nosuid", "noexec"]).map_err(bad)?,
                ),
            }
        }
        for m in &self.mounts {
            let options: Vec<&str> = m.options.iter().map(String::as_str).collect();
            push_mount(
                &mut mounts,
                bind(&m.host, &m.container, &options).map_err(bad)?,
            );
        }
        resources.set_devices(Some(allowed));
        linux.set_resources(Some(resources));
        if !self.masked.is_empty() {
            let mut masked = linux.masked_paths().clone().unwrap_or_default();
            for m in &self.masked {
                if !masked.contains(m) {
                    masked.push(m.clone());
                }
            }
            linux.set_masked_paths(Some(masked));
        }
        linux.set_devices(Some(devices));
        spec.set_linux(Some(linux));
        spec.set_mounts(Some(mounts));
        if !self.hooks.is_empty() {
            let mut hooks = spec.hooks().clone().unwrap_or_default();
            for (kind, hook) in self.hooks {
                kind.push(&mut hooks, hook);
            }
            spec.set_hooks(Some(hooks));
        }
        if !self.setup.is_empty() {
            let mut annotations = spec.annotations().clone().unwrap_or_default();
            let mut setup = annotations
                .get(ANNOTATION)
                .and_then(|s| serde_json::from_str::<Setup>(s).ok())
                .unwrap_or_default();
            setup.extend(self.setup);
            annotations.insert(
                ANNOTATION.to_string(),
                serde_json::to_string(&setup).map_err(|e| GpuError::Spec(e.to_string()))?,
            );
            spec.set_annotations(Some(annotations));
        }
        Ok(rules)
    }
}

fn rule(kind: LinuxDeviceType, d: &DeviceNode) -> DeviceRule {
    let kind = if kind == LinuxDeviceType::B {
        DeviceKind::Block
    } else {
        DeviceKind::Char
    };
    let access = DeviceAccess {
        read: d.access.contains('r'),
        write: d.access.contains('w'),
        mknod: d.access.contains('m'),
    };
    DeviceRule {
        kind,
        major: Some(d.major as u32),
        minor: Some(d.minor as u32),
        access,
    }
}

fn bind(host: &Path, container: &Path, options: &[&str]) -> Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(container.to_path_buf())
        .typ("bind")
        .source(host.to_path_buf())
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
}

/// Appends `m`, replacing an earlier mount at the same destination.
fn push_mount(mounts: &mut Vec<Mount>, m: Mount) {
    mounts.retain(|x| x.destination() != m.destination());
    mounts.push(m);
}
