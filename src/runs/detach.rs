//! `dstack run -d`: the supervisor forks into its own session and carries on in the background; the
//! command returns at once.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd as _;

/// Which side of the fork this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The command the user ran: prints the run name and returns. `supervisor` is the child's pid.
    Parent { supervisor: u32 },
    /// The detached supervisor: its own session, standard streams on `/dev/null`.
    Supervisor,
}

#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    #[error(
        "cannot detach: this process already runs {0} threads (detaching must happen before the pull starts any)"
    )]
    Threads(usize),
    #[error("cannot detach")]
    Io(#[from] io::Error),
    #[error("cannot detach")]
    Sys(#[from] nix::Error),
}

/// Forks; the child becomes the leader of a new session with its standard streams on `/dev/null` (its
/// output goes to the run's log file, not to a terminal that may be gone).
pub fn detach() -> Result<Side, DetachError> {
    let threads = runtime::userns::settled_thread_count();
    if threads > 1 {
        return Err(DetachError::Threads(threads));
    }
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // SAFETY: this process has one thread (checked above), so the child cannot inherit a lock held by a
    // thread that does not exist in it.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Side::Parent {
            supervisor: child.as_raw() as u32,
        }),
        nix::unistd::ForkResult::Child => {
            nix::unistd::setsid()?;
            for fd in 0..3 {
                // SAFETY: dup2 of an fd we own onto the standard streams.
                if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                    return Err(io::Error::last_os_error().into());
                }
            }
            Ok(Side::Supervisor)
        }
    }
}
