//! A process run in a container in the foreground (`dstack exec`): with our own streams, or, when it
//! has a terminal, with a pty of the container's devpts whose master is relayed to ours (raw mode,
//! window size kept in step). The signals we get are passed on; its exit code comes back.

use std::io::{IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use oci_spec::runtime::{BoxBuilder, LinuxSeccomp, Process};

use super::ContainerError;
use super::exec::{ConsoleTarget, ExecOptions, exec};
use super::stdio::{stdin_is_tty, window_size};
use super::supervise::RawMode;

/// The signals passed on to the process (a terminal's own, ^C and the like, reach it through the pty or,
/// without one, directly: it is in our process group).
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// How long output is still relayed after the process ended, for what a background child of it keeps
/// writing to the terminal.
const DRAIN: Duration = Duration::from_millis(200);

/// Runs `process` in the container whose init is `pid` and waits for it; returns its exit code (128+N
/// when signal N ended it). Call it from a single-threaded process: it joins the container's namespaces.
pub fn run_attached(
    pid: i32,
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
) -> Result<i32, ContainerError> {
    if !process.terminal().unwrap_or(false) {
        let child = exec(
            pid,
            process,
            &ExecOptions {
                seccomp,
                console: None,
            },
        )?;
        let status = crate::child::wait_forwarding(child, &FORWARDED, true)
            .map_err(|_| ContainerError::Sys(nix::Error::last()))?;
        return Ok(exit_code(status));
    }
    let mut process = process.clone();
    if let Some(ws) = window_size(0) {
        let size = BoxBuilder::default()
            .height(ws.ws_row)
            .width(ws.ws_col)
            .build()
            .ok();
        process.set_console_size(size);
    }
    let (ours, theirs) = UnixStream::pair().map_err(ContainerError::Clone)?;
    // Blocked before the fork, so that the process's end is not missed (exec_job unblocks them in it).
    let signals = Signals::block()?;
    let child = exec(
        pid,
        &process,
        &ExecOptions {
            seccomp,
            console: Some(ConsoleTarget::Stream(theirs)),
        },
    )?;
    let master = receive_master(&ours)?;
    relay(&master, child, &signals)
}

/// 128+N for signal N, else the exit code.
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// SIGCHLD, SIGWINCH and the forwarded signals, taken through a signalfd while blocked.
struct Signals {
    fd: SignalFd,
    old: SigSet,
}

impl Signals {
    fn block() -> Result<Signals, ContainerError> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        set.add(Signal::SIGWINCH);
        for sig in FORWARDED {
            set.add(Signal::try_from(sig)?);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(Signals { fd, old })
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// The pty master `exec` sent over the socket pair (SCM_RIGHTS, the slave's name as the message).
fn receive_master(stream: &UnixStream) -> Result<OwnedFd, ContainerError> {
    let mut name = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(ContainerError::Invalid(
        "the container's terminal was not sent back".into(),
    ))
}

/// Copies our stdin to the pty and the pty to our stdout until the process has ended and its output is
/// drained; returns its exit code.
fn relay(master: &OwnedFd, child: i32, signals: &Signals) -> Result<i32, ContainerError> {
    let _raw = RawMode::enter(stdin_is_tty());
    let mut status = None;
    let mut stdin_open = true;
    let mut master_open = true;
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if status.is_none() {
            status = reap(child)?;
        }
        if let Some(status) = status {
            let deadline = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
            if !master_open || Instant::now() >= deadline {
                return Ok(exit_code(status));
            }
        }
        let mut fds = [
            pollfd(signals.fd.as_raw_fd()),
            pollfd(if stdin_open { 0 } else { -1 }),
            pollfd(if master_open { master.as_raw_fd() } else { -1 }),
        ];
        let timeout = drain_until.map_or(-1, |d| {
            d.saturating_duration_since(Instant::now()).as_millis() as i32 + 1
        });
        // SAFETY: poll over a valid array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 && nix::Error::last() != nix::Error::EINTR {
            return Err(ContainerError::Sys(nix::Error::last()));
        }
        if fds[0].revents != 0 {
            while let Ok(Some(info)) = signals.fd.read_signal() {
                match info.ssi_signo as i32 {
                    libc::SIGCHLD => {}
                    libc::SIGWINCH => {
                        if let Some(ws) = window_size(0) {
                            // SAFETY: TIOCSWINSZ with a valid winsize on our pty master.
                            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                        }
                    }
                    sig => {
                        // SAFETY: signalling our own child; ESRCH once it is gone is harmless.
                        unsafe { libc::kill(child, sig) };
                    }
                }
            }
        }
        if fds[1].revents != 0 {
            match nix::unistd::read(std::io::stdin().as_fd(), &mut buf) {
                Ok(n) if n > 0 => write_all(master.as_fd(), &buf[..n]),
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                _ => stdin_open = false,
            }
        }
        if fds[2].revents != 0 {
            match nix::unistd::read(master.as_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
                }
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                // EIO: every holder of the slave has closed it.
                _ => master_open = false,
            }
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// The child's wait status once it has ended.
fn reap(child: i32) -> Result<Option<libc::c_int>, ContainerError> {
    let mut status = 0;
    // SAFETY: waiting for our own child into a local status word, without blocking.
    let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
    match r {
        0 => Ok(None),
        r if r == child => Ok(Some(status)),
        _ => Err(ContainerError::Sys(nix::Error::last())),
    }
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) if n > 0 => bytes = &bytes[n..],
            Err(nix::Error::EINTR) => {}
            _ => return,
        }
    }
}
