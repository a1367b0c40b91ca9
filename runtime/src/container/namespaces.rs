//! The spec's `linux.namespaces`: which to create (clone flags) and which to join by path (opened before
//! the clone, entered by init with `setns`, a mount namespace before any mount; a pid namespace is entered
//! by the caller, since only children go into it).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::ContainerError;

/// What the spec asks for.
#[derive(Debug, Default)]
pub(super) struct Namespaces {
    /// `CLONE_NEW*` flags of the namespaces to create.
    pub new: u64,
    /// Namespaces joined by path, opened here: (`CLONE_NEW*` flag, fd).
    pub join: Vec<(u64, OwnedFd)>,
}

pub(super) fn flag(typ: LinuxNamespaceType) -> u64 {
    (match typ {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }) as u64
}

/// The spec lists a new user namespace (dstack's supervised runs give every job the others; this one only
/// when the plan asks, for `user: host` rootless).
pub(super) fn asks_new_user(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|list| {
            list.iter()
                .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none())
        })
}

/// Reads the spec's namespaces. A container always gets a mount namespace of its own (it pivots into
/// its root), as runc requires the spec to say.
pub(super) fn from_spec(spec: &Spec) -> Result<Namespaces, ContainerError> {
    let mut ns = Namespaces::default();
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for n in &list {
        let f = flag(n.typ());
        if ns.new & f != 0 || ns.join.iter().any(|(j, _)| *j == f) {
            return Err(ContainerError::Invalid(format!(
                "the {} namespace is listed twice",
                n.typ()
            )));
        }
        match n.path() {
            None => ns.new |= f,
            Some(path) => {
                if matches!(n.typ(), LinuxNamespaceType::User | LinuxNamespaceType::Time) {
                    return Err(ContainerError::Invalid(format!(
                        "joining an existing {} namespace by path is not supported",
                        n.typ()
                    )));
                }
                let file = File::open(path)
                    .map_err(ContainerError::io("cannot open the namespace", path))?;
                if n.typ() == LinuxNamespaceType::Mount && is_callers_mount_namespace(&file)? {
                    return Err(ContainerError::Invalid(format!(
                        "linux.namespaces mount path {}: that is the host's mount namespace (dstack-oci's own): the container would mount on the host and pivot its root; give a mount namespace of the container's own",
                        crate::container::validate::echo(&path.to_string_lossy())
                    )));
                }
                ns.join.push((f, file.into()));
            }
        }
    }
    // Setting the container up in the caller's mount namespace would mount on the host and pivot its
    // root: a mount namespace is required, new or joined by path (as runc does then, the container's
    // root becomes that namespace's).
    if !ns.has(libc::CLONE_NEWNS) {
        return Err(ContainerError::Invalid(
            "the spec must give the container a mount namespace (linux.namespaces: {\"type\": \"mount\"}, or one with a path to join): dstack-oci does not set a container up in the host's mount namespace"
                .into(),
        ));
    }
    Ok(ns)
}

impl Namespaces {
    /// The container has this namespace of its own: created, or joined by path.
    pub(super) fn has(&self, flag: libc::c_int) -> bool {
        let flag = flag as u64;
        self.new & flag != 0 || self.join.iter().any(|(f, _)| *f == flag)
    }

    /// Enters the pid namespace to join, if any, for the children this process clones from now on.
    pub(super) fn enter_pid_for_children(&self) -> Result<(), ContainerError> {
        for (f, fd) in &self.join {
            if *f == libc::CLONE_NEWPID as u64 {
                setns(fd.as_raw_fd(), *f).map_err(|e| {
                    ContainerError::Invalid(format!("cannot join the pid namespace: {e}"))
                })?;
            }
        }
        Ok(())
    }
}

/// True when `file` is the mount namespace this process is in.
fn is_callers_mount_namespace(file: &File) -> Result<bool, ContainerError> {
    use std::os::unix::fs::MetadataExt;
    let ours = "/proc/self/ns/mnt";
    let (a, b) = (
        file.metadata()
            .map_err(ContainerError::io("cannot read the namespace", ours))?,
        std::fs::metadata(ours).map_err(ContainerError::io("cannot read", ours))?,
    );
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// `setns(fd, flag)`.
pub(super) fn setns(fd: i32, flag: u64) -> std::io::Result<()> {
    // SAFETY: setns on an fd this process holds open.
    if unsafe { libc::setns(fd, flag as libc::c_int) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
