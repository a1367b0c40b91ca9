//! The probes that need namespaces: can this user create a user namespace, and can it mount the kernel
//! overlay there (with `userxattr`, as rootless runs do) on the state root's filesystem? A forked child tries
//! both and exits, so its namespaces and mount die with it; its scratch directories are removed after.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;

/// What the child found: `Err` holds why, in words.
pub struct Probe {
    pub userns: Result<(), String>,
    pub overlay: Result<(), String>,
}

/// Runs the probes in a child, with scratch directories made under `dir`.
pub fn probe(dir: &Path, rootless: bool) -> Probe {
    let not_probed = |why: String| Probe {
        userns: Err(why.clone()),
        overlay: Err(why),
    };
    // fork() copies only the calling thread: the child must not need another one's locks.
    if runtime::userns::thread_count() > 1 {
        return not_probed("not probed: dstack runs several threads".into());
    }
    let scratch = match Scratch::make(dir) {
        Ok(s) => s,
        Err(e) => {
            return not_probed(format!(
                "cannot make a scratch directory in {}: {e}",
                dir.display()
            ));
        }
    };
    let (read_end, write_end) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return not_probed(format!("cannot make a pipe: {e}")),
    };
    // SAFETY: this process is single-threaded (checked above); the child only makes system calls, writes to
    // the pipe and leaves with _exit.
    match unsafe { nix::unistd::fork() } {
        Err(e) => not_probed(format!("cannot fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(read_end);
            child(&scratch, rootless, write_end);
            // SAFETY: _exit skips the parent's atexit handlers and buffered output, as a forked child should.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let mut report = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut report);
            let status = waitpid(child, None);
            let mut probe = Probe {
                userns: Ok(()),
                overlay: Ok(()),
            };
            for line in report.lines() {
                if let Some(why) = line.strip_prefix("userns:") {
                    probe.userns = Err(why.to_string());
                } else if let Some(why) = line.strip_prefix("overlay:") {
                    probe.overlay = Err(why.to_string());
                }
            }
            // A child that died before it said everything proves nothing.
            if !matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) {
                let why = format!("the probe did not finish ({status:?})");
                for result in [&mut probe.userns, &mut probe.overlay] {
                    if result.is_ok() {
                        *result = Err(why.clone());
                    }
                }
            }
            probe
        }
    }
}

/// In the child: report each failure as one `userns:` or `overlay:` line.
fn child(scratch: &Scratch, rootless: bool, out: OwnedFd) {
    let mut out = std::fs::File::from(out);
    let mut say = |what: &str, why: String| {
        let _ = writeln!(out, "{what}:{}", why.replace('\n', " "));
    };
    if rootless {
        if let Err(why) = enter_user_namespace() {
            say("userns", why.clone());
            say(
                "overlay",
                format!("no user namespace to mount it in ({why})"),
            );
            return;
        }
    } else if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWNS) {
        say("overlay", format!("cannot make a mount namespace: {e}"));
        return;
    }
    if let Err(why) = mount_overlay(scratch, rootless) {
        say("overlay", why);
    }
    if !rootless && let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
        say("userns", format!("cannot create a user namespace: {e}"));
    }
}

fn enter_user_namespace() -> Result<(), String> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("cannot create a user namespace: {e}"))?;
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|e| format!("cannot write {file}: {e}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))
}

fn mount_overlay(scratch: &Scratch, rootless: bool) -> Result<(), String> {
    // Our mount must not propagate back to the host's namespace.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make / private in the probe's mount namespace: {e}"))?;
    let sub = |name: &str| scratch.path.join(name).display().to_string();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        sub("lower"),
        sub("upper"),
        sub("work")
    );
    if rootless {
        data.push_str(",userxattr");
    }
    nix::mount::mount(
        Some("overlay"),
        scratch.path.join("merged").as_path(),
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| {
        format!(
            "mounting overlay{} on {}'s filesystem: {e}",
            if rootless { " with userxattr" } else { "" },
            scratch.parent.display()
        )
    })
}

/// `DIR/.info-probe-<pid>/{lower,upper,work,merged}`, removed on drop.
struct Scratch {
    parent: PathBuf,
    path: PathBuf,
}

impl Scratch {
    fn make(dir: &Path) -> std::io::Result<Scratch> {
        let path = dir.join(format!(".info-probe-{}", std::process::id()));
        runtime::private::create_dir(&path)?;
        let scratch = Scratch {
            parent: dir.to_path_buf(),
            path,
        };
        for sub in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir(scratch.path.join(sub))?;
        }
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Only the parent gets here: the child leaves with _exit. Overlay leaves `work/work` mode 0, which
        // an ordinary user cannot list until it opens it again.
        use std::os::unix::fs::PermissionsExt;
        let inner = self.path.join("work/work");
        let _ = std::fs::set_permissions(inner, std::fs::Permissions::from_mode(0o700));
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
