//! Real cgroups on this host (v1/hybrid here; the same stories hold on v2): limits hold for a real child
//! process, readings report what happened, and nothing is left behind. Run as root.
//!
//! Children are `/bin/sh` helpers that wait for a line on stdin, so they are inside the cgroup before they do
//! anything (forking from the multi-threaded test harness is not safe).

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runtime::cgroup::{
    self, Cgroup, CgroupError, DevicePolicy, Layout, Limits, Placement, Version,
};

fn name(test: &str) -> String {
    format!("test-{test}-{}", std::process::id())
}

fn enforced(test: &str, limits: Limits) -> Cgroup {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the cgroup tests need root: run them as root"
    );
    match cgroup::create(&name(test), &limits, true) {
        Ok(Placement::Enforced(cg)) => cg,
        Ok(Placement::Unenforced { reason }) => panic!("not enforced: {reason}"),
        Err(e) => panic!("create failed: {e}"),
    }
}

/// A shell running `script` once it reads a line, so that it can be placed in a cgroup first.
struct Job {
    child: Child,
}

impl Job {
    fn spawn(script: &str) -> Job {
        let child = Command::new("/bin/sh")
            .args(["-c", &format!("read go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn /bin/sh");
        Job { child }
    }

    fn start_in(mut self, cg: &Cgroup) -> Job {
        cg.add_pid(self.child.id() as i32).expect("add_pid");
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        self
    }

    /// Waits for the exit and returns (exit code or 128+signal, stdout, stderr).
    fn finish(mut self) -> (i32, String, String) {
        let status = self.child.wait().unwrap();
        let mut out = String::new();
        let mut err = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        (code, out, err)
    }
}

fn dirs(cg: &Cgroup) -> Vec<PathBuf> {
    cg.dirs().into_iter().map(PathBuf::from).collect()
}

fn assert_gone(dirs: &[PathBuf]) {
    for dir in dirs {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}

#[test]
fn the_cgroup_uses_the_hosts_layout() {
    let cg = enforced("layout", Limits::default());
    let expected = match cgroup::detect().unwrap() {
        Layout::Unified { .. } => Version::V2,
        Layout::Legacy { .. } => Version::V1,
        Layout::Missing => panic!("no cgroup filesystem"),
    };
    assert_eq!(cg.version(), expected);
    assert!(
        cg.dirs()
            .iter()
            .all(|d| d.ends_with(name("layout")) && d.parent().unwrap().ends_with("dstack"))
    );
}

#[test]
fn a_job_allocating_past_its_memory_limit_is_oom_killed() {
    let cg = enforced(
        "oom",
        Limits {
            memory: Some(32 << 20),
            ..Limits::default()
        },
    );
    let dirs = dirs(&cg);
    assert!(!cg.oom_killed());
    let job = Job::spawn("exec dd if=/dev/zero of=/dev/null bs=200M count=1").start_in(&cg);
    let (code, _, err) = job.finish();
    assert_eq!(code, 128 + 9, "dd should die of SIGKILL; stderr: {err}");
    assert!(cg.oom_killed(), "the cgroup should report the OOM kill");
    let peak = cg.memory_peak().expect("peak memory");
    assert!(peak <= 33 << 20, "peak {peak} is above the limit");
    drop(cg);
    assert_gone(&dirs);
}

#[test]
fn a_busy_loop_under_half_a_core_uses_about_half_a_core() {
    let cg = enforced(
        "cpu",
        Limits {
            cpu: Some(0.5),
            ..Limits::default()
        },
    );
    let job = Job::spawn("while :; do :; done").start_in(&cg);
    // Other work on this machine can only push the share down: measure again if it came out low.
    let mut shares = Vec::new();
    for _ in 0..3 {
        let (used, start) = (cg.cpu_usage().expect("cpu usage"), Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        let share = (cg.cpu_usage().unwrap() - used).as_secs_f64() / start.elapsed().as_secs_f64();
        assert!(
            share <= 0.6,
            "the loop used {share:.2} cores under a 0.5 limit"
        );
        shares.push(share);
        if share >= 0.4 {
            break;
        }
    }
    assert!(
        shares.iter().any(|s| *s >= 0.4),
        "the loop got only {shares:.2?} cores"
    );
    let dirs = dirs(&cg);
    cg.remove().unwrap();
    assert_eq!(job.finish().0, 128 + 9, "remove kills the loop");
    assert_gone(&dirs);
}

#[test]
fn a_pids_limit_stops_forks() {
    let cg = enforced(
        "pids",
        Limits {
            pids: Some(6),
            ..Limits::default()
        },
    );
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 30 & echo started; done; wait";
    let job = Job::spawn(script).start_in(&cg);
    std::thread::sleep(Duration::from_millis(500));
    let running = cg.procs().len();
    assert!(
        (2..=6).contains(&running),
        "{running} processes under a limit of 6"
    );
    let dirs = dirs(&cg);
    cg.remove().unwrap();
    let (_, out, err) = job.finish();
    let started = out.lines().count();
    assert!(started < 12, "all 12 forks succeeded; stderr: {err}");
    assert!(
        err.to_lowercase().contains("fork"),
        "the shell should say it cannot fork: {err}"
    );
    assert_gone(&dirs);
}

#[test]
fn only_the_listed_devices_can_be_opened_or_created() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        devices: Some(DevicePolicy::docker_default()),
        ..Limits::default()
    };
    let cg = enforced("devices", limits);
    let script = format!(
        "(: </dev/null) && echo null-ok; (: </dev/kmsg) && echo kmsg-ok; mknod {d}/null c 1 3 && echo mknod-null-ok; \
         mknod {d}/kmsg c 1 11 && echo mknod-kmsg-ok; exit 0",
        d = dir.path().display()
    );
    let (_, out, err) = Job::spawn(&script).start_in(&cg).finish();
    assert!(
        out.contains("null-ok") && out.contains("mknod-null-ok"),
        "allowed devices failed: {out} {err}"
    );
    assert!(
        !out.contains("kmsg-ok"),
        "/dev/kmsg was opened or created: {out}"
    );
    assert_eq!(err.matches("Operation not permitted").count(), 2, "{err}");
}

#[test]
fn dropping_the_cgroup_kills_what_is_left_and_removes_it() {
    let cg = enforced(
        "drop",
        Limits {
            memory: Some(64 << 20),
            pids: Some(50),
            ..Limits::default()
        },
    );
    let dirs = dirs(&cg);
    let job = Job::spawn("sleep 60 & sleep 60 & wait").start_in(&cg);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cg.procs().len(), 3);
    drop(cg);
    assert_eq!(job.finish().0, 128 + 9);
    assert_gone(&dirs);
}

#[test]
fn leftovers_of_a_dead_run_are_swept_and_live_runs_are_kept() {
    let cg = enforced(
        "sweep",
        Limits {
            memory: Some(64 << 20),
            ..Limits::default()
        },
    );
    let dirs = dirs(&cg);
    let job = Job::spawn("sleep 60").start_in(&cg);
    // The supervisor dies without cleaning up.
    std::mem::forget(cg);
    let dead = name("sweep");
    let swept = cgroup::sweep_leftovers(|n| n != dead).unwrap();
    assert_eq!(swept, vec![dead]);
    assert_eq!(job.finish().0, 128 + 9, "the leftover job is killed");
    assert_gone(&dirs);
}

#[test]
fn a_limit_the_kernel_refuses_names_the_file_and_the_value() {
    let err = cgroup::create(
        &name("refused"),
        &Limits {
            cpu: Some(1e9),
            ..Limits::default()
        },
        true,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CgroupError::Refused { .. }), "{text}");
    assert!(
        text.contains("100000000000000")
            && (text.contains("cpu.max") || text.contains("cfs_quota_us")),
        "{text}"
    );
    assert!(!text.contains('\n'));
    let leftovers = cgroup::sweep_leftovers(|n| n != name("refused")).unwrap();
    assert!(leftovers.is_empty(), "a failed create left {leftovers:?}");
}
