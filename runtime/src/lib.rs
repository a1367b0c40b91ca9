//! The daemonless container runtime behind `dstack`.
//!
//! It knows images, root filesystems, containers and cgroups, and nothing of workflows: the CLI in `src/`
//! turns a workflow into an OCI runtime `Spec` and hands it here. Each module owns one concern and its own
//! error type.

pub mod cgroup;
pub mod child;
pub mod container;
pub mod fsops;
pub mod gpu;
pub mod image;
pub mod inroot;
pub mod net;
pub mod paths;
pub mod private;
pub mod report;
pub mod rootfs;
pub mod text;
pub mod userns;
