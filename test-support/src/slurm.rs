//! A real one-node Slurm cluster on this machine for the tests that submit jobs (`tests/slurm.rs`, and
//! `srun --container` tests): `slurm()` writes `/etc/slurm/slurm.conf` for this machine, starts `munged`,
//! `slurmctld` and `slurmd` unless they already run, and waits until the node takes jobs. It needs root and
//! Debian's `slurm-wlm` and `munge` (`scripts/setup` installs them: `scripts/setup.d/slurm.packages`).
//!
//! One cluster serves every test of every test binary in a run (a flock makes parallel binaries start it
//! once); it is left running afterwards, which is harmless and makes the next run start at once. Its files:
//! `/etc/slurm/{slurm,cgroup,gres}.conf` (only replaced when they are ours: they start with [`MARKER`]),
//! state in `/var/lib/dstack-test-slurm/`, pid files in `/run/dstack-test-slurm/`, logs in
//! `/var/log/dstack-test-slurm/`.
//!
//! ```no_run
//! let slurm = common::slurm::slurm();
//! let job = slurm.job("42");                     // `scontrol show job -o 42` as a map
//! assert_eq!(job["Partition"], "debug");
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The first line of every configuration file the harness writes; a file without it is left alone.
pub const MARKER: &str =
    "# Written by dstack's test harness (tests/common/slurm.rs); safe to delete.";
/// The default partition.
pub const PARTITION: &str = "debug";
/// A second partition on the same node, for jobs that may be preempted (`interruptible`).
pub const PREEMPT_PARTITION: &str = "preempt";
/// The GRES type of the node's one pretend GPU (`--gres=gpu:a100:1` is accepted and recorded; nothing on
/// the node is a GPU, so a job that really opens one fails).
pub const GPU_TYPE: &str = "a100";

const CONF_DIR: &str = "/etc/slurm";
const STATE_DIR: &str = "/var/lib/dstack-test-slurm";
const RUN_DIR: &str = "/run/dstack-test-slurm";
const LOG_DIR: &str = "/var/log/dstack-test-slurm";

/// The running cluster.
#[derive(Debug)]
pub struct Slurm {
    /// The node's name (`hostname -s`), also the controller's.
    pub node: String,
    /// Which process tracking and task plugins it runs with (cgroup ones where they work here).
    pub cgroups: bool,
}

/// The cluster, started on first use (by this process or any other test binary) and shared afterwards.
pub fn slurm() -> &'static Slurm {
    static SLURM: OnceLock<Slurm> = OnceLock::new();
    SLURM.get_or_init(start)
}

impl Slurm {
    /// `scontrol show job -o ID` as `Key -> value` (e.g. `JobState`, `Partition`, `NumCPUs`, `MinMemoryNode`,
    /// `Requeue`, `TresPerNode`). Panics if Slurm does not know the job.
    pub fn job(&self, id: &str) -> BTreeMap<String, String> {
        let out = command("scontrol", &["show", "job", "-o", id]);
        assert!(out.0, "scontrol show job {id}: {}", out.1);
        parse_show(&out.1)
    }

    /// Waits until Slurm says job `id` has ended (any final state) and returns that state.
    pub fn wait_for_end(&self, id: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let state = self.job(id)["JobState"].clone();
            if ![
                "PENDING",
                "RUNNING",
                "CONFIGURING",
                "COMPLETING",
                "SUSPENDED",
                "REQUEUED",
            ]
            .contains(&state.as_str())
            {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {state} after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `Key=Value Key=Value ...` (one line of `scontrol show -o`): a word without `=` continues the previous
/// value (values such as `Reason` may hold spaces).
pub fn parse_show(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut last: Option<String> = None;
    for word in text.split_whitespace() {
        match word.split_once('=') {
            Some((key, value))
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '/' || c == ':') =>
            {
                map.insert(key.to_string(), value.to_string());
                last = Some(key.to_string());
            }
            _ => {
                if let Some(key) = &last {
                    let value: &mut String = map.get_mut(key).expect("inserted");
                    value.push(' ');
                    value.push_str(word);
                }
            }
        }
    }
    map
}

fn start() -> Slurm {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the Slurm tests start slurmctld and slurmd: run them as root (scripts/test)"
    );
    for tool in ["slurmctld", "slurmd", "munged", "sbatch", "scontrol"] {
        assert!(
            which(tool),
            "{tool} not found: run scripts/setup first (it installs slurm-wlm and munge)"
        );
    }
    for dir in [STATE_DIR, RUN_DIR, LOG_DIR] {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {dir}: {e}"));
    }
    // Parallel test binaries: the first one in starts the cluster, the others wait for it here.
    let lock_path = format!("{RUN_DIR}/setup.lock");
    let lock = fs::File::create(&lock_path).unwrap_or_else(|e| panic!("{lock_path}: {e}"));
    // SAFETY: flock on a descriptor we own; the lock is released when `lock` is dropped.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock {lock_path}");
    let node = hostname();
    start_munge();
    // Cgroup plugins first (jobs get real CPU and memory limits, which dstack then leaves to Slurm); if
    // slurmd cannot run with them on this host, the plugins that need nothing from the kernel.
    let variants = [true, false].map(|cgroups| (cgroups, config_files(&node, cgroups)));
    // A cluster that another test binary (or an earlier run) started with either variant is used as it
    // is: restarting it would kill their jobs.
    if let Some((cgroups, _)) = variants.iter().find(|(_, files)| installed(files))
        && start_daemons(&node, false)
    {
        drop(lock);
        return Slurm {
            node,
            cgroups: *cgroups,
        };
    }
    for (cgroups, files) in variants {
        let changed = install(&files);
        if start_daemons(&node, changed) {
            drop(lock);
            return Slurm { node, cgroups };
        }
        eprintln!(
            "slurm harness: slurmd does not start with the cgroup plugins here; trying without"
        );
    }
    panic!("the test Slurm did not start; its logs:\n{}", log_tails());
}

/// slurm.conf, cgroup.conf and gres.conf for this machine: (file name, text).
fn config_files(node: &str, cgroups: bool) -> Vec<(&'static str, String)> {
    let (cpus_line, memory_mib) = node_hardware(node);
    // Leave the system some memory: slurmd drains a node whose RealMemory is more than it finds.
    let memory = memory_mib.saturating_sub(memory_mib / 10).max(256);
    let (proctrack, task) = if cgroups {
        ("proctrack/cgroup", "task/cgroup")
    } else {
        ("proctrack/linuxproc", "task/none")
    };
    let slurm_conf = format!(
        "{MARKER}
# A one-node cluster: this machine is the controller and the only compute node.
ClusterName=dstack-test
# The controller's address is given, so the node's name need not resolve.
SlurmctldHost={node}(127.0.0.1)
# Everything runs as root: no slurm user or file ownership to set up; jobs still run as their submitter.
SlurmUser=root
SlurmdUser=root
# munged on this machine signs every request (the only auth plugin Debian ships that needs no setup).
AuthType=auth/munge
StateSaveLocation={STATE_DIR}/ctld
SlurmdSpoolDir={STATE_DIR}/d
SlurmctldPidFile={RUN_DIR}/slurmctld.pid
SlurmdPidFile={RUN_DIR}/slurmd.pid
SlurmctldLogFile={LOG_DIR}/slurmctld.log
SlurmdLogFile={LOG_DIR}/slurmd.log
# How a job's processes are found and confined. cgroup: the job's processes are tracked in its cgroup (so
# scancel reaches all of them) and confined to its CPUs (cpuset) and memory (ConstrainRAMSpace), as on
# real clusters; cgroup/v1 on cgroup-v1 hosts. linuxproc + task/none: the fallback where the cgroup
# plugins cannot work (no limits, processes tracked by parentage).
ProctrackType={proctrack}
TaskPlugin={task}
# Cores and memory are allocated per job (--cpus-per-task, --mem are recorded and enforced), GRES too.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job that asks no memory gets 512 MiB per CPU, not the whole node (which would make jobs queue up).
DefMemPerCPU=512
# No accounting daemon (slurmdbd): sacct has no data; jobs are looked at with scontrol and squeue.
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
# Jobs are not requeued unless they ask (--requeue): the tests check that dstack asks exactly when a
# workflow is interruptible.
JobRequeue=0
# A restarted node (or one set down by an earlier run) takes jobs again by itself.
ReturnToService=2
# scancel: SIGTERM, then SIGKILL 10 s later (the default 30 s makes stop tests slow).
KillWait=10
# Finished jobs stay visible to scontrol for 10 minutes (no accounting to ask afterwards).
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
# A pretend GPU type so that --gres=gpu:{GPU_TYPE}:N is accepted and recorded (nothing here is a GPU).
GresTypes=gpu
{cpus_line} RealMemory={memory} Gres=gpu:{GPU_TYPE}:1 NodeAddr=127.0.0.1 State=UNKNOWN
# `debug` (the default) and `preempt` (where dstack sends interruptible workflows when so configured).
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName={PREEMPT_PARTITION} Nodes={node} Default=NO MaxTime=INFINITE State=UP
"
    );
    let cgroup_conf = format!(
        "{MARKER}
# cgroup v1 here; v2 hosts without systemd need IgnoreSystemd (no dbus to ask for a scope).
CgroupPlugin={}
{}ConstrainCores=yes
ConstrainRAMSpace=yes
",
        if cgroup_v2() {
            "cgroup/v2"
        } else {
            "cgroup/v1"
        },
        if cgroup_v2() {
            "IgnoreSystemd=yes\n"
        } else {
            ""
        },
    );
    // gres/gpu needs a device file per GPU; /dev/null stands in (no ConstrainDevices, so nothing is
    // confined to it).
    let gres_conf = format!("{MARKER}\nNodeName={node} Name=gpu Type={GPU_TYPE} File=/dev/null\n");
    vec![
        ("slurm.conf", slurm_conf),
        ("cgroup.conf", cgroup_conf),
        ("gres.conf", gres_conf),
    ]
}

/// Whether `/etc/slurm` holds exactly these files.
fn installed(files: &[(&str, String)]) -> bool {
    files.iter().all(|(name, text)| {
        fs::read_to_string(Path::new(CONF_DIR).join(name)).is_ok_and(|old| old == *text)
    })
}

/// Writes the files; returns whether anything changed.
fn install(files: &[(&str, String)]) -> bool {
    let mut changed = false;
    for (name, text) in files {
        changed |= write_ours(&Path::new(CONF_DIR).join(name), text);
    }
    changed
}

/// Writes `text` to `path` unless it already says that; refuses to replace a file someone else wrote.
fn write_ours(path: &Path, text: &str) -> bool {
    match fs::read_to_string(path) {
        Ok(old) if old == text => return false,
        Ok(old) if !old.starts_with(MARKER) => panic!(
            "{} exists and was not written by the test harness: the Slurm tests configure their own one-node \
             cluster; run them on a machine without a Slurm configuration",
            path.display()
        ),
        _ => {}
    }
    fs::create_dir_all(path.parent().unwrap()).expect("create /etc/slurm");
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    f.write_all(text.as_bytes()).expect("write config");
    fs::rename(&tmp, path).expect("install config");
    true
}

/// The `NodeName=... CPUs=... Boards=... ...` line `slurmd -C` prints for this machine (so the node's
/// topology matches what slurmd finds), and the machine's memory in MiB.
fn node_hardware(node: &str) -> (String, u64) {
    let (ok, out) = command("slurmd", &["-C"]);
    assert!(ok, "slurmd -C: {out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("NodeName="))
        .unwrap_or_else(|| panic!("slurmd -C printed no NodeName line: {out}"));
    let mut memory = 0;
    let mut kept = vec![format!("NodeName={node}")];
    for word in line.split_whitespace() {
        match word.split_once('=') {
            Some(("RealMemory", v)) => memory = v.parse().unwrap_or(0),
            Some(("NodeName", _)) => {}
            Some(_) => kept.push(word.to_string()),
            None => {}
        }
    }
    (kept.join(" "), memory)
}

fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// munged, as the munge user, unless a credential can already be made and read back.
fn start_munge() {
    if munge_works() {
        return;
    }
    let key = Path::new("/etc/munge/munge.key");
    if !key.exists() {
        let (ok, out) = command(
            "mungekey",
            &["--create", "--keyfile", "/etc/munge/munge.key"],
        );
        assert!(ok, "mungekey --create: {out}");
        let (ok, out) = command("chown", &["munge:munge", "/etc/munge/munge.key"]);
        assert!(ok, "chown munge.key: {out}");
    }
    for dir in ["/run/munge", "/var/log/munge", "/var/lib/munge"] {
        fs::create_dir_all(dir).expect("create munge dir");
        let (ok, out) = command("chown", &["munge:munge", dir]);
        assert!(ok, "chown {dir}: {out}");
    }
    let started = Command::new("runuser")
        .args(["-u", "munge", "--", "munged"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        started,
        "munged did not start (see /var/log/munge/munged.log)"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !munge_works() {
        assert!(
            Instant::now() < deadline,
            "munged started but does not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn munge_works() -> bool {
    Command::new("sh")
        .args(["-c", "munge -n | unmunge >/dev/null 2>&1"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts slurmctld and slurmd (restarting them when the configuration changed) and waits until the node
/// takes jobs. False when slurmd will not stay up.
fn start_daemons(node: &str, restart: bool) -> bool {
    if restart {
        for daemon in ["slurmd", "slurmctld"] {
            stop_daemon(daemon);
        }
    }
    if !daemon_alive("slurmctld") {
        assert!(
            daemonize("slurmctld"),
            "slurmctld did not start:\n{}",
            log_tails()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !command("scontrol", &["ping"]).1.contains("is UP") {
        assert!(
            Instant::now() < deadline,
            "slurmctld does not answer:\n{}",
            log_tails()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    if !daemon_alive("slurmd") && !daemonize("slurmd") {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, state) = command("sinfo", &["-h", "-n", node, "-o", "%t"]);
        let state = state.lines().next().unwrap_or("").trim().to_string();
        // idle, or busy with another test's jobs.
        if ["idle", "mix", "alloc", "comp"].contains(&state.as_str()) {
            return true;
        }
        if !daemon_alive("slurmd") {
            return false;
        }
        if ["drain", "down", "drng", "inval"]
            .iter()
            .any(|s| state.starts_with(s))
        {
            // Set down or drained by an earlier run, a restart or an older configuration: take it back.
            let _ = command(
                "scontrol",
                &["update", &format!("NodeName={node}"), "State=RESUME"],
            );
        }
        assert!(
            Instant::now() < deadline,
            "slurm harness: node {node} is `{state}` after 60 s:\n{}",
            log_tails()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Starts a daemon that forks into the background (its standard streams on /dev/null, so nothing waits
/// for them to close); true when the foreground part succeeded.
fn daemonize(daemon: &str) -> bool {
    Command::new(daemon)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn pid_of(daemon: &str) -> Option<i32> {
    fs::read_to_string(format!("{RUN_DIR}/{daemon}.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn daemon_alive(daemon: &str) -> bool {
    let Some(pid) = pid_of(daemon) else {
        return false;
    };
    // The pid file may name a recycled pid: check what it runs.
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == daemon)
}

fn stop_daemon(daemon: &str) {
    if !daemon_alive(daemon) {
        return;
    }
    let pid = pid_of(daemon).expect("alive");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon_alive(daemon) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_tails() -> String {
    let mut text = String::new();
    for name in ["slurmctld.log", "slurmd.log"] {
        let path = format!("{LOG_DIR}/{name}");
        let log = fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        text.push_str(&format!("--- {path}\n"));
        for line in &lines[lines.len().saturating_sub(15)..] {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

fn hostname() -> String {
    let (ok, out) = command("hostname", &["-s"]);
    assert!(ok, "hostname -s: {out}");
    out.trim().to_string()
}

fn which(tool: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|dir| Path::new(dir).join(tool).is_file())
}

/// Runs a program to its end: (success, stdout and stderr).
fn command(program: &str, args: &[&str]) -> (bool, String) {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
        Err(e) => (false, format!("cannot run {program}: {e}")),
    }
}
