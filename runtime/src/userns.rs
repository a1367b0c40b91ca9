//! Rootless: an ordinary user's `dstack` re-executes itself inside a new user namespace where it is root.
//!
//! The outer process forks (it is still single-threaded), the child unshares a user namespace and waits
//! until the outer process has written its id maps, and only then execs `/proc/self/exe` with the same
//! arguments: exec as uid 0 of the namespace keeps the namespace's full capabilities (an exec before the
//! maps exist would run as the overflow uid and drop them all). The outer process then only waits,
//! forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT sent to it by other processes, and exits with the child's status.
//!
//! Maps: with `newuidmap`/`newgidmap` installed and a range for the user in `/etc/subuid` and
//! `/etc/subgid`, the user becomes 0 and the range 1..; the user's supplementary groups that `/etc/subgid`
//! also grants follow the range, one id each. Otherwise only the user is mapped, to 0, and setgroups is
//! denied (the kernel's rule for a map written without `newgidmap`): the groups are kept, not named.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Set in the re-executed child so that it does not re-execute itself again; the value says which map
/// was written (`range` or `single`).
const MARK: &str = "_DSTACK_IN_USERNS";

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "cannot re-execute into a user namespace: this process already runs {0} threads (the CLI must call enter_rootless_namespace before starting any)"
    )]
    Threads(usize),
    #[error(
        "cannot create a user namespace: {0}; rootless dstack needs unprivileged user namespaces (sysctl user.max_user_namespaces > 0, kernel.apparmor_restrict_unprivileged_userns=0 where present)"
    )]
    Unshare(std::io::Error),
    #[error("cannot write the user namespace's id maps: {0}")]
    Map(String),
    #[error("cannot re-execute dstack: {0}")]
    Spawn(std::io::Error),
}

/// A subordinate id range from `/etc/subuid` or `/etc/subgid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// How the namespace this process runs in was mapped: `Some(true)` for a full subordinate range,
/// `Some(false)` for the single mapping, `None` outside a namespace of ours.
pub fn mapped_range() -> Option<bool> {
    match std::env::var(MARK).ok()?.as_str() {
        "range" => Some(true),
        _ => Some(false),
    }
}

/// Re-executes this process inside a new user namespace when it runs as an ordinary user; returns at once
/// for root and in the re-executed child. In the outer process it never returns: it exits with the
/// child's status. Call it before any thread exists.
pub fn enter_rootless_namespace() -> Result<(), UsernsError> {
    if std::env::var_os(MARK).is_some() || nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let threads = thread_count();
    if threads > 1 {
        return Err(UsernsError::Threads(threads));
    }
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let user = user_name(uid);
    let ranges = match (
        subordinate_range(Path::new("/etc/subuid"), &user, uid),
        subordinate_range(Path::new("/etc/subgid"), &user, uid),
    ) {
        (Some(u), Some(g)) if which("newuidmap").is_some() && which("newgidmap").is_some() => {
            Some((u, g))
        }
        _ => None,
    };
    let mode = if ranges.is_some() { "range" } else { "single" };
    let exec = ExecArgs::prepare(mode)?;

    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the process is single-threaded (checked above), so the child may run any code; it still
    // only makes async-signal-safe calls on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(UsernsError::Spawn(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: the child of fork; `child` only makes raw syscalls and never returns.
        unsafe { child(ready_w, go_r, parent, &exec) }
    }
    // SAFETY: closing the child's ends of the pipes, which this process owns and no longer uses.
    unsafe {
        libc::close(ready_w);
        libc::close(go_r);
    }
    let result = wait_ready(ready_r).and_then(|()| write_maps(pid, uid, gid, &user, ranges));
    match result {
        Ok(()) => {
            // SAFETY: one byte to the pipe this process owns; the child execs when it arrives.
            unsafe { libc::write(go_w, [1u8].as_ptr().cast(), 1) };
        }
        Err(err) => {
            // SAFETY: reaping the child we forked; closing `go_w` without a byte makes it exit.
            unsafe {
                libc::close(go_w);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(err);
        }
    }
    // SAFETY: closing our end after the byte went through; the child holds its own copy of nothing.
    unsafe { libc::close(go_w) };
    wait_and_exit(pid)
}

/// Everything the child needs for `execve`, built before the fork so the child allocates nothing.
struct ExecArgs {
    path: CString,
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecArgs {
    fn prepare(mode: &str) -> Result<ExecArgs, UsernsError> {
        let cstr = |bytes: Vec<u8>| {
            CString::new(bytes).map_err(|e| {
                UsernsError::Spawn(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            })
        };
        let argv = std::env::args_os()
            .map(|a| cstr(a.into_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut envp = std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstr(kv)
            })
            .collect::<Result<Vec<_>, _>>()?;
        envp.push(cstr(format!("{MARK}={mode}").into_bytes())?);
        let pointers = |v: &[CString]| {
            let mut p: Vec<*const libc::c_char> = v.iter().map(|a| a.as_ptr()).collect();
            p.push(std::ptr::null());
            p
        };
        let (argv_ptrs, envp_ptrs) = (pointers(&argv), pointers(&envp));
        // The pointers stay valid: the CStrings' heap buffers do not move when the Vecs do.
        let mut strings = argv;
        strings.extend(envp);
        Ok(ExecArgs {
            path: cstr(b"/proc/self/exe".to_vec())?,
            _strings: strings,
            argv: argv_ptrs,
            envp: envp_ptrs,
        })
    }
}

/// The forked child: unshare, report, wait for the maps, exec. Only raw syscalls from here on.
///
/// # Safety
/// Must be called only in the child of `fork`, with the pipe ends it owns.
unsafe fn child(ready_w: i32, go_r: i32, parent: libc::pid_t, exec: &ExecArgs) -> ! {
    // SAFETY: raw syscalls on fds this child owns and on memory prepared before the fork.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER) != 0 {
            let errno = *libc::__errno_location();
            libc::write(ready_w, errno.to_ne_bytes().as_ptr().cast(), 4);
            libc::_exit(125);
        }
        libc::write(ready_w, [0u8; 4].as_ptr().cast(), 4);
        libc::close(ready_w);
        let mut byte = 0u8;
        if libc::read(go_r, (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::_exit(125);
        }
        libc::close(go_r);
        // A SIGKILLed outer process takes the whole rootless run down with it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(125);
        }
        libc::execve(exec.path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
        libc::_exit(127);
    }
}

fn pipe() -> Result<(i32, i32), UsernsError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(UsernsError::Spawn(std::io::Error::last_os_error()));
    }
    Ok((fds[0], fds[1]))
}

fn wait_ready(ready_r: i32) -> Result<(), UsernsError> {
    let mut buf = [0u8; 4];
    // SAFETY: reading into a 4-byte buffer from the pipe this process owns, then closing it.
    let n = unsafe { libc::read(ready_r, buf.as_mut_ptr().cast(), 4) };
    // SAFETY: as above.
    unsafe { libc::close(ready_r) };
    if n != 4 {
        return Err(UsernsError::Spawn(std::io::Error::other(
            "the re-executed child exited before creating its namespace",
        )));
    }
    match i32::from_ne_bytes(buf) {
        0 => Ok(()),
        errno => Err(UsernsError::Unshare(std::io::Error::from_raw_os_error(
            errno,
        ))),
    }
}

fn write_maps(
    pid: libc::pid_t,
    uid: u32,
    gid: u32,
    user: &str,
    ranges: Option<(IdRange, IdRange)>,
) -> Result<(), UsernsError> {
    if let Some((u, g)) = ranges {
        // The supplementary groups /etc/subgid grants, after the range: `user: host` jobs keep them by
        // their own numbers (see the plan's `keep_id`).
        let groups: Vec<String> = granted_groups(user, uid, gid, g)
            .into_iter()
            .zip(1u32..)
            .filter_map(|(group, i)| Some([g.count.checked_add(i)?, group, 1]))
            .flatten()
            .map(|n| n.to_string())
            .collect();
        // Both helpers at once: each is a setuid exec, and they do not depend on each other.
        let spawn = |tool: &str, id: u32, r: IdRange, extra: &[String]| {
            std::process::Command::new(tool)
                .args([pid.to_string(), "0".into(), id.to_string(), "1".into()])
                .args(["1".to_string(), r.start.to_string(), r.count.to_string()])
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("{tool}: {e}"))
        };
        let finish = |tool: &str, child: std::process::Child| {
            let out = child
                .wait_with_output()
                .map_err(|e| format!("{tool}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{tool}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let uids = spawn("newuidmap", uid, u, &[]);
        let gids = spawn("newgidmap", gid, g, &groups);
        let uids = uids.and_then(|c| finish("newuidmap", c));
        let gids = gids.and_then(|c| finish("newgidmap", c));
        match uids.and(gids) {
            Ok(()) => {
                tracing::debug!(
                    "rootless: uid {uid} -> 0 and {} subordinate ids mapped",
                    u.count
                );
                return Ok(());
            }
            // The uid map may already be written, so a single mapping cannot follow: say what failed.
            Err(e) => return Err(UsernsError::Map(e)),
        }
    }
    tracing::info!(
        "rootless: only uid {uid} is mapped (to root): no range for {user} in /etc/subuid and /etc/subgid, or newuidmap/newgidmap (package uidmap) missing; images whose files or users need other ids will fail"
    );
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .map_err(|e| UsernsError::Map(format!("/proc/{pid}/{file}: {e}")))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("gid_map", format!("0 {gid} 1\n"))
}

const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

fn wait_and_exit(pid: libc::pid_t) -> ! {
    // The child is in our process group: what the terminal sends reaches it without us.
    let Ok(status) = crate::child::wait_forwarding(pid, &FORWARDED, true) else {
        std::process::exit(125);
    };
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: restoring the default action and raising the child's signal on ourselves, so the
        // caller sees the same death.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

/// The number of threads of this process once the ones that have just ended are gone: a joined thread
/// may still be counted for a moment (`pthread_join` returns as the kernel starts tearing it down),
/// so a count above one is read again for up to 50 ms before it stands. A thread that still runs is
/// counted all along: the callers refuse to clone or fork then.
pub fn settled_thread_count() -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(50);
    loop {
        let n = thread_count();
        if n <= 1 || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// The number of threads of this process, from `/proc/self/status`.
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

/// The first range for `user` (by name or uid) in a subuid/subgid file.
pub fn subordinate_range(file: &Path, user: &str, uid: u32) -> Option<IdRange> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_subordinate(&text, user, uid)
}

fn parse_subordinate(text: &str, user: &str, uid: u32) -> Option<IdRange> {
    parse_all_subordinate(text, user, uid).into_iter().next()
}

/// Every range for `user` in a subuid/subgid file's text, in order.
fn parse_all_subordinate(text: &str, user: &str, uid: u32) -> Vec<IdRange> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().split(':').collect();
            if f.len() != 3 || (f[0] != user && f[0] != uid.to_string()) {
                return None;
            }
            let range = IdRange {
                start: f[1].parse().ok()?,
                count: f[2].parse().ok()?,
            };
            (range.count > 0).then_some(range)
        })
        .collect()
}

impl IdRange {
    fn contains(&self, id: u32) -> bool {
        id >= self.start && u64::from(id) < u64::from(self.start) + u64::from(self.count)
    }
}

/// This process's supplementary groups (but `gid`, and those in `range`) that `/etc/subgid` grants `user`,
/// which `newgidmap` therefore lets us map. The kernel lets a namespace keep unmapped groups, not name them.
fn granted_groups(user: &str, uid: u32, gid: u32, range: IdRange) -> Vec<u32> {
    let text = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
    let grants = parse_all_subordinate(&text, user, uid);
    let groups = nix::unistd::getgroups().unwrap_or_default();
    choose_granted(groups.iter().map(|g| g.as_raw()), gid, range, &grants)
}

fn choose_granted(
    groups: impl Iterator<Item = u32>,
    gid: u32,
    range: IdRange,
    grants: &[IdRange],
) -> Vec<u32> {
    let mut chosen: Vec<u32> = Vec::new();
    for g in groups {
        if g != gid
            && !range.contains(g)
            && grants.iter().any(|r| r.contains(g))
            && !chosen.contains(&g)
        {
            chosen.push(g);
        }
    }
    chosen
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_match_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:200000:65536\nbob:300000:0\n";
        assert_eq!(
            parse_subordinate(text, "alice", 1000),
            Some(IdRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subordinate(text, "carol", 1001),
            Some(IdRange {
                start: 200000,
                count: 65536
            })
        );
        assert_eq!(parse_subordinate(text, "bob", 1002), None);
    }

    #[test]
    fn only_groups_subgid_grants_outside_the_range_are_mapped() {
        let text = "alice:100000:65536\nalice:27:1\nalice:44:2\nbob:50:1\n";
        let grants = parse_all_subordinate(text, "alice", 1000);
        assert_eq!(grants.len(), 3);
        let range = grants[0];
        let groups = [1000, 27, 45, 50, 100005, 27].into_iter();
        assert_eq!(choose_granted(groups, 1000, range, &grants), vec![27, 45]);
    }
}
