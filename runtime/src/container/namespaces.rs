//! The spec's `linux.namespaces`: which to create (clone flags) and which to join by path (opened before
//! the clone, entered by init with `setns`; a pid namespace is entered by the caller, since only children
//! go into it).

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
                if matches!(
                    n.typ(),
                    LinuxNamespaceType::User | LinuxNamespaceType::Mount | LinuxNamespaceType::Time
                ) {
                    return Err(ContainerError::Invalid(format!(
                        "joining an existing {} namespace by path is not supported",
                        n.typ()
                    )));
                }
                let file = File::open(path)
                    .map_err(ContainerError::io("cannot open the namespace", path))?;
                ns.join.push((f, file.into()));
            }
        }
    }
    if ns.new & libc::CLONE_NEWNS as u64 == 0 {
        return Err(ContainerError::Invalid(
            "the spec must give the container a mount namespace of its own (linux.namespaces: mount)"
                .into(),
        ));
    }
    Ok(ns)
}

impl Namespaces {
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

/// `setns(fd, flag)`.
pub(super) fn setns(fd: i32, flag: u64) -> std::io::Result<()> {
    // SAFETY: setns on an fd this process holds open.
    if unsafe { libc::setns(fd, flag as libc::c_int) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
