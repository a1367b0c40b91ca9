//! Injection straight from the host's driver (no CDI spec): the selected GPUs' device nodes and the control
//! nodes, the libraries and binaries for the capabilities, the persistenced/fabric-manager/MPS sockets and the
//! GSP firmware when present.
//!
//! Libraries are bound read-only into [`LIB_DIR`], a directory of their own (CUDA images already list it in
//! their `ld.so.conf.d` and `LD_LIBRARY_PATH`); the set-up step inside the container adds the soname links and
//! makes the image's linker find them. Binaries go to `/usr/bin`.

use std::path::{Path, PathBuf};

use super::edits::{BindMount, DeviceNode, Edits};
use super::inventory::{Gpu, Inventory};
use super::setup::Setup;
use super::{GpuError, libs};

/// Where the driver's libraries appear in the container.
pub const LIB_DIR: &str = "/usr/local/nvidia/lib64";

const CONTROL_NODES: [&str; 4] = [
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// Sockets and directories shared with the host's driver daemons, bound when present: (path, capability).
const SHARED: [(&str, &str); 3] = [
    ("run/nvidia-persistenced/socket", "utility"),
    ("run/nvidia-fabricmanager/socket", "compute"),
    ("tmp/nvidia-mps", "compute"),
];

/// The edits that give `selected` (of `inventory`) to a container, with the files under `root`.
pub(crate) fn edits(
    root: &Path,
    inventory: &Inventory,
    selected: &[Gpu],
    capabilities: &[&str],
) -> Result<Edits, GpuError> {
    let mut edits = Edits::default();
    if root == Path::new("/") && !Path::new("/dev/nvidia-uvm").exists() {
        create_uvm_node();
    }
    for name in CONTROL_NODES {
        let host = root.join("dev").join(name);
        if let Ok(node) = DeviceNode::from_host(Path::new("/dev").join(name), &host) {
            edits.devices.push(node);
        } else if name == "nvidia-uvm" {
            tracing::warn!(
                "{} does not exist: CUDA will fail; run `nvidia-modprobe -u -c=0` as root",
                host.display()
            );
        }
    }
    for gpu in selected {
        let rel = format!("nvidia{}", gpu.minor);
        let host = root.join("dev").join(&rel);
        let node = DeviceNode::from_host(Path::new("/dev").join(&rel), &host).map_err(|_| {
            GpuError::MissingDeviceNode {
                path: Path::new("/dev").join(&rel),
                index: gpu.index,
                minor: gpu.minor,
            }
        })?;
        edits.devices.push(node);
    }
    // No `/dev/nvidia-caps` node: whole GPUs need none, and the MIG config and monitor capabilities would let
    // the job reconfigure or watch every GPU's MIG instances (libnvidia-container binds them only on request).
    let version = inventory.driver_version.as_deref();
    let mut setup = Setup {
        ld_dirs: vec![PathBuf::from(LIB_DIR)],
        ..Setup::default()
    };
    for lib in libs::libraries(root, version, capabilities)? {
        let dir = Path::new(LIB_DIR);
        edits.mounts.push(BindMount::read_only(
            lib.host_path.clone(),
            dir.join(&lib.file_name),
        ));
        if lib.soname != lib.file_name {
            setup
                .links
                .push((dir.join(&lib.soname), PathBuf::from(&lib.file_name)));
        }
        let dev_link = format!("{}.so", lib.base);
        if dev_link != lib.soname {
            setup
                .links
                .push((dir.join(dev_link), PathBuf::from(&lib.soname)));
        }
        setup
            .libraries
            .push((lib.soname.clone(), dir.join(&lib.file_name)));
    }
    edits.setup = setup;
    for (name, host) in libs::binaries(root, capabilities) {
        edits
            .mounts
            .push(BindMount::read_only(host, Path::new("/usr/bin").join(name)));
    }
    for (rel, cap) in SHARED {
        let host = root.join(rel);
        if capabilities.contains(&cap) && host.exists() {
            edits
                .mounts
                .push(BindMount::writable(host, Path::new("/").join(rel)));
        }
    }
    if let Some(version) = version
        && let Ok(entries) = std::fs::read_dir(root.join("lib/firmware/nvidia").join(version))
    {
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for host in files.into_iter().filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("gsp"))
        }) {
            let container = Path::new("/lib/firmware/nvidia")
                .join(version)
                .join(host.file_name().unwrap_or_default());
            edits.mounts.push(BindMount::read_only(host, container));
        }
    }
    Ok(edits)
}

/// `/dev/nvidia-uvm` appears only once something loads the module; `nvidia-modprobe` (setuid root where the
/// driver installs it) does that, as libnvidia-container does before a start.
fn create_uvm_node() {
    let Some(modprobe) = ["/usr/bin/nvidia-modprobe", "/usr/sbin/nvidia-modprobe"]
        .iter()
        .find(|p| Path::new(p).exists())
    else {
        return;
    };
    let ran = std::process::Command::new(modprobe)
        .args(["-u", "-c=0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    tracing::debug!("{modprobe} -u -c=0: {ran:?}");
}

#[cfg(test)]
mod tests {
    use super::super::discover::discover;
    use super::super::testing::FakeDriver;
    use super::*;

    // No GPU here: the fake driver tree stands in for one.
    #[test]
    fn only_the_selected_gpus_node_and_the_capabilities_files_are_given() {
        let fake = FakeDriver::new("550.54.15")
            .gpu("0000:19:00.0", "NVIDIA H100 80GB HBM3", "GPU-aaaa", 0)
            .gpu("0000:3b:00.0", "NVIDIA H100 80GB HBM3", "GPU-bbbb", 1)
            .build();
        let inv = discover(fake.root()).unwrap();
        let edits = edits(fake.root(), &inv, &inv.gpus[1..], &["utility", "compute"]).unwrap();
        let nodes: Vec<_> = edits
            .devices
            .iter()
            .map(|d| d.path.to_str().unwrap())
            .collect();
        assert_eq!(
            nodes,
            [
                "/dev/nvidiactl",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools",
                "/dev/nvidia-modeset",
                "/dev/nvidia1",
            ]
        );
        let dests: Vec<_> = edits
            .mounts
            .iter()
            .map(|m| m.container.to_str().unwrap())
            .collect();
        assert!(dests.contains(&"/usr/local/nvidia/lib64/libcuda.so.550.54.15"));
        assert!(dests.contains(&"/usr/bin/nvidia-debugdump"));
        assert!(dests.contains(&"/usr/bin/nvidia-cuda-mps-control"));
        assert!(dests.contains(&"/run/nvidia-persistenced/socket"));
        assert!(dests.contains(&"/lib/firmware/nvidia/550.54.15/gsp_ga10x.bin"));
        assert!(
            !dests
                .iter()
                .any(|d| d.contains("libnvidia-encode") || d.contains("libfoo"))
        );
        let lib_mount = edits
            .mounts
            .iter()
            .find(|m| m.container.ends_with("libcuda.so.550.54.15"))
            .unwrap();
        assert!(lib_mount.options.contains(&"ro".to_string()));
        let link = |l: &str| {
            edits
                .setup
                .links
                .iter()
                .find(|(p, _)| p.ends_with(l))
                .map(|(_, t)| t.to_str().unwrap())
        };
        assert_eq!(link("libcuda.so.1"), Some("libcuda.so.550.54.15"));
        assert_eq!(link("libcuda.so"), Some("libcuda.so.1"));
        assert_eq!(
            link("libnvidia-nvvm.so.4"),
            Some("libnvidia-nvvm.so.550.54.15")
        );
    }

    #[test]
    fn a_selected_gpu_without_its_node_is_an_error() {
        let fake = FakeDriver::new("550.54.15")
            .gpu("0000:19:00.0", "NVIDIA A10", "GPU-aaaa", 0)
            .build();
        let inv = discover(fake.root()).unwrap();
        let mut ghost = inv.gpus[0].clone();
        ghost.minor = 7;
        let err = edits(fake.root(), &inv, &[ghost], &["utility"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("/dev/nvidia7 of GPU 0 does not exist"),
            "{err}"
        );
    }
}
