//! Container Device Interface: spec files in `/etc/cdi`, `/var/run/cdi` and the user's `$XDG_CONFIG_HOME/cdi`
//! (a device defined in a later directory wins), and fully qualified device names such as
//! `nvidia.com/gpu=0`, `nvidia.com/gpu=GPU-<uuid>` or `nvidia.com/gpu=all`. A requested device's spec-wide
//! `containerEdits` are applied once, then the device's own.

mod hooks;
mod spec;

use std::path::{Path, PathBuf};

use super::GpuError;
use super::edits::Edits;
use super::inventory::Gpu;
use spec::SpecFile;

/// The kind NVIDIA's toolkit generates GPU specs for.
pub const NVIDIA_GPU_KIND: &str = "nvidia.com/gpu";

/// The spec directories for a driver root: `ROOT/etc/cdi`, `ROOT/var/run/cdi`, then the user's.
pub fn spec_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.join("etc/cdi"), root.join("var/run/cdi")];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        });
    if let Some(config) = config {
        dirs.push(config.join("cdi"));
    }
    dirs
}

/// Every spec found, in load order.
#[derive(Debug, Default)]
pub struct Registry {
    specs: Vec<(PathBuf, SpecFile)>,
}

impl Registry {
    /// Loads `*.json`, `*.yaml` and `*.yml` from each directory, in name order. A file that does not parse is
    /// skipped with a warning, as other CDI consumers do: it may belong to another vendor.
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut specs = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
                })
                .collect();
            files.sort();
            for path in files {
                let parsed = std::fs::read_to_string(&path)
                    .map_err(GpuError::io("read", &path))
                    .and_then(|text| spec::parse(&path, &text));
                match parsed {
                    Ok(s) => specs.push((path, s)),
                    Err(e) => tracing::warn!("{}; ignoring it", crate::report::Chain(&e)),
                }
            }
        }
        Registry { specs }
    }

    /// True when some spec defines devices of `kind`.
    pub fn has_kind(&self, kind: &str) -> bool {
        self.specs
            .iter()
            .any(|(_, s)| s.kind == kind && !s.devices.is_empty())
    }

    /// The (spec, device) index of the winning definition of `kind`=`name`.
    fn find(&self, kind: &str, name: &str) -> Option<(usize, usize)> {
        self.specs
            .iter()
            .enumerate()
            .rev()
            .find_map(|(si, (_, s))| {
                (s.kind == kind)
                    .then(|| {
                        s.devices
                            .iter()
                            .position(|d| d.name == name)
                            .map(|di| (si, di))
                    })
                    .flatten()
            })
    }

    /// The devices a fully qualified name stands for; `=all` means the device named `all`, else every device.
    fn resolve(&self, qualified: &str) -> Result<Vec<(usize, usize)>, GpuError> {
        let (kind, name) = qualified
            .split_once('=')
            .filter(|(k, n)| k.contains('/') && !n.is_empty())
            .ok_or_else(|| GpuError::CdiBadName(qualified.to_string()))?;
        if let Some(found) = self.find(kind, name) {
            return Ok(vec![found]);
        }
        if name == "all" {
            let mut names: Vec<&str> = Vec::new();
            for (_, s) in self.specs.iter().filter(|(_, s)| s.kind == kind) {
                for d in &s.devices {
                    if !names.contains(&d.name.as_str()) {
                        names.push(&d.name);
                    }
                }
            }
            let all: Vec<_> = names.iter().filter_map(|n| self.find(kind, n)).collect();
            if !all.is_empty() {
                return Ok(all);
            }
        }
        Err(GpuError::CdiUnknownDevice(qualified.to_string()))
    }

    /// The edits for fully qualified device names, e.g. `["nvidia.com/gpu=0"]`.
    pub(crate) fn edits(
        &self,
        devices: &[String],
        driver_version: Option<&str>,
    ) -> Result<Edits, GpuError> {
        let mut picked = Vec::new();
        for name in devices {
            for found in self.resolve(name)? {
                if !picked.contains(&found) {
                    picked.push(found);
                }
            }
        }
        self.edits_of(&picked, driver_version)
    }

    fn edits_of(
        &self,
        picked: &[(usize, usize)],
        driver_version: Option<&str>,
    ) -> Result<Edits, GpuError> {
        let mut out = Edits::default();
        let mut specs_done = Vec::new();
        for &(si, di) in picked {
            let (path, spec) = &self.specs[si];
            if !specs_done.contains(&si) {
                specs_done.push(si);
                out.extend(spec::to_edits(path, &spec.container_edits, driver_version)?);
            }
            out.extend(spec::to_edits(
                path,
                &spec.devices[di].container_edits,
                driver_version,
            )?);
        }
        Ok(out)
    }

    /// The edits for the selected GPUs, each found as `nvidia.com/gpu=INDEX`, `=UUID` or `=gpuINDEX` (the names
    /// `nvidia-ctk cdi generate` uses).
    pub(crate) fn edits_for_gpus(
        &self,
        gpus: &[Gpu],
        driver_version: Option<&str>,
    ) -> Result<Edits, GpuError> {
        let mut picked = Vec::new();
        for gpu in gpus {
            let names = [
                gpu.index.to_string(),
                gpu.uuid.clone(),
                format!("gpu{}", gpu.index),
            ];
            let found = names
                .iter()
                .find_map(|n| self.find(NVIDIA_GPU_KIND, n))
                .ok_or_else(|| {
                    let spec = self
                        .specs
                        .iter()
                        .rev()
                        .find(|(_, s)| s.kind == NVIDIA_GPU_KIND)
                        .map(|(p, _)| p.clone());
                    GpuError::CdiMissingDevice {
                        spec: spec.unwrap_or_default(),
                        index: gpu.index,
                        uuid: gpu.uuid.clone(),
                    }
                })?;
            picked.push(found);
        }
        self.edits_of(&picked, driver_version)
    }
}

#[cfg(test)]
mod tests;
