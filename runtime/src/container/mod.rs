//! Containers: an OCI runtime `Spec` run on a root filesystem in new namespaces, supervised by the
//! calling process. One concern per file:
//! - `builder`: [`ContainerBuilder`] → [`PreparedContainer`] → [`Container`];
//! - `spawn`: the clone (namespaces, cgroup), refused from a multi-threaded process;
//! - `message`: typed messages between supervisor and init;
//! - `init`: PID 1 (set-up, reaping, signal forwarding); `mounts`, `dev`, `loopback`: its set-up steps;
//! - `process`: the job's user, capabilities (`caps`), rlimits and exec;
//! - `stdio`, `supervise`: streams, signals and exit status on the supervisor's side;
//! - `scratch`, `sweep`: the per-container directory and the leftovers of killed supervisors;
//! - `spec`: Docker's defaults; `cgroup`: the seam to the cgroup module.

mod builder;
mod caps;
mod cgroup;
mod dev;
mod error;
mod init;
mod loopback;
mod message;
mod mounts;
mod process;
mod scratch;
mod spawn;
mod spec;
mod stdio;
mod supervise;
mod sweep;

pub use builder::{ContainerBuilder, PreparedContainer};
pub use caps::mask as capability_mask;
pub use cgroup::CgroupPlacement;
pub use error::ContainerError;
pub use message::Message;
pub use spec::{
    DEFAULT_PATH, DOCKER_DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS, default_capabilities,
    default_mounts, default_spec,
};
pub use stdio::StdioMode;
pub use supervise::{Container, ExitStatus, human_size};
pub use sweep::sweep_leftovers;
