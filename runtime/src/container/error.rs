//! What can go wrong creating, starting and supervising a container.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("invalid container: {0}")]
    Invalid(String),
    #[error(
        "refusing to create a container from a process with {0} threads (a clone of a multi-threaded process can deadlock): join all threads first"
    )]
    ThreadsRunning(usize),
    #[error("container {0} already exists: pick another id")]
    Exists(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the container's namespaces: {0}")]
    Clone(std::io::Error),
    #[error("cannot place the container in its cgroup: {0}")]
    Cgroup(std::io::Error),
    #[error("talking to the container's init failed: {0}")]
    Channel(super::message::ChannelError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Network(#[from] crate::net::NetError),
    /// Set-up inside the container failed before the job started (mounts, user, exec).
    #[error("{message}")]
    Start { message: String, exit_code: i32 },
    #[error(transparent)]
    Sys(#[from] nix::Error),
}

impl ContainerError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ContainerError {
        let path = path.into();
        move |source| ContainerError::Io { what, path, source }
    }

    /// The exit code a command line should end with: the job's for a failed exec (126/127, as shells
    /// do), 125 for the runtime's own failures (as Docker does).
    pub fn exit_code(&self) -> i32 {
        match self {
            ContainerError::Start { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }
}
