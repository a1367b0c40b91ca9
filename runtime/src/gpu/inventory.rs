//! The machine's GPUs as discovery reports them, and how they are described in messages.

use serde::{Deserialize, Serialize};

/// One NVIDIA GPU of the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// nvidia-smi's index (PCI bus order).
    pub index: u32,
    /// `GPU-xxxxxxxx-...`, what `NVIDIA_VISIBLE_DEVICES` names.
    pub uuid: String,
    /// The model, e.g. `NVIDIA A100-SXM4-80GB`.
    pub name: String,
    /// Total memory; unknown when only `/proc/driver/nvidia` was available.
    pub memory_mib: Option<u64>,
    /// `0000:17:00.0` (4-digit domain, lower case).
    pub pci_bus_id: String,
    /// N of `/dev/nvidiaN`.
    pub minor: u32,
}

impl Gpu {
    /// `0: NVIDIA H100 80GB HBM3 (81559 MiB)`.
    pub fn describe(&self) -> String {
        match self.memory_mib {
            Some(mib) => format!("{}: {} ({mib} MiB)", self.index, self.name),
            None => format!("{}: {} (memory unknown)", self.index, self.name),
        }
    }
}

/// Where the GPU facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Nvml,
    NvidiaSmi,
    Procfs,
}

/// The machine's GPUs and driver.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub gpus: Vec<Gpu>,
    /// e.g. `550.54.15`, from `/proc/driver/nvidia/version` or `/sys/module/nvidia/version`.
    pub driver_version: Option<String>,
    pub source: Source,
}

/// `00000000:17:00.0` and `0000:17:00.0` both become `0000:17:00.0`.
pub(crate) fn normalize_bus_id(id: &str) -> String {
    let id = id.trim().to_ascii_lowercase();
    match id.split_once(':') {
        Some((domain, rest)) => {
            let domain =
                u32::from_str_radix(domain, 16).map_or(domain.to_string(), |d| format!("{d:04x}"));
            format!("{domain}:{rest}")
        }
        None => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_compare_across_sources() {
        assert_eq!(normalize_bus_id("00000000:17:00.0"), "0000:17:00.0");
        assert_eq!(normalize_bus_id("0000:B1:00.0"), "0000:b1:00.0");
    }

    #[test]
    fn unknown_memory_is_said() {
        let gpu = Gpu {
            index: 1,
            uuid: "GPU-1".into(),
            name: "NVIDIA A10".into(),
            memory_mib: None,
            pci_bus_id: "0000:01:00.0".into(),
            minor: 1,
        };
        assert_eq!(gpu.describe(), "1: NVIDIA A10 (memory unknown)");
    }
}
