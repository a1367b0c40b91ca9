//! Each mode's clone plan: how init is cloned and what it is told, decided once, before the one clone path
//! (`launch::clone_init`) runs it. dstack's supervised run and the OCI `create` differ only here.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use oci_spec::runtime::{Hooks, LinuxSeccomp, Spec};

use super::builder::OciOptions;
use super::init::InitRoot;
use super::namespaces::{self, Namespaces};
use super::seccomp::SeccompProgram;
use super::stdio::Stdio;
use super::{ContainerError, StdioMode, gate, seccomp, seccomp_cache, spawn, stdio};
use crate::net::Network;

const NEWNET: u64 = libc::CLONE_NEWNET as u64;
const NEWCGROUP: u64 = libc::CLONE_NEWCGROUP as u64;

/// How init is cloned and what it is told, decided once per mode before the clone.
pub(super) struct ClonePlan {
    pub spec: Spec,
    pub root: InitRoot,
    /// The namespaces init is cloned into, the cgroup namespace aside (see `cgroupns`).
    pub new_namespaces: u64,
    /// Init gets a cgroup namespace of its own, once it is in its cgroup.
    pub cgroupns: bool,
    /// The job has a network namespace of its own, whose `lo` init brings up.
    pub own_netns: bool,
    /// A network namespace made ahead (`net::Network`), which init joins.
    pub joined_netns: Option<RawFd>,
    pub stdio: Stdio,
    pub seccomp: Option<SeccompProgram>,
    /// The start gate's listening socket (OCI).
    pub gate: Option<OwnedFd>,
    /// The console socket for a terminal of the container's own devpts (OCI).
    pub console: Option<PathBuf>,
    /// Init pauses once mounted while the runtime's hooks run (OCI `prestart`, `createRuntime`).
    pub pause_after_mounts: bool,
    /// Init dies with this process (supervised).
    pub pdeathsig: bool,
    /// Descriptors 3..3+N the job keeps (OCI).
    pub keep_fds: u32,
    /// Init waits for a go whatever its cgroup and user namespace need: the OCI `create` always sends one
    /// (with the state for the hooks); a network is attached after the clone.
    pub always_wait: bool,
}

/// dstack's run: the namespaces every job gets (the network's own unless it brings one made ahead), a user
/// namespace when the spec lists one, the cgroup namespace always, init dying with us, stdio streamed here, compiled seccomp profiles cached in
/// the state root.
pub(super) fn supervised_plan(
    spec: Spec,
    root: InitRoot,
    stdio_mode: StdioMode,
    network: Option<&Network>,
) -> Result<ClonePlan, ContainerError> {
    let joined_netns = network
        .and_then(|n| n.joined_netns())
        .map(|fd| fd.as_raw_fd());
    let own_netns = joined_netns.is_none() && network.is_none_or(|n| n.needs_netns());
    let mut new_namespaces = if own_netns {
        spawn::NAMESPACES
    } else {
        spawn::NAMESPACES & !NEWNET
    };
    if namespaces::asks_new_user(&spec) {
        new_namespaces |= libc::CLONE_NEWUSER as u64;
    }
    let stdio = stdio::open(stdio_mode)?;
    let seccomp = seccomp_profile(&spec)
        .map(|p| seccomp_cache::compile(p, &crate::paths::state_root().join("seccomp")))
        .transpose()
        .map_err(|e| ContainerError::Invalid(crate::report::chain(&e)))?;
    Ok(ClonePlan {
        spec,
        root,
        new_namespaces,
        cgroupns: true,
        own_netns,
        joined_netns,
        stdio,
        seccomp,
        gate: None,
        console: None,
        pause_after_mounts: false,
        pdeathsig: true,
        keep_fds: 0,
        always_wait: network.is_some_and(|n| n.needs_attach()),
    })
}

/// The OCI `create`: the spec's namespaces, our caller's streams, a start gate in the state directory,
/// a pause for the runtime's hooks when the spec has any, nothing tied to this process.
pub(super) fn oci_plan(
    spec: Spec,
    root: InitRoot,
    namespaces: &Namespaces,
    options: &OciOptions,
) -> Result<ClonePlan, ContainerError> {
    let new = namespaces.new;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // The terminal is made by init in the container's own devpts; without a console socket the job uses
    // our caller's streams (a terminal, when it is one).
    let console = options.console_socket.clone().filter(|_| terminal);
    let stdio = stdio::open(StdioMode::Inherit)?;
    let gate = gate::listen(&options.state_dir).map_err(ContainerError::io(
        "cannot make the start gate in",
        &options.state_dir,
    ))?;
    // A bundle's runtime has no store to keep compiled profiles in.
    let seccomp = seccomp_profile(&spec)
        .map(seccomp::compile)
        .transpose()
        .map_err(|e| ContainerError::Invalid(crate::report::chain(&e)))?;
    let pause_after_mounts = has_runtime_hooks(spec.hooks().as_ref());
    Ok(ClonePlan {
        spec,
        root,
        new_namespaces: new & !NEWCGROUP,
        cgroupns: new & NEWCGROUP != 0,
        own_netns: new & NEWNET != 0,
        joined_netns: None,
        stdio,
        seccomp,
        gate: Some(gate),
        console,
        pause_after_mounts,
        pdeathsig: false,
        keep_fds: options.preserve_fds,
        always_wait: true,
    })
}

fn seccomp_profile(spec: &Spec) -> Option<&LinuxSeccomp> {
    spec.linux().as_ref().and_then(|l| l.seccomp().as_ref())
}

/// The hooks the runtime runs between init's mounts and pivot_root (`prestart`, `createRuntime`).
#[allow(deprecated)]
fn has_runtime_hooks(hooks: Option<&Hooks>) -> bool {
    hooks.is_some_and(|h| {
        h.prestart().as_ref().is_some_and(|l| !l.is_empty())
            || h.create_runtime().as_ref().is_some_and(|l| !l.is_empty())
    })
}
