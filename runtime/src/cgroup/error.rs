//! What can go wrong while placing a job in a cgroup, each with a message that names the file and what to do.

use std::io;
use std::path::PathBuf;

/// Errors from `runtime::cgroup`.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup name {0:?}: use letters, digits, '-', '_' and '.' only")]
    InvalidName(String),
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    CgroupsPath { path: String, reason: String },
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    #[error("the kernel refused {value} for {file}: {reason}")]
    Refused {
        file: PathBuf,
        value: String,
        reason: String,
    },
    #[error("cannot create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path} already exists and still has processes: is another run using the name?")]
    InUse { path: PathBuf },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {value} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("{reason}")]
    NotEnforced { reason: String },
    #[error("cannot install the device filter on {path} ({step})")]
    DeviceFilter {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path} still has processes after SIGKILL; remove it once they have exited")]
    StillBusy { path: PathBuf },
    #[error("cannot remove cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
