//! Starting a prepared container. Each mode decides once how init is cloned and what it is told (a
//! `ClonePlan`, see `clone_plan`); one clone path then runs either plan:
//! - [`PreparedContainer<Supervised>::start`]: dstack's supervised run (init dies with us; output streamed
//!   here);
//! - [`PreparedContainer<Oci>::create`]: the OCI `create` (the spec's namespaces and id maps, hooks, init and
//!   the job left waiting at the start gate, nothing tied to this process).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use oci_spec::runtime::{Hooks, Spec};

use super::builder::{Oci, PreparedContainer, Supervised, SupervisedReady, setgroups_allowed};
use super::clone_plan::{ClonePlan, oci_plan, supervised_plan};
use super::hooks::{self, HookPoint};
use super::idmap::{self, IdMap};
use super::init::{self, InitContext, InitRoot};
use super::message::{self, ChannelError, FromInit, SupervisorEnd, ToInit};
use super::namespaces::Namespaces;
use super::stdio::{ParentStdio, Stdio};
use super::steps::InContainerStep;
use super::supervise::{Container, SignalGuard};
use super::{ContainerError, mounts, spawn};
use crate::cgroup::CgroupPlacement;
use crate::net::Network;

const NEWNET: u64 = libc::CLONE_NEWNET as u64;
const NEWUSER: u64 = libc::CLONE_NEWUSER as u64;
const NEWCGROUP: u64 = libc::CLONE_NEWCGROUP as u64;
const NEWPID: u64 = libc::CLONE_NEWPID as u64;

/// Init, just cloned.
struct Cloned {
    pid: i32,
    channel: SupervisorEnd,
    stdio: ParentStdio,
    /// Init is in its cgroup already (clone3 started it there, or it moves itself in).
    placed: bool,
    need_go: bool,
    user_maps: Option<(Vec<IdMap>, Vec<IdMap>)>,
    /// The new user namespace denies setgroups: the job keeps the groups it is started with.
    keep_groups: bool,
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

impl PreparedContainer<Supervised> {
    /// Clones init into its namespaces (and cgroup), lets it set up, and returns once the job has
    /// exec'd; a failure inside comes back as an error naming the cause.
    pub fn start(self) -> Result<Container, ContainerError> {
        let PreparedContainer {
            spec,
            cgroup,
            namespaces,
            steps,
            mode,
        } = self;
        let SupervisedReady {
            files,
            rootfs,
            scratch,
            stdio,
            log_file,
            grace,
            mut network,
        } = mode;
        let log = match &log_file {
            Some(path) => Some(open_log(path)?),
            None => None,
        };
        let signals = SignalGuard::new()?;
        // A namespace made ahead is collected first: no thread may run at the clone.
        if let Some(net) = network.as_mut() {
            net.ready()?;
        }
        let root = InitRoot::Layers {
            rootfs,
            staging: scratch.path().join(mounts::STAGING),
            files,
        };
        let plan = supervised_plan(spec, root, stdio, network.as_ref())?;
        let cloned = clone_init(plan, cgroup.as_deref(), &namespaces, steps)?;
        let (user_maps, keep_groups) = (cloned.user_maps, cloned.keep_groups);
        let mut container = Container {
            pid: cloned.pid,
            channel: cloned.channel,
            stdio: cloned.stdio,
            log,
            grace,
            signals,
            reaped: false,
            exiting: false,
            cgroup,
            network,
            scratch: Some(scratch),
        };
        set_up_outside(
            container.pid,
            cloned.placed,
            user_maps.as_ref(),
            keep_groups,
            container.network.as_mut(),
            container.cgroup.as_deref(),
        )?;
        if cloned.need_go {
            container
                .channel
                .send(&ToInit::Go { state: None })
                .map_err(ContainerError::Channel)?;
        }
        await_started(container)
    }
}

impl PreparedContainer<Oci> {
    /// The OCI `create`: clones init with the spec's namespaces, writes the id maps, places the cgroup,
    /// runs the `prestart` and `createRuntime` hooks once the mounts are done, and returns when the job
    /// waits at the start gate. A failure kills what was started; the cgroup is removed with it.
    pub fn create(self) -> Result<Created, ContainerError> {
        let PreparedContainer {
            spec,
            cgroup,
            namespaces,
            steps,
            mode: oci,
        } = self;
        let hooks = spec.hooks().clone();
        let root = InitRoot::Directory {
            path: oci.root,
            readonly: oci.readonly,
        };
        let plan = oci_plan(spec, root, &namespaces, &oci.options)?;
        let pause_after_mounts = plan.pause_after_mounts;
        let cloned = clone_init(plan, cgroup.as_deref(), &namespaces, steps)?;
        let pid = cloned.pid;
        let mut guard = KillGuard(Some(pid));
        set_up_outside(
            pid,
            cloned.placed,
            cloned.user_maps.as_ref(),
            cloned.keep_groups,
            None,
            cgroup.as_deref(),
        )?;
        let mut state = oci.options.state;
        state.pid = Some(pid);
        state.status = "creating".into();
        let json = state.json();
        cloned
            .channel
            .send(&ToInit::Go {
                state: Some(json.clone()),
            })
            .map_err(ContainerError::Channel)?;
        await_created(&cloned.channel, hooks.as_ref(), &json, pause_after_mounts)?;
        guard.0 = None;
        // The cgroup belongs to the container now: `delete` removes it.
        std::mem::forget(cgroup);
        Ok(Created { pid })
    }
}

fn open_log(path: &Path) -> Result<std::fs::File, ContainerError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::private::FILE_MODE)
        .open(path)
        .map_err(ContainerError::io("cannot open the log file", path))
}

/// Clones init as `plan` says, into `cgroup` where clone3 can; `namespaces` are the spec's to join.
fn clone_init(
    plan: ClonePlan,
    cgroup: Option<&dyn CgroupPlacement>,
    namespaces: &Namespaces,
    steps: Vec<&'static dyn InContainerStep>,
) -> Result<Cloned, ContainerError> {
    let user_ns = plan.new_namespaces & NEWUSER != 0;
    let user_maps = user_ns.then(|| maps_for(&plan.spec));
    let (channel, init_end) = message::pair()?;
    let clone_fd = cgroup.and_then(|c| c.dir_fd()).map(|fd| fd.as_raw_fd());
    namespaces.enter_pid_for_children()?;
    // Without clone3's placement, init moves itself in (fast), unless it starts in a user namespace of
    // its own, where writing the host's cgroup files is the supervisor's job.
    let join_files = match (cgroup, clone_fd, user_ns) {
        (Some(c), None, false) => c.self_join_files().map_err(ContainerError::Cgroup)?,
        _ => Vec::new(),
    };
    let self_joins = !join_files.is_empty();
    let keep_groups = idmap::keeps_original_groups(&plan.spec);
    let setgroups = match &user_maps {
        Some((_, gids)) => !idmap::denies_setgroups(gids, keep_groups),
        None => setgroups_allowed() && !keep_groups,
    };
    let Stdio {
        child,
        parent,
        child_ends,
    } = plan.stdio;
    let mut ctx = InitContext {
        root: plan.root,
        spec: plan.spec,
        channel: init_end,
        stdio: child,
        rootless: crate::paths::in_child_user_namespace() || user_ns,
        setgroups_allowed: setgroups,
        unshare_cgroupns: plan.cgroupns && clone_fd.is_none(),
        wait_for_go: (cgroup.is_some() && clone_fd.is_none() && !self_joins)
            || user_ns
            || plan.always_wait,
        own_netns: plan.own_netns,
        pdeathsig: plan.pdeathsig,
        join: namespaces
            .join
            .iter()
            .filter(|(f, _)| *f != NEWPID)
            .map(|(f, fd)| (*f, fd.as_raw_fd()))
            .chain(plan.joined_netns.map(|fd| (NEWNET, fd)))
            .collect(),
        pause_after_mounts: plan.pause_after_mounts,
        seccomp: plan.seccomp,
        gate: plan.gate.as_ref().map(|g| g.as_raw_fd()),
        console: plan.console,
        new_userns: user_ns,
        join_cgroup: join_files.iter().map(|f| f.as_raw_fd()).collect(),
        keep_fds: plan.keep_fds,
        steps,
    };
    let (pid, placed) = spawn_init(
        &mut ctx,
        plan.new_namespaces,
        clone_fd,
        plan.cgroupns,
        self_joins,
    )?;
    let need_go = ctx.wait_for_go;
    // Our copies of init's ends: its channel (so that its exit reads as end of file), stdio, gate.
    drop(ctx);
    drop(join_files);
    drop(child_ends);
    drop(plan.gate);
    Ok(Cloned {
        pid,
        channel,
        stdio: parent,
        placed,
        need_go,
        user_maps,
        keep_groups,
    })
}

/// Clones init, born in its cgroup when there is a v2 directory for clone3; returns its pid and whether
/// it is in its cgroup without the supervisor's help.
fn spawn_init(
    ctx: &mut InitContext,
    flags: u64,
    clone_fd: Option<RawFd>,
    cgroupns: bool,
    self_joins: bool,
) -> Result<(i32, bool), ContainerError> {
    let with_cgroupns = if clone_fd.is_some() && cgroupns {
        NEWCGROUP
    } else {
        0
    };
    match spawn::clone_child(flags | with_cgroupns, clone_fd, || init::run(ctx)) {
        // A cgroup clone3 cannot start in (a v2 cgroup with processes of its own, an old kernel):
        // clone plainly and let the cgroup take the pid afterwards.
        Err(ContainerError::Clone(e)) if clone_fd.is_some() => {
            tracing::debug!("clone3 into the cgroup failed ({e}); placing init after the clone");
            ctx.unshare_cgroupns = cgroupns;
            ctx.wait_for_go = true;
            spawn::clone_child(flags, None, || init::run(ctx)).map(|pid| (pid, false))
        }
        other => other.map(|pid| (pid, clone_fd.is_some() || self_joins)),
    }
}

/// While init waits for its go: id maps, network, cgroup.
fn set_up_outside(
    pid: i32,
    placed: bool,
    maps: Option<&(Vec<IdMap>, Vec<IdMap>)>,
    keep_groups: bool,
    network: Option<&mut Network>,
    cgroup: Option<&dyn CgroupPlacement>,
) -> Result<(), ContainerError> {
    if let Some((uids, gids)) = maps {
        idmap::write(pid, uids, gids, keep_groups)?;
    }
    if let Some(net) = network {
        net.attach(pid)?;
    }
    if let (false, Some(c)) = (placed, cgroup) {
        c.add_pid(pid).map_err(ContainerError::Cgroup)?;
    }
    Ok(())
}

/// Until the job has exec'd (a supervised run): the root filesystem's driver is logged, a failure inside
/// comes back as the error, and any other message is one.
fn await_started(mut container: Container) -> Result<Container, ContainerError> {
    loop {
        match container.channel.recv().map_err(ContainerError::Channel)? {
            Some(FromInit::Rootfs {
                driver,
                fallback_reason: Some(why),
            }) => {
                tracing::info!("root filesystem: {driver} (overlay not used: {why})")
            }
            Some(FromInit::Rootfs { driver, .. }) => {
                tracing::debug!("root filesystem: {driver}")
            }
            Some(FromInit::Started) => {
                if let Some(net) = container.network.as_mut() {
                    net.start_forwarding()?;
                }
                return Ok(container);
            }
            Some(FromInit::Failed { message, exit_code }) => {
                return Err(ContainerError::Start { message, exit_code });
            }
            Some(other) => {
                return Err(ContainerError::Channel(ChannelError::unexpected(
                    &other,
                    "starting the job",
                )));
            }
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

/// Until the job waits at the start gate (the OCI `create`), running the runtime's hooks when init
/// pauses after its mounts; any other message is an error.
fn await_created(
    channel: &SupervisorEnd,
    hooks: Option<&Hooks>,
    state: &str,
    pause_after_mounts: bool,
) -> Result<(), ContainerError> {
    let mut hooks_done = !pause_after_mounts;
    loop {
        match channel.recv().map_err(ContainerError::Channel)? {
            Some(FromInit::Mounted) if !hooks_done => {
                hooks::run(hooks, HookPoint::Prestart, state)
                    .and_then(|()| hooks::run(hooks, HookPoint::CreateRuntime, state))
                    .map_err(|e| ContainerError::Invalid(crate::report::chain(&e)))?;
                hooks_done = true;
                channel
                    .send(&ToInit::Go { state: None })
                    .map_err(ContainerError::Channel)?;
            }
            Some(FromInit::Created) => return Ok(()),
            Some(FromInit::Failed { message, exit_code }) => {
                return Err(ContainerError::Start { message, exit_code });
            }
            Some(other) => {
                return Err(ContainerError::Channel(ChannelError::unexpected(
                    &other,
                    "creating the container",
                )));
            }
            None => {
                return Err(ContainerError::Start {
                    message: "the container's init exited during set-up".into(),
                    exit_code: 125,
                });
            }
        }
    }
}
