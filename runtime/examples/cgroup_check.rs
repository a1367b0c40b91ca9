//! cgroup v2 checks run inside the VM by `scripts/vm-test`: each prints `PASS name` or `FAIL name: detail`.
//!
//! `cgroup_check root` (as root), `rootless` (as a user owning a delegated subtree), `leaf` (as a user owning
//! only its own cgroup), `undelegated` (as a user without delegation). `cgroup_check alloc MB` is the helper
//! that allocates. This process is single-threaded, so it may clone children directly: they are born in their
//! cgroup with `clone3(CLONE_INTO_CGROUP)`, as the container runtime does.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use runtime::cgroup::{self, Cgroup, CgroupError, DevicePolicy, Layout, Limits, Placement};

const MB: u64 = 1 << 20;
/// Not taken from libc, whose constant is an overflowing `c_int`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("alloc") => alloc(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(200)),
        Some("root") => root(),
        Some("rootless") => rootless("rootless", "/sys/fs/cgroup/deleg/dstack"),
        Some("leaf") => leaf(),
        Some("undelegated") => undelegated(),
        _ => {
            eprintln!("usage: cgroup_check root|rootless|leaf|undelegated|alloc MB");
            std::process::exit(2);
        }
    }
}

/// Allocates and touches `mb` megabytes, then says so.
fn alloc(mb: usize) {
    let mut chunks = Vec::new();
    for _ in 0..mb {
        let mut chunk = vec![0u8; MB as usize];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        chunks.push(chunk);
    }
    println!("allocated {mb} MB");
}

fn report(name: &str, result: Result<String, String>) {
    match result {
        Ok(detail) if detail.is_empty() => println!("PASS {name}"),
        Ok(detail) => println!("PASS {name} ({detail})"),
        Err(detail) => println!("FAIL {name}: {}", detail.replace('\n', " | ")),
    }
}

fn enforced(name: &str, limits: &Limits) -> Result<Cgroup, String> {
    match cgroup::create(name, limits, true) {
        Ok(Placement::Enforced(cg)) => Ok(cg),
        Ok(Placement::Unenforced { reason }) => Err(format!("not enforced: {reason}")),
        Err(e) => Err(format!("create: {e}")),
    }
}

/// A child cloned straight into a cgroup; its stdout and stderr come back through a pipe.
struct Child {
    pid: i32,
    output: File,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn spawn(cg: Option<BorrowedFd<'_>>, namespaces: i32, argv: &[&str]) -> Result<Child, String> {
    let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let mut args = CloneArgs {
        flags: namespaces as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cg {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: this process is single-threaded, so the child may run ordinary code until it execs; `args` is a
    // valid clone_args of the size given, with no stack (fork semantics).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: in the child: point stdout/stderr at the pipe and exec; `ptrs` is a NULL-terminated array of
        // C strings that live until execv replaces the process.
        unsafe {
            libc::dup2(write.as_raw_fd(), 1);
            libc::dup2(write.as_raw_fd(), 2);
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    if pid < 0 {
        return Err(format!("clone3: {}", std::io::Error::last_os_error()));
    }
    drop(write);
    Ok(Child {
        pid: pid as i32,
        output: File::from(read),
    })
}

impl Child {
    /// Waits for the child; returns its exit code (128+N for signal N) and what it printed.
    fn wait(mut self) -> (i32, String) {
        let mut out = String::new();
        let _ = self.output.read_to_string(&mut out);
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        let code = if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            libc::WEXITSTATUS(status)
        };
        (code, out)
    }
}

fn exe() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<{e}>"))
        .trim()
        .to_string()
}

fn memory_oom(name: &str) -> Result<String, String> {
    let cg = enforced(
        name,
        &Limits {
            memory: Some(64 * MB),
            ..Limits::default()
        },
    )?;
    let swap = cg.path().join("memory.swap.max");
    if swap.exists() && read(&swap) != "0" {
        return Err(format!("memory.swap.max is {}", read(&swap)));
    }
    let exe = exe();
    let (code, out) = spawn(cg.clone_into_fd(), 0, &[&exe, "alloc", "200"])?.wait();
    let oom = cg.oom_killed();
    let peak = cg.memory_peak();
    cg.remove().map_err(|e| e.to_string())?;
    if code != 137 || !oom {
        return Err(format!("exit {code}, oom_killed {oom}, output {out:?}"));
    }
    Ok(format!(
        "exit 137, oom_killed, peak {} MB",
        peak.unwrap_or(0) / MB
    ))
}

fn born_in_cgroup(name: &str) -> Result<String, String> {
    let cg = enforced(
        name,
        &Limits {
            pids: Some(16),
            ..Limits::default()
        },
    )?;
    let (code, out) = spawn(cg.clone_into_fd(), 0, &["/bin/cat", "/proc/self/cgroup"])?.wait();
    let expected = format!(
        "0::/{}",
        cg.path().strip_prefix("/sys/fs/cgroup").unwrap().display()
    );
    cg.remove().map_err(|e| e.to_string())?;
    if code != 0 || out.trim() != expected {
        return Err(format!(
            "exit {code}, /proc/self/cgroup {out:?}, expected {expected:?}"
        ));
    }
    Ok(expected)
}

fn cpu_half_core(name: &str) -> Result<String, String> {
    let cg = enforced(
        name,
        &Limits {
            cpu: Some(0.5),
            ..Limits::default()
        },
    )?;
    let cpu_max = read(&cg.path().join("cpu.max"));
    let child = spawn(
        cg.clone_into_fd(),
        0,
        &["/bin/sh", "-c", "while :; do :; done"],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let (before, start) = (cg.cpu_usage().ok_or("no cpu.stat")?, Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let share = (cg.cpu_usage().ok_or("no cpu.stat")? - before).as_secs_f64()
        / start.elapsed().as_secs_f64();
    cg.remove().map_err(|e| e.to_string())?;
    let (code, _) = child.wait();
    if cpu_max != "50000 100000" || !(0.4..=0.6).contains(&share) || code != 137 {
        return Err(format!(
            "cpu.max {cpu_max:?}, share {share:.2}, exit after remove {code}"
        ));
    }
    Ok(format!("{share:.2} cores"))
}

fn no_leftovers(dir: &str) -> Result<String, String> {
    let left: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into())
                .collect()
        })
        .unwrap_or_default();
    if left.is_empty() {
        Ok(String::new())
    } else {
        Err(format!("{dir} still holds {left:?}"))
    }
}

fn root() {
    report(
        "layout-v2",
        match cgroup::detect() {
            Ok(Layout::Unified { mount, .. }) if mount == Path::new("/sys/fs/cgroup") => {
                Ok(String::new())
            }
            other => Err(format!("{other:?}")),
        },
    );
    report("memory-oom", memory_oom("vm-oom"));
    report("born-in-cgroup", born_in_cgroup("vm-born"));
    report("cpu-half-core", cpu_half_core("vm-cpu"));
    report("pids-fork-bomb", fork_bomb());
    report("device-filter", device_filter());
    report("job-sees-limits", job_sees_limits());
    report("kernel-refuses-limit", kernel_refuses());
    report("sweep-leftovers", sweep());
    report("no-leftovers", no_leftovers("/sys/fs/cgroup/dstack"));
}

fn fork_bomb() -> Result<String, String> {
    let cg = enforced(
        "vm-pids",
        &Limits {
            pids: Some(32),
            ..Limits::default()
        },
    )?;
    let child = spawn(
        cg.clone_into_fd(),
        0,
        &["/bin/sh", "-c", "f() { f | f & }; f; sleep 30"],
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let current: u64 = read(&cg.path().join("pids.current"))
        .parse()
        .unwrap_or(u64::MAX);
    let events = read(&cg.path().join("pids.events"));
    cg.remove().map_err(|e| e.to_string())?;
    let _ = child.wait();
    // The machine survived if it can still start a process.
    let (code, _) = spawn(None, 0, &["/bin/true"])?.wait();
    if current > 32 || events.contains("max 0") || code != 0 {
        return Err(format!(
            "pids.current {current}, pids.events {events:?}, /bin/true exit {code}"
        ));
    }
    Ok(format!(
        "pids.current {current}, {}",
        events.replace('\n', " ")
    ))
}

fn device_filter() -> Result<String, String> {
    // A node made outside the job: the filter must deny it even though the file exists.
    let _ = std::fs::remove_file("/tmp/kmsg-node");
    let status = std::process::Command::new("/bin/mknod")
        .args(["/tmp/kmsg-node", "c", "1", "11"])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return Err("cannot mknod /tmp/kmsg-node outside the job".into());
    }
    let cg = enforced(
        "vm-dev",
        &Limits {
            devices: Some(DevicePolicy::docker_default()),
            ..Limits::default()
        },
    )?;
    let script = "(: </dev/null) && echo null-ok; (: </tmp/kmsg-node) && echo node-ok; \
                  mknod /tmp/inside c 1 11 && echo mknod-ok; (: </tmp/inside) && echo inside-ok; exit 0";
    let (_, out) = spawn(cg.clone_into_fd(), 0, &["/bin/sh", "-c", script])?.wait();
    cg.remove().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file("/tmp/kmsg-node");
    let _ = std::fs::remove_file("/tmp/inside");
    let allowed: Vec<&str> = out.lines().filter(|l| l.ends_with("-ok")).collect();
    if allowed != ["null-ok"] || !out.contains("not permitted") {
        return Err(format!("output {out:?}"));
    }
    Ok("null allowed; a pre-made /dev/kmsg node and mknod denied".into())
}

fn job_sees_limits() -> Result<String, String> {
    let limits = Limits {
        memory: Some(64 * MB),
        cpu: Some(0.5),
        pids: Some(100),
        ..Limits::default()
    };
    let cg = enforced("vm-view", &limits)?;
    // A fresh cgroup2 mount inside its cgroup namespace, as the container's /sys/fs/cgroup will be.
    let script = "mkdir -p /tmp/cgview && mount -t cgroup2 none /tmp/cgview && cd /tmp/cgview && \
                  cat memory.max cpu.max pids.max /proc/self/cgroup";
    let flags = libc::CLONE_NEWCGROUP | libc::CLONE_NEWNS;
    let (code, out) = spawn(cg.clone_into_fd(), flags, &["/bin/sh", "-c", script])?.wait();
    cg.remove().map_err(|e| e.to_string())?;
    let lines: Vec<&str> = out.lines().collect();
    if code != 0 || lines != ["67108864", "50000 100000", "100", "0::/"] {
        return Err(format!("exit {code}, saw {lines:?}"));
    }
    Ok("memory.max, cpu.max, pids.max at its own /sys/fs/cgroup root".into())
}

fn kernel_refuses() -> Result<String, String> {
    match cgroup::create(
        "vm-refused",
        &Limits {
            cpu: Some(1e9),
            ..Limits::default()
        },
        true,
    ) {
        Err(e @ CgroupError::Refused { .. }) => {
            let text = e.to_string();
            if text.contains("cpu.max") && !Path::new("/sys/fs/cgroup/dstack/vm-refused").exists() {
                Ok(text)
            } else {
                Err(text)
            }
        }
        other => Err(format!("{other:?}")),
    }
}

fn sweep() -> Result<String, String> {
    let cg = enforced(
        "vm-sweep",
        &Limits {
            memory: Some(64 * MB),
            ..Limits::default()
        },
    )?;
    let child = spawn(cg.clone_into_fd(), 0, &["/bin/sleep", "60"])?;
    // The supervisor dies without cleaning up.
    std::mem::forget(cg);
    let swept = cgroup::sweep_leftovers(|name| name != "vm-sweep").map_err(|e| e.to_string())?;
    let (code, _) = child.wait();
    if swept != ["vm-sweep"] || code != 137 || Path::new("/sys/fs/cgroup/dstack/vm-sweep").exists()
    {
        return Err(format!("swept {swept:?}, sleeper exit {code}"));
    }
    Ok(String::new())
}

fn rootless(prefix: &str, dstack_dir: &str) {
    let uid = nix::unistd::getuid();
    report(
        &format!("{prefix}-not-root"),
        if uid.is_root() {
            Err("running as root".into())
        } else {
            Ok(format!("uid {uid}"))
        },
    );
    report(
        &format!("{prefix}-memory-oom"),
        memory_oom(&format!("{prefix}-oom")),
    );
    report(
        &format!("{prefix}-born-in-cgroup"),
        born_in_cgroup(&format!("{prefix}-born")),
    );
    report(
        &format!("{prefix}-cpu-half-core"),
        cpu_half_core(&format!("{prefix}-cpu")),
    );
    report(&format!("{prefix}-no-leftovers"), no_leftovers(dstack_dir));
}

/// Only our own cgroup is ours: our processes must move to a leaf so that it can enable controllers.
fn leaf() {
    let own = read(Path::new("/proc/self/cgroup"));
    rootless("leaf", "/sys/fs/cgroup/solo/job/dstack");
    let moved = read(Path::new("/proc/self/cgroup"));
    report(
        "leaf-moved-into-leaf",
        if moved == "0::/solo/job/leaf" {
            Ok(format!("{own} -> {moved}"))
        } else {
            Err(format!("{own} -> {moved}"))
        },
    );
}

fn undelegated() {
    let limits = Limits {
        memory: Some(64 * MB),
        ..Limits::default()
    };
    report(
        "undelegated-warning",
        match cgroup::create("vm-nodeleg", &limits, false) {
            Ok(Placement::Unenforced { reason }) if reason.contains("not delegated") => Ok(reason),
            other => Err(format!("{other:?}")),
        },
    );
    report(
        "undelegated-strict-fails",
        match cgroup::create("vm-nodeleg", &limits, true) {
            Err(e @ CgroupError::NotEnforced { .. })
                if e.to_string().contains("cannot be enforced") =>
            {
                Ok(e.to_string())
            }
            other => Err(format!("{other:?}")),
        },
    );
}
