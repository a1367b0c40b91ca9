//! runc's `--console-socket`: the container's terminal is a pty of the container's own devpts (so that
//! `tty`, `ttyname` and `/dev/console` work inside), allocated by init before pivot_root (or by `exec` in
//! the container's mount namespace); its master goes over the unix socket (SCM_RIGHTS) to whoever owns the
//! terminal (conmon, a test), with the slave's name as the message.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::inroot::Root;

/// Connects to the console socket (before the caller's root changes).
pub(super) fn connect(socket: &Path) -> Result<UnixStream, String> {
    UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to the console socket {}: {e}",
            socket.display()
        )
    })
}

/// Opens `path` inside `root` read-write, as no controlling terminal.
fn open(root: &Root, path: &str) -> Result<OwnedFd, String> {
    root.open_with(Path::new(path), libc::O_RDWR | libc::O_NOCTTY)
        .map_err(|e| format!("opening {e}"))
}

/// Opens a new pty in the devpts mounted at `/dev/pts` of `root`, sends its master over `stream` and
/// returns the slave and its number. `size` is (rows, columns).
pub(super) fn allocate(
    root: &Root,
    stream: &UnixStream,
    size: Option<(u16, u16)>,
) -> Result<(OwnedFd, u32), String> {
    let master = open(root, "/dev/pts/ptmx")?;
    let (mut unlock, mut n): (libc::c_int, libc::c_uint) = (0, 0);
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes one; both on our own pty master.
    let ok = unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) == 0
            && libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) == 0
    };
    if !ok {
        return Err(format!(
            "setting up the pty: {}",
            std::io::Error::last_os_error()
        ));
    }
    let slave = open(root, &format!("/dev/pts/{n}"))?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ with a valid winsize on our pty master.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let name = format!("/dev/pts/{n}");
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(name.as_bytes())],
        &[ControlMessage::ScmRights(&[master.as_raw_fd()])],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("sending the terminal to the console socket: {e}"))?;
    Ok((slave, n))
}
