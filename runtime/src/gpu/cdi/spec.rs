//! The CDI spec file format (Container Device Interface 0.x/1.x; JSON or YAML) and its `containerEdits` turned
//! into [`Edits`]: device numbers missing from a node are filled in by stat-ing the host path, and files that no
//! longer exist make the spec stale.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxDeviceType;
use serde::Deserialize;

use super::super::edits::{BindMount, DeviceNode, Edits};
use super::super::{GpuError, elf};
use super::hooks;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpecFile {
    #[serde(default)]
    pub cdi_version: String,
    pub kind: String,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Device {
    pub name: String,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerEdits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNodeSpec>,
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    #[serde(default)]
    pub hooks: Vec<HookSpec>,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeviceNodeSpec {
    pub path: String,
    pub host_path: Option<String>,
    #[serde(rename = "type")]
    pub typ: Option<String>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub file_mode: Option<u32>,
    pub permissions: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MountSpec {
    pub host_path: String,
    pub container_path: String,
    #[serde(rename = "type")]
    pub typ: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HookSpec {
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub timeout: Option<i64>,
}

/// Parses a spec file by its extension (`.json`, else YAML).
pub(crate) fn parse(path: &Path, text: &str) -> Result<SpecFile, GpuError> {
    let invalid = |reason: String| GpuError::CdiInvalid {
        spec: path.to_path_buf(),
        reason,
    };
    let spec: SpecFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?
    } else {
        yaml_serde::from_str(text).map_err(|e| invalid(e.to_string()))?
    };
    if !spec.kind.contains('/') {
        return Err(invalid(format!("kind {:?} is not VENDOR/CLASS", spec.kind)));
    }
    if spec.cdi_version.is_empty() {
        return Err(invalid("it has no cdiVersion".into()));
    }
    Ok(spec)
}

/// The edits of `edits` from the spec at `spec_path`; `driver_version` catches specs of an older driver.
pub(crate) fn to_edits(
    spec_path: &Path,
    edits: &ContainerEdits,
    driver_version: Option<&str>,
) -> Result<Edits, GpuError> {
    let stale = |path: &Path, why: String| GpuError::CdiStale {
        spec: spec_path.to_path_buf(),
        path: path.to_path_buf(),
        why,
    };
    let mut out = Edits::default();
    for e in &edits.env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        out.set_env(k, v);
    }
    for d in &edits.device_nodes {
        let host = PathBuf::from(d.host_path.as_deref().unwrap_or(&d.path));
        let mut node =
            DeviceNode::from_host(&d.path, &host).map_err(|_| stale(&host, String::new()))?;
        if let (Some(major), Some(minor)) = (d.major, d.minor) {
            node.major = major;
            node.minor = minor;
        }
        match d.typ.as_deref() {
            None => {}
            Some("c" | "u") => node.kind = node.kind.or(Some(LinuxDeviceType::C)),
            Some("b") => node.kind = Some(LinuxDeviceType::B),
            Some("p") => node.kind = Some(LinuxDeviceType::P),
            Some(other) => {
                let reason = format!("device node {} has unknown type {other:?}", d.path);
                return Err(GpuError::CdiInvalid {
                    spec: spec_path.to_path_buf(),
                    reason,
                });
            }
        }
        node.file_mode = d.file_mode.or(node.file_mode);
        node.uid = d.uid;
        node.gid = d.gid;
        if let Some(p) = &d.permissions {
            node.access = p.clone();
        }
        out.devices.push(node);
    }
    for m in &edits.mounts {
        let host = PathBuf::from(&m.host_path);
        if m.typ.as_deref().is_some_and(|t| t != "bind") {
            let reason = format!(
                "mount of {} has type {:?}; only bind mounts are supported",
                m.container_path, m.typ
            );
            return Err(GpuError::CdiInvalid {
                spec: spec_path.to_path_buf(),
                reason,
            });
        }
        if std::fs::symlink_metadata(&host).is_err() {
            return Err(stale(&host, " (was the driver upgraded?)".into()));
        }
        if let (Some(want), Some(found)) = (driver_version, driver_file_version(&host))
            && want != found
        {
            return Err(stale(
                &host,
                format!(" for driver {found} while driver {want} is loaded"),
            ));
        }
        let mut options = m.options.clone();
        if !options.iter().any(|o| o == "bind" || o == "rbind") {
            options.push("bind".into());
        }
        let container = PathBuf::from(&m.container_path);
        if let Some(name) = container.file_name().and_then(|n| n.to_str())
            && name.starts_with("lib")
            && name.contains(".so")
            && let Some(soname) = elf::soname(&host).filter(|s| s != name)
        {
            out.setup.libraries.push((soname, container.clone()));
        }
        out.mounts.push(BindMount {
            host,
            container,
            options,
        });
    }
    for h in &edits.hooks {
        hooks::translate(spec_path, h, &mut out)?;
    }
    out.additional_gids.extend(&edits.additional_gids);
    Ok(out)
}

/// The driver version in `libcuda.so.VERSION` / `libnvidia-ml.so.VERSION`, the files that always carry it.
fn driver_file_version(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let v = name
        .strip_prefix("libcuda.so.")
        .or_else(|| name.strip_prefix("libnvidia-ml.so."))?;
    super::super::procfs::is_version(v).then(|| v.to_string())
}
