//! The job's side of the fork in init: stdio, session, rlimits, oom_score_adj, user, capabilities,
//! no_new_privs, umask, working directory, seccomp (and, for an OCI `create`, the start gate and the
//! `startContainer` hooks), then exec with `PATH` looked up in the container's environment. A failure
//! is written as JSON to the error pipe (init passes it on) and ends the process with 126 or 127.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use std::os::fd::RawFd;

use oci_spec::runtime::{Hooks, PosixRlimit, Process};
use serde::{Deserialize, Serialize};

use super::hooks::{self, HookPoint};
use super::message::{FromInit, InitEnd};
use super::seccomp::SeccompProgram;
use super::stdio::ChildStdio;
use super::{caps, gate};

/// What the job sends back when it could not exec.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct JobError {
    pub message: String,
    pub exit_code: i32,
}

fn fail(message: String, exit_code: i32) -> JobError {
    JobError { message, exit_code }
}

/// What the job does besides the spec's process: the OCI lifecycle's gate and hooks, and seccomp.
#[derive(Default)]
pub(super) struct JobExtras<'a> {
    pub seccomp: Option<&'a SeccompProgram>,
    /// The start gate's listening socket: wait there for `start` before exec (OCI `create`).
    pub gate: Option<RawFd>,
    /// Where to say `Created` once set up and waiting.
    pub channel: Option<&'a InitEnd>,
    pub hooks: Option<&'a Hooks>,
    /// The state JSON for `startContainer` hooks.
    pub state: Option<&'a str>,
    /// Descriptors 3..3+N the job keeps (the OCI runtime's `--preserve-fds` and `LISTEN_FDS`); every
    /// other one above the standard streams is closed at its exec.
    pub keep_fds: u32,
}

/// Sets the job up and execs it; only returns the reason it could not.
pub(super) fn exec_job(
    process: &Process,
    stdio: &ChildStdio,
    setgroups_allowed: bool,
    extras: &JobExtras,
) -> JobError {
    let nnp = process.no_new_privileges().unwrap_or(false);
    // Without no_new_privs the filter needs CAP_SYS_ADMIN: install it while the job still has it.
    let early_seccomp = extras.seccomp.filter(|_| !nnp);
    if let Err(e) = prepare(process, stdio, setgroups_allowed, early_seccomp) {
        return e;
    }
    // Before the late seccomp filter (which may not allow close_range): nothing but the standard streams
    // and the descriptors kept on purpose reaches the job; one its caller left open (a host file, a
    // socket) would reach outside the container.
    close_on_exec_from(3 + extras.keep_fds);
    let mut conn = None;
    if let Some(listener) = extras.gate {
        if let Some(channel) = extras.channel {
            let _ = channel.send(&FromInit::Created);
        }
        match gate::wait(listener) {
            Ok(c) => conn = Some(c),
            Err(e) => return fail(format!("waiting for start: {e}"), 125),
        }
    }
    // startContainer hooks see the container as `created`: its program has not run yet.
    let state = extras
        .state
        .and_then(|s| serde_json::from_str::<hooks::State>(s).ok())
        .map(|mut s| {
            s.status = "created".into();
            s.json()
        })
        .unwrap_or_else(|| "{}".into());
    let result = hooks::run(extras.hooks, HookPoint::StartContainer, &state)
        .map_err(|e| fail(crate::report::chain(&e), 125))
        .and_then(|()| match extras.seccomp.filter(|_| nnp) {
            Some(filter) => filter
                .install()
                .map_err(|e| fail(format!("installing the seccomp filter: {e}"), 125)),
            None => Ok(()),
        });
    let err = match result {
        Ok(()) => exec(process),
        Err(e) => e,
    };
    if let Some(conn) = conn.as_mut() {
        gate::report(conn, &err.message);
    }
    err
}

fn prepare(
    process: &Process,
    stdio: &ChildStdio,
    setgroups_allowed: bool,
    seccomp: Option<&SeccompProgram>,
) -> Result<(), JobError> {
    let os = |what: &str, e: &dyn std::fmt::Display| fail(format!("{what}: {e}"), 126);
    stdio
        .install()
        .map_err(|e| os("setting up the job's standard streams", &e))?;
    reset_signals();
    for rl in process.rlimits().as_deref().unwrap_or_default() {
        set_rlimit(rl).map_err(|e| os("setting a resource limit", &e))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| os("setting oom_score_adj", &e))?;
    }
    let user = process.user();
    let cwd = process.cwd();
    // As Docker does, a missing working directory is created (as root, before the user switch).
    std::fs::create_dir_all(cwd)
        .map_err(|e| os(&format!("working directory {}", cwd.display()), &e))?;
    let capabilities = process.capabilities().clone().unwrap_or_default();
    caps::drop_bounding(&capabilities).map_err(|e| os("dropping capabilities", &e))?;
    if let Some(filter) = seccomp {
        filter
            .install()
            .map_err(|e| os("installing the seccomp filter", &e))?;
    }
    let gids: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    if setgroups_allowed {
        nix::unistd::setgroups(&gids).map_err(|e| unmapped("supplementary groups", &e))?;
    }
    let gid = nix::unistd::Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| unmapped(&format!("group {}", user.gid()), &e))?;
    // Keep the permitted set across the switch to another user: the spec says which capabilities it keeps.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| unmapped(&format!("user {}", user.uid()), &e))?;
    caps::apply(&capabilities).map_err(|e| os("setting capabilities", &e))?;
    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(os("setting no_new_privs", &std::io::Error::last_os_error()));
        }
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        user.umask().unwrap_or(0o022),
    ));
    nix::unistd::chdir(cwd).map_err(|e| os(&format!("working directory {}", cwd.display()), &e))?;
    Ok(())
}

fn unmapped(what: &str, e: &nix::Error) -> JobError {
    let hint = if *e == nix::Error::EINVAL && crate::paths::in_child_user_namespace() {
        ": it is not mapped in this rootless namespace (add ranges for your user to /etc/subuid and /etc/subgid and install the uidmap package)"
    } else {
        ""
    };
    fail(format!("cannot switch to {what}: {e}{hint}"), 126)
}

/// Default actions and an empty mask: init blocked signals, and Rust ignores SIGPIPE.
fn reset_signals() {
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: restoring the default action of a standard signal.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: an empty, initialised set given to sigprocmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Applies a spec rlimit, never raising the hard limit past the current one (raising needs
/// CAP_SYS_RESOURCE, which a container's root usually lacks).
fn set_rlimit(rl: &PosixRlimit) -> std::io::Result<()> {
    let name = serde_json::to_string(&rl.typ()).unwrap_or_default();
    let resource = match name.trim_matches('"') {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return Ok(()),
    };
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let hard = rl.hard().min(current.rlim_max);
    let new = libc::rlimit {
        rlim_cur: rl.soft().min(hard),
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(resource, &new) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `PATH` from the container's environment (Docker's default when it has none).
fn env_path(env: &[String]) -> String {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(super::spec::DEFAULT_PATH)
        .to_string()
}

/// Finds `name` as a shell would: as given when it has a slash, else in each `PATH` directory.
fn lookup(name: &str, path: &str) -> Result<PathBuf, (i32, &'static str)> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let mut denied = false;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(candidate);
        }
        denied = true;
    }
    if denied {
        Err((126, "permission denied"))
    } else {
        Err((127, "command not found"))
    }
}

/// Marks every descriptor from `first` up close-on-exec.
fn close_on_exec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on this process's descriptors.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return;
    }
    // Kernels before 5.11: one by one, up to the descriptor limit.
    // SAFETY: sysconf with a valid name.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(first as i64, 1 << 20) as i32;
    for fd in first as i32..max {
        // SAFETY: F_SETFD on a descriptor number; a closed one just fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

fn exec(process: &Process) -> JobError {
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let Some(name) = args.first() else {
        return fail("the job has no command".into(), 127);
    };
    let program = match lookup(name, &env_path(&env)) {
        Ok(p) => p,
        Err((code, why)) => return fail(format!("exec \"{name}\": {why}"), code),
    };
    let cstrings = |v: &[String]| {
        v.iter()
            .map(|s| CString::new(s.as_bytes()).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let (argv, envp) = (cstrings(&args), cstrings(&env));
    let path = CString::new(program.as_os_str().as_bytes()).unwrap_or_default();
    let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    let shell_missing = name == "/bin/sh" && err == nix::Error::ENOENT;
    if shell_missing {
        return fail(
            "the image has no shell: commands (-c) run through /bin/sh, which it lacks; use --entrypoint with a program the image has".into(),
            127,
        );
    }
    let (code, why) = match err {
        nix::Error::ENOENT if program.exists() => (
            127,
            "no such file or directory (its interpreter or dynamic loader is missing)".to_string(),
        ),
        nix::Error::ENOENT => (127, "no such file or directory".to_string()),
        nix::Error::EACCES => (126, "permission denied".to_string()),
        nix::Error::ENOEXEC => (
            126,
            "exec format error (not a program for this machine)".to_string(),
        ),
        other => (126, other.desc().to_lowercase()),
    };
    fail(format!("exec \"{name}\": {why}"), code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup_says_not_found() {
        assert_eq!(
            lookup("definitely-not-a-command-xyz", "/usr/bin:/bin")
                .unwrap_err()
                .0,
            127
        );
        assert!(lookup("sh", "/nonexistent:/bin").unwrap().ends_with("sh"));
        assert_eq!(env_path(&["A=1".into(), "PATH=/x".into()]), "/x");
    }
}
