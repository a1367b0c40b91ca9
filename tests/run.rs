//! `dstack run docker IMAGE ...` through the real binary, as root and as an unprivileged user: isolation,
//! exit codes, a root filesystem that never reaches the store, Docker's defaults, user lookup, cleanup
//! after a SIGKILLed supervisor, 100+ layers, and the overlay fallbacks.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use test_support::*;

/// Both ways a user meets dstack.
const MODES: [RunAs; 2] = [RunAs::Root, RunAs::Rootless];

/// A registry holding `image`, and a dstack environment (as `run_as`) that has pulled it.
fn setup_with(run_as: RunAs, image: &Image) -> PulledImage {
    PulledImage::new(Dstack::new(run_as), "test/img:1", image)
}

fn setup(run_as: RunAs) -> PulledImage {
    setup_with(run_as, &busybox_image().build())
}

/// A descriptor the caller of `dstack` left open (fd 7 on a host file, as a shell's `exec 7>file` leaves
/// it) does not reach the job: nothing but the standard streams does.
#[test]
fn descriptors_the_caller_left_open_do_not_reach_the_job() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    for mode in MODES {
        let s = setup(mode);
        let host_file = s.dstack.home().join("outside.txt");
        std::fs::write(&host_file, "").unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&host_file)
            .unwrap();
        let raw = file.as_raw_fd();
        let script = "ls /proc/self/fd; echo written >&7 && echo reached || echo closed";
        let mut cmd = s.dstack.command(&["run", "docker", &s.image, "-c", script]);
        // SAFETY: dup2 between fork and exec (async-signal-safe); the copy on 7 is not close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 7) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = Output::of(cmd);
        out.assert_success();
        assert!(out.stdout.contains("closed"), "{mode:?}: {out}");
        assert_eq!(
            std::fs::read_to_string(&host_file).unwrap(),
            "",
            "{mode:?}: the job wrote to a host file"
        );
        // 0, 1, 2 and the directory `ls` reads (3).
        let fds: Vec<&str> = out
            .stdout
            .lines()
            .take_while(|l| l.parse::<u32>().is_ok())
            .collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{mode:?}: {out}");
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
        let left = s.dstack.scratch_left();
        assert!(
            left.is_empty(),
            "{mode:?}: scratch directories left: {left:?}"
        );
    }
}

/// A run's scratch directory is emptied and kept for the next run (no directory made or removed per
/// run): what the job wrote is gone all the same, and one whose `/` the job changed is removed instead.
#[test]
fn a_recycled_scratch_directory_starts_clean() {
    for mode in MODES {
        let s = setup(mode);
        s.sh("echo x > /marker; mkdir -p /d/e; echo y > /d/e/f; ln -s /etc /link; rm /bin/ls")
            .assert_success();
        let pool = s.dstack.scratch_pool();
        assert_eq!(pool.len(), 1, "{mode:?}: {pool:?}");
        for sub in ["upper", "work", "merged"] {
            let inside: Vec<_> = std::fs::read_dir(pool[0].0.join(sub)).unwrap().collect();
            assert!(inside.is_empty(), "{mode:?}: {sub} kept {inside:?}");
        }
        let out = s.sh("ls -a /; ls /bin/ls; stat -c 'mode %a' /");
        out.assert_success();
        for gone in ["marker", "link", "\nd\n"] {
            assert!(
                !out.stdout.contains(gone),
                "{mode:?}: {gone} survived: {}",
                out.stdout
            );
        }
        assert!(out.stdout.contains("mode 755"), "{mode:?}: {}", out.stdout);
        let again = s.dstack.scratch_pool();
        assert_eq!(
            again.iter().map(|p| p.1).collect::<Vec<_>>(),
            vec![pool[0].1],
            "{mode:?}: the scratch directory was not reused"
        );
        s.sh("chmod 700 /").assert_success();
        assert!(
            s.dstack.scratch_pool().is_empty(),
            "{mode:?}: a scratch directory whose / was changed was kept"
        );
        let out = s.sh("stat -c 'mode %a' /");
        assert!(out.stdout.contains("mode 755"), "{mode:?}: {}", out.stdout);
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
                    std::fs::read(test_support::busybox::BUSYBOX_BIN).unwrap(),
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
            .filter(|n| !n.starts_with(".free-"))
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
            s.dstack.scratch_left().is_empty(),
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
                "--verbose",
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
        out.assert_stderr_contains("limits are not enforced")
            .assert_stderr_contains("see `dstack info`");
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
            test_support::dstack::dstack_bin(),
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

/// When the job ends, so does everything it started (as with Docker): a daemon it left behind is gone by
/// the time `dstack` returns. The daemon holds 300 MB, so that its death takes long enough (freeing its
/// memory) to be seen if nothing waited for it.
#[test]
fn what_the_job_left_running_ends_with_it() {
    for mode in MODES {
        let s = setup(mode);
        // Off the job's streams, so that nothing waits for it to close them.
        let out = s.sh(
            "awk 'BEGIN { s = sprintf(\"%300000000s\", \"\"); while (1) {} }' </dev/null >/dev/null 2>&1 & \
             sleep 1; echo started",
        );
        out.assert_success().assert_stdout_contains("started");
        // Busybox runs awk in a forked shell: its name is awk, its command line the shell's (empty once
        // it is dying).
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|p| {
                let file = |name: &str| std::fs::read_to_string(p.path().join(name));
                file("comm").is_ok_and(|c| c.trim() == "awk")
                    && file("cmdline").is_ok_and(|c| c.is_empty() || c.contains("%300000000s"))
            })
            .map(|p| p.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            left.is_empty(),
            "{mode:?}: the job's daemon outlived the run: {left:?}"
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

/// The run record of `name`, as `ps -a --json` shows it.
fn ps_row(dstack: &Dstack, name: &str) -> serde_json::Value {
    let out = dstack.run(&["ps", "-a", "--json"]);
    out.assert_success();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    rows.into_iter()
        .find(|r| r["run"] == name)
        .unwrap_or_else(|| panic!("{name} is not in ps -a: {}", out.stdout))
}

/// The run name `dstack run` said first on stderr (`run NAME`).
fn run_name(out: &Output) -> String {
    let first = out.stderr.lines().next().unwrap_or_default();
    first
        .strip_prefix("run ")
        .unwrap_or_else(|| panic!("stderr does not start with the run name:\n{}", out.stderr))
        .to_string()
}

/// An ad hoc run is a recorded run: its name comes first, its output is kept for `logs`, `ps` lists it
/// (workflow `docker`, the image in `--json`) with its end and exit code.
#[test]
fn ad_hoc_runs_are_recorded_with_their_output_and_end() {
    for mode in MODES {
        let s = setup(mode);
        let out = s.sh("echo kept; echo err >&2; exit 3");
        out.assert_code(3);
        let name = run_name(&out);
        let row = ps_row(&s.dstack, &name);
        assert_eq!(row["workflow"], "docker", "{mode:?}: {row}");
        assert_eq!(row["image"], s.image.as_str(), "{mode:?}");
        assert_eq!(row["status"], "failed", "{mode:?}");
        assert_eq!(row["exit_code"], 3, "{mode:?}");
        let logs = s.dstack.run(&["logs", &name]);
        logs.assert_success();
        assert!(
            logs.stdout.contains("kept\n") && logs.stdout.contains("err\n"),
            "{mode:?}: {}",
            logs.stdout
        );
        let table = s.dstack.run(&["ps", "-a"]);
        assert!(
            table
                .stdout
                .lines()
                .any(|l| l.starts_with(&name) && l.contains("docker")),
            "{mode:?}: {}",
            table.stdout
        );
        let ok = s.sh("true");
        ok.assert_success();
        assert_eq!(ps_row(&s.dstack, &run_name(&ok))["status"], "done");
        // A start failure is recorded too, with its reason.
        let bad = s
            .dstack
            .run(&["run", "docker", &s.image, "--entrypoint", "no-such-program"]);
        bad.assert_code(127);
        let row = ps_row(&s.dstack, &run_name(&bad));
        assert_eq!(row["status"], "failed", "{mode:?}: {row}");
        assert!(
            row["message"]
                .as_str()
                .unwrap_or_default()
                .contains("command not found"),
            "{mode:?}: {row}"
        );
    }
}

/// `-d` (before or after the image) prints the name and returns; `logs -f` follows the run, `stop` ends it.
#[test]
fn a_detached_ad_hoc_run_is_followed_and_stopped_by_name() {
    for mode in MODES {
        let s = setup(mode);
        for detach in [
            vec!["run", "-d", "docker", s.image.as_str()],
            vec!["run", "docker", s.image.as_str(), "-d"],
        ] {
            let mut args = detach.clone();
            args.extend_from_slice(&["-c", "echo ready; sleep 60"]);
            let out = s.dstack.run(&args);
            out.assert_success();
            let name = out.stdout.trim().to_string();
            assert!(!name.is_empty() && !name.contains('\n'), "{mode:?}: {out}");
            let seen = test_support::process::wait_until(Duration::from_secs(30), || {
                s.dstack
                    .run(&["logs", &name])
                    .stdout
                    .contains("ready")
                    .then_some(())
            });
            assert!(seen.is_some(), "{mode:?}: the job never said ready");
            assert_eq!(ps_row(&s.dstack, &name)["status"], "running", "{mode:?}");
            s.dstack.run(&["stop", &name]).assert_success();
            let row = ps_row(&s.dstack, &name);
            assert_eq!(row["status"], "stopped", "{mode:?}: {row}");
        }
        let out = s.dstack.run(&[
            "run",
            "-d",
            "docker",
            &s.image,
            "-c",
            "echo one; sleep 0.5; echo two",
        ]);
        let name = out.stdout.trim().to_string();
        let logs = s.dstack.run(&["logs", "-f", &name]);
        logs.assert_success();
        assert!(
            logs.stdout.ends_with("one\ntwo\n"),
            "{mode:?}: {}",
            logs.stdout
        );
        assert_eq!(ps_row(&s.dstack, &name)["status"], "done");
    }
}

/// `-p N` publishes N ports as for workflows: `PORT_i`/`JOB_PORT_i`, a URL printed for each, and a server on
/// `$PORT_0` inside answers on the host. `--network host` and `none` choose the job's network.
#[test]
fn ad_hoc_ports_and_network_modes() {
    for mode in MODES {
        let s = setup(mode);
        let running = s.dstack.spawn(&[
            "run",
            "docker",
            &s.image,
            "-p",
            "2",
            "-c",
            "mkdir -p /www && echo hello > /www/index.html && echo ports $PORT_0 $JOB_PORT_0 $PORT_1 \
             && exec httpd -f -p $PORT_0 -h /www",
        ]);
        running.wait_for_output("the ports", |out, err| {
            out.contains("ports") && err.contains("PORT_1: http://127.0.0.1:")
        });
        let (out, err) = (running.stdout_so_far(), running.stderr_so_far());
        let words: Vec<&str> = out
            .lines()
            .find(|l| l.starts_with("ports"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(words[1], words[2], "{mode:?}: PORT_0 = JOB_PORT_0");
        assert_ne!(words[1], words[3], "{mode:?}");
        assert!(
            err.contains(&format!("PORT_0: http://127.0.0.1:{}", words[1])),
            "{mode:?}: {err}"
        );
        let port: u16 = words[1].parse().unwrap();
        let page = test_support::process::wait_until(Duration::from_secs(20), || {
            use std::io::{Read as _, Write as _};
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
            let mut page = String::new();
            conn.read_to_string(&mut page).ok()?;
            page.contains("hello").then_some(page)
        });
        assert!(page.is_some(), "{mode:?}: no answer on port {port}");
        running.signal(Signal::SIGTERM);
        running.wait();

        let interfaces = |network: &str| {
            let out = s.dstack.run(&[
                "run",
                "docker",
                &s.image,
                "--network",
                network,
                "-c",
                "ls /sys/class/net | sort | tr '\\n' ' '",
            ]);
            out.assert_success();
            out.stdout
        };
        assert_eq!(interfaces("none"), "lo ", "{mode:?}");
        // (Other runs' veths, `dst...`, come and go meanwhile.)
        let host: Vec<String> = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|i| !i.starts_with("dst"))
            .collect();
        let seen = interfaces("host");
        assert!(
            host.iter().all(|i| seen.split_whitespace().any(|s| s == i)),
            "{mode:?}: host network shows {seen}, the host has {host:?}"
        );
        if mode == RunAs::Root {
            assert_eq!(interfaces("private"), "eth0 lo ", "{mode:?}");
        }
        let bad = s.dstack.run(&[
            "run",
            "docker",
            &s.image,
            "--network",
            "bridge",
            "-c",
            "true",
        ]);
        bad.assert_failure();
        bad.assert_stderr_contains("private");
    }
}

/// `--pids-limit N` caps the job's tasks (a fork past it fails), as root; `-1` lifts the cap.
#[test]
fn pids_limit_stops_forks_past_it() {
    let s = setup(RunAs::Root);
    let script = "sh -c 'for i in $(seq 20); do sleep 1 & done; wait'; echo inner=$?";
    let capped = s
        .dstack
        .run(&["run", "docker", &s.image, "--pids-limit", "8", "-c", script]);
    capped.assert_success().assert_stdout_contains("inner=2");
    capped.assert_stderr_contains("can't fork");
    let free = s.dstack.run(&[
        "run",
        "docker",
        &s.image,
        "--pids-limit",
        "-1",
        "-c",
        script,
    ]);
    free.assert_success().assert_stdout_contains("inner=0");
}

/// As root every job gets a cgroup: the device filter (Docker's set) stops a node made inside from being
/// created or opened, and a default tasks limit holds (2048; `--pids-limit -1` lifts it).
#[test]
fn as_root_the_device_filter_and_a_default_pids_limit_hold_for_every_job() {
    let s = setup(RunAs::Root);
    let out = s.sh(
        "(: </dev/null) && echo null-ok; mknod /kmsg c 1 11 && echo mknod-ok; \
         (: </kmsg) 2>/dev/null && echo open-ok; true",
    );
    out.assert_success();
    assert_eq!(out.stdout, "null-ok\n", "{}", out.stderr);
    out.assert_stderr_contains("mknod: /kmsg: Operation not permitted");
    let pids_max = |flags: &[&str]| {
        let mut args = vec!["run", "docker", s.image.as_str()];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[
            "-c",
            "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
        ]);
        let out = s.dstack.run(&args);
        out.assert_success();
        out.stdout.trim().to_string()
    };
    assert_eq!(pids_max(&[]), "2048");
    assert_eq!(pids_max(&["--pids-limit", "-1"]), "max");
    assert_eq!(pids_max(&["--pids-limit", "0"]), "max");
    assert_eq!(pids_max(&["--pids-limit", "300"]), "300");
}

/// dstack's own defaults (the tasks limit) are enforced where they can be and never warned about: a rootless
/// job that asks for no limit gets no warning, and `--strict-limits` alone does not refuse it.
#[test]
fn default_limits_never_warn_or_fail_strict() {
    for mode in MODES {
        let s = setup(mode);
        let out = s.sh("echo ran");
        out.assert_success().assert_stdout_contains("ran");
        assert!(
            !out.stderr.contains("not enforced"),
            "{mode:?}: {}",
            out.stderr
        );
        let strict = s.dstack.run(&[
            "run",
            "docker",
            &s.image,
            "--strict-limits",
            "-c",
            "echo ran",
        ]);
        strict.assert_success().assert_stdout_contains("ran");
    }
}
