//! The plan: what to run, as pure data. Both the ad hoc form (`dstack run docker IMAGE ...`) and workflows
//! produce a [`JobRequest`]; the planner combines it with the image's configuration into one OCI runtime
//! `Spec` for the runtime, so both forms share one code path. `--dry-run` prints it.

use std::path::PathBuf;

/// What the user asked to run, before the image is known. Sizes are bytes; `cpu` is in cores.
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    /// The image reference as the user wrote it.
    pub image: String,
    /// Shell command lines; when non-empty they are joined with ` && ` and run by `/bin/sh -c` (or by
    /// `entrypoint` when given), replacing the image's CMD.
    pub commands: Vec<String>,
    /// Replaces the image's ENTRYPOINT (and drops its CMD, as Docker does).
    pub entrypoint: Option<Vec<String>>,
    /// Environment on top of the image's, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Absolute path inside the container; the image's WorkingDir otherwise.
    pub working_dir: Option<String>,
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
    pub shm_size: Option<u64>,
    /// Fail instead of warning when a limit cannot be enforced (rootless without a delegated cgroup).
    pub strict_limits: bool,
    /// Host paths bound into the container.
    pub mounts: Vec<BindMount>,
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}
