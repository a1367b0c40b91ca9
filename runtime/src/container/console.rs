//! runc's `--console-socket`: the pty's master end is sent over a unix socket (SCM_RIGHTS) to whoever
//! owns the terminal (conmon, a test), with the slave's name as the message.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use super::ContainerError;

/// The pty slave's path for `master` (`/dev/pts/N`).
fn slave_name(master: &OwnedFd) -> String {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the pty number into the integer it is given.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } == 0 {
        format!("/dev/pts/{n}")
    } else {
        "/dev/ptmx".into()
    }
}

pub(super) fn send(socket: &Path, master: OwnedFd) -> Result<(), ContainerError> {
    let stream = UnixStream::connect(socket).map_err(ContainerError::io(
        "cannot connect to the console socket",
        socket,
    ))?;
    let name = slave_name(&master);
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(name.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| ContainerError::Io {
        what: "cannot send the terminal to the console socket",
        path: socket.to_path_buf(),
        source: e.into(),
    })?;
    Ok(())
}
