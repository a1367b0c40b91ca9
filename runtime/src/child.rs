//! Waiting in the foreground for a child process while passing on the signals we receive: the rootless
//! re-exec waiting for dstack in its user namespace, and `dstack-oci run`/`exec` waiting for the container.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);
static SKIP_TERMINAL: AtomicBool = AtomicBool::new(false);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    if code == libc::SI_KERNEL && SKIP_TERMINAL.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: kill is async-signal-safe.
    unsafe { libc::kill(CHILD.load(Ordering::Relaxed), sig) };
}

/// Waits for our child `pid`, passing each of `signals` on to it, and returns its wait status. With
/// `in_our_group`, signals the terminal sends (SI_KERNEL) are not passed on: they reach a child in our
/// process group directly, and passing them too would deliver them twice.
pub fn wait_forwarding(
    pid: libc::pid_t,
    signals: &[libc::c_int],
    in_our_group: bool,
) -> std::io::Result<libc::c_int> {
    CHILD.store(pid, Ordering::Relaxed);
    SKIP_TERMINAL.store(in_our_group, Ordering::Relaxed);
    for &sig in signals {
        // SAFETY: installing a handler that only calls kill; the sigaction struct is fully initialised.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child into a local status word.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let err = std::io::Error::last_os_error();
        if r < 0 && err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}
