//! Seccomp profiles in Docker's terms: the default profile (moby's `profiles/seccomp/default.json`
//! semantics, built in code for the capabilities the job gets) and Docker-format profile files
//! (`--security-opt seccomp=FILE`), both as an OCI `LinuxSeccomp` that `seccomp::compile` turns into BPF.
//!
//! Like Docker, a group of syscalls guarded by a capability is allowed only when the job's bounding set
//! holds it; without CAP_SYS_ADMIN `clone` may not create namespaces and `clone3` (whose flags BPF cannot
//! read) fails with ENOSYS, so libc falls back to `clone`. Everything not listed fails with EPERM: the
//! keyring (`add_key`, `keyctl`, `request_key`), `unshare`/`setns`, `mount`, `kexec_*`, `bpf`,
//! `perf_event_open`, `userfaultfd`, `open_by_handle_at`... Only the native ABI is allowed (see
//! `seccomp`): on x86_64 the i386 and x32 ABIs kill the process.

use std::path::Path;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompArgBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

/// Allowed whatever the capabilities (Docker's list, with the syscalls Docker added since for newer
/// kernels and libcs: `fchmodat2`, `futex_wait`..., `cachestat`, `map_shadow_stack`, `uretprobe`).
/// Names this architecture lacks are skipped when compiled.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Docker allows these from kernel 4.8 on, where ptrace can no longer bypass seccomp.
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

/// Allowed on this architecture only (Docker's `includes.arches`).
#[cfg(target_arch = "x86_64")]
const ARCH_ALLOWED: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "aarch64")]
const ARCH_ALLOWED: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];
#[cfg(target_arch = "riscv64")]
const ARCH_ALLOWED: &[&str] = &["riscv_flush_icache"];
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
const ARCH_ALLOWED: &[&str] = &[];

/// Allowed only with a capability (Docker's `includes.caps`).
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// `personality` values Docker allows: PER_LINUX, PER_LINUX32, UNAME26 with each, and the query.
const PERSONALITIES: [u64; 5] = [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// The namespace flags `clone` may not carry without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

fn rule(names: &[&str], action: LinuxSeccompAction, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut syscall = LinuxSyscall::default();
    syscall.set_names(names.iter().map(|n| n.to_string()).collect());
    syscall.set_action(action);
    if !args.is_empty() {
        syscall.set_args(Some(args));
    }
    syscall
}

fn arg(index: usize, op: LinuxSeccompOperator, value: u64) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value)
        .value_two(0u64)
        .build()
        .expect("all fields set")
}

/// Docker's default profile for a job whose bounding capability set is `caps`.
pub fn docker_default(caps: &Capabilities) -> LinuxSeccomp {
    use LinuxSeccompAction::{ScmpActAllow as Allow, ScmpActErrno as Errno};
    use LinuxSeccompOperator as Op;
    let mut syscalls = vec![
        rule(ALLOWED, Allow, vec![]),
        rule(ARCH_ALLOWED, Allow, vec![]),
    ];
    syscalls.push(rule(
        &["socket"],
        Allow,
        vec![arg(0, Op::ScmpCmpNe, libc::AF_VSOCK as u64)],
    ));
    for value in PERSONALITIES {
        syscalls.push(rule(
            &["personality"],
            Allow,
            vec![arg(0, Op::ScmpCmpEq, value)],
        ));
    }
    for (cap, names) in BY_CAPABILITY {
        if caps.contains(cap) {
            syscalls.push(rule(names, Allow, vec![]));
        }
    }
    if !caps.contains(&Capability::SysAdmin) {
        // s390's clone takes the flags second; the other architectures first.
        let index = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        // (flags & CLONE_NAMESPACE_FLAGS) == 0
        let no_namespaces = arg(index, Op::ScmpCmpMaskedEq, CLONE_NAMESPACE_FLAGS);
        syscalls.push(rule(&["clone"], Allow, vec![no_namespaces]));
        let mut clone3 = rule(&["clone3"], Errno, vec![]);
        clone3.set_errno_ret(Some(libc::ENOSYS as u32));
        syscalls.push(clone3);
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(Errno);
    profile.set_default_errno_ret(Some(libc::EPERM as u32));
    profile.set_syscalls(Some(syscalls));
    profile
}

/// One line for a plan: which profile, and how many syscalls it allows.
pub fn summary(profile: Option<&LinuxSeccomp>) -> String {
    let Some(profile) = profile else {
        return "unconfined (no seccomp filter)".to_string();
    };
    let allowed: std::collections::BTreeSet<&str> = profile
        .syscalls()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow)
        .flat_map(|s| s.names().iter().map(String::as_str))
        .collect();
    format!(
        "default action {}, {} syscall names allowed (some with argument rules), other ABIs killed",
        profile.default_action(),
        allowed.len()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read the seccomp profile {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the seccomp profile {path} is larger than {MAX_PROFILE_BYTES} bytes: is it the right file?"
    )]
    TooLarge { path: String },
    #[error(
        "the seccomp profile {path} is not a valid Docker/OCI seccomp profile: {message} at line {line} \
         column {column}"
    )]
    Invalid {
        path: String,
        message: String,
        line: usize,
        column: usize,
    },
}

/// A profile file larger than this is refused before it is parsed (Docker's own default is ~20 KB).
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// Docker's profile format: the OCI fields plus per-rule conditions on capabilities and architectures.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<std::path::PathBuf>,
    #[serde(default)]
    syscalls: Vec<DockerSyscall>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerSyscall {
    /// The old single-name form.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    includes: Condition,
    #[serde(default)]
    excludes: Condition,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

/// Docker's architecture names for this machine (its `includes.arches` values).
fn native_arch_names() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["amd64", "x86_64"],
        "aarch64" => &["arm64", "aarch64"],
        "riscv64" => &["riscv64"],
        "s390x" => &["s390x"],
        "powerpc64" => &["ppc64le", "ppc64"],
        _ => &[],
    }
}

fn holds(caps: &Capabilities, name: &str) -> bool {
    serde_json::from_value::<Capability>(serde_json::Value::String(name.to_string()))
        .is_ok_and(|c| caps.contains(&c))
}

/// Reads a Docker (or OCI `linux.seccomp`) profile file and keeps the rules that apply to a job with the
/// bounding set `caps` on this architecture, as Docker does.
pub fn load(path: &Path, caps: &Capabilities) -> Result<LinuxSeccomp, ProfileError> {
    use std::io::Read;
    let shown = crate::text::clip(&path.display().to_string());
    let read_error = |source| ProfileError::Read {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(ProfileError::TooLarge { path: shown });
    }
    parse(&bytes, caps).map_err(|e| {
        let text = e.to_string();
        // serde_json appends " at line L column C"; the position is given on its own.
        let message = match text.rfind(" at line ") {
            Some(at) => &text[..at],
            None => &text,
        };
        ProfileError::Invalid {
            path: shown,
            message: crate::text::clip(message),
            line: e.line(),
            column: e.column(),
        }
    })
}

fn parse(bytes: &[u8], caps: &Capabilities) -> Result<LinuxSeccomp, serde_json::Error> {
    let docker: DockerProfile = serde_json::from_slice(bytes)?;
    let arches = native_arch_names();
    let applies = |s: &DockerSyscall| {
        let inc = &s.includes;
        let exc = &s.excludes;
        inc.caps.iter().all(|c| holds(caps, c))
            && (inc.arches.is_empty() || inc.arches.iter().any(|a| arches.contains(&a.as_str())))
            && !exc.caps.iter().any(|c| holds(caps, c))
            && !exc.arches.iter().any(|a| arches.contains(&a.as_str()))
    };
    let syscalls = docker
        .syscalls
        .into_iter()
        .filter(applies)
        .map(|s| {
            let mut names = s.names;
            names.extend(s.name);
            let mut out = LinuxSyscall::default();
            out.set_names(names);
            out.set_action(s.action);
            out.set_errno_ret(s.errno_ret);
            out.set_args((!s.args.is_empty()).then_some(s.args));
            out
        })
        .collect();
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(docker.default_action);
    profile.set_default_errno_ret(docker.default_errno_ret);
    profile.set_flags(docker.flags);
    profile.set_listener_path(docker.listener_path);
    profile.set_syscalls(Some(syscalls));
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker_caps() -> Capabilities {
        crate::container::DOCKER_DEFAULT_CAPS.into_iter().collect()
    }

    /// Syscall name -> the rules that name it, as (action, args).
    fn rules_for<'a>(profile: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        profile
            .syscalls()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn the_default_profile_denies_what_docker_denies() {
        let profile = docker_default(&docker_caps());
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), Some(libc::EPERM as u32));
        for denied in [
            "add_key",
            "keyctl",
            "request_key",
            "unshare",
            "setns",
            "mount",
            "umount2",
            "kexec_load",
            "kexec_file_load",
            "open_by_handle_at",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "init_module",
            "reboot",
            "swapon",
            "pivot_root",
            "fsopen",
        ] {
            assert!(rules_for(&profile, denied).is_empty(), "{denied} is named");
        }
        // clone only without namespace flags, clone3 -> ENOSYS, socket without AF_VSOCK.
        let clone = rules_for(&profile, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(
            arg.value() & libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWUSER as u64
        );
        assert_eq!(arg.value_two(), Some(0));
        let clone3 = rules_for(&profile, "clone3");
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));
        let socket = rules_for(&profile, "socket");
        assert_eq!(
            socket[0].args().as_ref().unwrap()[0].value(),
            libc::AF_VSOCK as u64
        );
        assert_eq!(rules_for(&profile, "personality").len(), 5);
        crate::container::seccomp::compile(&profile).expect("it compiles");
    }

    #[test]
    fn capabilities_open_their_groups() {
        let mut caps = docker_caps();
        caps.insert(Capability::SysAdmin);
        caps.insert(Capability::SysPtrace);
        caps.remove(&Capability::SysChroot);
        let profile = docker_default(&caps);
        for allowed in ["mount", "unshare", "setns", "bpf", "clone3", "kcmp"] {
            let rules = rules_for(&profile, allowed);
            assert!(
                rules
                    .iter()
                    .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none()),
                "{allowed}"
            );
        }
        assert!(rules_for(&profile, "chroot").is_empty());
        assert!(
            rules_for(&profile, "clone3")
                .iter()
                .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
        );
    }

    #[test]
    fn a_docker_profile_file_keeps_the_rules_for_this_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "archMap": [],
                "syscalls": [
                  {"name": "read", "action": "SCMP_ACT_ALLOW", "comment": "old form"},
                  {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                  {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
                  {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                  {"names": ["arm_only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}}
                ]}"#,
        )
        .unwrap();
        let profile = load(&path, &docker_caps()).unwrap();
        let names: Vec<&str> = profile
            .syscalls()
            .as_deref()
            .unwrap()
            .iter()
            .flat_map(|s| s.names().iter().map(String::as_str))
            .collect();
        assert_eq!(names, ["read", "chroot", "clone3"]);
        assert_eq!(profile.default_errno_ret(), Some(1));
    }

    #[test]
    fn a_bad_profile_file_is_named_with_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        let value = "Z".repeat(10_000);
        std::fs::write(&path, format!("{{\n \"defaultAction\": \"{value}\"}}")).unwrap();
        let err = load(&path, &docker_caps()).unwrap_err().to_string();
        assert!(err.contains(&*path.to_string_lossy()), "{err}");
        assert!(err.contains("line 2 column"), "{err}");
        assert!(err.len() < 600, "the value is cut: {} bytes", err.len());
    }
}
