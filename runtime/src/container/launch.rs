//! Starting a prepared container. One clone path for both ways a container lives:
//! - [`PreparedContainer::start`]: dstack's supervised run (init dies with us; output streamed here);
//! - [`PreparedContainer::create`]: the OCI `create` (the spec's namespaces and id maps, hooks, init and the
//!   job left waiting at the start gate, nothing tied to this process).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::Duration;

use oci_spec::runtime::{Hooks, Spec};

use super::builder::{OciOptions, PreparedContainer, PreparedRoot, set_term, setgroups_allowed};
use super::cgroup::CgroupPlacement;
use super::hooks::{self, HookPoint};
use super::idmap::{self, IdMap};
use super::init::{self, InitContext, InitRoot};
use super::message::{Channel, Message};
use super::scratch::ScratchDir;
use super::stdio::ParentStdio;
use super::supervise::{Container, SignalGuard};
use super::{ContainerError, StdioMode, gate, mounts, seccomp, seccomp_cache, spawn, stdio};
use crate::net::Network;

const NEWNET: u64 = libc::CLONE_NEWNET as u64;
const NEWUSER: u64 = libc::CLONE_NEWUSER as u64;
const NEWCGROUP: u64 = libc::CLONE_NEWCGROUP as u64;
const NEWPID: u64 = libc::CLONE_NEWPID as u64;

/// Init, just cloned.
struct Cloned {
    pid: i32,
    channel: Channel,
    stdio: ParentStdio,
    /// clone3 started init in its cgroup.
    placed: bool,
    need_go: bool,
    user_maps: Option<(Vec<IdMap>, Vec<IdMap>)>,
    pause_after_mounts: bool,
}

/// What outlives the clone on this side.
struct Kept {
    cgroup: Option<Box<dyn CgroupPlacement>>,
    network: Option<Network>,
    scratch: Option<ScratchDir>,
    grace: Duration,
    oci: Option<OciOptions>,
    hooks: Option<Hooks>,
}

/// A container created by the OCI lifecycle: init runs, the job waits at the start gate.
#[derive(Debug)]
pub struct Created {
    pid: i32,
}

impl Created {
    /// Init's pid as the host sees it (the state's `pid`).
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

/// Kills and reaps init unless disarmed: every error path of `create` leaves nothing running.
struct KillGuard(Option<i32>);

impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// The id maps of a new user namespace: the spec's, or dstack's rootless model without them.
pub(super) fn maps_for(spec: &Spec) -> (Vec<IdMap>, Vec<IdMap>) {
    let linux = spec.linux().as_ref();
    let uids: Vec<IdMap> = linux
        .and_then(|l| l.uid_mappings().as_ref())
        .map(|m| m.iter().map(IdMap::from).collect())
        .unwrap_or_default();
    let gids: Vec<IdMap> = linux
        .and_then(|l| l.gid_mappings().as_ref())
        .map(|m| m.iter().map(IdMap::from).collect())
        .unwrap_or_default();
    if uids.is_empty() && gids.is_empty() {
        return idmap::default_maps();
    }
    (uids, gids)
}

impl PreparedContainer {
    /// Clones init into its namespaces (and cgroup), lets it set up, and returns once the job has
    /// exec'd; a failure inside comes back as an error naming the cause.
    pub fn start(self) -> Result<Container, ContainerError> {
        if self.oci.is_some() {
            return Err(ContainerError::Invalid(
                "an OCI container starts with create()".into(),
            ));
        }
        let log = match &self.log_file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(crate::private::FILE_MODE)
                    .open(path)
                    .map_err(ContainerError::io("cannot open the log file", path))?,
            ),
            None => None,
        };
        let signals = SignalGuard::new()?;
        let (cloned, kept) = self.clone_init()?;
        let mut container = Container {
            pid: cloned.pid,
            channel: cloned.channel,
            stdio: cloned.stdio,
            log,
            grace: kept.grace,
            signals,
            reaped: false,
            exiting: false,
            cgroup: kept.cgroup,
            network: kept.network,
            scratch: kept.scratch,
        };
        set_up_outside(
            container.pid,
            cloned.placed,
            None,
            container.network.as_mut(),
            container.cgroup.as_deref(),
        )?;
        if cloned.need_go {
            container
                .channel
                .send(&Message::Go { state: None })
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

    /// The OCI `create`: clones init with the spec's namespaces, writes the id maps, places the cgroup,
    /// runs the `prestart` and `createRuntime` hooks once the mounts are done, and returns when the job
    /// waits at the start gate. A failure kills what was started; the cgroup is removed with it.
    pub fn create(self) -> Result<Created, ContainerError> {
        if self.oci.is_none() {
            return Err(ContainerError::Invalid(
                "create() is the OCI lifecycle: call .oci(..) on the builder".into(),
            ));
        }
        let (cloned, mut kept) = self.clone_init()?;
        let pid = cloned.pid;
        let mut guard = KillGuard(Some(pid));
        set_up_outside(
            pid,
            cloned.placed,
            cloned.user_maps.as_ref(),
            None,
            kept.cgroup.as_deref(),
        )?;
        let oci = kept.oci.take().expect("checked above");
        let mut state = oci.state.clone();
        state.pid = Some(pid);
        state.status = "creating".into();
        let json = state.json();
        let channel = cloned.channel;
        channel
            .send(&Message::Go {
                state: Some(json.clone()),
            })
            .map_err(ContainerError::Channel)?;
        let mut hooks_done = !cloned.pause_after_mounts;
        loop {
            match channel.recv().map_err(ContainerError::Channel)? {
                Some(Message::Mounted) if !hooks_done => {
                    hooks::run(kept.hooks.as_ref(), HookPoint::Prestart, &json)
                        .and_then(|()| {
                            hooks::run(kept.hooks.as_ref(), HookPoint::CreateRuntime, &json)
                        })
                        .map_err(|e| ContainerError::Invalid(crate::report::chain(&e)))?;
                    hooks_done = true;
                    channel
                        .send(&Message::Go { state: None })
                        .map_err(ContainerError::Channel)?;
                }
                Some(Message::Created) => break,
                Some(Message::Failed { message, exit_code }) => {
                    return Err(ContainerError::Start { message, exit_code });
                }
                Some(_) => {}
                None => {
                    return Err(ContainerError::Start {
                        message: "the container's init exited during set-up".into(),
                        exit_code: 125,
                    });
                }
            }
        }
        guard.0 = None;
        // The cgroup belongs to the container now: `delete` removes it.
        std::mem::forget(kept.cgroup.take());
        Ok(Created { pid })
    }

    fn clone_init(self) -> Result<(Cloned, Kept), ContainerError> {
        let PreparedContainer {
            mut spec,
            root,
            cgroup,
            stdio: mode,
            log_file: _,
            grace,
            mut network,
            oci,
            namespaces,
        } = self;
        // A namespace made ahead is collected first: no thread may run at the clone.
        if let Some(net) = network.as_mut() {
            net.ready()?;
        }
        let joined_netns = network
            .as_ref()
            .and_then(|n| n.joined_netns())
            .map(|fd| fd.as_raw_fd());
        let (flags, own_netns, cgroupns) = match &oci {
            Some(_) => {
                let new = namespaces.new;
                (new & !NEWCGROUP, new & NEWNET != 0, new & NEWCGROUP != 0)
            }
            None => {
                let own =
                    joined_netns.is_none() && network.as_ref().is_none_or(|n| n.needs_netns());
                let flags = if own {
                    spawn::NAMESPACES
                } else {
                    spawn::NAMESPACES & !NEWNET
                };
                (flags, own, true)
            }
        };
        let user_ns = flags & NEWUSER != 0;
        let user_maps = user_ns.then(|| maps_for(&spec));
        let hooks = spec.hooks().clone();
        let console = oci.as_ref().and_then(|o| o.console_socket.clone());
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        // An OCI container's terminal is made by init in its own devpts; without a console socket the job
        // uses our caller's streams (a terminal, when it is one).
        let console = console.filter(|_| terminal);
        let mode = if oci.is_some() {
            StdioMode::Inherit
        } else {
            mode
        };
        let stdio = stdio::open(mode)?;
        if oci.is_none() && matches!(stdio.parent, ParentStdio::Pty { .. }) {
            set_term(&mut spec);
        }
        let parent_stdio = stdio.parent;
        let (channel, init_end) = Channel::pair()?;
        let clone_fd = cgroup
            .as_ref()
            .and_then(|c| c.dir_fd())
            .map(|fd| fd.as_raw_fd());
        let gate: Option<OwnedFd> = match &oci {
            Some(o) => Some(gate::listen(&o.state_dir).map_err(ContainerError::io(
                "cannot make the start gate in",
                &o.state_dir,
            ))?),
            None => None,
        };
        // dstack's runs keep compiled profiles in the state root; an OCI bundle's runtime has no store.
        let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(profile) if oci.is_none() => Some(seccomp_cache::compile(
                profile,
                &crate::paths::state_root().join("seccomp"),
            )),
            Some(profile) => Some(seccomp::compile(profile)),
            None => None,
        }
        .transpose()
        .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        namespaces.enter_pid_for_children()?;
        #[allow(deprecated)]
        let pause_after_mounts = oci.is_some()
            && hooks.as_ref().is_some_and(|h| {
                h.prestart().as_ref().is_some_and(|l| !l.is_empty())
                    || h.create_runtime().as_ref().is_some_and(|l| !l.is_empty())
            });
        let (root, scratch) = match root {
            PreparedRoot::Layers {
                files,
                rootfs,
                scratch,
            } => (
                InitRoot::Layers {
                    rootfs,
                    staging: scratch.path().join(mounts::STAGING),
                    files,
                },
                Some(scratch),
            ),
            PreparedRoot::Directory { path, readonly } => {
                (InitRoot::Directory { path, readonly }, None)
            }
        };
        // Without clone3's placement, init moves itself in (fast), unless it starts in a user namespace of
        // its own, where writing the host's cgroup files is the supervisor's job.
        let join_files = match (&cgroup, clone_fd, user_ns) {
            (Some(c), None, false) => c.self_join_files().map_err(ContainerError::Cgroup)?,
            _ => Vec::new(),
        };
        let self_joins = !join_files.is_empty();
        let setgroups = match &user_maps {
            Some((_, gids)) => !idmap::denies_setgroups(gids),
            None => setgroups_allowed(),
        };
        let mut ctx = InitContext {
            root,
            spec,
            channel: init_end,
            stdio: stdio.child,
            rootless: crate::paths::in_child_user_namespace() || user_ns,
            setgroups_allowed: setgroups,
            unshare_cgroupns: cgroupns && clone_fd.is_none(),
            wait_for_go: (cgroup.is_some() && clone_fd.is_none() && !self_joins)
                || network.as_ref().is_some_and(|n| n.needs_attach())
                || user_ns
                || oci.is_some(),
            own_netns,
            pdeathsig: oci.is_none(),
            join: namespaces
                .join
                .iter()
                .filter(|(f, _)| *f != NEWPID)
                .map(|(f, fd)| (*f, fd.as_raw_fd()))
                .chain(joined_netns.map(|fd| (NEWNET, fd)))
                .collect(),
            pause_after_mounts,
            seccomp,
            gate: gate.as_ref().map(|g| g.as_raw_fd()),
            console,
            new_userns: user_ns,
            join_cgroup: join_files.iter().map(|f| f.as_raw_fd()).collect(),
            keep_fds: oci.as_ref().map_or(0, |o| o.preserve_fds),
        };
        let with_cgroupns = if clone_fd.is_some() && cgroupns {
            NEWCGROUP
        } else {
            0
        };
        let spawned = match spawn::clone_child(flags | with_cgroupns, clone_fd, || init::run(&ctx))
        {
            // A cgroup clone3 cannot start in (a v2 cgroup with processes of its own, an old kernel):
            // clone plainly and let the cgroup take the pid afterwards.
            Err(ContainerError::Clone(e)) if clone_fd.is_some() => {
                tracing::debug!(
                    "clone3 into the cgroup failed ({e}); placing init after the clone"
                );
                ctx.unshare_cgroupns = cgroupns;
                ctx.wait_for_go = true;
                spawn::clone_child(flags, None, || init::run(&ctx)).map(|pid| (pid, false))
            }
            other => other.map(|pid| (pid, clone_fd.is_some() || self_joins)),
        };
        let (pid, placed) = spawned?;
        let need_go = ctx.wait_for_go;
        // Our copies of init's ends: its channel (so that its exit reads as end of file), stdio, gate.
        drop(ctx);
        drop(join_files);
        drop(stdio.child_ends);
        drop(gate);
        Ok((
            Cloned {
                pid,
                channel,
                stdio: parent_stdio,
                placed,
                need_go,
                user_maps,
                pause_after_mounts,
            },
            Kept {
                cgroup,
                network,
                scratch,
                grace,
                oci,
                hooks,
            },
        ))
    }

    pub fn scratch_dir(&self) -> Option<&std::path::Path> {
        match &self.root {
            PreparedRoot::Layers { scratch, .. } => Some(scratch.path()),
            PreparedRoot::Directory { .. } => None,
        }
    }
}

/// While init waits for its go: id maps, network, cgroup.
fn set_up_outside(
    pid: i32,
    placed: bool,
    maps: Option<&(Vec<IdMap>, Vec<IdMap>)>,
    network: Option<&mut Network>,
    cgroup: Option<&dyn CgroupPlacement>,
) -> Result<(), ContainerError> {
    if let Some((uids, gids)) = maps {
        idmap::write(pid, uids, gids)?;
    }
    if let Some(net) = network {
        net.attach(pid)?;
    }
    if let (false, Some(c)) = (placed, cgroup) {
        c.add_pid(pid).map_err(ContainerError::Cgroup)?;
    }
    Ok(())
}
