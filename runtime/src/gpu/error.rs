//! What can go wrong while giving a job GPUs, each with a message that says what the machine has or what to do.

use std::io;
use std::path::PathBuf;

/// Errors from `runtime::gpu`.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("{request}; this machine has no NVIDIA GPU ({why})")]
    NoGpu { request: String, why: String },
    #[error(
        "{request}; this Slurm job was given none of this machine's GPUs ({allocation}): ask Slurm for them with --gres=gpu:N"
    )]
    NotAllocated { request: String, allocation: String },
    /// `listing` is "0: NVIDIA H100 80GB HBM3 (81559 MiB) [in use by run brave-fox-1], 1: ...".
    #[error("{request}; this machine has: {listing}")]
    Unmet { request: String, listing: String },
    #[error(
        "the image requires {condition} but this machine's NVIDIA driver {driver} supports CUDA {cuda}: update the driver, use an image for CUDA {cuda} or older, or set NVIDIA_DISABLE_REQUIRE=true to start it anyway"
    )]
    RequirementUnmet {
        condition: String,
        driver: String,
        cuda: String,
    },
    #[error(
        "the image's {key} cannot be read ({expression:?}): set NVIDIA_DISABLE_REQUIRE=true to skip the check"
    )]
    BadRequirement { key: String, expression: String },
    #[error(
        "the GPU lease directory {path} is unsafe: {why}; as root, remove it and let dstack make it again (mode 1777)"
    )]
    UnsafeLeaseDir { path: PathBuf, why: String },
    #[error(
        "the NVIDIA driver's {what} was not found ({looked}): install the driver's user-space libraries matching kernel module {version}"
    )]
    MissingDriverFile {
        what: String,
        looked: String,
        version: String,
    },
    #[error(
        "{library} is version {found} but the loaded kernel module is {version}: the driver was upgraded without a reboot; reboot or reload the nvidia module"
    )]
    DriverMismatch {
        library: String,
        found: String,
        version: String,
    },
    #[error(
        "cannot open {path} (mode {mode:o}): a rootless job uses the GPU with your own permissions; ask the administrator for access to the device (often a group such as video) or run as root"
    )]
    NoAccess { path: PathBuf, mode: u32 },
    #[error(
        "the device node {path} of GPU {index} does not exist: load the driver (`nvidia-modprobe -c={minor}` as root) and retry"
    )]
    MissingDeviceNode {
        path: PathBuf,
        index: u32,
        minor: u32,
    },
    #[error(
        "the CDI spec {spec} names {path}, which does not exist{why}: regenerate it with `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
    )]
    CdiStale {
        spec: PathBuf,
        path: PathBuf,
        why: String,
    },
    #[error(
        "the CDI spec {spec} has no device for GPU {index} ({uuid}): regenerate it with `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
    )]
    CdiMissingDevice {
        spec: PathBuf,
        index: u32,
        uuid: String,
    },
    #[error("unknown CDI device {0}: the specs in /etc/cdi and /var/run/cdi define no such device")]
    CdiUnknownDevice(String),
    #[error("invalid CDI device name {0:?}: write VENDOR/CLASS=NAME, e.g. nvidia.com/gpu=0")]
    CdiBadName(String),
    #[error("CDI spec {spec}: {reason}")]
    CdiInvalid { spec: PathBuf, reason: String },
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid spec edit: {0}")]
    Spec(String),
}

impl GpuError {
    /// A closure for `map_err` that names the operation and the path.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> GpuError {
        let path = path.into();
        move |source| GpuError::Io { what, path, source }
    }
}
