//! NVIDIA GPUs for containers, as edits to the OCI `Spec` the container runtime already applies.
//!
//! [`apply`] discovers the machine's GPUs, picks the requested ones that no other dstack job on the machine holds,
//! whoever runs it (a [`GpuLease`]), and adds to the spec: their device nodes (created with mknod plus a device-cgroup rule as root,
//! bound from the host rootless), the driver's libraries and binaries for `NVIDIA_DRIVER_CAPABILITIES` as
//! read-only bind mounts, the driver daemons' sockets and GSP firmware, `NVIDIA_VISIBLE_DEVICES`; or, when a CDI
//! spec for `nvidia.com/gpu` exists, that spec's `containerEdits`. The container runtime then runs [`DRIVER_LINKS`] (an in-container step its
//! builder is given) after pivot_root so the image's linker finds the libraries.
//!
//! Test seam: `DSTACK_GPU_ROOT` points discovery and injection at a fake driver tree instead of `/` (its
//! `proc/driver/nvidia`, `dev`, `etc/ld.so.cache`, library and bin directories, `etc/cdi`). NVML is only used
//! for the real root.
//!
//! ```no_run
//! # fn f(spec: &mut oci_spec::runtime::Spec) -> Result<(), runtime::gpu::GpuError> {
//! let request = runtime::gpu::GpuRequest { count: 1, name: Some("A100".into()), ..Default::default() };
//! let lease = runtime::gpu::apply(spec, &request)?; // keep it until the job has exited
//! # Ok(()) }
//! ```

mod access;
mod allocation;
pub mod cdi;
mod compat;
mod discover;
mod driver;
mod edits;
mod elf;
mod error;
mod inventory;
mod ldcache;
mod lease;
mod libs;
mod nvml;
mod procfs;
mod require;
mod select;
mod setup;
mod smi;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use oci_spec::runtime::Spec;

pub use allocation::Allocation;
pub use discover::discover;
pub use driver::LIB_DIR;
pub use error::GpuError;
pub use inventory::{Gpu, Inventory, Source};
pub use lease::GpuLease;
pub use libs::DEFAULT_CAPABILITIES;
pub use setup::{ANNOTATION, DRIVER_LINKS, DriverLinks, finish_in_container};

/// The environment variable that points the GPU code at a fake driver tree (tests only).
pub const ROOT_ENV: &str = "DSTACK_GPU_ROOT";

/// What a job asks for: `gpu: N` or `gpu: {count, name, memory}` in a workflow, `--gpu N --gpu-name NAME
/// --gpu-memory SIZE` ad hoc.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuRequest {
    /// How many GPUs; 0 asks for none.
    pub count: u32,
    /// A model name, matched word by word ignoring case: `A100` matches `NVIDIA A100-SXM4-80GB`.
    pub name: Option<String>,
    /// Bytes of memory each GPU must have at least (`80GB` = 80·10⁹, as cards are sold).
    pub memory: Option<u64>,
    /// `NVIDIA_DRIVER_CAPABILITIES`; `None` takes the job's environment, else `utility,compute`.
    pub capabilities: Option<String>,
    /// Who holds the GPUs, as other jobs are told: e.g. `run brave-fox-1`.
    pub owner: String,
}

/// Where the driver, the leases and the CDI specs are, and whether the job runs rootless.
#[derive(Debug, Clone)]
pub struct Host {
    /// The driver root: `/`, or a fake tree in tests.
    pub root: PathBuf,
    /// Lease files: `/run/dstack/gpu` under the driver root, shared by every user and state root (rootless
    /// before root made it: `<state root>/gpu`).
    pub lease_dir: PathBuf,
    /// CDI spec directories, later ones winning.
    pub cdi_dirs: Vec<PathBuf>,
    /// Device nodes are bound from the host instead of created, and no cgroup rules are made.
    pub rootless: bool,
    /// Inside a Slurm job: the GPUs it was given, the only ones to hand out.
    pub allocation: Option<Allocation>,
}

impl Host {
    /// `$DSTACK_GPU_ROOT` or `/`; the machine-wide leases; a Slurm job's GPUs.
    pub fn from_env() -> Host {
        let root = std::env::var_os(ROOT_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/"), PathBuf::from);
        let host_root = crate::paths::running_as_host_root();
        Host {
            cdi_dirs: cdi::spec_dirs(&root),
            lease_dir: lease::lease_dir(&root, &crate::paths::state_root(), host_root),
            rootless: !host_root,
            allocation: Allocation::from_env(),
            root,
        }
    }
}

/// Gives `spec` the GPUs `request` asks for, on this machine as the environment describes it.
pub fn apply(spec: &mut Spec, request: &GpuRequest) -> Result<GpuLease, GpuError> {
    apply_on(&Host::from_env(), spec, request)
}

/// [`apply`] on an explicit host description.
pub fn apply_on(host: &Host, spec: &mut Spec, request: &GpuRequest) -> Result<GpuLease, GpuError> {
    if request.count == 0 {
        return Ok(GpuLease::none());
    }
    let mut inventory = discover(&host.root).map_err(|why| GpuError::NoGpu {
        request: select::describe(request),
        why,
    })?;
    if let Some(allocation) = &host.allocation {
        // The job's own GPUs only: Slurm's device cgroup (if any) would deny the others inside anyway.
        inventory.gpus.retain(|g| allocation.contains(g));
        if inventory.gpus.is_empty() {
            return Err(GpuError::NotAllocated {
                request: select::describe(request),
                allocation: allocation.describe(),
            });
        }
    }
    require::check(&job_env_all(spec), inventory.driver_version.as_deref())?;
    lease::warn_if_private(&host.root, &host.lease_dir);
    let mut lease =
        lease::acquire(&host.lease_dir, &inventory.gpus, request).map_err(|e| {
            match (e, &host.allocation) {
                (GpuError::Unmet { request, listing }, Some(allocation)) => GpuError::Unmet {
                    request: format!("{request} (this Slurm job has {})", allocation.describe()),
                    listing,
                },
                (e, _) => e,
            }
        })?;
    let capabilities = request
        .capabilities
        .clone()
        .or_else(|| job_env(spec, "NVIDIA_DRIVER_CAPABILITIES"))
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_CAPABILITIES.to_string());
    let caps = libs::parse_capabilities(&capabilities);
    let version = inventory.driver_version.as_deref();
    let registry = cdi::Registry::load(&host.cdi_dirs);
    let mut edits = if registry.has_kind(cdi::NVIDIA_GPU_KIND) {
        tracing::debug!("using the CDI specs for {}", cdi::NVIDIA_GPU_KIND);
        registry.edits_for_gpus(&lease.gpus, version)?
    } else {
        driver::edits(&host.root, &inventory, &lease.gpus, &caps, &|key| {
            job_env(spec, key)
        })?
    };
    if host.rootless {
        access::check(&mut edits)?;
    }
    hide_the_rest(host, &mut lease, &mut edits)?;
    let uuids: Vec<&str> = lease.gpus.iter().map(|g| g.uuid.as_str()).collect();
    edits.set_env("NVIDIA_VISIBLE_DEVICES", &uuids.join(","));
    let words = if caps.is_empty() {
        "none".to_string()
    } else {
        caps.join(",")
    };
    edits.set_env("NVIDIA_DRIVER_CAPABILITIES", &words);
    lease.rules = edits.apply(spec, host.rootless)?;
    Ok(lease)
}

/// The job sees only its own GPUs under `/proc/driver/nvidia`, and a `params` saying `ModifyDeviceFiles: 0`, as
/// libnvidia-container arranges it.
fn hide_the_rest(
    host: &Host,
    lease: &mut GpuLease,
    edits: &mut edits::Edits,
) -> Result<(), GpuError> {
    let given: Vec<&str> = lease.gpus.iter().map(|g| g.pci_bus_id.as_str()).collect();
    edits
        .masked
        .extend(procfs::paths_to_hide(&host.root, &given));
    if let Some(params) = procfs::params_without_device_file_changes(&host.root) {
        let file = lease.keep_file(&host.lease_dir, "params", &params)?;
        edits.mounts.push(edits::BindMount::read_only(
            file,
            PathBuf::from("/proc/driver/nvidia/params"),
        ));
    }
    Ok(())
}

/// Applies CDI devices named in full (`nvidia.com/gpu=all`, `vendor.com/class=name`), as podman's `--device`
/// does, without discovery or leases; returns the cgroup rules for the created nodes.
pub fn apply_cdi_devices(
    host: &Host,
    spec: &mut Spec,
    devices: &[String],
) -> Result<Vec<crate::cgroup::DeviceRule>, GpuError> {
    let version = procfs::driver_version(&host.root);
    cdi::Registry::load(&host.cdi_dirs)
        .edits(devices, version.as_deref())?
        .apply(spec, host.rootless)
}

/// The job's environment as (name, value), the last of each name winning.
fn job_env_all(spec: &Spec) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    let env = spec.process().as_ref().and_then(|p| p.env().as_ref());
    for e in env.into_iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            all.retain(|(name, _)| name != k);
            all.push((k.to_string(), v.to_string()));
        }
    }
    all
}

/// The job's value of `key`, as the spec's process environment has it.
fn job_env(spec: &Spec, key: &str) -> Option<String> {
    let env = spec.process().as_ref()?.env().as_ref()?;
    env.iter().rev().find_map(|e| {
        e.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    })
}
