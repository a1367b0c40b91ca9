//! The GPUs a batch system gave the job this process runs in. Inside a Slurm job only those may be handed
//! out: `SLURM_STEP_GPUS` (a step's), else `SLURM_JOB_GPUS` (the job's), else `CUDA_VISIBLE_DEVICES`. Slurm
//! writes the GPUs' global ids there, which with the usual `gres.conf` (`File=/dev/nvidia[0-3]`, or
//! `AutoDetect=nvml`) are the device minors; a `GPU-...` UUID (or a prefix of one, as CUDA accepts) names a GPU
//! directly.

use super::inventory::Gpu;

/// Where an allocation came from and what it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The variable that held it, e.g. `SLURM_JOB_GPUS`.
    pub source: &'static str,
    /// Device minors (`3`) or UUIDs (`GPU-5c0d...`).
    pub ids: Vec<String>,
}

/// The variables read, most specific first.
const VARIABLES: [&str; 3] = ["SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"];

impl Allocation {
    /// The allocation of the Slurm job this process runs in, if it is in one that names its GPUs.
    pub fn from_env() -> Option<Allocation> {
        Allocation::from_vars(|key| std::env::var(key).ok())
    }

    /// [`Allocation::from_env`] over any variable lookup.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Option<Allocation> {
        get("SLURM_JOB_ID").filter(|v| !v.is_empty())?;
        VARIABLES.iter().find_map(|&source| {
            let value = get(source)?;
            Some(Allocation {
                source,
                ids: parse(&value),
            })
        })
    }

    /// True when `gpu` is one of the allocated GPUs.
    pub fn contains(&self, gpu: &Gpu) -> bool {
        self.ids.iter().any(|id| match id.parse::<u32>() {
            Ok(minor) => gpu.minor == minor,
            Err(_) => !gpu.uuid.is_empty() && gpu.uuid.starts_with(id.as_str()),
        })
    }

    /// `SLURM_JOB_GPUS=1,3`, for messages.
    pub fn describe(&self) -> String {
        format!("{}={}", self.source, self.ids.join(","))
    }
}

/// `0,2-3,GPU-abc` → `0 2 3 GPU-abc`. Slurm's "no GPU" markers (`NoDevFiles`, `-1`) and blanks list nothing.
fn parse(value: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-')
            && let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>())
        {
            ids.extend((a..=b).map(|n| n.to_string()));
        } else if part.parse::<u32>().is_ok()
            || part.starts_with("GPU-")
            || part.starts_with("MIG-")
        {
            ids.push(part.to_string());
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Option<Allocation> {
        Allocation::from_vars(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }

    fn gpu(minor: u32, uuid: &str) -> Gpu {
        Gpu {
            index: minor,
            uuid: uuid.into(),
            name: "NVIDIA A100-SXM4-80GB".into(),
            memory_mib: None,
            pci_bus_id: format!("0000:0{minor}:00.0"),
            minor,
        }
    }

    #[test]
    fn only_inside_a_slurm_job_and_the_step_before_the_job() {
        assert_eq!(vars(&[("SLURM_JOB_GPUS", "1")]), None, "no SLURM_JOB_ID");
        assert_eq!(vars(&[("SLURM_JOB_ID", "7")]), None, "no GPU variable");
        let a = vars(&[
            ("SLURM_JOB_ID", "7"),
            ("SLURM_JOB_GPUS", "0,1"),
            ("SLURM_STEP_GPUS", "1"),
            ("CUDA_VISIBLE_DEVICES", "0"),
        ])
        .unwrap();
        assert_eq!(
            (a.source, a.ids.as_slice()),
            ("SLURM_STEP_GPUS", &["1".to_string()][..])
        );
        let a = vars(&[("SLURM_JOB_ID", "7"), ("CUDA_VISIBLE_DEVICES", "GPU-bb")]).unwrap();
        assert_eq!(a.describe(), "CUDA_VISIBLE_DEVICES=GPU-bb");
    }

    #[test]
    fn minors_ranges_and_uuid_prefixes_match() {
        let a = vars(&[("SLURM_JOB_ID", "7"), ("SLURM_JOB_GPUS", "0,2-3, GPU-bb")]).unwrap();
        assert_eq!(a.ids, ["0", "2", "3", "GPU-bb"]);
        assert!(a.contains(&gpu(0, "GPU-aaaa")));
        assert!(!a.contains(&gpu(1, "GPU-aaaa")));
        assert!(a.contains(&gpu(3, "GPU-cccc")));
        assert!(a.contains(&gpu(1, "GPU-bbbb")));
        let none = vars(&[
            ("SLURM_JOB_ID", "7"),
            ("CUDA_VISIBLE_DEVICES", "NoDevFiles"),
        ])
        .unwrap();
        assert!(none.ids.is_empty());
        assert!(!none.contains(&gpu(0, "GPU-aaaa")));
    }
}
