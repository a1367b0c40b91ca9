//! Containers: an OCI runtime `Spec` run on a root filesystem in new namespaces, supervised by the
//! calling process. One concern per file:
//! - `builder`: [`ContainerBuilder`] → [`PreparedContainer`], typed by its mode ([`Supervised`] or [`Oci`]);
//!   `clone_plan`: what each mode decides once; `launch`: the one clone path, → [`Container`] (supervised,
//!   dstack's runs) or → [`Created`] (the OCI lifecycle: `gate` to start it, `hooks` at its points, `exec`
//!   to join it; `attach`: an exec'ed process in the foreground, its pty relayed, as `dstack exec` runs it);
//! - `spawn`: the clone, refused from a multi-threaded process; `namespaces`, `idmap`: the spec's namespaces
//!   and user namespace maps;
//! - `message`: typed messages between supervisor and init, one type per direction;
//! - `init`: PID 1 (set-up, reaping, signal forwarding); `mounts`, `dev`, `sysctl`, `loopback`: its steps;
//!   `steps`: the in-container steps other modules fill (GPU driver links);
//! - `process`: the job's user, capabilities (`caps`), rlimits, `seccomp` and exec; `seccomp_profile`: Docker's
//!   default profile and profile files;
//! - `stdio`, `console`, `supervise`: streams, signals and exit status on the supervisor's side;
//! - `scratch`, `sweep`: the per-container directory and the leftovers of killed supervisors;
//! - `spec`: Docker's defaults (the job's cgroup comes as a `cgroup::CgroupPlacement`); `features`: what
//!   the spec may ask; `unsupported`: the spec's fields this runtime refuses, by name; `validate`: the spec's values checked
//!   before anything is made (sysctls by namespace, paths inside the root, limits).

pub mod attach;
mod builder;
mod caps;
mod clone_plan;
mod console;
mod dev;
mod error;
pub mod exec;
pub mod gate;
pub mod hooks;
mod idmap;
mod ids;
mod init;
mod launch;
mod loopback;
mod message;
mod mounts;
mod namespaces;
mod process;
mod scratch;
mod seccomp;
mod seccomp_bpf;
mod seccomp_cache;
pub mod seccomp_profile;
mod spawn;
mod spec;
mod stdio;
mod steps;
mod supervise;
mod sweep;
mod sysctl;
pub mod unsupported;
pub mod validate;

pub use builder::{
    ContainerBuilder, Mode, Oci, OciOptions, PreparedContainer, Supervised, SupervisedReady,
    Unchosen,
};
pub use caps::mask as capability_mask;
pub use error::ContainerError;
pub use hooks::{HookPoint, State};
pub use idmap::{IdMap, KEEP_ORIGINAL_GROUPS};
pub use launch::Created;
pub use message::{ChannelError, FromInit, ToInit};
pub use seccomp::{SeccompError, SeccompProgram};
pub use spec::{
    DEFAULT_PATH, DOCKER_DEFAULT_CAPS, ETC_FILES, MASKED_PATHS, READONLY_PATHS,
    add_etc_file_mounts, default_capabilities, default_mounts, default_spec, docker_user_caps,
    set_term, staged_etc_dir, write_debug_copy,
};
pub use stdio::StdioMode;
pub use steps::InContainerStep;
pub use supervise::{Container, ExitStatus, human_size};
pub use sweep::sweep_leftovers;
