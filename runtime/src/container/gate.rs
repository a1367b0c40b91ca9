//! The start gate of a created container (runc's `exec.fifo`, as a unix socket): `create` leaves the job
//! set up and blocked in `accept` on `<state dir>/start.sock`; `start` connects, and the job runs its
//! `startContainer` hooks and execs. The connection is close-on-exec, so `start` reads end of file once the
//! program runs, or the job's error in words when it could not.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

pub const SOCKET: &str = "start.sock";

/// `dir`'s socket path through `/proc/self/fd`, so a long state directory never exceeds `sun_path`.
fn short_path(dir: &std::fs::File) -> String {
    format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd())
}

/// Binds and listens on `<dir>/start.sock` (close-on-exec): the job inherits it across the clone.
pub fn listen(dir: &Path) -> std::io::Result<OwnedFd> {
    let d = std::fs::File::open(dir)?;
    let listener = std::os::unix::net::UnixListener::bind(short_path(&d))?;
    Ok(listener.into())
}

/// In the job: waits for `start`; returns the connection to report on.
pub(super) fn wait(listener: RawFd) -> std::io::Result<UnixStream> {
    loop {
        // SAFETY: accept4 on the inherited listening socket, without an address.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh fd from accept4, owned from here on.
            return Ok(UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// In the job: tells `start` why the program does not run.
pub(super) fn report(conn: &mut UnixStream, message: &str) {
    let _ = conn.write_all(message.as_bytes());
}

/// True while a created container waits at its gate.
pub fn is_waiting(dir: &Path) -> bool {
    dir.join(SOCKET).exists()
}

/// `start`: opens the gate and waits until the program runs (Ok) or could not (Err, in the job's words).
/// The socket is removed either way: a container is started once.
pub fn open(dir: &Path) -> Result<(), String> {
    let d = std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let conn = UnixStream::connect(short_path(&d));
    let _ = std::fs::remove_file(dir.join(SOCKET));
    let mut conn = conn.map_err(|e| format!("the container is not waiting to start: {e}"))?;
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    if answer.is_empty() {
        Ok(())
    } else {
        Err(answer)
    }
}
