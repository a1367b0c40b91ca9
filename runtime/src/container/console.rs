//! runc's `--console-socket`: the container's terminal is a pty of the container's own devpts (so that
//! `tty`, `ttyname` and `/dev/console` work inside), allocated by init before pivot_root (or by `exec` in
//! the container's mount namespace); its master goes over the unix socket (SCM_RIGHTS) to whoever owns the
//! terminal (conmon, a test), with the slave's name as the message.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// Connects to the console socket (before the caller's root changes).
pub(super) fn connect(socket: &Path) -> Result<UnixStream, String> {
    UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to the console socket {}: {e}",
            socket.display()
        )
    })
}

fn open(path: &Path) -> Result<OwnedFd, String> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|e| e.to_string())?;
    // SAFETY: open with a NUL-terminated path; the fd is owned from here on.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "opening {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh fd from open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a new pty in the devpts mounted at `dev/pts`, sends its master over `stream` and returns the
/// slave and its number. `size` is (rows, columns).
pub(super) fn allocate(
    dev: &Path,
    stream: &UnixStream,
    size: Option<(u16, u16)>,
) -> Result<(OwnedFd, u32), String> {
    let master = open(&dev.join("pts/ptmx"))?;
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
    let slave = open(&dev.join(format!("pts/{n}")))?;
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
