//! `dstack-oci`, the runc-compatible runtime, through the real binary as root and as an unprivileged user:
//! bundles are a busybox root filesystem plus a config.json built with `oci-spec`; the tests drive the
//! runtime spec's lifecycle and every command, and look inside the container for what the config asked.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    Capability, HookBuilder, HooksBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccompAction, LinuxSeccompBuilder,
    LinuxSyscallBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, UserBuilder,
};
use serde_json::Value;
use test_support::oci::{id_mapping, make_rootless, unpack_busybox};
use test_support::*;

const OCI_BIN: &str = env!("CARGO_BIN_EXE_dstack-oci");
const MODES: [RunAs; 2] = [RunAs::Root, RunAs::Rootless];

/// A test environment: a dstack-like sandbox for the user, a bundle directory and a `--root`.
struct Env {
    dstack: Dstack,
    bundle: PathBuf,
    root: PathBuf,
}

/// What one `dstack-oci` command did. Its streams go to files: a container created by it inherits them
/// and would hold a pipe open for its whole life.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Ran {
    fn ok(&self) -> &Ran {
        assert_eq!(self.code, 0, "dstack-oci failed:\n{self}");
        self
    }
}

impl Env {
    fn new(run_as: RunAs) -> Env {
        let dstack = Dstack::new(run_as);
        let bundle = dstack.home().join("bundle");
        unpack_busybox(&bundle.join("rootfs"));
        std::fs::create_dir_all(bundle.join("rootfs/hooks")).unwrap();
        std::fs::create_dir_all(bundle.join("out")).unwrap();
        dstack.give_to_user(&bundle);
        let root = dstack.state_root().join("oci");
        Env {
            dstack,
            bundle,
            root,
        }
    }

    fn rootless(&self) -> bool {
        self.dstack.run_as() != RunAs::Root
    }

    fn write_config(&self, spec: &Spec) {
        let path = self.bundle.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
        self.dstack.give_to_user(&path);
    }

    /// Runs `dstack-oci --root ROOT ARGS` as the environment's user.
    fn oci(&self, args: &[&str]) -> Ran {
        let root = self.root.to_string_lossy().into_owned();
        let mut full = vec!["--root", root.as_str()];
        full.extend_from_slice(args);
        self.program(OCI_BIN, &full)
    }

    fn program(&self, program: &str, args: &[&str]) -> Ran {
        let out = tempfile::NamedTempFile::new().unwrap();
        let err = tempfile::NamedTempFile::new().unwrap();
        let mut cmd: Command = self.dstack.program_command(program, args);
        cmd.current_dir(&self.bundle)
            .stdin(Stdio::null())
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap());
        let mut child = cmd.spawn().expect("start dstack-oci");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{program} {args:?} did not finish in 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let read = |f: &tempfile::NamedTempFile| {
            let mut s = String::new();
            std::fs::File::open(f.path())
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            s
        };
        Ran {
            code: status.code().unwrap_or(-1),
            stdout: read(&out),
            stderr: read(&err),
        }
    }

    fn state(&self, id: &str) -> Value {
        let ran = self.oci(&["state", id]);
        ran.ok();
        serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("state JSON: {e}\n{ran}"))
    }

    /// Waits until the container's status is `want`.
    fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.state(id);
            if state["status"] == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never became {want}: {state}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn out(&self, name: &str) -> String {
        std::fs::read_to_string(self.bundle.join("out").join(name)).unwrap_or_default()
    }
}

/// A failed test still removes its containers (processes, cgroups), as `delete --force` does.
impl Drop for Env {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let _ = self.oci(&["delete", "--force", &id]);
        }
    }
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .unwrap()
}

/// runc's default spec running `script` under `sh -c`; rootless: a user namespace mapping the user to
/// root and its subordinate range above, the host's /sys, no cgroup mount.
fn base_spec(env: &Env, script: &str) -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(Some("oci-test".into()));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(false)
            .build()
            .unwrap(),
    ));
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(false));
    process.set_args(Some(vec!["sh".into(), "-c".into(), script.into()]));
    spec.set_process(Some(process));
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(mount(
        "/out",
        "bind",
        &env.bundle.join("out").to_string_lossy(),
        &["rbind", "rw"],
    ));
    spec.set_mounts(Some(mounts));
    if env.rootless() {
        let (uid, gid) = env.dstack.run_as().ids();
        let sub = |file: &str| {
            runtime::userns::subordinate_range(
                Path::new(file),
                RunAs::Rootless.user_name().unwrap(),
                uid,
            )
            .expect("the test user has subordinate ids")
        };
        let (su, sg) = (sub("/etc/subuid"), sub("/etc/subgid"));
        let map = |host: u32, sub: runtime::userns::IdRange| {
            vec![
                id_mapping(0, host, 1),
                id_mapping(1, sub.start, sub.count.min(65535)),
            ]
        };
        make_rootless(&mut spec, map(uid, su), map(gid, sg));
    }
    spec
}

#[test]
fn the_lifecycle_create_start_state_kill_delete() {
    for mode in MODES {
        let env = Env::new(mode);
        env.write_config(&base_spec(
            &env,
            "echo started > /out/started; trap 'echo term > /out/term; exit 3' TERM; while true; do sleep 0.1; done",
        ));
        let pid_file = env.bundle.join("out/pid");
        env.oci(&[
            "create",
            "--bundle",
            ".",
            "--pid-file",
            &pid_file.to_string_lossy(),
            "c1",
        ])
        .ok();
        let state = env.state("c1");
        assert_eq!(state["status"], "created", "{mode:?}: {state}");
        assert_eq!(state["id"], "c1");
        assert_eq!(state["bundle"], env.bundle.to_string_lossy().as_ref());
        let pid: i64 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(state["pid"], pid, "{mode:?}");
        assert!(
            env.out("started").is_empty(),
            "{mode:?}: the program ran before start"
        );
        let list = env.oci(&["list", "--format", "json"]);
        let list: Value = serde_json::from_str(&list.ok().stdout).unwrap();
        assert_eq!(list[0]["id"], "c1");
        env.oci(&["start", "c1"]).ok();
        assert_eq!(env.state("c1")["status"], "running", "{mode:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while env.out("started").is_empty() {
            assert!(Instant::now() < deadline, "{mode:?}: the program never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        env.oci(&["start", "c1"])
            .code
            .ne(&0)
            .then_some(())
            .expect("a second start is refused");
        env.oci(&["delete", "c1"])
            .code
            .ne(&0)
            .then_some(())
            .expect("delete of a running container is refused");
        env.oci(&["kill", "c1", "TERM"]).ok();
        env.wait_status("c1", "stopped");
        assert_eq!(
            env.out("term"),
            "term\n",
            "{mode:?}: SIGTERM did not reach the program"
        );
        env.oci(&["delete", "c1"]).ok();
        let gone = env.oci(&["state", "c1"]);
        assert_ne!(gone.code, 0);
        assert!(gone.stderr.contains("does not exist"), "{gone}");
        // A signal by number, --all, and delete --force of a running container.
        env.oci(&["create", "c2"]).ok();
        env.oci(&["start", "c2"]).ok();
        env.oci(&["kill", "--all", "c2", "9"]).ok();
        env.wait_status("c2", "stopped");
        env.oci(&["delete", "c2"]).ok();
        env.oci(&["create", "c3"]).ok();
        env.oci(&["delete", "--force", "c3"]).ok();
        // A created container that is never started goes at a plain kill.
        env.oci(&["create", "c4"]).ok();
        env.oci(&["kill", "c4"]).ok();
        env.wait_status("c4", "stopped");
        env.oci(&["delete", "c4"]).ok();
        assert!(env.oci(&["list", "-q"]).ok().stdout.is_empty(), "{mode:?}");
    }
}

#[test]
fn run_waits_and_returns_the_exit_status() {
    for mode in MODES {
        let env = Env::new(mode);
        env.write_config(&base_spec(&env, "echo hi; exit 7"));
        let ran = env.oci(&["run", "r1"]);
        assert_eq!(ran.code, 7, "{mode:?}: {ran}");
        assert_eq!(ran.stdout, "hi\n", "{mode:?}");
        assert!(
            env.oci(&["list", "-q"]).ok().stdout.is_empty(),
            "run removes its container"
        );
        let ran = env.oci(&["run", "-d", "r2"]);
        ran.ok();
        env.wait_status("r2", "stopped");
        env.oci(&["delete", "r2"]).ok();
    }
}

/// The capabilities `runc spec` writes: ambient ones without an inheritable set, which the kernel cannot
/// raise. The container runs (as with runc) with those capabilities permitted and none ambient.
#[test]
fn runc_specs_ambient_capabilities_without_inheritable_ones_run() {
    let env = Env::new(RunAs::Root);
    let mut spec = base_spec(&env, "grep -E '^Cap(Prm|Amb)' /proc/self/status");
    let caps: oci_spec::runtime::Capabilities = [
        Capability::AuditWrite,
        Capability::Kill,
        Capability::NetBindService,
    ]
    .into_iter()
    .collect();
    let mut process = spec.process().clone().unwrap();
    process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps.clone())
            .inheritable(oci_spec::runtime::Capabilities::new())
            .ambient(caps)
            .build()
            .unwrap(),
    ));
    spec.set_process(Some(process));
    env.write_config(&spec);
    let ran = env.oci(&["run", "caps"]);
    assert_eq!(ran.code, 0, "{ran}");
    // AUDIT_WRITE (29), KILL (5), NET_BIND_SERVICE (10).
    assert_eq!(
        status_field(&ran.stdout, "CapPrm"),
        "0000000020000420",
        "{ran}"
    );
    assert_eq!(
        status_field(&ran.stdout, "CapAmb"),
        "0000000000000000",
        "{ran}"
    );
}

/// `--preserve-fds 1`: descriptor 3 of the caller reaches the container's process (as runc passes it);
/// descriptor 4, not preserved, does not.
#[test]
fn preserved_descriptors_reach_the_process_and_no_others() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let env = Env::new(RunAs::Root);
    env.write_config(&base_spec(
        &env,
        "echo kept >&3 && echo wrote3; echo leaked >&4 || echo closed4",
    ));
    let files: Vec<(PathBuf, std::fs::File)> = ["three", "four"]
        .iter()
        .map(|name| {
            let path = env.bundle.join(name);
            let file = std::fs::File::create(&path).unwrap();
            (path, file)
        })
        .collect();
    // Copies far above 4 (close-on-exec here), so that the child's dup2 onto 3 and 4 cannot collide
    // with them (a dup2 of a descriptor onto itself would keep it close-on-exec).
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on descriptors the files own; the copies live as long as the test.
    let (fd3, fd4) = unsafe {
        (
            libc::fcntl(files[0].1.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100),
            libc::fcntl(files[1].1.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100),
        )
    };
    assert!(fd3 >= 100 && fd4 >= 100);
    let root = env.root.to_string_lossy().into_owned();
    let mut cmd = env.dstack.program_command(
        OCI_BIN,
        &["--root", &root, "run", "--preserve-fds", "1", "p1"],
    );
    cmd.current_dir(&env.bundle).stdin(Stdio::null());
    // SAFETY: dup2 between fork and exec (async-signal-safe); the copies are not close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd3, 3) < 0 || libc::dup2(fd4, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("wrote3") && stdout.contains("closed4"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&files[0].0).unwrap(), "kept\n");
    assert_eq!(std::fs::read_to_string(&files[1].0).unwrap(), "");
}

/// A value from /proc/self/status printed by the container, e.g. `CapEff`.
fn status_field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn the_config_is_applied_inside_the_container() {
    for mode in MODES {
        let env = Env::new(mode);
        std::fs::create_dir_all(env.bundle.join("shared")).unwrap();
        std::fs::write(env.bundle.join("shared/file"), "from the host\n").unwrap();
        env.dstack.give_to_user(&env.bundle.join("shared"));
        let script = "hostname; cat /proc/sys/kernel/domainname; id; umask; pwd; echo \"V=$V\"; \
             ulimit -n; cat /proc/self/oom_score_adj; grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs)' /proc/self/status; \
             grep ' /scratch ' /proc/mounts; cat /shared/file; grep ' /shared ' /proc/mounts; \
             wc -c < /etc/hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; \
             touch /new-file 2>&1; cat /proc/self/uid_map; echo done";
        let mut spec = base_spec(&env, script);
        spec.set_domainname(Some("example.org".into()));
        let caps: oci_spec::runtime::Capabilities = [
            Capability::Chown,
            Capability::Kill,
            Capability::NetBindService,
        ]
        .into_iter()
        .collect();
        let process = ProcessBuilder::default()
            .terminal(false)
            .args(vec!["sh".to_string(), "-c".into(), script.into()])
            .env(vec!["PATH=/bin:/usr/bin".to_string(), "V=value".into()])
            .cwd("/tmp")
            .user(
                UserBuilder::default()
                    .uid(1000u32)
                    .gid(1000u32)
                    .additional_gids(vec![50u32])
                    .umask(0o027u32)
                    .build()
                    .unwrap(),
            )
            .capabilities(
                LinuxCapabilitiesBuilder::default()
                    .bounding(caps.clone())
                    .effective(caps.clone())
                    .permitted(caps.clone())
                    .inheritable(caps.clone())
                    .ambient(caps.clone())
                    .build()
                    .unwrap(),
            )
            .rlimits(vec![
                PosixRlimitBuilder::default()
                    .typ(PosixRlimitType::RlimitNofile)
                    .soft(123u64)
                    .hard(456u64)
                    .build()
                    .unwrap(),
            ])
            .no_new_privileges(true)
            .oom_score_adj(500)
            .build()
            .unwrap();
        spec.set_process(Some(process));
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(mount(
            "/scratch",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "size=1m", "mode=1770"],
        ));
        mounts.push(mount(
            "/shared",
            "bind",
            &env.bundle.join("shared").to_string_lossy(),
            &["rbind", "ro"],
        ));
        spec.set_mounts(Some(mounts));
        let mut linux = spec.linux().clone().unwrap();
        let mut masked = linux.masked_paths().clone().unwrap_or_default();
        masked.push("/etc/hostname".into());
        linux.set_masked_paths(Some(masked));
        linux.set_sysctl(Some(
            [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "81".to_string(),
            )]
            .into(),
        ));
        spec.set_root(Some(
            RootBuilder::default()
                .path("rootfs")
                .readonly(true)
                .build()
                .unwrap(),
        ));
        spec.set_linux(Some(linux));
        env.write_config(&spec);
        let ran = env.oci(&["run", "cfg"]);
        ran.ok();
        let out = ran.stdout.as_str();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "oci-test", "{mode:?}: {ran}");
        assert_eq!(lines[1], "example.org", "{mode:?}");
        assert!(
            lines[2].starts_with("uid=1000(app) gid=1000(app)"),
            "{mode:?}: {}",
            lines[2]
        );
        assert!(
            lines[2].contains("50"),
            "{mode:?}: additional gid missing: {}",
            lines[2]
        );
        assert_eq!(lines[3], "0027", "{mode:?}");
        assert_eq!(lines[4], "/tmp", "{mode:?}");
        assert_eq!(lines[5], "V=value", "{mode:?}");
        assert_eq!(lines[6], "123", "{mode:?}");
        assert_eq!(lines[7], "500", "{mode:?}");
        // chown (0), kill (5), net_bind_service (10): kept across the switch to uid 1000.
        assert_eq!(
            status_field(out, "CapEff"),
            "0000000000000421",
            "{mode:?}: {out}"
        );
        assert_eq!(status_field(out, "CapBnd"), "0000000000000421", "{mode:?}");
        assert_eq!(status_field(out, "NoNewPrivs"), "1", "{mode:?}");
        let scratch = out.lines().find(|l| l.contains(" /scratch ")).unwrap();
        assert!(
            scratch.contains("size=1024k") && scratch.contains("mode=1770"),
            "{mode:?}: {scratch}"
        );
        assert!(
            scratch.contains("nosuid") && scratch.contains("nodev"),
            "{mode:?}: {scratch}"
        );
        assert!(out.contains("from the host\n"), "{mode:?}");
        let shared = out.lines().find(|l| l.contains(" /shared ")).unwrap();
        assert!(
            shared.split_whitespace().nth(3).unwrap().starts_with("ro"),
            "{mode:?}: {shared}"
        );
        assert!(out.contains("from the host\n"), "{mode:?}");
        assert!(
            out.contains("\n0\n"),
            "{mode:?}: the masked /etc/hostname is readable: {out}"
        );
        if mode == RunAs::Rootless {
            let (uid, _) = mode.ids();
            assert!(
                out.lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>()
                        == ["0", &uid.to_string(), "1"]),
                "{mode:?}: root is not mapped to the user: {out}"
            );
        }
        assert!(
            out.contains("\n81\n"),
            "{mode:?}: the sysctl was not applied: {out}"
        );
        assert!(
            out.contains("Read-only file system"),
            "{mode:?}: root.readonly: {ran}"
        );
        assert!(out.ends_with("done\n"), "{mode:?}");
    }
}

#[test]
fn seccomp_denies_a_syscall_with_the_configured_errno() {
    for mode in MODES {
        let env = Env::new(mode);
        let mut spec = base_spec(
            &env,
            "grep Seccomp: /proc/self/status; mkdir /tmp/denied; echo mkdir=$?; touch /tmp/allowed && echo touch=ok",
        );
        let mut linux = spec.linux().clone().unwrap();
        linux.set_seccomp(Some(
            LinuxSeccompBuilder::default()
                .default_action(LinuxSeccompAction::ScmpActAllow)
                .syscalls(vec![
                    LinuxSyscallBuilder::default()
                        .names(vec!["mkdir".to_string(), "mkdirat".into()])
                        .action(LinuxSeccompAction::ScmpActErrno)
                        .errno_ret(122u32)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        ));
        spec.set_linux(Some(linux));
        env.write_config(&spec);
        let ran = env.oci(&["run", "sc"]);
        ran.ok();
        assert!(ran.stdout.contains("Seccomp:\t2"), "{mode:?}: {ran}");
        // EDQUOT: only the filter answers mkdir that way.
        assert!(
            ran.stderr.contains("Disk quota exceeded"),
            "{mode:?}: {ran}"
        );
        assert!(ran.stdout.contains("mkdir=1"), "{mode:?}: {ran}");
        assert!(ran.stdout.contains("touch=ok"), "{mode:?}: {ran}");
    }
}

/// A hook that appends its name and the state it read on stdin to `out`.
fn marker(path: &str, name: &str, out: &str) -> oci_spec::runtime::Hook {
    HookBuilder::default()
        .path(path)
        .args(vec![
            "sh".to_string(),
            "-c".into(),
            format!("echo \"{name} $(cat)\" >> {out}"),
        ])
        .build()
        .unwrap()
}

#[test]
fn hooks_run_at_their_points_with_the_state() {
    for mode in MODES {
        let env = Env::new(mode);
        let host_out = env.bundle.join("out/hooks").to_string_lossy().into_owned();
        let mut spec = base_spec(&env, "echo program >> /out/hooks");
        spec.set_hooks(Some(
            HooksBuilder::default()
                .prestart(vec![marker("/bin/sh", "prestart", &host_out)])
                .create_runtime(vec![marker("/bin/sh", "createRuntime", &host_out)])
                .create_container(vec![marker("/bin/sh", "createContainer", &host_out)])
                // After pivot_root: the container's own sh, and /out as the container sees it.
                .start_container(vec![marker("/bin/sh", "startContainer", "/out/hooks")])
                .poststart(vec![marker("/bin/sh", "poststart", &host_out)])
                .poststop(vec![marker("/bin/sh", "poststop", &host_out)])
                .build()
                .unwrap(),
        ));
        env.write_config(&spec);
        env.oci(&["create", "h1"]).ok();
        let pid = env.state("h1")["pid"].as_i64().unwrap();
        env.oci(&["start", "h1"]).ok();
        env.wait_status("h1", "stopped");
        env.oci(&["delete", "h1"]).ok();
        let log = env.out("hooks");
        let points: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
        // prestart (deprecated) runs with createRuntime, in the runtime's namespaces.
        assert_eq!(
            points[..4],
            [
                "prestart",
                "createRuntime",
                "createContainer",
                "startContainer"
            ],
            "{mode:?}: {log}"
        );
        assert!(
            points.contains(&"program") && points.contains(&"poststart"),
            "{mode:?}: {log}"
        );
        assert_eq!(points.last(), Some(&"poststop"), "{mode:?}: {log}");
        for line in log.lines().filter(|l| !l.starts_with("program")) {
            let (name, json) = line.split_once(' ').unwrap();
            let state: Value =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{name}: {e}: {json}"));
            assert_eq!(state["id"], "h1", "{mode:?} {name}");
            if name != "poststop" {
                assert_eq!(state["pid"], pid, "{mode:?} {name}: {state}");
            }
            let want = match name {
                "prestart" | "createRuntime" | "createContainer" => "creating",
                "startContainer" => "created",
                "poststop" => "stopped",
                _ => state["status"].as_str().unwrap(),
            };
            assert_eq!(state["status"], want, "{mode:?} {name}");
        }
        // A failing createRuntime hook fails create and leaves nothing.
        let mut spec = base_spec(&env, "echo should-not-run >> /out/never");
        spec.set_hooks(Some(
            HooksBuilder::default()
                .create_runtime(vec![
                    HookBuilder::default()
                        .path("/bin/sh")
                        .args(vec![
                            "sh".to_string(),
                            "-c".into(),
                            "echo hook says no >&2; exit 4".into(),
                        ])
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        ));
        env.write_config(&spec);
        let ran = env.oci(&["create", "h2"]);
        assert_ne!(ran.code, 0, "{mode:?}: {ran}");
        assert!(
            ran.stderr.contains("createRuntime") && ran.stderr.contains("hook says no"),
            "{mode:?}: {ran}"
        );
        assert!(
            env.oci(&["list", "-q"]).ok().stdout.is_empty(),
            "{mode:?}: a failed create left state"
        );
        assert!(!env.root.join("h2").exists(), "{mode:?}");
        assert!(env.out("never").is_empty(), "{mode:?}");
    }
}

#[test]
fn exec_runs_a_process_inside_a_running_container() {
    for mode in MODES {
        let env = Env::new(mode);
        env.write_config(&base_spec(&env, "while true; do sleep 0.1; done"));
        env.oci(&["create", "e1"]).ok();
        env.oci(&["start", "e1"]).ok();
        let ran = env.oci(&[
            "exec",
            "e1",
            "--",
            "sh",
            "-c",
            "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 4",
        ]);
        assert_eq!(ran.code, 4, "{mode:?}: {ran}");
        let lines: Vec<&str> = ran.stdout.lines().collect();
        assert_eq!(lines[0], "oci-test", "{mode:?}: {ran}");
        assert!(
            lines[1].contains("dstack-oci"),
            "{mode:?}: PID 1 is not the container's init: {ran}"
        );
        let process = serde_json::json!({
            "terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", "echo from-file > /out/exec"],
            "env": ["PATH=/bin"], "cwd": "/"
        });
        let file = env.bundle.join("out/process.json");
        std::fs::write(&file, process.to_string()).unwrap();
        env.dstack.give_to_user(&file);
        env.oci(&["exec", "--process", &file.to_string_lossy(), "e1"])
            .ok();
        assert_eq!(env.out("exec"), "from-file\n", "{mode:?}");
        let pid_file = env.bundle.join("out/exec.pid");
        let ran = env.oci(&[
            "exec",
            "--user",
            "1000:1000",
            "--env",
            "X=from-flag",
            "--cwd",
            "/tmp",
            "--pid-file",
            &pid_file.to_string_lossy(),
            "e1",
            "sh",
            "-c",
            "id -u; echo $X; pwd",
        ]);
        assert_eq!(ran.ok().stdout, "1000\nfrom-flag\n/tmp\n", "{mode:?}");
        assert!(
            std::fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .parse::<u32>()
                .is_ok()
        );
        let missing = env.oci(&["exec", "e1", "--", "no-such-program"]);
        assert_eq!(missing.code, 127, "{mode:?}: {missing}");
        assert!(
            missing.stderr.contains("command not found"),
            "{mode:?}: {missing}"
        );
        env.oci(&["delete", "--force", "e1"]).ok();
    }
}

#[test]
fn the_terminal_goes_to_the_console_socket() {
    use std::os::fd::{FromRawFd, OwnedFd};
    for mode in MODES {
        let env = Env::new(mode);
        let mut spec = base_spec(
            &env,
            "tty; [ -t 0 ] && [ -t 1 ] && [ -c /dev/console ] && echo on-the-pty",
        );
        let mut process = spec.process().clone().unwrap();
        process.set_terminal(Some(true));
        spec.set_process(Some(process));
        env.write_config(&spec);
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let receiver = std::thread::spawn(move || {
            use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
            use std::os::fd::AsRawFd;
            let (conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let msg = recvmsg::<()>(
                conn.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )
            .unwrap();
            let fd = msg
                .cmsgs()
                .unwrap()
                .find_map(|c| match c {
                    ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                })
                .expect("a terminal fd");
            // SAFETY: the fd just received, owned from here on.
            let master = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let mut text = Vec::new();
            let mut master = master;
            let mut chunk = [0u8; 1024];
            // Until the pty's last slave closes (EIO).
            while let Ok(n) = master.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                text.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8_lossy(&text).into_owned()
        });
        env.oci(&["create", "--console-socket", &path.to_string_lossy(), "t1"])
            .ok();
        env.oci(&["start", "t1"]).ok();
        let text = receiver.join().unwrap();
        assert!(text.contains("on-the-pty"), "{mode:?}: {text:?}");
        // The container's own devpts: `tty` names it.
        assert!(text.contains("/dev/pts/0"), "{mode:?}: {text:?}");
        env.wait_status("t1", "stopped");
        env.oci(&["delete", "t1"]).ok();
    }
}

/// The cgroup v1 directory of `controller` for an absolute cgroupsPath `/name`.
fn v1_dir(controller: &str, name: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(controller).join(name)
}

#[test]
fn resources_become_cgroup_limits_as_root() {
    let env = Env::new(RunAs::Root);
    let name = format!("dstack-oci-test-{}", std::process::id());
    let mut spec = base_spec(
        &env,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us \
         /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_period_us; grep Cpus_allowed_list /proc/self/status; \
         cat /sys/fs/cgroup/devices/devices.list; while true; do sleep 0.1; done",
    );
    let mut linux = spec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(PathBuf::from(format!("/{name}"))));
    linux.set_resources(Some(
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(100_000i64)
                    .period(200_000u64)
                    .shares(512u64)
                    .cpus("0")
                    .build()
                    .unwrap(),
            )
            .devices(
                serde_json::from_str::<Vec<oci_spec::runtime::LinuxDeviceCgroup>>(
                    r#"[{"allow": false, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rw"},
                        {"allow": true, "type": "c", "major": 136, "access": "rwm"}]"#,
                )
                .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(50i64).build().unwrap())
            .build()
            .unwrap(),
    ));
    spec.set_linux(Some(linux));
    env.write_config(&spec);
    let log = env.bundle.join("out/stdout");
    let ran = env.program(
        "/bin/sh",
        &[
            "-c",
            &format!(
                "{OCI_BIN} --root {} run -d lim > {} 2>&1",
                env.root.display(),
                log.display()
            ),
        ],
    );
    ran.ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count()
        < 17
    {
        assert!(
            Instant::now() < deadline,
            "no output: {:?}",
            std::fs::read_to_string(&log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        seen[..5],
        ["67108864", "100000", "512", "50", "200000"],
        "the period is kept exactly: {seen:?}"
    );
    assert_eq!(
        seen[5].split_whitespace().last(),
        Some("0"),
        "cpus: {seen:?}"
    );
    // The spec's rules, then what runc adds to every device cgroup (the standard nodes, mknod of any
    // node): v1 merges `c 1:5 rw` into the default `c 1:5 rwm`.
    for rule in [
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 136:* rwm",
        "c 1:9 rwm",
        "c *:* m",
    ] {
        assert!(seen[6..].iter().any(|l| l == rule), "devices: {seen:?}");
    }
    assert!(
        !seen[6..].iter().any(|l| l == "a *:* rwm"),
        "devices: {seen:?}"
    );
    // The limits are at cgroupsPath, relative to each hierarchy's root, where runtime-tools reads them.
    let read = |c: &str, f: &str| std::fs::read_to_string(v1_dir(c, &name).join(f)).unwrap();
    assert_eq!(read("memory", "memory.limit_in_bytes").trim(), "67108864");
    assert_eq!(read("cpu", "cpu.cfs_period_us").trim(), "200000");
    assert_eq!(read("pids", "pids.max").trim(), "50");
    assert_eq!(read("cpuset", "cpuset.cpus").trim(), "0");
    env.oci(&["delete", "--force", "lim"]).ok();
    for c in ["memory", "cpu", "cpuacct", "pids", "devices", "cpuset"] {
        assert!(!v1_dir(c, &name).exists(), "delete left the {c} cgroup");
    }
}

#[test]
fn unsupported_fields_are_refused_by_name() {
    let env = Env::new(RunAs::Root);
    let mut config: Value = serde_json::to_value(base_spec(&env, "true")).unwrap();
    config["linux"]["intelRdt"] = serde_json::json!({"closID": "x"});
    config["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
    std::fs::write(env.bundle.join("config.json"), config.to_string()).unwrap();
    let log = env.bundle.join("out/log.json");
    let ran = env.oci(&[
        "--log",
        &log.to_string_lossy(),
        "--log-format",
        "json",
        "create",
        "u1",
    ]);
    assert_ne!(ran.code, 0);
    // Callers such as conmon read the error from the log.
    let last: Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["level"], "error");
    assert!(
        last["msg"].as_str().unwrap().contains("linux.intelRdt"),
        "{last}"
    );
    assert!(
        ran.stderr.contains("linux.intelRdt") && ran.stderr.contains("linux.personality"),
        "{ran}"
    );
    assert!(!env.root.join("u1").exists());
}

#[test]
fn features_version_and_spec_describe_the_runtime() {
    let env = Env::new(RunAs::Rootless);
    let ran = env.oci(&["features"]);
    let features: Value = serde_json::from_str(&ran.ok().stdout).unwrap();
    assert_eq!(features["ociVersionMax"], "1.2.0");
    assert!(
        features["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&"user".into())
    );
    assert!(features["linux"]["seccomp"]["enabled"].as_bool().unwrap());
    assert!(env.oci(&["--version"]).ok().stdout.contains("spec: 1.2.0"));
    // `spec --rootless` writes a config an unprivileged user can run as it is.
    env.oci(&["--rootless", "spec"]).ok();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(env.bundle.join("config.json")).unwrap())
            .unwrap();
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["sh", "-c", "echo rootless-spec-ok"]);
    std::fs::write(env.bundle.join("config.json"), config.to_string()).unwrap();
    let ran = env.oci(&["run", "s1"]);
    assert_eq!(ran.ok().stdout, "rootless-spec-ok\n");
}

/// Slurm's `oci.conf` for `srun --container`: `RunTimeRun` hands the task's own stdio to the container
/// (Slurm reads RunTimeCreate's output to its end, so a created container holding it would stall the
/// step); query, kill and delete clean up after it.
fn oci_conf() -> String {
    let cmd = format!("{OCI_BIN} --root=/tmp/dstack-oci-%u");
    let id = "%n.%u.%j.%s.%t";
    format!(
        "{}\nRunTimeQuery=\"{cmd} state {id}\"\nRunTimeRun=\"{cmd} run --bundle %b {id}\"\n\
         RunTimeKill=\"{cmd} kill -a {id}\"\nRunTimeDelete=\"{cmd} delete --force {id}\"\n",
        test_support::slurm::MARKER
    )
}

#[test]
fn srun_container_runs_the_bundle_through_dstack_oci() {
    test_support::slurm::slurm();
    let conf = Path::new("/etc/slurm/oci.conf");
    if let Ok(existing) = std::fs::read_to_string(conf) {
        assert!(
            existing.starts_with(test_support::slurm::MARKER),
            "{} exists and is not the test harness's: refusing to replace it",
            conf.display()
        );
    }
    std::fs::write(conf, oci_conf()).unwrap();
    for mode in MODES {
        let env = Env::new(mode);
        env.write_config(&base_spec(&env, "true"));
        let bundle = format!("--container={}", env.bundle.display());
        let ran = env.program(
            "srun",
            &[
                &bundle,
                "sh",
                "-c",
                "echo hello from $(hostname); cat /proc/self/uid_map; exit 4",
            ],
        );
        assert_eq!(ran.code, 4, "{mode:?}: {ran}");
        assert!(
            ran.stdout.contains("hello from oci-test"),
            "{mode:?}: {ran}"
        );
        let map: Vec<String> = ran
            .stdout
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        let (uid, _) = mode.ids();
        let expected: Vec<String> = match mode {
            RunAs::Root => vec!["0".into(), "0".into(), "4294967295".into()],
            _ => vec!["0".into(), uid.to_string(), "1".into()],
        };
        assert_eq!(map, expected, "{mode:?}: {ran}");
        let user = mode.user_name().unwrap_or("root");
        let left = std::fs::read_dir(format!("/tmp/dstack-oci-{user}"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{mode:?}: containers left behind: {left:?}"
        );
    }
}

#[test]
fn namespaces_given_by_path_are_joined() {
    let env = Env::new(RunAs::Root);
    env.write_config(&base_spec(&env, "while true; do sleep 0.1; done"));
    env.oci(&["create", "first"]).ok();
    env.oci(&["start", "first"]).ok();
    let pid = env.state("first")["pid"].as_i64().unwrap();
    let mut spec = base_spec(
        &env,
        "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; cat /proc/1/cmdline | tr '\\0' ' '; echo",
    );
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap();
    for ns in namespaces.iter_mut() {
        let name = match ns.typ() {
            LinuxNamespaceType::Network => "net",
            LinuxNamespaceType::Ipc => "ipc",
            LinuxNamespaceType::Pid => "pid",
            _ => continue,
        };
        ns.set_path(Some(PathBuf::from(format!("/proc/{pid}/ns/{name}"))));
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    env.write_config(&spec);
    let ran = env.oci(&["run", "second"]);
    ran.ok();
    let lines: Vec<&str> = ran.stdout.lines().collect();
    let host = |name: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{name}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(lines[0], host("net"), "{ran}");
    assert_eq!(lines[1], host("ipc"), "{ran}");
    assert!(
        lines[2].contains("dstack-oci"),
        "PID 1 is not the first container's init: {ran}"
    );
    env.oci(&["delete", "--force", "first"]).ok();
}

#[test]
fn root_can_give_a_container_a_user_namespace_from_the_spec() {
    let env = Env::new(RunAs::Root);
    let mut spec = base_spec(
        &env,
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; ls -n /bin/busybox",
    );
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap();
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(namespaces));
    let map = vec![
        LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(200_000u32)
            .size(65_536u32)
            .build()
            .unwrap(),
    ];
    linux.set_uid_mappings(Some(map.clone()));
    linux.set_gid_mappings(Some(map));
    spec.set_linux(Some(linux));
    // The container's root is host uid 200000: its root filesystem must be its own.
    let status = Command::new("chown")
        .args(["-R", "200000:200000"])
        .arg(env.bundle.join("rootfs"))
        .status()
        .unwrap();
    assert!(status.success());
    env.write_config(&spec);
    let ran = env.oci(&["run", "userns"]);
    let out = ran.ok().stdout.clone();
    let maps: Vec<Vec<&str>> = out
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        maps,
        [["0", "200000", "65536"], ["0", "200000", "65536"]],
        "{ran}"
    );
    assert_eq!(out.lines().nth(2), Some("0"), "{ran}");
    assert!(
        out.lines().nth(3).unwrap_or_default().contains(" 0 "),
        "files of uid 200000 are root's inside: {ran}"
    );
}
