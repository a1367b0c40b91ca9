//! `ContainerBuilder`: the one complicated object, set up in sentences and checked in `build()`.
//!
//! ```no_run
//! # use runtime::container::*;
//! # fn f(spec: oci_spec::runtime::Spec, layers: Vec<std::path::PathBuf>) -> Result<(), ContainerError> {
//! let status = ContainerBuilder::new("abc123").spec(spec).rootfs(layers).build()?.start()?.wait()?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{MountBuilder, Spec};

use super::cgroup::CgroupPlacement;
use super::init::{self, InitContext};
use super::message::{Channel, Message};
use super::scratch::ScratchDir;
use super::supervise::{Container, SignalGuard};
use super::{ContainerError, StdioMode, mounts, spawn, stdio};
use crate::net::Network;
use crate::rootfs::Rootfs;

pub struct ContainerBuilder {
    id: String,
    spec: Option<Spec>,
    layers: Option<Vec<PathBuf>>,
    state_root: Option<PathBuf>,
    cgroup: Option<Box<dyn CgroupPlacement>>,
    stdio: StdioMode,
    log_file: Option<PathBuf>,
    grace: Duration,
    network: Option<Network>,
}

/// A container whose scratch directory and files exist, ready to start.
pub struct PreparedContainer {
    spec: Spec,
    files: Vec<(String, String)>,
    rootfs: Rootfs,
    scratch: ScratchDir,
    cgroup: Option<Box<dyn CgroupPlacement>>,
    stdio: StdioMode,
    log_file: Option<PathBuf>,
    grace: Duration,
    network: Option<Network>,
}

impl ContainerBuilder {
    /// `id` names the scratch directory `<state_root>/containers/<id>/`.
    pub fn new(id: impl Into<String>) -> ContainerBuilder {
        ContainerBuilder {
            id: id.into(),
            spec: None,
            layers: None,
            state_root: None,
            cgroup: None,
            stdio: StdioMode::Auto,
            log_file: None,
            grace: Duration::from_secs(10),
            network: None,
        }
    }

    pub fn spec(mut self, spec: Spec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// The image's layer directories, bottom to top.
    pub fn rootfs(mut self, layer_dirs: Vec<PathBuf>) -> Self {
        self.layers = Some(layer_dirs);
        self
    }

    /// Where `containers/` lives; `paths::state_root()` by default.
    pub fn state_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.state_root = Some(root.into());
        self
    }

    pub fn cgroup(mut self, placement: Box<dyn CgroupPlacement>) -> Self {
        self.cgroup = Some(placement);
        self
    }

    pub fn stdio(mut self, mode: StdioMode) -> Self {
        self.stdio = mode;
        self
    }

    /// Also write the job's output, line by line, to this file (appended).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// The job's network (`runtime::net`); without one the job gets a private loopback-only namespace.
    pub fn network(mut self, network: Network) -> Self {
        self.network = Some(network);
        self
    }

    /// How long a stop signal may take before SIGKILL (10 s by default).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Checks the settings, creates the scratch directory and the files bound into the container.
    pub fn build(self) -> Result<PreparedContainer, ContainerError> {
        let mut spec = self
            .spec
            .ok_or_else(|| ContainerError::Invalid("no spec: call .spec(..)".into()))?;
        let has_args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .is_some_and(|a| !a.is_empty());
        if !has_args {
            return Err(ContainerError::Invalid(
                "the spec has no command to run".into(),
            ));
        }
        let layers = self.layers.ok_or_else(|| {
            ContainerError::Invalid("no root filesystem: call .rootfs(..)".into())
        })?;
        let state_root = self.state_root.unwrap_or_else(crate::paths::state_root);
        let scratch = ScratchDir::create(&state_root, &self.id)?;
        let rootfs = Rootfs::new(layers, scratch.path())?;
        rootfs.prepare()?;
        let staging = scratch.path().join(mounts::STAGING);
        std::fs::create_dir(&staging).map_err(ContainerError::io("cannot create", &staging))?;
        let files = etc_files(&mut spec, &staging, self.network.as_ref())?;
        Ok(PreparedContainer {
            spec,
            files,
            rootfs,
            scratch,
            cgroup: self.cgroup,
            stdio: self.stdio,
            log_file: self.log_file,
            grace: self.grace,
            network: self.network,
        })
    }
}

/// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (name, contents), bound into the container unless
/// the spec already mounts something there. Init writes them into its staging tmpfs, not to disk.
fn etc_files(
    spec: &mut Spec,
    staging: &Path,
    network: Option<&Network>,
) -> Result<Vec<(String, String)>, ContainerError> {
    let hostname = spec.hostname().clone().unwrap_or_else(|| "dstack".into());
    let (hosts, resolv) = match network {
        Some(net) => (net.hosts(&hostname), net.resolv_conf()),
        None => (
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
            ),
            // A loopback-only network cannot reach the host's local resolver; keep the others.
            std::fs::read_to_string("/etc/resolv.conf")
                .unwrap_or_default()
                .lines()
                .filter(|l| !(l.starts_with("nameserver 127.") || l.starts_with("nameserver ::1")))
                .map(|l| format!("{l}\n"))
                .collect(),
        ),
    };
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let mut files = Vec::new();
    for (name, text) in [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ] {
        let dest = PathBuf::from("/etc").join(name);
        if mounts.iter().any(|m| m.destination() == &dest) {
            continue;
        }
        let path = staging.join(mounts::STAGED_FILES).join(name);
        files.push((name.to_string(), text));
        let m = MountBuilder::default()
            .destination(dest)
            .typ("bind")
            .source(path)
            .options(vec!["rbind".to_string(), "rprivate".to_string()])
            .build()
            .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    Ok(files)
}

/// With a terminal, `TERM` as the user's terminal has it (Docker's `xterm` without one), unless set.
fn set_term(spec: &mut Spec) {
    let Some(process) = spec.process_mut().as_mut() else {
        return;
    };
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push(format!(
            "TERM={}",
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into())
        ));
        process.set_env(Some(env));
    }
}

fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny")
}

impl PreparedContainer {
    /// Clones init into its namespaces (and cgroup), lets it set up, and returns once the job has
    /// exec'd; a failure inside comes back as an error naming the cause.
    pub fn start(mut self) -> Result<Container, ContainerError> {
        let own_netns = self.network.as_ref().is_none_or(|n| n.needs_netns());
        let namespaces = if own_netns {
            spawn::NAMESPACES
        } else {
            spawn::NAMESPACES & !(libc::CLONE_NEWNET as u64)
        };
        let stdio = stdio::open(self.stdio)?;
        if matches!(stdio.parent, stdio::ParentStdio::Pty { .. }) {
            set_term(&mut self.spec);
        }
        let (channel, init_end) = Channel::pair()?;
        let log = match &self.log_file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(ContainerError::io("cannot open the log file", path))?,
            ),
            None => None,
        };
        let signals = SignalGuard::new()?;
        let clone_fd = self.cgroup.as_ref().and_then(|c| c.dir_fd()).map(|fd| {
            use std::os::fd::AsRawFd;
            fd.as_raw_fd()
        });
        let ctx = InitContext {
            staging: self.scratch.path().join(mounts::STAGING),
            files: self.files,
            spec: self.spec,
            rootfs: self.rootfs,
            channel: init_end,
            stdio: stdio.child,
            rootless: crate::paths::in_child_user_namespace(),
            setgroups_allowed: setgroups_allowed(),
            unshare_cgroupns: clone_fd.is_none(),
            wait_for_go: (self.cgroup.is_some() && clone_fd.is_none()) || self.network.is_some(),
            own_netns,
        };
        let flags = namespaces
            | if clone_fd.is_some() {
                libc::CLONE_NEWCGROUP as u64
            } else {
                0
            };
        let mut ctx = ctx;
        let spawned = match spawn::clone_child(flags, clone_fd, || init::run(&ctx)) {
            // A cgroup clone3 cannot start in (a v2 cgroup with processes of its own, an old kernel):
            // clone plainly and let the cgroup take the pid afterwards.
            Err(ContainerError::Clone(e)) if clone_fd.is_some() => {
                tracing::debug!(
                    "clone3 into the cgroup failed ({e}); placing init after the clone"
                );
                ctx.unshare_cgroupns = true;
                ctx.wait_for_go = true;
                spawn::clone_child(namespaces, None, || init::run(&ctx)).map(|pid| (pid, false))
            }
            other => other.map(|pid| (pid, clone_fd.is_some())),
        };
        let (pid, placed) = spawned?;
        let need_go = ctx.wait_for_go;
        drop(stdio.child_ends);
        let mut container = Container {
            pid,
            channel,
            stdio: stdio.parent,
            log,
            grace: self.grace,
            signals,
            reaped: false,
            cgroup: self.cgroup,
            network: self.network,
            scratch: self.scratch,
        };
        if let Some(net) = container.network.as_mut() {
            net.attach(pid)?;
        }
        if let (false, Some(c)) = (placed, &container.cgroup) {
            c.add_pid(pid).map_err(ContainerError::Cgroup)?;
        }
        if need_go {
            container
                .channel
                .send(&Message::Go)
                .map_err(ContainerError::Channel)?;
        }
        loop {
            match container.channel.recv().map_err(ContainerError::Channel)? {
                Some(Message::Rootfs {
                    driver,
                    fallback_reason: Some(why),
                }) => {
                    tracing::info!("root filesystem: {driver} (overlay not used: {why})")
                }
                Some(Message::Rootfs { driver, .. }) => {
                    tracing::debug!("root filesystem: {driver}")
                }
                Some(Message::Started) => {
                    if let Some(net) = container.network.as_mut() {
                        net.start_forwarding()?;
                    }
                    return Ok(container);
                }
                Some(Message::Failed { message, exit_code }) => {
                    return Err(ContainerError::Start { message, exit_code });
                }
                Some(_) => {}
                None => {
                    let status = container.wait()?;
                    return Err(ContainerError::Start {
                        message: format!(
                            "the container's init exited during set-up (status {})",
                            status.code
                        ),
                        exit_code: 125,
                    });
                }
            }
        }
    }

    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }
}
