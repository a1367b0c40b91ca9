//! The job's standard streams: a pty when our stdin is a terminal (so shells and progress bars behave),
//! pipes otherwise (stdin passed through as it is).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// How the job's standard streams are connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StdioMode {
    /// A pty when stdin is a terminal, pipes otherwise.
    #[default]
    Auto,
    Pipes,
    Pty,
    /// The job uses this process's own standard streams (an OCI runtime's caller passes them in).
    Inherit,
}

/// The fds the job installs as 0, 1 and 2 (`None` keeps the inherited one).
pub(super) struct ChildStdio {
    stdin: Option<RawFd>,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    tty: bool,
}

/// The supervisor's ends.
pub(super) enum ParentStdio {
    Pipes {
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Pty {
        master: OwnedFd,
    },
    /// Nothing to stream: the job writes to our caller's streams itself.
    Inherited,
}

pub(super) struct Stdio {
    pub child: ChildStdio,
    pub parent: ParentStdio,
    /// The child's ends, held until the clone and then closed in the supervisor.
    pub child_ends: Vec<OwnedFd>,
}

pub(super) fn stdin_is_tty() -> bool {
    nix::unistd::isatty(std::io::stdin()).unwrap_or(false)
}

pub(super) fn open(mode: StdioMode) -> nix::Result<Stdio> {
    let pty = match mode {
        StdioMode::Auto => stdin_is_tty(),
        StdioMode::Pipes => false,
        StdioMode::Pty => true,
        StdioMode::Inherit => {
            return Ok(Stdio {
                child: ChildStdio {
                    stdin: None,
                    stdout: None,
                    stderr: None,
                    tty: false,
                },
                parent: ParentStdio::Inherited,
                child_ends: Vec::new(),
            });
        }
    };
    if pty {
        let winsize = window_size(0);
        let p = nix::pty::openpty(winsize.as_ref(), None)?;
        for fd in [&p.master, &p.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
        }
        let s = p.slave.as_raw_fd();
        return Ok(Stdio {
            child: ChildStdio {
                stdin: Some(s),
                stdout: Some(s),
                stderr: Some(s),
                tty: true,
            },
            parent: ParentStdio::Pty { master: p.master },
            child_ends: vec![p.slave],
        });
    }
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok(Stdio {
        child: ChildStdio {
            stdin: None,
            stdout: Some(out_w.as_raw_fd()),
            stderr: Some(err_w.as_raw_fd()),
            tty: false,
        },
        parent: ParentStdio::Pipes {
            stdout: out_r,
            stderr: err_r,
        },
        child_ends: vec![out_w, err_w],
    })
}

/// The terminal size of `fd`, when it is a terminal.
pub(super) fn window_size(fd: RawFd) -> Option<nix::pty::Winsize> {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize it is given.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0).then_some(ws)
}

impl ChildStdio {
    /// A terminal's slave as all three streams (and the controlling terminal).
    pub(super) fn tty(fd: RawFd) -> ChildStdio {
        ChildStdio {
            stdin: Some(fd),
            stdout: Some(fd),
            stderr: Some(fd),
            tty: true,
        }
    }

    pub(super) fn fds(&self) -> [Option<RawFd>; 3] {
        [self.stdin, self.stdout, self.stderr]
    }

    /// In the job: a new session (with the pty as its controlling terminal) and fds 0..2.
    pub(super) fn install(&self) -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: setsid, ioctl and dup2 on fds this process inherited for exactly this.
        unsafe {
            check(libc::setsid())?;
            if let (true, Some(tty)) = (self.tty, self.stdout) {
                check(libc::ioctl(tty, libc::TIOCSCTTY, 0))?;
            }
            for (target, fd) in self.fds().into_iter().enumerate() {
                if let Some(fd) = fd {
                    check(libc::dup2(fd, target as i32))?;
                }
            }
        }
        Ok(())
    }
}
