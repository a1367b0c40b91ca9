//! Waiting for a child (`run`'s init, `exec`'s process) while passing on the signals we receive, as runc's
//! foreground modes do.

const FORWARDED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Waits for our child `pid`, forwarding signals to it; returns its exit code (128+N for signal N).
pub fn wait_forwarding(pid: i32) -> i32 {
    match runtime::child::wait_forwarding(pid, &FORWARDED, false) {
        Ok(status) if libc::WIFSIGNALED(status) => 128 + libc::WTERMSIG(status),
        Ok(status) => libc::WEXITSTATUS(status),
        Err(_) => 255,
    }
}
