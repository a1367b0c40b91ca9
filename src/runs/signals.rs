//! Stop signals before the container exists and after it has ended. While it runs, the runtime's
//! supervisor takes SIGINT/SIGTERM/SIGHUP (through a signalfd) and forwards them to the job.
//!
//! Before the container starts (copying the project, pulling), Ctrl-C or `dstack stop` should stop the
//! run at once, and it should end `stopped`, not `aborted`: the handler writes the stop request file (with
//! async-signal-safe calls only) and lets the signal end the process; whoever looks next records the end.
//! After the job has ended, the same signals are ignored so that saving artifacts completes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::OnceLock;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The stop request file's path, made before the handler is installed (no allocation in the handler).
static REQUEST_PATH: OnceLock<CString> = OnceLock::new();

extern "C" fn record_and_die(signal: libc::c_int) {
    if let Some(path) = REQUEST_PATH.get() {
        // SAFETY: open, write, close, signal and raise are async-signal-safe; `path` is a valid C string
        // that lives for the whole process.
        unsafe {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o600,
            );
            if fd >= 0 {
                let word = b"stop";
                libc::write(fd, word.as_ptr().cast(), word.len());
                libc::close(fd);
            }
        }
    }
    // SAFETY: restoring the default action and re-raising ends the process as the signal would.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Until the container starts: a stop signal records a graceful stop request in `request_path` and ends
/// the process.
pub fn record_stop_on_signal(request_path: &Path) -> nix::Result<()> {
    let path = CString::new(request_path.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
    let _ = REQUEST_PATH.set(path);
    install(SigHandler::Handler(record_and_die))
}

/// After the job has ended: stop signals are ignored while the run's end is recorded.
pub fn ignore_stop_signals() -> nix::Result<()> {
    install(SigHandler::SigIgn)
}

fn install(handler: SigHandler) -> nix::Result<()> {
    let action = SigAction::new(handler, SaFlags::SA_RESTART, SigSet::empty());
    for signal in STOP_SIGNALS {
        // SAFETY: the handler only makes async-signal-safe calls (see `record_and_die`).
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}
