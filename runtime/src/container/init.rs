//! The container's PID 1: waits for the supervisor's go, sets the container up (namespaces joined, root
//! filesystem, mounts, hostname, createContainer hooks, pivot_root, sysctl, masked paths, loopback), starts
//! the job, then reaps zombies and forwards
//! signals to the job until it exits, and exits with its status. Every step reports failure as a message.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::hooks::{self, HookPoint};
use super::message::{FromInit, InitEnd, ToInit};
use super::process::{self, JobError};
use super::seccomp::SeccompProgram;
use super::stdio::ChildStdio;
use super::steps::InContainerStep;
use super::{console, loopback, mounts, namespaces, spawn, sysctl};
use crate::inroot::{Create, Root, Scope, proc_path};
use crate::rootfs::Rootfs;

/// The root filesystem init mounts.
pub(super) enum InitRoot {
    /// dstack's: the image's layers (overlay or a fallback) under a staging tmpfs that also holds the
    /// files bound into the container (/etc/hosts...).
    Layers {
        rootfs: Rootfs,
        /// Where init mounts its staging tmpfs (`<scratch>/merged`).
        staging: PathBuf,
        files: Vec<(String, String)>,
    },
    /// A ready directory (an OCI bundle's `root.path`), bound onto itself.
    Directory { path: PathBuf, readonly: bool },
}

/// Everything init needs, prepared by the supervisor before the clone.
pub(super) struct InitContext {
    pub root: InitRoot,
    pub spec: Spec,
    pub channel: InitEnd,
    pub stdio: ChildStdio,
    pub rootless: bool,
    pub setgroups_allowed: bool,
    /// Unshare the cgroup namespace after the supervisor placed us (when clone3 did not).
    pub unshare_cgroupns: bool,
    /// Wait for the supervisor's go: it has a cgroup to place us in, id maps or a network to set up first.
    pub wait_for_go: bool,
    /// The job has a network namespace of its own (not the host's), whose `lo` init brings up.
    pub own_netns: bool,
    /// Die with the supervisor (dstack's runs); an OCI container outlives the `create` that made it.
    pub pdeathsig: bool,
    /// Namespaces to join by `setns` (flag, fd opened by the caller), pid excepted (the caller joined it).
    pub join: Vec<(u64, RawFd)>,
    /// Once mounted, say so and wait for a second go while the caller runs its hooks.
    pub pause_after_mounts: bool,
    pub seccomp: Option<SeccompProgram>,
    /// The start gate's listening socket (OCI `create`): the job waits there before exec.
    pub gate: Option<RawFd>,
    /// The console socket to send a terminal of the container's own devpts to (`process.terminal`).
    pub console: Option<PathBuf>,
    /// Init was cloned into a new user namespace (its maps are written before the go).
    pub new_userns: bool,
    /// `cgroup.procs` files init writes `0` to first, moving itself into the job's cgroup (see
    /// `CgroupPlacement::self_join_files`).
    pub join_cgroup: Vec<RawFd>,
    /// Descriptors 3..3+N the job keeps (OCI `--preserve-fds`, `LISTEN_FDS`).
    pub keep_fds: u32,
    /// Other modules' steps, run after the masked and read-only paths.
    pub steps: Vec<&'static dyn InContainerStep>,
}

/// Signals init passes on to the job (every one a process may catch but those of faults).
const FORWARDED: [libc::c_int; 18] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGALRM,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGPWR,
    libc::SIGURG,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    libc::SIGPIPE,
];

struct Failure {
    message: String,
    exit_code: i32,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            exit_code: 125,
        }
    }
}

/// Init's main; the process ends here.
pub(super) fn run(ctx: &InitContext) -> ! {
    let code = match setup_and_supervise(ctx) {
        Ok(code) => code,
        Err(f) => {
            let _ = ctx.channel.send(&FromInit::Failed {
                message: f.message,
                exit_code: f.exit_code,
            });
            f.exit_code
        }
    };
    // SAFETY: ending this cloned process without running the parent's atexit handlers or flushing its
    // copied stdio buffers twice.
    unsafe { libc::_exit(code) }
}

fn setup_and_supervise(ctx: &InitContext) -> Result<i32, Failure> {
    if ctx.pdeathsig {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    }
    // (getppid() is 0 in a new pid namespace; should the supervisor already be gone, the channel's end
    // of file below says so.)
    // Out of the terminal's process group: the supervisor alone receives ^C and forwards it.
    let _ = nix::unistd::setsid();
    join_cgroup(&ctx.join_cgroup)?;
    let mut state = None;
    if ctx.wait_for_go {
        state = wait_for_go(ctx)?;
    }
    if ctx.new_userns {
        become_namespace_root(ctx.setgroups_allowed)?;
    }
    for (flag, fd) in &ctx.join {
        namespaces::setns(*fd, *flag).map_err(|e| format!("joining a namespace: {e}"))?;
    }
    if ctx.unshare_cgroupns {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("creating the cgroup namespace: {e}"))?;
    }
    let linux = ctx.spec.linux().as_ref();
    let propagation = linux.and_then(|l| l.rootfs_propagation().as_deref());
    mounts::make_private(propagation)?;
    let (root, fuse) = mount_root(ctx)?;
    mounts::mount_all(&ctx.spec, &root, ctx.rootless)?;
    let terminal = match &ctx.console {
        Some(socket) => Some(open_console(ctx, socket, &root)?),
        None => None,
    };
    if let Some(name) = ctx.spec.hostname() {
        nix::unistd::sethostname(name).map_err(|e| format!("setting the hostname: {e}"))?;
    }
    if let Some(name) = ctx.spec.domainname() {
        set_domainname(name).map_err(|e| format!("setting the domain name: {e}"))?;
    }
    if ctx.pause_after_mounts {
        let _ = ctx.channel.send(&FromInit::Mounted);
        if let Some(s) = wait_for_go(ctx)? {
            state = Some(s);
        }
    }
    hooks::run(
        ctx.spec.hooks().as_ref(),
        HookPoint::CreateContainer,
        state.as_deref().unwrap_or("{}"),
    )
    .map_err(|e| crate::report::chain(&e))?;
    mounts::pivot(&root, fuse, mounts::propagates(propagation))?;
    if let Some(linux) = linux {
        if let Some(values) = linux.sysctl() {
            sysctl::apply(values)?;
        }
        mounts::mask(linux.masked_paths().as_deref().unwrap_or_default())?;
        mounts::readonly(linux.readonly_paths().as_deref().unwrap_or_default())?;
    }
    // Other modules' steps (the GPU driver's soname links and linker cache): before a read-only root makes
    // /etc/ld.so.cache unwritable.
    for step in &ctx.steps {
        step.run(&ctx.spec)?;
    }
    if let InitRoot::Directory { readonly: true, .. } = ctx.root {
        mounts::readonly_root()?;
    }
    if ctx.own_netns {
        loopback::up().map_err(|e| format!("bringing up the loopback interface: {e}"))?;
    }
    block_forwarded_signals();
    let job = start_job(ctx, state.as_deref(), terminal.as_ref())?;
    let _ = ctx.channel.send(&FromInit::Started);
    let (code, signal) = supervise_job(job);
    end_the_rest();
    let _ = ctx.channel.send(&FromInit::Exited { code, signal });
    Ok(code)
}

/// In a new user namespace our ids are still the creator's, unmapped there unless it mapped itself: switch
/// to the namespace's root, so files init creates (on /dev's tmpfs, say) have an owner the namespace knows.
/// A namespace that maps no root (`user: host` rootless without a subordinate range) maps the creator's
/// ids instead: init keeps them, and its capabilities in the namespace.
fn become_namespace_root(setgroups_allowed: bool) -> Result<(), Failure> {
    if !maps_root("/proc/self/uid_map") || !maps_root("/proc/self/gid_map") {
        return Ok(());
    }
    let root = |e: nix::Error| format!("becoming root of the container's user namespace: {e}");
    let (uid, gid) = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
    nix::unistd::setresgid(gid, gid, gid).map_err(root)?;
    if setgroups_allowed {
        nix::unistd::setgroups(&[]).map_err(root)?;
    }
    nix::unistd::setresuid(uid, uid, uid).map_err(root)?;
    Ok(())
}

/// The map (`/proc/self/uid_map` or `gid_map`) has a line for id 0.
fn maps_root(file: &str) -> bool {
    std::fs::read_to_string(file).is_ok_and(|text| {
        text.lines()
            .any(|line| line.split_whitespace().next() == Some("0"))
    })
}

/// Moves init into the job's cgroup, before it does anything the cgroup should account for.
fn join_cgroup(files: &[RawFd]) -> Result<(), Failure> {
    for &fd in files {
        // SAFETY: a write of one byte from a static buffer to a descriptor the supervisor opened for us;
        // then our copy of it is closed, which nothing else in this process uses.
        let written = unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) };
        let err = std::io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        if written != 1 {
            return Err(format!("joining the job's cgroup: {err}").into());
        }
    }
    Ok(())
}

fn wait_for_go(ctx: &InitContext) -> Result<Option<String>, Failure> {
    match ctx.channel.recv() {
        Ok(Some(ToInit::Go { state })) => Ok(state),
        Ok(None) => Err("the supervisor did not say go".to_string().into()),
        Err(e) => Err(format!("waiting for the supervisor's go: {e}").into()),
    }
}

/// Mounts the root filesystem; returns where, and whether fuse-overlayfs serves it.
fn mount_root(ctx: &InitContext) -> Result<(PathBuf, bool), Failure> {
    match &ctx.root {
        InitRoot::Directory { path, .. } => {
            let shared = ctx
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.rootfs_propagation().as_deref())
                .is_some_and(|p| p.ends_with("shared"));
            mounts::bind_root(path, shared)?;
            Ok((path.clone(), false))
        }
        InitRoot::Layers {
            rootfs,
            staging,
            files,
        } => {
            let (target, top) = mounts::stage(staging, files)?;
            let mounted = rootfs
                .mount(&target, Some(&top))
                .map_err(|e| crate::report::chain(&e))?;
            if mounted.fallback_reason.is_some() {
                // Worth a line at -v; the usual overlay is not worth waking the supervisor for.
                let _ = ctx.channel.send(&FromInit::Rootfs {
                    driver: mounted.driver.to_string(),
                    fallback_reason: mounted.fallback_reason.clone(),
                });
            }
            let fuse = mounted.driver == crate::rootfs::Driver::FuseOverlayfs;
            Ok((mounted.path, fuse))
        }
    }
}

/// A pty of the container's devpts for the job, its master sent to `socket`, its slave bound on
/// /dev/console as runc does.
fn open_console(
    ctx: &InitContext,
    socket: &std::path::Path,
    root: &std::path::Path,
) -> Result<ChildStdio, Failure> {
    let stream = console::connect(socket)?;
    let size = ctx
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.console_size())
        .map(|b| (b.height() as u16, b.width() as u16));
    let root = Root::open(root, Scope::InRoot)
        .map_err(|e| format!("opening the root filesystem {}: {e}", root.display()))?;
    let (slave, n) = console::allocate(&root, &stream, size)?;
    // /dev/console is made and mounted on by descriptor, like every mount target in the root.
    let console = root.make(Path::new("/dev/console"), Create::File);
    let bound = console.map_err(|e| e.to_string()).and_then(|console| {
        nix::mount::mount(
            Some(&proc_path(slave.as_fd())),
            &proc_path(console.as_fd()),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| e.to_string())
    });
    if let Err(e) = bound {
        tracing::debug!("binding the terminal /dev/pts/{n} on /dev/console: {e}");
    }
    // start_job closes it in init once the job has its own copy.
    Ok(ChildStdio::tty(std::os::fd::IntoRawFd::into_raw_fd(slave)))
}

fn set_domainname(name: &str) -> std::io::Result<()> {
    // SAFETY: setdomainname reads `len` bytes from a valid buffer.
    if unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Handlers (PID 1 of a namespace ignores default-action signals) kept blocked, for `sigwaitinfo`.
fn block_forwarded_signals() {
    extern "C" fn noop(_: libc::c_int) {}
    // SAFETY: installing a no-op handler and blocking the same signals; all structs initialised.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED.iter().chain([libc::SIGCHLD].iter()) {
            libc::signal(*sig, noop as *const () as libc::sighandler_t);
            libc::sigaddset(&mut set, *sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Starts the job (sharing init's memory until its exec, or forked when it waits at an OCI start gate)
/// and waits until it has exec'd (its end of the error pipe closes) or failed.
fn start_job(
    ctx: &InitContext,
    state: Option<&str>,
    terminal: Option<&ChildStdio>,
) -> Result<i32, Failure> {
    let stdio = terminal.unwrap_or(&ctx.stdio);
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let process = ctx
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| "the spec has no process".to_string())?;
    let (read_end, write_end) = (err_r.as_raw_fd(), err_w.as_raw_fd());
    // The job's side: set up, exec; on failure the error goes up the pipe. (Raw descriptors only: in a
    // vforked child, dropping init's values would be init's business.)
    let mut job = || -> i32 {
        // SAFETY: closing the job's copy of the read end (its descriptor table is its own).
        unsafe { libc::close(read_end) };
        let extras = process::JobExtras {
            seccomp: ctx.seccomp.as_ref().filter(|s| !s.is_empty()),
            gate: ctx.gate,
            channel: Some(&ctx.channel),
            hooks: ctx.spec.hooks().as_ref(),
            state,
            keep_fds: ctx.keep_fds,
        };
        let err = process::exec_job(process, stdio, ctx.setgroups_allowed, &extras);
        let bytes = serde_json::to_vec(&err).unwrap_or_default();
        // SAFETY: writing the error to our end of the pipe, then ending the job without unwinding.
        unsafe {
            libc::write(write_end, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(err.exit_code);
        }
    };
    // A job that waits at an OCI start gate must not hold init suspended: it gets a fork.
    let pid = if ctx.gate.is_none() {
        spawn::vfork_child(&mut job).map_err(|e| crate::report::chain(&e))?
    } else {
        // SAFETY: init is single-threaded; the child runs the job's set-up and execs or exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()).into());
        }
        if pid == 0 {
            job();
        }
        pid
    };
    drop(err_w);
    let mut fds: Vec<i32> = stdio.fds().into_iter().flatten().collect();
    // The gate is the job's alone: once it has exec'd, nobody may accept a `start` there.
    fds.extend(ctx.gate);
    // A pty is one fd in all three places: close it once.
    fds.sort_unstable();
    fds.dedup();
    for fd in fds {
        // SAFETY: init no longer needs its copies of the job's stdio (the job has its own).
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::fs::File::from(err_r), &mut buf);
    if buf.is_empty() {
        return Ok(pid);
    }
    let err: JobError = serde_json::from_slice(&buf).unwrap_or(JobError {
        message: "the job failed to start".into(),
        exit_code: 126,
    });
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    Err(Failure {
        message: err.message,
        exit_code: err.exit_code,
    })
}

/// Reaps every child, forwards signals to the job, and returns the job's (code, signal).
fn supervise_job(job: i32) -> (i32, Option<i32>) {
    // SAFETY: a set of the signals blocked in `block_forwarded_signals`.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED.iter().chain([libc::SIGCHLD].iter()) {
            libc::sigaddset(&mut set, *sig);
        }
        set
    };
    loop {
        if let Some(status) = reap(job) {
            return status;
        }
        // SAFETY: waits for one of the blocked signals in `set`.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig > 0 && sig != libc::SIGCHLD {
            // SAFETY: passing the signal on to the job.
            unsafe { libc::kill(job, sig) };
        }
    }
}

/// Once the job has ended, the container ends with it, as Docker's does: whatever the job left running
/// (a daemon it started, a background process) is killed and reaped before its end is reported, so that
/// the supervisor may return at once while the kernel tears down the namespaces.
/// Only as PID 1 of a pid namespace of its own: without one (an OCI spec may share the host's), kill(-1)
/// would reach every process of the host.
fn end_the_rest() {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        return;
    }
    // SAFETY: as PID 1 of the container's pid namespace, kill(-1) signals every process in it but init.
    if unsafe { libc::kill(-1, libc::SIGKILL) } != 0 {
        return;
    }
    loop {
        // SAFETY: a blocking wait for any child; ECHILD once none is left.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) };
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Reaps what has exited; the job's status once it has.
fn reap(job: i32) -> Option<(i32, Option<i32>)> {
    let mut result = None;
    loop {
        let mut status = 0;
        // SAFETY: non-blocking wait for any child into a local status word.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return result;
        }
        if pid == job {
            result = Some(if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                (128 + sig, Some(sig))
            } else {
                (libc::WEXITSTATUS(status), None)
            });
        }
    }
}
