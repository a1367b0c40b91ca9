//! Outbound access for rootless runs, which cannot create a veth on the host: pasta or slirp4netns,
//! when installed and usable. Both need `/dev/net/tun`, which some machines keep root-only; then the
//! caller falls back to the host network. `DSTACK_USERMODE_NET=pasta|slirp4netns|none` picks one (and
//! lets tests drive this path as root).

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::NetError;

pub const USERMODE_ENV: &str = "DSTACK_USERMODE_NET";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tool {
    Pasta,
    Slirp4netns,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Pasta => "pasta",
            Tool::Slirp4netns => "slirp4netns",
        }
    }
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn tun_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map(drop)
        .map_err(|e| format!("/dev/net/tun is not usable by this user ({e})"))
}

/// The tools to try, in order, or why there are none.
pub(super) fn candidates() -> Result<Vec<Tool>, String> {
    match std::env::var(USERMODE_ENV).as_deref() {
        Ok("pasta") => return Ok(vec![Tool::Pasta]),
        Ok("slirp4netns") => return Ok(vec![Tool::Slirp4netns]),
        Ok("none") => return Err(format!("{USERMODE_ENV}=none")),
        _ => {}
    }
    let tools: Vec<Tool> = [Tool::Pasta, Tool::Slirp4netns]
        .into_iter()
        .filter(|t| installed(t.name()))
        .collect();
    if tools.is_empty() {
        return Err("neither pasta nor slirp4netns is installed".into());
    }
    tun_usable()?;
    Ok(tools)
}

/// A running user-mode network; dropping it stops the helper.
pub(super) struct UserNet {
    pub tool: Tool,
    child: Option<Child>,
    _exit_fd: Option<OwnedFd>,
}

impl Drop for UserNet {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors; O_CLOEXEC is cleared below only on the ends a helper keeps.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn inheritable(fd: &OwnedFd) {
    // SAFETY: clearing FD_CLOEXEC on a descriptor we own, so the helper we spawn next inherits it.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
}

/// Ends the helper with SIGKILL should the supervisor die (SIGKILLed supervisors leave nothing behind).
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        })
    };
}

/// Gives the helper `fd` as its descriptor 3 (inherited across exec).
fn pass_as_fd3(cmd: &mut Command, fd: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls dup2/fcntl, async-signal-safe; fd 3
    // in the child is ours to take (std marks every other descriptor close-on-exec).
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// Waits until the namespace has a default route (the helper configured it) or the helper exits.
fn wait_configured(child: &mut Child, netns: &OwnedFd) -> Result<(), String> {
    use std::os::fd::AsFd;
    let mut nl = super::netns::run_in(netns.as_fd(), super::netlink::Netlink::open)
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if nl
            .routes()
            .map_err(|e| e.to_string())?
            .iter()
            .any(|r| r.len == 0)
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let line = err
                .lines()
                .rfind(|l| !l.contains("syslog") && !l.trim().is_empty());
            return Err(line
                .map(|l| l.trim().to_string())
                .unwrap_or_else(|| format!("exited ({status})")));
        }
        if Instant::now() > deadline {
            return Err("no network after 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Gives the namespace `netns` of `pid` an outbound network with `tool`; returns once it is configured.
pub(super) fn start(tool: Tool, pid: i32, netns: &OwnedFd) -> Result<UserNet, NetError> {
    let fail = |message: String| NetError::UserMode {
        tool: tool.name(),
        message,
    };
    let mut exit_fd = None;
    let mut cmd = match tool {
        Tool::Pasta => {
            // Foreground, so it is our child and dies with us; as our own (namespace) root, not the
            // `nobody` pasta switches to by default, which a rootless namespace may not map; ports are
            // forwarded by the supervisor, pasta only carries the job's own connections.
            let mut cmd = Command::new("pasta");
            cmd.args([
                "--foreground",
                "--runas",
                "0:0",
                "--config-net",
                "--quiet",
                "-t",
                "none",
                "-u",
                "none",
                "-T",
                "none",
                "-U",
                "none",
            ])
            // Not /proc/<pid>/ns/net: pasta drops its privileges before it opens the namespace, and then
            // may not read another process's (it fails with "Couldn't open network namespace"). It
            // opens its own copy of our descriptor instead, as fd 3.
            .args(["--netns", "/proc/self/fd/3"]);
            pass_as_fd3(&mut cmd, netns.as_raw_fd());
            cmd
        }
        Tool::Slirp4netns => {
            let (exit_r, exit_w) = pipe().map_err(|e| fail(e.to_string()))?;
            inheritable(&exit_r);
            let mut cmd = Command::new("slirp4netns");
            cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback"])
                .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
                .arg(pid.to_string())
                .arg("tap0");
            exit_fd = Some((exit_r, exit_w));
            cmd
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let spawned = cmd.spawn();
    // The helper has its copy of the exit pipe's read end; ours would keep it from ever seeing EOF.
    let exit_w = exit_fd.map(|(r, w)| {
        drop(r);
        w
    });
    let mut child = spawned.map_err(|e| fail(e.to_string()))?;
    if let Err(message) = wait_configured(&mut child, netns) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(fail(message));
    }
    // Its stderr pipe stays open (in `child`): closing it would kill a helper that later writes there.
    Ok(UserNet {
        tool,
        child: Some(child),
        _exit_fd: exit_w,
    })
}
