//! `dstack run docker IMAGE ...` through the real binary, as root and as an unprivileged user: isolation,
//! exit codes, a root filesystem that never reaches the store, Docker's defaults, user lookup, cleanup
//! after a SIGKILLed supervisor, 100+ layers, and the overlay fallbacks.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

/// Both ways a user meets dstack.
const MODES: [RunAs; 2] = [RunAs::Root, RunAs::Rootless];

/// A registry holding `image`, and a dstack environment (as `run_as`) that has pulled it.
struct Setup {
    _registry: TestRegistry,
    dstack: Dstack,
    image: String,
}

fn setup_with(run_as: RunAs, image: &Image) -> Setup {
    let registry = TestRegistry::plain();
    registry.push("test/img:1", image);
    let image = registry.image("test/img:1");
    let dstack = Dstack::new(run_as);
    dstack.run(&["pull", "-q", &image]).assert_success();
    Setup {
        _registry: registry,
        dstack,
        image,
    }
}

fn setup(run_as: RunAs) -> Setup {
    setup_with(run_as, &busybox_image().build())
}

impl Setup {
    fn sh(&self, script: &str) -> Output {
        self.dstack
            .run(&["run", "docker", &self.image, "-c", script])
    }
}

#[test]
fn echo_hi_then_exit_3_prints_hi_and_exits_3() {
    for mode in MODES {
        let s = setup(mode);
        let out = s.sh("echo hi; exit 3");
        out.assert_code(3);
        assert_eq!(out.stdout, "hi\n", "{mode:?}: {}", out.stderr);
    }
}

#[test]
fn the_job_is_pid_1s_child_and_sees_only_its_own_processes_and_hostname() {
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    for mode in MODES {
        let s = setup(mode);
        let out = s.sh("echo pid=$$; echo parent=$PPID; ls /proc | grep -c '^[0-9]'; hostname");
        out.assert_success();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], "pid=2", "{mode:?}: {}", out.stdout);
        assert_eq!(lines[1], "parent=1", "{mode:?}");
        // init, the shell, and the ls/grep pipeline: nothing of the host's.
        let visible: usize = lines[2].parse().unwrap();
        assert!(visible <= 4, "{mode:?}: {visible} processes visible");
        assert_ne!(lines[3], host, "{mode:?}: the host's hostname leaked");
        assert_eq!(lines[3].len(), 12, "{mode:?}: hostname {}", lines[3]);
    }
}

#[test]
fn a_job_killed_by_a_signal_exits_128_plus_n() {
    for mode in MODES {
        let s = setup(mode);
        s.sh("kill -KILL $$").assert_code(137);
        s.sh("kill -USR1 $$").assert_code(138);
    }
}

/// Every path under `dir` with its size, mode, owner and mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u32, u32, i64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                todo.push(path.clone());
            }
            out.insert(path, (m.len(), m.mode(), m.uid(), m.mtime()));
        }
    }
    out
}

#[test]
fn writes_to_the_root_filesystem_vanish_and_never_touch_the_store() {
    for mode in MODES {
        let s = setup(mode);
        let layers = s.dstack.state_root().join("store/layers");
        let before = snapshot(&layers);
        s.sh("echo changed > /etc/passwd; rm /bin/ls; mkdir -p /new/dir; echo x > /new/dir/file; rm -rf /tmp")
            .assert_success();
        assert_eq!(snapshot(&layers), before, "{mode:?}: the store changed");
        let out = s.sh("cat /etc/passwd; ls /bin/ls; ls /new 2>&1; ls -d /tmp");
        assert!(
            out.stdout.starts_with("root:x:0:0"),
            "{mode:?}: {}",
            out.stdout
        );
        assert!(out.stdout.contains("/bin/ls"), "{mode:?}");
        assert!(
            out.stdout.contains("No such file"),
            "{mode:?}: /new survived: {}",
            out.stdout
        );
        let containers = s.dstack.state_root().join("containers");
        let left: Vec<_> = std::fs::read_dir(&containers)
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{mode:?}: scratch directories left: {left:?}"
        );
    }
}

#[test]
fn the_job_cannot_write_host_paths() {
    for mode in MODES {
        let s = setup(mode);
        let state = s.dstack.state_root();
        let script = format!(
            "for p in /proc/sys/kernel/domainname /proc/sysrq-trigger /sys/kernel/uevent_helper /sys/fs/cgroup/x \
             {state}/escape /proc/1/root/../../escape; do (echo x > $p) 2>/dev/null && echo WROTE $p; done; \
             ls {state} 2>&1; echo done",
            state = state.display()
        );
        let out = s.sh(&script);
        out.assert_success();
        assert!(!out.stdout.contains("WROTE"), "{mode:?}: {}", out.stdout);
        assert!(
            out.stdout.contains("No such file"),
            "{mode:?}: the state root is visible: {}",
            out.stdout
        );
        assert!(!state.join("escape").exists());
    }
}

#[test]
fn dev_shm_has_the_requested_size_and_proc_is_masked() {
    for mode in MODES {
        let s = setup(mode);
        let out = s.dstack.run(&[
            "run", "docker", &s.image, "--shm-size", "128MiB", "-c",
            "df -k /dev/shm | tail -1; wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l; \
             ls /dev; echo x > /dev/null && head -c 4 /dev/zero | wc -c",
        ]);
        out.assert_success();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(
            lines[0].split_whitespace().nth(1) == Some("131072"),
            "{mode:?}: {}",
            lines[0]
        );
        assert_eq!(
            &lines[1..4],
            ["0", "0", "0"],
            "{mode:?}: masked paths show content"
        );
        for dev in [
            "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue",
        ] {
            assert!(
                out.stdout.lines().any(|l| l == dev),
                "{mode:?}: no /dev/{dev}"
            );
        }
        assert_eq!(lines.last(), Some(&"4"));
    }
}

#[test]
fn root_in_the_container_has_dockers_default_capabilities() {
    for mode in MODES {
        let s = setup(mode);
        let out = s
            .sh("grep -E '^Cap(Eff|Bnd|Amb)' /proc/self/status; grep NoNewPrivs /proc/self/status");
        out.assert_success();
        assert!(
            out.stdout.contains("CapEff:\t00000000a80425fb"),
            "{mode:?}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("CapBnd:\t00000000a80425fb"),
            "{mode:?}: {}",
            out.stdout
        );
        assert!(out.stdout.contains("CapAmb:\t0000000000000000"), "{mode:?}");
        assert!(out.stdout.contains("NoNewPrivs:\t1"), "{mode:?}");
    }
}

#[test]
fn the_images_user_is_resolved_by_name_with_supplementary_groups() {
    for mode in MODES {
        let s = setup_with(
            mode,
            &busybox_image().user("app").workdir("/home/app").build(),
        );
        let out = s.sh("id; pwd; echo $HOME; grep CapEff /proc/self/status");
        out.assert_success();
        assert!(
            // (the kernel keeps supplementary groups sorted)
            out.stdout
                .contains("uid=1000(app) gid=1000(app) groups=50(staff),1000(app)"),
            "{mode:?}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("/home/app\n/home/app\n"),
            "{mode:?}: {}",
            out.stdout
        );
        assert!(out.stdout.contains("CapEff:\t0000000000000000"), "{mode:?}");
    }
}

#[test]
fn rootless_without_subordinate_ids_explains_why_another_user_fails() {
    let s = setup_with(RunAs::RootlessNoSubid, &busybox_image().user("app").build());
    let out = s.sh("id");
    out.assert_failure();
    out.assert_stderr_contains("/etc/subuid");
    // Root of the image still works with the single mapping.
    let s = setup(RunAs::RootlessNoSubid);
    s.sh("echo ok")
        .assert_success()
        .assert_stdout_contains("ok");
}

#[test]
fn exec_failures_are_one_line_with_the_shells_codes() {
    for mode in MODES {
        let s = setup(mode);
        let out = s
            .dstack
            .run(&["run", "docker", &s.image, "--entrypoint", "no-such-program"]);
        out.assert_code(127);
        out.assert_stderr_contains("exec \"no-such-program\": command not found");
        let out = s
            .dstack
            .run(&["run", "docker", &s.image, "--entrypoint", "/etc/passwd"]);
        out.assert_code(126);
        out.assert_stderr_contains("permission denied");
    }
    let shell_less = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .executable(
                    "busybox",
                    std::fs::read(common::busybox::BUSYBOX_BIN).unwrap(),
                )
                .build(Compression::Gzip),
        )
        .entrypoint(&["/busybox", "echo", "hello"])
        .build();
    let s = setup_with(RunAs::Root, &shell_less);
    s.dstack
        .run(&["run", "docker", &s.image])
        .assert_success()
        .assert_stdout_contains("hello");
    let out = s.sh("echo hi");
    out.assert_code(127);
    out.assert_stderr_contains("the image has no shell");
}

#[test]
fn sigterm_reaches_the_job_which_may_exit_its_own_way() {
    for mode in MODES {
        let s = setup(mode);
        let running = s.dstack.spawn(&[
            "run",
            "docker",
            &s.image,
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ]);
        running.wait_for_output("ready", |out, _| out.contains("ready"));
        running.signal(Signal::SIGTERM);
        let out = running.wait();
        out.assert_code(7);
        out.assert_stdout_contains("got-term");
    }
}

fn mountinfo_mentions(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(String::from)
        .collect()
}

#[test]
fn after_kill_9_of_the_supervisor_the_next_command_leaves_nothing_behind() {
    for mode in MODES {
        let s = setup(mode);
        let running = s.dstack.spawn(&[
            "run",
            "docker",
            &s.image,
            "--memory",
            "256MiB",
            "-c",
            "echo started; sleep 613",
        ]);
        running.wait_for_output("started", |out, _| out.contains("started"));
        let containers = s.dstack.state_root().join("containers");
        let ids: Vec<String> = std::fs::read_dir(&containers)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(ids.len(), 1, "{mode:?}");
        running.signal(Signal::SIGKILL);
        running.wait();
        // The job went with its supervisor (init's parent-death signal, then the pid namespace).
        std::thread::sleep(Duration::from_millis(300));
        let sleepers = std::process::Command::new("pgrep")
            .args(["-f", "sleep 613"])
            .output()
            .unwrap();
        assert!(
            sleepers.stdout.is_empty(),
            "{mode:?}: the job survived its supervisor"
        );
        s.sh("true").assert_success();
        assert!(
            std::fs::read_dir(&containers).unwrap().next().is_none(),
            "{mode:?}: leftovers in {}",
            containers.display()
        );
        assert!(
            mountinfo_mentions(&s.dstack.state_root()).is_empty(),
            "{mode:?}: mounts left"
        );
        for controller in ["memory", "cpu", "pids", "unified"] {
            let cg = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join("dstack")
                .join(&ids[0]);
            assert!(!cg.exists(), "{mode:?}: cgroup {} left", cg.display());
        }
    }
}

fn many_layers(n: usize) -> Image {
    let mut image = busybox_image();
    for i in 0..n {
        image = image.layer(
            LayerBuilder::new()
                .file(&format!("layers/{i:03}"), format!("{i}\n"))
                .build(Compression::None),
        );
    }
    image.build()
}

#[test]
fn an_image_with_120_layers_runs() {
    for mode in MODES {
        let s = setup_with(mode, &many_layers(120));
        let out = s.sh("ls /layers | wc -l; cat /layers/119");
        out.assert_success();
        assert_eq!(out.stdout, "120\n119\n", "{mode:?}: {}", out.stderr);
    }
}

#[test]
fn the_overlay_fallbacks_run_the_same_job() {
    let image = busybox_image()
        .layer(
            LayerBuilder::new()
                .file("etc/motd", "lower\n")
                .file("etc/gone", "x")
                .build(Compression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .file("etc/motd", "upper\n")
                .whiteout("etc/gone")
                .build(Compression::Gzip),
        )
        .build();
    // Rootless fuse needs /dev/fuse open to everyone (Debian's default; some machines keep it 0600).
    let fuse_for_all = std::fs::metadata("/dev/fuse").is_ok_and(|m| m.mode() & 0o006 == 0o006);
    for mode in MODES {
        for driver in ["copy", "fuse-overlayfs"] {
            let registry_setup = setup_with(mode, &image);
            let dstack = Dstack::new(mode).env("DSTACK_ROOTFS_DRIVER", driver);
            dstack
                .run(&["pull", "-q", &registry_setup.image])
                .assert_success();
            let layers = dstack.state_root().join("store/layers");
            let before = snapshot(&layers);
            let out = dstack.run(&[
                "-v",
                "run",
                "docker",
                &registry_setup.image,
                "-c",
                "cat /etc/motd; ls /etc/gone 2>&1; echo new > /etc/motd; cat /etc/motd; exit 5",
            ]);
            if driver == "fuse-overlayfs" && mode == RunAs::Rootless && !fuse_for_all {
                out.assert_code(125);
                out.assert_stderr_contains("/dev/fuse");
                continue;
            }
            out.assert_code(5);
            assert_eq!(
                out.stdout.lines().next(),
                Some("upper"),
                "{mode:?} {driver}: {}",
                out.stderr
            );
            assert!(
                out.stdout.contains("No such file"),
                "{mode:?} {driver}: whiteout ignored"
            );
            assert!(out.stdout.ends_with("new\n"), "{mode:?} {driver}");
            out.assert_stderr_contains(&format!("root filesystem: {driver}"));
            assert_eq!(
                snapshot(&layers),
                before,
                "{mode:?} {driver}: the store changed"
            );
        }
    }
}

#[test]
fn dry_run_prints_the_plan_without_running() {
    let s = setup(RunAs::Root);
    let out = s.dstack.run(&[
        "run",
        "--dry-run",
        "docker",
        "-e",
        "A=1",
        &s.image,
        "-c",
        "echo a",
        "-c",
        "sleep 1 &",
        "--memory",
        "1GB",
    ]);
    out.assert_success();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let args = &plan["spec"]["process"]["args"];
    assert_eq!(
        args,
        &serde_json::json!(["/bin/sh", "-c", "echo a && { sleep 1 & }"])
    );
    assert!(
        plan["spec"]["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("A=1"))
    );
    assert_eq!(
        plan["spec"]["linux"]["resources"]["memory"]["limit"],
        1_000_000_000
    );
    let shm = plan["spec"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/dev/shm")
        .unwrap();
    assert!(
        shm["options"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("size=488282k")),
        "{shm}"
    );
}

#[test]
fn a_job_past_its_memory_limit_is_oom_killed_and_reported() {
    let s = setup(RunAs::Root);
    let out = s.dstack.run(&[
        "run",
        "docker",
        &s.image,
        "--memory",
        "64MiB",
        "-c",
        "exec dd if=/dev/zero of=/dev/null bs=200M count=1",
    ]);
    out.assert_code(137);
    out.assert_stderr_contains("out of memory: the job exceeded its memory limit of 64 MiB");
    // Within the limit, the same job runs.
    s.dstack
        .run(&[
            "run",
            "docker",
            &s.image,
            "--memory",
            "256MiB",
            "-c",
            "dd if=/dev/zero of=/dev/null bs=100M count=1",
        ])
        .assert_success();
}

#[test]
fn half_a_cpu_holds_a_busy_loop_to_about_half_a_core() {
    let s = setup(RunAs::Root);
    let out = s.dstack.run(&[
        "run",
        "docker",
        &s.image,
        "--cpu",
        "0.5",
        "-c",
        "timeout 3 sh -c 'while :; do :; done'; cat /sys/fs/cgroup/cpuacct/cpuacct.usage",
    ]);
    let used_ns: f64 = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}{}", out.stdout, out.stderr));
    let cores = used_ns / 1e9 / 3.0;
    // The upper bound is the limit; the lower one only says the loop ran (other tests share the cores).
    assert!(
        (0.05..=0.65).contains(&cores),
        "a busy loop used {cores:.2} cores under --cpu 0.5"
    );
}

#[test]
fn rootless_limits_that_cannot_be_enforced_warn_or_fail_when_strict() {
    let s = setup(RunAs::Rootless);
    let out = s.dstack.run(&[
        "run", "docker", &s.image, "--memory", "64MiB", "-c", "echo ran",
    ]);
    if out.stderr.contains("warning:") {
        out.assert_success().assert_stdout_contains("ran");
        out.assert_stderr_contains("limits are not enforced");
        let strict = s.dstack.run(&[
            "run",
            "docker",
            &s.image,
            "--memory",
            "64MiB",
            "--strict-limits",
            "-c",
            "echo ran",
        ]);
        strict.assert_failure();
        assert!(
            !strict.stdout.contains("ran"),
            "the job ran despite --strict-limits"
        );
    } else {
        // A delegated cgroup v2 subtree: the limit is enforced without a word.
        out.assert_success();
    }
}

#[test]
fn with_a_terminal_the_job_gets_a_pty_and_its_exit_code_still_comes_back() {
    for mode in MODES {
        let s = setup(mode);
        // `script` gives dstack a pty as its stdin and stdout, as an interactive shell would.
        let line = format!(
            "{} run docker {} -c '[ -t 0 ] && [ -t 1 ] && echo is-a-tty; echo TERM=$TERM; exit 4'",
            common::dstack::DSTACK_BIN,
            s.image
        );
        let out = s
            .dstack
            .run_program("script", &["-qec", &line, "/dev/null"]);
        out.assert_code(4);
        out.assert_stdout_contains("is-a-tty");
        assert!(
            !out.stdout.contains("TERM=\r"),
            "{mode:?}: no TERM: {}",
            out.stdout
        );
    }
}

#[test]
fn init_reaps_orphans_so_no_zombie_is_left() {
    for mode in MODES {
        let s = setup(mode);
        // The subshell exits at once, leaving `sleep` to init; it exits and must be reaped.
        let out = s.sh("(sleep 0.2 &); sleep 0.6; ps -o stat,comm | grep -c '^Z' || true");
        out.assert_success();
        assert_eq!(out.stdout.trim(), "0", "{mode:?}: zombies: {}", out.stdout);
    }
}

#[test]
fn a_job_that_ignores_sigterm_is_killed_at_the_second_signal() {
    for mode in MODES {
        let s = setup(mode);
        let running = s.dstack.spawn(&[
            "run",
            "docker",
            &s.image,
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 0.1; done",
        ]);
        running.wait_for_output("ready", |out, _| out.contains("ready"));
        let started = std::time::Instant::now();
        running.signal(Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(300));
        running.signal(Signal::SIGTERM);
        let out = running.wait();
        out.assert_code(137);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{mode:?}: the grace period ran out instead"
        );
    }
}
