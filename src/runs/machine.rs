//! What this machine has (memory, CPUs, NVIDIA GPUs), and whether a workflow's `resources` fit in it.
//! Checked before anything starts, so an impossible request fails at once and says what is available.

use std::fs;
use std::path::Path;

use crate::workflow::{Resources, size};

/// One NVIDIA GPU as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    pub model: String,
    /// Bytes, when known (from `nvidia-smi`).
    pub memory: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Bytes of RAM.
    pub memory: u64,
    /// CPUs this process may use.
    pub cpus: usize,
    pub gpus: Vec<Gpu>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unmet(String);

impl Machine {
    /// This machine, read from `/proc` (and `nvidia-smi` for GPU memory when installed).
    pub fn probe() -> Machine {
        let memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total(&text))
            .unwrap_or(0);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Machine {
            memory,
            cpus,
            gpus: probe_gpus(Path::new("/proc/driver/nvidia/gpus")),
        }
    }

    /// Fails when `wanted` cannot be met here, naming what there is.
    pub fn check(&self, wanted: &Resources) -> Result<(), Unmet> {
        if let Some(cpu) = wanted.cpu
            && cpu > self.cpus as f64
        {
            return Err(Unmet(format!(
                "the workflow asks for {cpu} CPUs; this machine has {}",
                self.cpus
            )));
        }
        for (what, bytes) in [
            ("memory", wanted.memory),
            ("shared memory (shm_size)", wanted.shm_size),
        ] {
            if let Some(bytes) = bytes
                && self.memory > 0
                && bytes > self.memory
            {
                return Err(Unmet(format!(
                    "the workflow asks for {} of {what}; this machine has {} of memory",
                    size::human(bytes),
                    size::human(self.memory)
                )));
            }
        }
        if let Some(gpu) = &wanted.gpu {
            let asked = describe_request(gpu.count, gpu.name.as_deref(), gpu.memory);
            if self.gpus.is_empty() {
                return Err(Unmet(format!(
                    "this machine has no NVIDIA GPU (the workflow asks for {asked}); it has {} CPUs and {} of memory",
                    self.cpus,
                    size::human(self.memory)
                )));
            }
            let fitting =
                self.gpus
                    .iter()
                    .filter(|g| {
                        gpu.name.as_deref().is_none_or(|name| {
                            g.model.to_lowercase().contains(&name.to_lowercase())
                        }) && gpu
                            .memory
                            .is_none_or(|m| g.memory.is_none_or(|have| have >= m))
                    })
                    .count();
            if fitting < gpu.count as usize {
                let have: Vec<String> = self
                    .gpus
                    .iter()
                    .map(|g| match g.memory {
                        Some(m) => format!("{} ({})", g.model, size::human(m)),
                        None => g.model.clone(),
                    })
                    .collect();
                return Err(Unmet(format!(
                    "the workflow asks for {asked}; this machine has {}",
                    have.join(", ")
                )));
            }
        }
        Ok(())
    }
}

fn describe_request(count: u32, name: Option<&str>, memory: Option<u64>) -> String {
    let mut text = format!("{count} GPU{}", if count == 1 { "" } else { "s" });
    if let Some(name) = name {
        text = format!("{count} {name} GPU{}", if count == 1 { "" } else { "s" });
    }
    if let Some(memory) = memory {
        text.push_str(&format!(" with {} each", size::human(memory)));
    }
    text
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// GPUs from the driver's `/proc/driver/nvidia/gpus/<pci>/information` files; memory from `nvidia-smi`.
fn probe_gpus(dir: &Path) -> Vec<Gpu> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut gpus: Vec<(String, Gpu)> = entries
        .flatten()
        .filter_map(|e| {
            let info = fs::read_to_string(e.path().join("information")).ok()?;
            let model = info
                .lines()
                .find_map(|l| l.strip_prefix("Model:"))
                .map(|m| m.trim().to_string())?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                Gpu {
                    model,
                    memory: None,
                },
            ))
        })
        .collect();
    gpus.sort_by(|a, b| a.0.cmp(&b.0));
    let mut gpus: Vec<Gpu> = gpus.into_iter().map(|(_, g)| g).collect();
    if let Some(memories) = nvidia_smi_memory()
        && memories.len() == gpus.len()
    {
        for (gpu, memory) in gpus.iter_mut().zip(memories) {
            gpu.memory = Some(memory);
        }
    }
    gpus
}

/// Each GPU's memory in bytes, in PCI order, from `nvidia-smi` (absent when it is not installed).
fn nvidia_smi_memory() -> Option<Vec<u64>> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=pci.bus_id,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let mut rows: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (bus, mib) = l.split_once(',')?;
            Some((
                bus.trim().to_lowercase(),
                mib.trim().parse::<u64>().ok()? * 1024 * 1024,
            ))
        })
        .collect();
    rows.sort();
    Some(rows.into_iter().map(|(_, m)| m).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::model::GpuRequest;

    fn machine(gpus: &[(&str, Option<u64>)]) -> Machine {
        Machine {
            memory: 16 << 30,
            cpus: 8,
            gpus: gpus
                .iter()
                .map(|(m, mem)| Gpu {
                    model: m.to_string(),
                    memory: *mem,
                })
                .collect(),
        }
    }

    fn gpu(count: u32, name: Option<&str>, memory: Option<u64>) -> Resources {
        Resources {
            gpu: Some(GpuRequest {
                count,
                name: name.map(str::to_string),
                memory,
            }),
            ..Resources::default()
        }
    }

    #[test]
    fn what_fits_passes() {
        let m = machine(&[
            ("NVIDIA A100-SXM4-80GB", Some(80 << 30)),
            ("NVIDIA A100-SXM4-80GB", Some(80 << 30)),
        ]);
        let fits = Resources {
            cpu: Some(7.5),
            memory: Some(8 << 30),
            shm_size: Some(1 << 30),
            ..Resources::default()
        };
        assert_eq!(m.check(&fits), Ok(()));
        assert_eq!(m.check(&gpu(2, Some("a100"), Some(40 << 30))), Ok(()));
    }

    #[test]
    fn too_much_memory_or_cpu_says_what_there_is() {
        let m = machine(&[]);
        let err = m
            .check(&Resources {
                memory: Some(64 << 30),
                ..Resources::default()
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the workflow asks for 64.0 GiB of memory; this machine has 16.0 GiB of memory"
        );
        let err = m
            .check(&Resources {
                cpu: Some(16.0),
                ..Resources::default()
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the workflow asks for 16 CPUs; this machine has 8"
        );
    }

    #[test]
    fn a_gpu_request_without_a_gpu_fails_clearly() {
        let err = machine(&[]).check(&gpu(1, Some("K80"), None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this machine has no NVIDIA GPU (the workflow asks for 1 K80 GPU); it has 8 CPUs and 16.0 GiB of memory"
        );
    }

    #[test]
    fn gpus_that_do_not_match_are_named() {
        let m = machine(&[("Tesla T4", Some(15 << 30))]);
        let err = m.check(&gpu(1, Some("A100"), None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the workflow asks for 1 A100 GPU; this machine has Tesla T4 (15.0 GiB)"
        );
        let err = m.check(&gpu(2, None, None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the workflow asks for 2 GPUs; this machine has Tesla T4 (15.0 GiB)"
        );
        let err = m.check(&gpu(1, None, Some(16 << 30))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the workflow asks for 1 GPU with 16.0 GiB each"),
            "{err}"
        );
    }

    #[test]
    fn reads_the_drivers_files() {
        assert_eq!(
            mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        let tmp = tempfile::tempdir().unwrap();
        for (bus, model) in [
            ("0000:02:00.0", "Tesla V100-SXM2-16GB"),
            ("0000:01:00.0", "Tesla K80"),
        ] {
            let dir = tmp.path().join(bus);
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join("information"),
                format!("Model: \t\t {model}\nIRQ: 1\n"),
            )
            .unwrap();
        }
        let models: Vec<String> = probe_gpus(tmp.path())
            .into_iter()
            .map(|g| g.model)
            .collect();
        assert_eq!(models, ["Tesla K80", "Tesla V100-SXM2-16GB"]);
        assert!(probe_gpus(&tmp.path().join("missing")).is_empty());
    }
}
