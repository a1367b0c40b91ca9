//! What the kernel module says: `/proc/driver/nvidia/gpus/<pci>/information` per GPU (model, UUID, bus
//! location, device minor; no memory size) and the driver version.

use std::path::Path;

use super::inventory::normalize_bus_id;

/// One GPU as `/proc/driver/nvidia/gpus/*/information` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcGpu {
    pub name: String,
    pub uuid: String,
    pub pci_bus_id: String,
    pub minor: Option<u32>,
}

/// The GPUs under `root`, in PCI bus order (nvidia-smi's index order).
pub(crate) fn gpus(root: &Path) -> Vec<ProcGpu> {
    let dir = root.join("proc/driver/nvidia/gpus");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut gpus: Vec<ProcGpu> = entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("information")).ok()?;
            Some(parse_information(&text, &e.file_name().to_string_lossy()))
        })
        .collect();
    gpus.sort_by(|a, b| a.pci_bus_id.cmp(&b.pci_bus_id));
    gpus
}

/// Parses one `information` file; `dir_name` (the PCI address) stands in for a missing bus location.
pub(crate) fn parse_information(text: &str, dir_name: &str) -> ProcGpu {
    let field = |key: &str| {
        text.lines()
            .filter_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().to_string())
            })
            .next()
    };
    ProcGpu {
        name: field("Model").unwrap_or_else(|| "NVIDIA GPU".into()),
        uuid: field("GPU UUID").unwrap_or_default(),
        pci_bus_id: normalize_bus_id(
            &field("Bus Location").unwrap_or_else(|| dir_name.to_string()),
        ),
        minor: field("Device Minor").and_then(|m| m.parse().ok()),
    }
}

/// The loaded kernel module's version, e.g. `550.54.15`.
pub(crate) fn driver_version(root: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(root.join("proc/driver/nvidia/version")) {
        let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
        // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024"
        if let Some(v) = line.split_whitespace().find(|w| is_version(w)) {
            return Some(v.to_string());
        }
    }
    let text = std::fs::read_to_string(root.join("sys/module/nvidia/version")).ok()?;
    Some(text.trim().to_string()).filter(|v| is_version(v))
}

/// `550.54.15`, `535.104.05`, `470.82`: digits separated by dots.
pub(crate) fn is_version(word: &str) -> bool {
    word.contains('.')
        && word
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The driver's `params` with `ModifyDeviceFiles: 0`, for the job to see instead of the host's: with 1, CUDA
/// inside tries to create or fix device nodes it should only use (as the NVIDIA toolkit sets it). `None`
/// without a `params` file.
pub(crate) fn params_without_device_file_changes(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("proc/driver/nvidia/params")).ok()?;
    let mut out: String = text
        .lines()
        .map(|l| match l.split_once(':') {
            Some((key, _)) if key.trim() == "ModifyDeviceFiles" => {
                "ModifyDeviceFiles: 0\n".to_string()
            }
            _ => format!("{l}\n"),
        })
        .collect();
    if !out.lines().any(|l| l.starts_with("ModifyDeviceFiles")) {
        out.push_str("ModifyDeviceFiles: 0\n");
    }
    Some(out)
}

/// What a job must not see under `/proc/driver/nvidia` (paths as the container sees them): the other GPUs'
/// directories under `gpus/` (each names a model, UUID and bus) and the MIG `capabilities` tree (whole GPUs
/// need none of it).
pub(crate) fn paths_to_hide(root: &Path, given_bus_ids: &[&str]) -> Vec<String> {
    let mut hidden = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("proc/driver/nvidia/gpus")) {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            if !given_bus_ids.contains(&normalize_bus_id(&name).as_str()) {
                hidden.push(format!("/proc/driver/nvidia/gpus/{name}"));
            }
        }
    }
    if root.join("proc/driver/nvidia/capabilities").exists() {
        hidden.push("/proc/driver/nvidia/capabilities".into());
    }
    hidden
}

/// Why no GPU was found under `root`, for the error message.
pub(crate) fn absence_reason(root: &Path) -> String {
    if root.join("proc/driver/nvidia").exists() {
        "the NVIDIA driver is loaded but reports no GPU".into()
    } else {
        "no NVIDIA driver is loaded: /proc/driver/nvidia does not exist".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A100: &str = "Model: \t\t NVIDIA A100-SXM4-80GB\nIRQ:   \t\t 0\nGPU UUID: \t GPU-5c0d3f6c-3f4e-2b1a-9d8e-0123456789ab\n\
        Video BIOS: \t 92.00.36.00.01\nBus Type: \t PCIe\nDMA Size: \t 47 bits\nDMA Mask: \t 0x7fffffffffff\n\
        Bus Location: \t 0000:07:00.0\nDevice Minor: \t 3\nGPU Excluded:\t No\n";

    #[test]
    fn information_file_gives_model_uuid_bus_and_minor() {
        let gpu = parse_information(A100, "0000:07:00.0");
        assert_eq!(gpu.name, "NVIDIA A100-SXM4-80GB");
        assert_eq!(gpu.uuid, "GPU-5c0d3f6c-3f4e-2b1a-9d8e-0123456789ab");
        assert_eq!(gpu.pci_bus_id, "0000:07:00.0");
        assert_eq!(gpu.minor, Some(3));
    }

    #[test]
    fn the_job_sees_params_that_forbid_device_file_changes() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(params_without_device_file_changes(root.path()), None);
        std::fs::create_dir_all(root.path().join("proc/driver/nvidia")).unwrap();
        std::fs::write(
            root.path().join("proc/driver/nvidia/params"),
            "ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 1\nDeviceFileUID: 0\nDeviceFileMode: 438\n",
        )
        .unwrap();
        assert_eq!(
            params_without_device_file_changes(root.path()).unwrap(),
            "ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 0\nDeviceFileUID: 0\nDeviceFileMode: 438\n"
        );
    }

    #[test]
    fn driver_version_from_proc_or_sys() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(driver_version(root.path()), None);
        std::fs::create_dir_all(root.path().join("sys/module/nvidia")).unwrap();
        std::fs::write(
            root.path().join("sys/module/nvidia/version"),
            "535.104.05\n",
        )
        .unwrap();
        assert_eq!(driver_version(root.path()).as_deref(), Some("535.104.05"));
        std::fs::create_dir_all(root.path().join("proc/driver/nvidia")).unwrap();
        std::fs::write(
            root.path().join("proc/driver/nvidia/version"),
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  (dvs-builder@U16)  Tue Mar  5 2024\nGCC version:  gcc version 12.2.0\n",
        )
        .unwrap();
        assert_eq!(driver_version(root.path()).as_deref(), Some("550.54.15"));
    }
}
