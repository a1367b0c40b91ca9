//! A new process in a running container (`dstack-oci exec`): this process joins the container's cgroups
//! and namespaces (its user namespace first, which gives an unprivileged owner the rights for the rest),
//! forks into its pid namespace, and the child goes through the same job set-up as the container's own
//! program (rlimits, user, capabilities, no_new_privs, seccomp, exec).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccomp, Process, Spec};
use serde::{Deserialize, Serialize};

use super::process::{self, JobError, JobExtras};
use super::stdio::{self, ChildStdio};
use super::{ContainerError, StdioMode, console, namespaces, seccomp};

/// Namespaces in the order they are joined: user first, mount last (it changes our root).
const ORDER: [(&str, libc::c_int); 7] = [
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

/// What a process joining a running container starts from: the container's own process (user,
/// environment, working directory, capabilities, rlimits, no_new_privs) and its seccomp profile. Each
/// front end keeps it with its containers: `dstack` in the run's directory, `dstack-oci` in the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecBase {
    pub process: Process,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<LinuxSeccomp>,
}

impl ExecBase {
    /// The parts of `spec` a joining process needs; `None` for a spec without a process.
    pub fn of(spec: &Spec) -> Option<ExecBase> {
        Some(ExecBase {
            process: spec.process().clone()?,
            seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
        })
    }
}

/// How to run the new process.
#[derive(Default)]
pub struct ExecOptions<'a> {
    pub seccomp: Option<&'a LinuxSeccomp>,
    /// Send a pty's master here and give the process its slave (`process.terminal`).
    pub console: Option<ConsoleTarget>,
}

/// Where the master of the process's pty goes.
pub enum ConsoleTarget {
    /// runc's `--console-socket`: connected before joining (inside, the path means something else).
    Socket(PathBuf),
    /// One end of a socket pair whose other end the caller reads (`dstack exec`).
    Stream(UnixStream),
}

/// Runs `process` in the container whose init is `pid`; returns the new process's pid (our child) once
/// it has exec'd, or the reason it could not. Call it from a single-threaded process: it changes this
/// process's namespaces.
pub fn exec(pid: i32, process: &Process, options: &ExecOptions) -> Result<i32, ContainerError> {
    let threads = crate::userns::settled_thread_count();
    if threads > 1 {
        return Err(ContainerError::ThreadsRunning(threads));
    }
    let filter = options
        .seccomp
        .map(seccomp::compile)
        .transpose()
        .map_err(|e| ContainerError::Invalid(crate::report::chain(&e)))?;
    let terminal = process.terminal().unwrap_or(false);
    // Connected now: once in the container's mount namespace the socket's path means something else.
    let connected;
    let console = match (&options.console, terminal) {
        (Some(ConsoleTarget::Socket(path)), true) => {
            connected = console::connect(path).map_err(ContainerError::Invalid)?;
            Some(&connected)
        }
        (Some(ConsoleTarget::Stream(stream)), true) => Some(stream),
        _ => None,
    };
    let mut stdio = stdio::open(StdioMode::Inherit)?;
    let setgroups = std::fs::read_to_string(format!("/proc/{pid}/setgroups"))
        .map_or(true, |s| s.trim() != "deny");
    let joins = open_namespaces(pid)?;
    join_cgroups(pid);
    for (name, flag, fd) in &joins {
        namespaces::setns(fd.as_raw_fd(), *flag as u64).map_err(|e| {
            ContainerError::Invalid(format!("cannot join the container's {name} namespace: {e}"))
        })?;
    }
    drop(joins);
    // The terminal comes from the container's own devpts, as its init's does.
    let mut slave = None;
    if let Some(stream) = console {
        let size = process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        let root = crate::inroot::Root::open(Path::new("/"), crate::inroot::Scope::InRoot)
            .map_err(|e| ContainerError::Invalid(format!("opening the container's root: {e}")))?;
        let (fd, _) = console::allocate(&root, stream, size).map_err(ContainerError::Invalid)?;
        stdio.child = ChildStdio::tty(fd.as_raw_fd());
        slave = Some(fd);
    }
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: this process is single-threaded (checked above); the child sets itself up and execs.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(ContainerError::Clone(std::io::Error::last_os_error()));
    }
    if child == 0 {
        drop(err_r);
        let extras = JobExtras {
            seccomp: filter.as_ref().filter(|f| !f.is_empty()),
            ..JobExtras::default()
        };
        let err = process::exec_job(process, &stdio.child, setgroups, &extras);
        let bytes = serde_json::to_vec(&err).unwrap_or_default();
        // SAFETY: writing the error to our end of the pipe, then ending without unwinding.
        unsafe {
            libc::write(err_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(err.exit_code);
        }
    }
    drop(err_w);
    drop(stdio.child_ends);
    drop(slave);
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::fs::File::from(err_r), &mut buf);
    if buf.is_empty() {
        return Ok(child);
    }
    let err: JobError = serde_json::from_slice(&buf).unwrap_or(JobError {
        message: "the process failed to start".into(),
        exit_code: 126,
    });
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
    Err(ContainerError::Start {
        message: err.message,
        exit_code: err.exit_code,
    })
}

/// The container's namespaces that differ from ours, opened.
fn open_namespaces(pid: i32) -> Result<Vec<(&'static str, libc::c_int, OwnedFd)>, ContainerError> {
    let mut out = Vec::new();
    for (name, flag) in ORDER {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let ours = Path::new("/proc/self/ns").join(name);
        let (Ok(t), Ok(o)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
            if name == "mnt" || name == "pid" {
                return Err(ContainerError::Invalid(format!(
                    "cannot see the container's namespaces ({}): is it still running, and yours?",
                    theirs.display()
                )));
            }
            continue;
        };
        if t.ino() == o.ino() && t.dev() == o.dev() {
            continue;
        }
        let file = std::fs::File::open(&theirs)
            .map_err(ContainerError::io("cannot open the namespace", &theirs))?;
        out.push((name, flag, file.into()));
    }
    Ok(out)
}

/// Moves this process into init's cgroups, hierarchy by hierarchy (best effort: an unprivileged user
/// may own none of them).
fn join_cgroups(pid: i32) {
    let Ok(theirs) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return;
    };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let me = std::process::id().to_string();
    for line in theirs.lines() {
        // ID:CONTROLLERS:PATH
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let Some(mount) = hierarchy_mount(&mountinfo, controllers) else {
            continue;
        };
        let procs = mount
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        if let Err(e) = std::fs::write(&procs, &me) {
            tracing::debug!("exec: not joining {}: {e}", procs.display());
        }
    }
}

/// Where the hierarchy named by `controllers` (`cpu,cpuacct`, `name=systemd`, or empty for v2) is mounted.
fn hierarchy_mount(mountinfo: &str, controllers: &str) -> Option<PathBuf> {
    let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split_whitespace().collect();
        let (root, point) = (fields.get(3)?, fields.get(4)?);
        let mut r = right.split_whitespace();
        let (fstype, superopts) = (r.next()?, r.nth(1).unwrap_or(""));
        let matches = match fstype {
            "cgroup2" => wanted.is_empty(),
            "cgroup" => {
                !wanted.is_empty() && wanted.iter().all(|w| superopts.split(',').any(|o| o == *w))
            }
            _ => false,
        };
        (matches && *root == "/").then(|| PathBuf::from(point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchies_are_found_by_their_controllers() {
        let info = "30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:7 - cgroup cgroup rw,cpu\n\
                    31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                    32 25 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n";
        assert_eq!(
            hierarchy_mount(info, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(
            hierarchy_mount(info, ""),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            hierarchy_mount(info, "name=systemd"),
            Some(PathBuf::from("/sys/fs/cgroup/systemd"))
        );
        assert_eq!(hierarchy_mount(info, "memory"), None);
    }
}
