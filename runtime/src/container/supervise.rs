//! The supervisor: `dstack` itself, as conmon is for podman. It streams the job's output live to the
//! terminal and, line by line, to a log file; forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT (SIGKILL after the
//! grace period, or at a second signal); passes terminal input and size to the pty; reaps init; reports
//! out-of-memory kills; and returns the job's exit status.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::ContainerError;
use super::message::{ChannelError, FromInit, SupervisorEnd};
use super::scratch::ScratchDir;
use super::stdio::{ParentStdio, window_size};
use crate::cgroup::CgroupPlacement;

/// How the job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, or 128+N when signal N killed it.
    pub code: i32,
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
}

/// The signals the supervisor takes through a signalfd, blocked from before the clone until it is done.
pub(super) struct SignalGuard {
    fd: SignalFd,
    old: SigSet,
}

impl SignalGuard {
    pub(super) fn new() -> Result<SignalGuard, ContainerError> {
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGCHLD,
            Signal::SIGWINCH,
        ] {
            set.add(s);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(SignalGuard { fd, old })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// The job's output in the log file: whole lines, stdout and stderr interleaved as they complete.
struct LogSink {
    file: File,
    partial: [Vec<u8>; 2],
}

impl LogSink {
    fn write(&mut self, stream: usize, bytes: &[u8]) {
        let buf = &mut self.partial[stream];
        buf.extend_from_slice(bytes);
        if let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
            let _ = self.file.write_all(&buf[..=end]);
            buf.drain(..=end);
        }
    }

    fn finish(&mut self) {
        for i in 0..2 {
            if !self.partial[i].is_empty() {
                let mut rest = std::mem::take(&mut self.partial[i]);
                rest.push(b'\n');
                let _ = self.file.write_all(&rest);
            }
        }
    }
}

/// A running container; [`Container::wait`] supervises it to the end. Dropping it unwaited kills it.
pub struct Container {
    pub(super) pid: i32,
    pub(super) channel: SupervisorEnd,
    pub(super) stdio: ParentStdio,
    pub(super) log: Option<File>,
    pub(super) grace: Duration,
    pub(super) signals: SignalGuard,
    pub(super) reaped: bool,
    /// Init reported the job's end and is exiting by itself (the kernel tearing down its namespaces):
    /// nobody needs to wait for that but the detached clean-up.
    pub(super) exiting: bool,
    pub(super) cgroup: Option<Box<dyn CgroupPlacement>>,
    /// Dropped after init is reaped (Drop below), before the scratch directory.
    pub(super) network: Option<crate::net::Network>,
    pub(super) scratch: Option<ScratchDir>,
}

/// Puts a terminal in raw mode for the pty's sake and restores it.
pub(super) struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    pub(super) fn enter(active: bool) -> RawMode {
        if !active {
            return RawMode(None);
        }
        let stdin = std::io::stdin();
        let Ok(old) = nix::sys::termios::tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = old.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        let _ =
            nix::sys::termios::tcsetattr(stdin.as_fd(), nix::sys::termios::SetArg::TCSANOW, &raw);
        RawMode(Some(old))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                old,
            );
        }
    }
}

fn write_fd(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: write from a valid slice to one of our fds.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> isize {
    loop {
        // SAFETY: read into a valid buffer from one of our fds.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return n;
    }
}

/// Bytes as a person reads a limit: `64 MiB`, `1.5 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl Container {
    /// init's pid (PID 1 of the container), as the host sees it.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The container's scratch directory (`<state_root>/containers/<id>/`), removed when it ends.
    pub fn scratch_dir(&self) -> Option<&std::path::Path> {
        self.scratch.as_ref().map(|s| s.path())
    }

    /// Sends `signal` to the container's init, which passes it on to the job.
    pub fn signal(&self, signal: i32) -> Result<(), ContainerError> {
        // SAFETY: kill with our own child's pid (not yet reaped, so not reused).
        if !self.reaped && unsafe { libc::kill(self.pid, signal) } != 0 {
            return Err(ContainerError::Sys(nix::Error::last()));
        }
        Ok(())
    }

    /// Streams output and forwards signals until the job has ended and its output is drained, then
    /// cleans up; returns its status. Init's own exit (the kernel tearing down the container's
    /// namespaces and mounts) goes on meanwhile: the clean-up waits for it, not the caller.
    pub fn wait(mut self) -> Result<ExitStatus, ContainerError> {
        let mut log = self.log.take().map(|file| LogSink {
            file,
            partial: [Vec::new(), Vec::new()],
        });
        let tty_in = matches!(self.stdio, ParentStdio::Pty { .. }) && super::stdio::stdin_is_tty();
        let _raw = RawMode::enter(tty_in);
        // (fd, stream: 0 stdout / 1 stderr)
        let mut outputs: Vec<(RawFd, usize)> = match &self.stdio {
            ParentStdio::Pipes { stdout, stderr } => {
                vec![(stdout.as_raw_fd(), 0), (stderr.as_raw_fd(), 1)]
            }
            ParentStdio::Pty { master } => vec![(master.as_raw_fd(), 0)],
            ParentStdio::Inherited => Vec::new(),
        };
        let master = match &self.stdio {
            ParentStdio::Pty { master } => Some(master.as_raw_fd()),
            _ => None,
        };
        let mut stdin_open = tty_in;
        let mut job: Option<(i32, Option<i32>)> = None;
        let mut init_status: Option<i32> = None;
        let mut channel_open = true;
        let mut deadline: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;
        // Made at the first read: a job without output costs no page faults for it.
        let mut buf = Vec::new();
        loop {
            if init_status.is_some()
                && (outputs.is_empty() || drain_until.is_some_and(|d| Instant::now() >= d))
            {
                break;
            }
            // The job's status is known and its output is all here: what init has left to do is its exit,
            // in which the kernel tears down the container's namespaces and mounts (0.5-1 ms). That is not
            // the job's time: the detached clean-up waits for it (see Drop).
            if job.is_some() && outputs.is_empty() {
                self.exiting = true;
                break;
            }
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut push = |fd: RawFd| {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
            };
            push(self.signals.fd.as_raw_fd());
            push(if channel_open { self.channel.raw() } else { -1 });
            push(if stdin_open { 0 } else { -1 });
            for (fd, _) in &outputs {
                push(*fd);
            }
            let timeout = [deadline, drain_until]
                .iter()
                .flatten()
                .map(|d| d.saturating_duration_since(Instant::now()).as_millis() as i32 + 1)
                .min()
                .unwrap_or(-1);
            // SAFETY: poll over a valid array of pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(ContainerError::Sys(nix::Error::last()));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::info!("the job did not stop within {:?}: killing it", self.grace);
                let _ = self.signal(libc::SIGKILL);
                deadline = None;
            }
            let ready = |i: usize| fds[i].revents != 0;
            if ready(0) {
                while let Ok(Some(info)) = self.signals.fd.read_signal() {
                    let sig = info.ssi_signo as i32;
                    match sig {
                        libc::SIGCHLD => {
                            if init_status.is_none() {
                                init_status = self.try_reap();
                                if init_status.is_some() {
                                    drain_until = Some(Instant::now() + Duration::from_secs(2));
                                }
                            }
                        }
                        libc::SIGWINCH => {
                            if let (Some(m), Some(ws)) = (master, window_size(0)) {
                                // SAFETY: TIOCSWINSZ with a valid winsize on our pty master.
                                unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &ws) };
                            }
                        }
                        _ if deadline.is_some() => {
                            tracing::info!("second signal: killing the job");
                            let _ = self.signal(libc::SIGKILL);
                        }
                        _ => {
                            let _ = self.signal(sig);
                            deadline = Some(Instant::now() + self.grace);
                        }
                    }
                }
            }
            if ready(1) {
                match self.channel.recv() {
                    Ok(Some(FromInit::Exited { code, signal })) => job = Some((code, signal)),
                    Ok(Some(other)) => {
                        return Err(ContainerError::Channel(ChannelError::unexpected(
                            &other,
                            "waiting for the job to exit",
                        )));
                    }
                    _ => channel_open = false,
                }
            }
            if buf.is_empty() && (ready(2) || (3..fds.len()).any(ready)) {
                buf = vec![0u8; 64 * 1024];
            }
            if ready(2) {
                let n = read_fd(0, &mut buf);
                match (n, master) {
                    (n, Some(m)) if n > 0 => write_fd(m, &buf[..n as usize]),
                    _ => stdin_open = false,
                }
            }
            let mut closed = Vec::new();
            for (i, (fd, stream)) in outputs.iter().enumerate() {
                if !ready(3 + i) {
                    continue;
                }
                let n = read_fd(*fd, &mut buf);
                if n <= 0 {
                    // EOF, or EIO from a pty whose last slave closed.
                    closed.push(*fd);
                    continue;
                }
                let bytes = &buf[..n as usize];
                write_fd(if *stream == 0 { 1 } else { 2 }, bytes);
                if let Some(log) = log.as_mut() {
                    log.write(*stream, bytes);
                }
            }
            outputs.retain(|(fd, _)| !closed.contains(fd));
        }
        let (code, signal) = job.unwrap_or_else(|| {
            let status = init_status.unwrap_or(0);
            if libc::WIFSIGNALED(status) {
                (128 + libc::WTERMSIG(status), Some(libc::WTERMSIG(status)))
            } else {
                (libc::WEXITSTATUS(status), None)
            }
        });
        // The OOM killer may have picked any process of the job (the shell's child, say): a failed job with
        // an OOM kill in its cgroup was ended by it.
        let oom_killed = code != 0 && self.cgroup.as_ref().is_some_and(|c| c.oom_killed());
        if oom_killed {
            let limit = self
                .cgroup
                .as_ref()
                .and_then(|c| c.memory_limit())
                .map(human_size);
            let line = match limit {
                Some(l) => format!("out of memory: the job exceeded its memory limit of {l}\n"),
                None => "out of memory: the kernel killed the job\n".to_string(),
            };
            write_fd(2, line.as_bytes());
            if let Some(log) = log.as_mut() {
                log.write(1, line.as_bytes());
            }
        }
        if let Some(log) = log.as_mut() {
            log.finish();
        }
        Ok(ExitStatus {
            code,
            signal,
            oom_killed,
        })
    }

    /// init's wait status once it has exited.
    fn try_reap(&mut self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: non-blocking wait for our own child into a local status word.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r == self.pid {
            self.reaped = true;
            Some(status)
        } else {
            None
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        reap_exited_inits();
        // An init still exiting is left to finish on its own; the clean-up waits for it through a pidfd
        // (opened while it is our unreaped child, so the pid is still its). Its zombie is reaped by the
        // next container's drop in this process, or by whoever adopts it when the process exits.
        // Anything else is killed and reaped here.
        let exiting = (self.exiting && !self.reaped)
            .then(|| pidfd_open(self.pid))
            .flatten();
        if exiting.is_some() {
            EXITING_INITS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.pid);
        }
        if exiting.is_none() && !self.reaped {
            // SAFETY: killing and reaping our own child, which is not reaped yet.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            self.reaped = true;
        }
        // The network first: its forwarder's threads end with it, and the fork below wants none.
        if let Some(net) = self.network.as_mut()
            && exiting.is_some()
        {
            net.init_exiting();
        }
        // A job with a network namespace of its own: the clean-up makes a spare for the next one.
        let spare_netns = self.network.as_ref().is_some_and(|n| n.needs_netns());
        self.network.take();
        let (cgroup, scratch) = (self.cgroup.take(), self.scratch.take());
        if cgroup.is_some() || scratch.is_some() {
            remove_detached(self.pid, exiting, cgroup, scratch, spare_netns);
        }
    }
}

/// Inits left exiting by this process, not reaped yet.
static EXITING_INITS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Reaps the inits left exiting that have exited by now.
fn reap_exited_inits() {
    let mut pids = EXITING_INITS.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: non-blocking waits for our own children.
    pids.retain(|pid| unsafe { libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG) } == 0);
}

/// A pidfd for `pid` (Linux 5.3), to wait for a process that is not our child's any more.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a descriptor the kernel just gave us, owned from here on.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits (up to `limit`) for the process behind `pidfd` to have exited.
fn wait_pidfd(pidfd: &OwnedFd, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        let interrupted =
            n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
        if !interrupted || left.is_zero() {
            return;
        }
    }
}

/// Removes the job's cgroup, then its scratch directory, from a detached child: the run's end (its
/// record, the exit status) need not wait for their rmdirs and unlinks (0.5-0.7 ms a run on the disks
/// measured). Here instead when another thread runs (a fork could inherit a lock it holds) or no fork
/// is possible. With `exiting`, init's pidfd, both wait for init to have exited: until then its mounts
/// hold the scratch directory and its processes the cgroup. The child holds the scratch directory's
/// lock until it is gone; should it die first, the next command's sweep removes both. With
/// `spare_netns` the child then makes spare network namespaces (`net::spare`; never inline: it moves
/// the calling thread into a new one). Its zombie goes to whoever adopts it when `dstack` exits.
fn remove_detached(
    init: i32,
    exiting: Option<OwnedFd>,
    cgroup: Option<Box<dyn CgroupPlacement>>,
    scratch: Option<ScratchDir>,
    spare_netns: bool,
) {
    if crate::userns::thread_count() > 1 {
        if exiting.is_some() {
            reap(init);
        }
        drop(cgroup);
        drop(scratch);
        return;
    }
    // SAFETY: this process has a single thread, so the child inherits no lock held elsewhere and may
    // run anything; it ends with _exit.
    match unsafe { libc::fork() } {
        0 => {
            // Out of the caller's session and off its streams: nobody waits for the child's output.
            // SAFETY: setsid and dup2 onto the standard descriptors of this (child) process.
            unsafe { libc::setsid() };
            if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
                for fd in 0..3 {
                    // SAFETY: as above.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            // The mounts of an exiting init are gone with it; a cgroup is only empty after that.
            if let Some(pidfd) = &exiting {
                wait_pidfd(pidfd, INIT_EXIT_LIMIT);
            }
            drop(cgroup);
            drop(scratch);
            // Last: it moves this process into the namespace it makes.
            if spare_netns {
                crate::net::spare::replenish();
            }
            // SAFETY: ending the child without the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        pid if pid > 0 => {
            // The child's now: keep this process from removing them too.
            std::mem::forget(cgroup);
            std::mem::forget(scratch);
        }
        _ => {
            if exiting.is_some() {
                reap(init);
            }
            drop(cgroup);
            drop(scratch);
        }
    }
}

/// Waits for an exiting init here, off the list of those left exiting.
fn reap(init: i32) {
    EXITING_INITS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|pid| *pid != init);
    // SAFETY: reaping our own child, which is exiting by itself.
    unsafe { libc::waitpid(init, std::ptr::null_mut(), 0) };
}

/// How long the clean-up waits for an exiting init before it removes the cgroup anyway (which kills
/// and waits for what is still inside) and the scratch directory. The kernel's teardown takes
/// milliseconds; this only bounds a stuck one (a process in uninterruptible sleep on a dead NFS server).
const INIT_EXIT_LIMIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
    }
}
