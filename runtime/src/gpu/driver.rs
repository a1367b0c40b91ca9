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

/// Where the 32-bit copies go with `compat32` (CUDA images list it in `LD_LIBRARY_PATH` too).
const LIB32_DIR: &str = "/usr/local/nvidia/lib";

const CONTROL_NODES: [&str; 4] = [
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// Sockets shared with the host's driver daemons, bound when present: (path, capability). The fabric manager
/// answers NVML's NVSwitch questions, so it goes with `utility` (as in libnvidia-container).
const SOCKETS: [(&str, &str); 2] = [
    ("run/nvidia-persistenced/socket", "utility"),
    ("run/nvidia-fabricmanager/socket", "utility"),
];

/// Where the MPS control daemon listens unless `CUDA_MPS_PIPE_DIRECTORY` says otherwise.
const MPS_PIPE_DIRECTORY: &str = "/tmp/nvidia-mps";

/// GDRCopy's node (GPU memory mapped for the CPU), given with `compute` when the host has it.
const GDRDRV: &str = "gdrdrv";

/// IMEX channels (memory shared across the nodes of an NVLink domain), given as the job's
/// `NVIDIA_IMEX_CHANNELS` asks (`all`, or channel numbers), as the NVIDIA toolkit does.
const IMEX_CHANNELS: &str = "dev/nvidia-caps-imex-channels";

/// The edits that give `selected` (of `inventory`) to a container, with the files under `root`.
pub(crate) fn edits(
    root: &Path,
    inventory: &Inventory,
    selected: &[Gpu],
    capabilities: &[&str],
    job_env: &dyn Fn(&str) -> Option<String>,
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
        driver_version: version.map(String::from),
        ..Setup::default()
    };
    let native = libs::libraries(root, version, capabilities)?;
    bind_libraries(&native, Path::new(LIB_DIR), &mut edits, &mut setup, true);
    if capabilities.contains(&"compat32") {
        let compat32 = libs::compat32_libraries(root, version, capabilities)?;
        if !compat32.is_empty() {
            setup.ld_dirs.push(PathBuf::from(LIB32_DIR));
            bind_libraries(
                &compat32,
                Path::new(LIB32_DIR),
                &mut edits,
                &mut setup,
                false,
            );
        }
    }
    edits.setup = setup;
    for (name, host) in libs::binaries(root, capabilities) {
        edits
            .mounts
            .push(BindMount::read_only(host, Path::new("/usr/bin").join(name)));
    }
    for (rel, cap) in SOCKETS {
        let host = root.join(rel);
        if capabilities.contains(&cap) && host.exists() {
            edits
                .mounts
                .push(BindMount::writable(host, Path::new("/").join(rel)));
        }
    }
    for (host, container) in libs::config_files(root, capabilities) {
        edits.mounts.push(BindMount::read_only(host, container));
    }
    if capabilities.contains(&"compute") {
        give_mps_pipe_directory(root, job_env, &mut edits);
        let host = root.join("dev").join(GDRDRV);
        if let Ok(node) = DeviceNode::from_host(Path::new("/dev").join(GDRDRV), &host) {
            edits.devices.push(node);
        }
    }
    if let Some(wanted) = job_env("NVIDIA_IMEX_CHANNELS") {
        give_imex_channels(root, &wanted, &mut edits);
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

/// Binds `found` read-only into `dir` with their soname and development links; `next_to_libc` also lists them for
/// images without ldconfig (the native ones only: 32-bit libraries must not land beside a 64-bit libc).
fn bind_libraries(
    found: &[libs::Library],
    dir: &Path,
    edits: &mut Edits,
    setup: &mut Setup,
    next_to_libc: bool,
) {
    for lib in found {
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
        if next_to_libc {
            setup
                .libraries
                .push((lib.soname.clone(), dir.join(&lib.file_name)));
        }
    }
}

/// The MPS daemon's pipe directory, when it runs: the job's `CUDA_MPS_PIPE_DIRECTORY`, else dstack's own (told to
/// the job), else the default. Only a directory holding the daemon's `control` pipe is bound, so the variable
/// cannot bind an arbitrary host directory in.
fn give_mps_pipe_directory(
    root: &Path,
    job_env: &dyn Fn(&str) -> Option<String>,
    edits: &mut Edits,
) {
    const VAR: &str = "CUDA_MPS_PIPE_DIRECTORY";
    let from_job = job_env(VAR).filter(|d| !d.is_empty());
    let from_host = std::env::var(VAR).ok().filter(|d| !d.is_empty());
    let dir = from_job
        .clone()
        .or_else(|| from_host.clone())
        .unwrap_or_else(|| MPS_PIPE_DIRECTORY.into());
    let container = PathBuf::from(&dir);
    if !container.is_absolute() || container.components().any(|c| c.as_os_str() == "..") {
        return;
    }
    let host = root.join(container.strip_prefix("/").unwrap_or(&container));
    if !host.join("control").exists() {
        return;
    }
    edits.mounts.push(BindMount::writable(host, container));
    if from_job.is_none() && from_host.is_some() {
        edits.set_env(VAR, &dir);
    }
}

/// The IMEX channel nodes `wanted` names (`all`, or `0,3`) that exist under `root`.
fn give_imex_channels(root: &Path, wanted: &str, edits: &mut Edits) {
    let dir = root.join(IMEX_CHANNELS);
    let mut names: Vec<String> = match wanted.trim() {
        "" | "none" | "void" => return,
        "all" => std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("channel"))
            .collect(),
        list => list
            .split(',')
            .filter_map(|n| n.trim().parse::<u32>().ok())
            .map(|n| format!("channel{n}"))
            .collect(),
    };
    names.sort();
    for name in names {
        let container = Path::new("/dev/nvidia-caps-imex-channels").join(&name);
        match DeviceNode::from_host(container, &dir.join(&name)) {
            Ok(node) => edits.devices.push(node),
            Err(_) => tracing::warn!("IMEX channel {name} asked for but absent on this host"),
        }
    }
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
    use super::super::testing::{FakeDriver, device_paths};
    use super::*;

    // No GPU here: the fake driver tree stands in for one.
    #[test]
    fn only_the_selected_gpus_node_and_the_capabilities_files_are_given() {
        let fake = FakeDriver::new("550.54.15")
            .gpu("0000:19:00.0", "NVIDIA H100 80GB HBM3", "GPU-aaaa", 0)
            .gpu("0000:3b:00.0", "NVIDIA H100 80GB HBM3", "GPU-bbbb", 1)
            .build();
        let inv = discover(fake.root()).unwrap();
        let edits = edits(
            fake.root(),
            &inv,
            &inv.gpus[1..],
            &["utility", "compute"],
            &|_| None,
        )
        .unwrap();
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
                "/dev/gdrdrv",
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

    fn dests(edits: &Edits) -> Vec<&str> {
        edits
            .mounts
            .iter()
            .map(|m| m.container.to_str().unwrap())
            .collect()
    }

    /// The daemons' sockets and the extra nodes follow the capabilities and what the job asks for.
    #[test]
    fn sockets_mps_imex_gdrcopy_and_vendor_files_follow_the_capabilities() {
        let fake = FakeDriver::new("550.54.15")
            .gpu("0000:19:00.0", "NVIDIA H100 80GB HBM3", "GPU-aaaa", 0)
            .build();
        let inv = discover(fake.root()).unwrap();
        let utility = edits(fake.root(), &inv, &inv.gpus, &["utility"], &|_| None).unwrap();
        assert!(dests(&utility).contains(&"/run/nvidia-fabricmanager/socket"));
        assert!(!dests(&utility).contains(&"/tmp/nvidia-mps"));
        assert!(!device_paths(&utility).contains(&"/dev/gdrdrv"));
        assert!(!device_paths(&utility).iter().any(|n| n.contains("imex")));
        assert!(!dests(&utility).iter().any(|d| d.ends_with(".json")));

        let compute = edits(fake.root(), &inv, &inv.gpus, &["compute"], &|_| None).unwrap();
        assert!(dests(&compute).contains(&"/tmp/nvidia-mps"));
        assert!(device_paths(&compute).contains(&"/dev/gdrdrv"));
        assert!(
            dests(&compute).contains(&"/usr/local/nvidia/lib64/libnvidia-tileiras.so.550.54.15")
        );

        // MPS elsewhere, as the job says; IMEX channels as the job names them.
        let job = |key: &str| match key {
            "CUDA_MPS_PIPE_DIRECTORY" => Some("/var/mps".to_string()),
            "NVIDIA_IMEX_CHANNELS" => Some("1".to_string()),
            _ => None,
        };
        let asked = edits(fake.root(), &inv, &inv.gpus, &["compute"], &job).unwrap();
        assert!(dests(&asked).contains(&"/var/mps"));
        assert!(!dests(&asked).contains(&"/tmp/nvidia-mps"));
        let imex: Vec<_> = device_paths(&asked)
            .into_iter()
            .filter(|n| n.contains("imex"))
            .collect();
        assert_eq!(imex, ["/dev/nvidia-caps-imex-channels/channel1"]);
        // A directory without the daemon's pipe is not bound, whatever the variable says.
        let elsewhere = |key: &str| (key == "CUDA_MPS_PIPE_DIRECTORY").then(|| "/etc".to_string());
        let refused = edits(fake.root(), &inv, &inv.gpus, &["compute"], &elsewhere).unwrap();
        assert!(!dests(&refused).contains(&"/etc"));
        let all = |key: &str| (key == "NVIDIA_IMEX_CHANNELS").then(|| "all".to_string());
        let every = edits(fake.root(), &inv, &inv.gpus, &["compute"], &all).unwrap();
        assert_eq!(
            device_paths(&every)
                .iter()
                .filter(|n| n.contains("imex"))
                .count(),
            2
        );

        let graphics = edits(fake.root(), &inv, &inv.gpus, &["graphics"], &|_| None).unwrap();
        assert!(dests(&graphics).contains(&"/usr/share/vulkan/icd.d/nvidia_icd.json"));
        assert!(dests(&graphics).contains(&"/usr/share/glvnd/egl_vendor.d/10_nvidia.json"));

        // `none`: the GPU's nodes, no driver files.
        let none = edits(fake.root(), &inv, &inv.gpus, &[], &|_| None).unwrap();
        assert!(device_paths(&none).contains(&"/dev/nvidia0"));
        assert!(!dests(&none).iter().any(|d| d.contains("lib64")));
    }

    /// `compat32` adds the host's 32-bit copies (x86_64 hosts only) in their own directory, known to the linker
    /// but never linked beside the image's 64-bit libc. Whether a 32-bit CUDA program runs, only hardware shows.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn compat32_adds_the_32_bit_libraries_in_their_own_directory() {
        let fake = FakeDriver::new("550.54.15")
            .gpu("0000:19:00.0", "NVIDIA H100 80GB HBM3", "GPU-aaaa", 0)
            .compat32()
            .build();
        let inv = discover(fake.root()).unwrap();
        let caps = ["utility", "compute", "compat32"];
        let with = edits(fake.root(), &inv, &inv.gpus, &caps, &|_| None).unwrap();
        let lib32 = with
            .mounts
            .iter()
            .find(|m| m.container == Path::new("/usr/local/nvidia/lib/libcuda.so.550.54.15"))
            .expect("the 32-bit libcuda");
        assert!(
            lib32
                .host
                .starts_with(fake.root().join("usr/lib/i386-linux-gnu"))
        );
        assert!(dests(&with).contains(&"/usr/local/nvidia/lib64/libcuda.so.550.54.15"));
        assert!(
            with.setup
                .ld_dirs
                .contains(&PathBuf::from("/usr/local/nvidia/lib"))
        );
        assert!(with.setup.links.contains(&(
            "/usr/local/nvidia/lib/libcuda.so.1".into(),
            "libcuda.so.550.54.15".into()
        )));
        assert!(
            !with
                .setup
                .libraries
                .iter()
                .any(|(_, p)| p.starts_with("/usr/local/nvidia/lib/"))
        );
        let without = edits(fake.root(), &inv, &inv.gpus, &caps[..2], &|_| None).unwrap();
        assert!(
            !dests(&without)
                .iter()
                .any(|d| d.starts_with("/usr/local/nvidia/lib/"))
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
        let err = edits(fake.root(), &inv, &[ghost], &["utility"], &|_| None).unwrap_err();
        assert!(
            err.to_string()
                .contains("/dev/nvidia7 of GPU 0 does not exist"),
            "{err}"
        );
    }
}
