//! The container's PID 1: waits for the supervisor's go, sets the container up (root filesystem,
//! mounts, hostname, pivot_root, masked paths, loopback), forks the job, then reaps zombies and forwards
//! signals to the job until it exits, and exits with its status. Every step reports failure as a message.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use oci_spec::runtime::Spec;

use super::message::{Channel, Message};
use super::process::{self, JobError};
use super::stdio::ChildStdio;
use super::{loopback, mounts};
use crate::rootfs::Rootfs;

/// Everything init needs, prepared by the supervisor before the clone.
pub(super) struct InitContext {
    /// Where init mounts its staging tmpfs (`<scratch>/merged`).
    pub staging: std::path::PathBuf,
    /// Files bound into the container (/etc/hosts...), written into the staging tmpfs.
    pub files: Vec<(String, String)>,
    pub spec: Spec,
    pub rootfs: Rootfs,
    pub channel: Channel,
    pub stdio: ChildStdio,
    pub rootless: bool,
    pub setgroups_allowed: bool,
    /// Unshare the cgroup namespace after the supervisor placed us (when clone3 did not).
    pub unshare_cgroupns: bool,
    /// Wait for the supervisor's go: it has a cgroup to place us in, or a network to attach, first.
    pub wait_for_go: bool,
    /// The job has a network namespace of its own (not the host's), whose `lo` init brings up.
    pub own_netns: bool,
}

/// Signals init passes on to the job.
const FORWARDED: [libc::c_int; 8] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGALRM,
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
            let _ = ctx.channel.send(&Message::Failed {
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
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    // (getppid() is 0 in a new pid namespace; should the supervisor already be gone, the channel's end
    // of file below says so.)
    // Out of the terminal's process group: the supervisor alone receives ^C and forwards it.
    let _ = nix::unistd::setsid();
    if ctx.wait_for_go {
        match ctx.channel.recv() {
            Ok(Some(Message::Go)) => {}
            _ => return Err("the supervisor did not say go".to_string().into()),
        }
    }
    if ctx.unshare_cgroupns {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("creating the cgroup namespace: {e}"))?;
    }
    mounts::make_private()?;
    let (target, top) = mounts::stage(&ctx.staging, &ctx.files)?;
    let mounted = ctx
        .rootfs
        .mount(&target, Some(&top))
        .map_err(|e| e.to_string())?;
    if mounted.fallback_reason.is_some() {
        // Worth a line at -v; the usual overlay is not worth waking the supervisor for.
        let _ = ctx.channel.send(&Message::Rootfs {
            driver: mounted.driver.to_string(),
            fallback_reason: mounted.fallback_reason.clone(),
        });
    }
    mounts::mount_all(&ctx.spec, &mounted.path, ctx.rootless)?;
    if let Some(name) = ctx.spec.hostname() {
        nix::unistd::sethostname(name).map_err(|e| format!("setting the hostname: {e}"))?;
    }
    mounts::pivot(
        &mounted.path,
        mounted.driver == crate::rootfs::Driver::FuseOverlayfs,
    )?;
    if let Some(linux) = ctx.spec.linux() {
        mounts::mask(linux.masked_paths().as_deref().unwrap_or_default())?;
        mounts::readonly(linux.readonly_paths().as_deref().unwrap_or_default())?;
    }
    if ctx.own_netns {
        loopback::up().map_err(|e| format!("bringing up the loopback interface: {e}"))?;
    }
    block_forwarded_signals();
    let job = start_job(ctx)?;
    let _ = ctx.channel.send(&Message::Started);
    let (code, signal) = supervise_job(job);
    let _ = ctx.channel.send(&Message::Exited { code, signal });
    Ok(code)
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

/// Forks the job and waits until it has exec'd (its end of the error pipe closes) or failed.
fn start_job(ctx: &InitContext) -> Result<i32, Failure> {
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let process = ctx
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| "the spec has no process".to_string())?;
    // SAFETY: init is single-threaded; the child runs the job's set-up and execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()).into());
    }
    if pid == 0 {
        drop(err_r);
        let err = process::exec_job(process, &ctx.stdio, ctx.setgroups_allowed);
        let bytes = serde_json::to_vec(&err).unwrap_or_default();
        // SAFETY: writing the error to our end of the pipe, then ending the job without unwinding.
        unsafe {
            libc::write(err_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(err.exit_code);
        }
    }
    drop(err_w);
    let mut fds: Vec<i32> = ctx.stdio.fds().into_iter().flatten().collect();
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
