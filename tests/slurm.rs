//! `dstack run --slurm` against a real one-node Slurm (test-support/src/slurm.rs starts it), as root and as the
//! unprivileged test user: the options Slurm recorded, the output, exit codes, artifacts, `stop`, requeue,
//! two jobs at once, `-d` then `logs -f`, ports, and the errors.
//!
//! Each test's project points `state_dir` at a directory other than its `DSTACK_HOME` (standing for the
//! shared file system) and `store` at a third (the node's store), so nothing on the node side works by
//! accident through the login side's state root.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use test_support::slurm::{self, GPU_TYPE, PARTITION, PREEMPT_PARTITION};
use test_support::*;

/// A project with one workflow file and a `.dstack/slurm.yaml`, for `d`.
struct Project {
    d: Dstack,
    _registry: TestRegistry,
}

/// `workflows` is the YAML list (indented by four) with `IMAGE` standing for the test image;
/// `config` is added to slurm.yaml.
fn project(run_as: RunAs, workflows: &str, config: &str) -> Project {
    slurm::slurm();
    let registry = TestRegistry::plain();
    push_busybox(&registry, "demo/busybox:latest");
    let d = Dstack::new(run_as).timeout(Duration::from_secs(180));
    let dir = d.home().join("project");
    let d = d.current_dir(&dir);
    let workflows = workflows.replace("IMAGE", &registry.image("demo/busybox:latest"));
    d.write_home_file(
        "project/.dstack/workflows/w.yaml",
        format!("workflows:\n{workflows}"),
    );
    let (shared, node) = (d.home().join("shared"), d.home().join("node"));
    d.write_home_file(
        "project/.dstack/slurm.yaml",
        format!(
            "state_dir: {}\nstore: {}\n{config}",
            shared.display(),
            node.display()
        ),
    );
    d.write_home_file("project/data.txt", "input data\n");
    for dir in [&shared, &node] {
        std::fs::create_dir_all(dir).unwrap();
        d.give_to_user(dir);
    }
    Project {
        d,
        _registry: registry,
    }
}

impl Project {
    fn run(&self, args: &[&str]) -> Output {
        self.d.run(args)
    }

    fn shared_run_dir(&self, run: &str) -> PathBuf {
        self.d.home().join("shared/runs").join(run)
    }

    fn state(&self, run: &str) -> serde_json::Value {
        let path = self.shared_run_dir(run).join("state.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    fn job_id(&self, run: &str) -> String {
        self.state(run)["slurm"]["job_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{run} has no Slurm job: {}", self.state(run)))
            .to_string()
    }

    /// Waits until the run's record says it has ended.
    fn wait_finished(&self, run: &str, limit: Duration) -> serde_json::Value {
        wait_until(&format!("{run} to end"), limit, || {
            // `ps` also finishes records whose job Slurm ended without dstack.
            self.run(&["ps", "-a"]);
            let s = self.state(run);
            ["done", "failed", "stopped", "aborted"]
                .contains(&s["status"].as_str().unwrap_or(""))
                .then_some(s)
        })
    }

    fn wait_log(&self, run: &str, needle: &str) {
        let log = self.shared_run_dir(run).join("output.log");
        wait_until(
            &format!("{needle:?} in {run}'s log"),
            Duration::from_secs(120),
            || {
                std::fs::read_to_string(&log)
                    .ok()
                    .filter(|t| t.contains(needle))
            },
        );
    }
}

/// Held by the tests that need the node's two CPUs (two jobs side by side), hold one for long (a time
/// limit) or need their job to start again at once (a requeue; it once failed in CI beside the
/// time-limit job, not understood yet): the others' jobs are short enough to only delay them.
static NODE_CPUS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn node_cpus() -> std::sync::MutexGuard<'static, ()> {
    NODE_CPUS.lock().unwrap_or_else(|e| e.into_inner())
}

#[track_caller]
fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const WORKLOAD: &str = "  - name: work
    provider: docker
    image: IMAGE
    commands:
      - echo \"hello from $RUN_NAME\"
      - echo \"cpus $(nproc)\"
      - echo \"memory limit $(sed -n 's/^hierarchical_memory_limit //p' /sys/fs/cgroup/memory/memory.stat 2>/dev/null)\"
      - df -k /dev/shm | tail -n 1
      - mkdir -p output && cat data.txt > output/result.txt
      - exit 3
    artifacts:
      - output
    resources:
      cpu: 1
      memory: 256MB
      shm_size: 64MB
";

/// The workflow runs on the node as a job with its resources, its output streams back, its exit code
/// comes back, its artifacts are kept; Slurm (not dstack) confines it.
fn a_workflow_runs_as_a_slurm_job(run_as: RunAs) {
    let p = project(run_as, WORKLOAD, "");
    let out = p.run(&["run", "work", "--slurm"]);
    out.assert_code(3);
    let run = out.run_name_or_detached();
    assert!(out.stderr.starts_with(&format!("run {run}\n")), "{out}");
    out.assert_stderr_contains("slurm job ")
        .assert_stderr_contains("1 CPU, 245 MiB, enforced by Slurm")
        .assert_stdout_contains(&format!("hello from {run}"));
    assert!(!out.stderr.contains("not enforced"), "{out}");
    // 64 MB of /dev/shm, as the workflow asked.
    assert!(out.stdout.contains(" 62500 "), "shm size:\n{out}");
    let cluster = slurm::slurm();
    if cluster.cgroups {
        // Slurm's cgroup (one of the node's two CPUs, its 245 MiB) holds the container, not one of dstack's.
        out.assert_stdout_contains("cpus 1");
        if !out.stdout.contains("memory limit \n") {
            // (cgroup v1: the limit of the job's cgroup and its ancestors.)
            out.assert_stdout_contains(&format!("memory limit {}\n", 245 << 20));
        }
    }
    let id = p.job_id(&run);
    // The run's record ends when the job's script is still exiting: wait for Slurm to close the job too.
    cluster.wait_for_end(&id, Duration::from_secs(60));
    let job = cluster.job(&id);
    assert_eq!(job["JobName"], run);
    assert_eq!(job["Partition"], PARTITION);
    assert_eq!(job["NumCPUs"], "1");
    assert_eq!(job["MinMemoryNode"], "245M");
    assert_eq!(job["Requeue"], "0");
    assert_eq!(
        job["ExitCode"], "3:0",
        "the batch job ends as the workflow did"
    );
    let state = p.state(&run);
    assert_eq!(state["status"], "failed");
    assert_eq!(state["exit_code"], 3);
    assert_eq!(state["slurm"]["node"], cluster.node.as_str());
    assert!(
        !p.shared_run_dir(&run).join("slurm-job.json").exists(),
        "the job's inputs (with the secrets) are removed at the end"
    );
    let slurm_out = std::fs::read_to_string(p.shared_run_dir(&run).join("slurm.out")).unwrap();
    assert!(slurm_out.contains("enforced by Slurm"), "{slurm_out}");
    assert!(!slurm_out.contains("not enforced"), "{slurm_out}");
    // From the login side: ps shows the job, artifacts come down.
    let ps = p.run(&["ps", "-a"]);
    ps.assert_success().assert_stdout_contains("SLURM");
    let row = ps.stdout.lines().find(|l| l.starts_with(&run)).unwrap();
    assert!(row.contains("failed") && row.contains(&id), "{ps}");
    let down = p.d.home().join("down");
    p.run(&["artifacts", "download", &run, "-o", down.to_str().unwrap()])
        .assert_success();
    assert_eq!(
        std::fs::read_to_string(down.join("output/result.txt")).unwrap(),
        "input data\n"
    );
    p.run(&["logs", &run])
        .assert_success()
        .assert_stdout_contains(&format!("hello from {run}"));
}

#[test]
fn a_workflow_runs_as_a_slurm_job_as_root() {
    a_workflow_runs_as_a_slurm_job(RunAs::Root);
}

#[test]
fn a_workflow_runs_as_a_slurm_job_rootless() {
    a_workflow_runs_as_a_slurm_job(RunAs::Rootless);
}

/// `interruptible` goes to the preemptible partition with --requeue; GPUs become GRES with the
/// configured type. The node has no real GPU, so the run fails there, and says so.
#[test]
fn interruptible_gpu_jobs_map_to_requeue_the_preemptible_partition_and_gres() {
    let p = project(
        RunAs::Root,
        "  - name: gpu
    provider: docker
    image: IMAGE
    commands: [nvidia-smi]
    resources:
      interruptible: true
      gpu:
        name: A100
        count: 1
",
        &format!(
            "default: true\npreemptible: {{partition: {PREEMPT_PARTITION}}}\ngres: {{A100: {GPU_TYPE}}}\n"
        ),
    );
    // `default: true`: no --slurm needed.
    let out = p.run(&["run", "gpu"]);
    out.assert_code(125).assert_stderr_contains("slurm job ");
    let run = out.run_name_or_detached();
    let job = slurm::slurm().job(&p.job_id(&run));
    assert_eq!(job["Partition"], PREEMPT_PARTITION);
    assert_eq!(job["Requeue"], "1");
    assert_eq!(job["TresPerNode"], format!("gres:gpu:{GPU_TYPE}:1"));
    let state = p.state(&run);
    assert_eq!(state["status"], "failed");
    assert!(
        state["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("gpu"),
        "{state}"
    );
    // `--local` overrides the default (and, here, fails before anything starts: no GPU).
    let local = p.run(&["run", "--local", "gpu"]);
    local.assert_failure();
    assert!(!local.stderr.contains("slurm job"), "{local}");
}

/// `stop` on a running job: SIGTERM through Slurm, the run ends `stopped`, its artifacts are saved, the
/// Slurm job ends.
#[test]
fn stop_ends_a_running_job_and_keeps_its_artifacts() {
    let p = project(
        RunAs::Root,
        "  - name: long
    provider: docker
    image: IMAGE
    commands:
      - mkdir -p out && echo partial > out/a.txt
      - echo started
      - sleep 600
    artifacts: [out]
",
        "",
    );
    let out = p.run(&["run", "-d", "--slurm", "long"]);
    out.assert_success().assert_stderr_contains("slurm job ");
    let run = out.run_name_or_detached();
    p.wait_log(&run, "started");
    let ps = p.run(&["ps"]);
    let row = ps
        .stdout
        .lines()
        .find(|l| l.starts_with(&run))
        .unwrap_or("")
        .to_string();
    assert!(row.contains("running") && row.contains("RUNNING"), "{ps}");
    let stop = p.run(&["stop", &run]);
    stop.assert_success()
        .assert_stderr_contains(&format!("{run} stopped"));
    let state = p.state(&run);
    assert_eq!(state["status"], "stopped");
    let kept = p.shared_run_dir(&run).join("artifacts/out/a.txt");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "partial\n");
    let end = slurm::slurm().wait_for_end(&p.job_id(&run), Duration::from_secs(60));
    assert_ne!(end, "COMPLETED", "the job did not finish on its own");
}

/// `dstack exec` reaches a Slurm run on its node (`srun --overlap`): the job's files, environment and exit code.
#[test]
fn exec_reaches_a_running_job_on_its_node() {
    // Its job holds a CPU of the node while exec is tried: not beside the test that needs both.
    let _cpus = node_cpus();
    let p = project(
        RunAs::Root,
        "  - name: long
    provider: docker
    image: IMAGE
    commands:
      - echo partial > /tmp/a.txt
      - echo started
      - sleep 600
",
        "",
    );
    let out = p.run(&["run", "-d", "--slurm", "long"]);
    out.assert_success();
    let run = out.run_name_or_detached();
    p.wait_log(&run, "started");
    let exec = p.run(&[
        "exec",
        &run,
        "--",
        "sh",
        "-c",
        "echo $RUN_NAME; cat /tmp/a.txt; exit 6",
    ]);
    exec.assert_code(6);
    assert_eq!(exec.stdout, format!("{run}\npartial\n"), "{exec}");
    p.run(&["stop", &run]).assert_success();
    let ended = p.run(&["exec", &run, "--", "true"]);
    ended
        .assert_code(1)
        .assert_stderr_contains("has ended (stopped)");
}

/// A job that reaches its Slurm time limit gets the same SIGTERM as a `scancel`, but its run ends `failed`
/// with the reason (not `stopped`), in the record and in the log. (Slurm's shortest limit is a minute and
/// it checks limits every 30 s: this test takes one to two minutes.)
#[test]
fn a_time_limit_ends_the_run_failed_with_the_reason() {
    let _cpus = node_cpus();
    let p = project(
        RunAs::Root,
        "  - name: long
    provider: docker
    image: IMAGE
    commands:
      - echo started
      - sleep 600
",
        "time: \"1\"\n",
    );
    let out = p.run(&["run", "-d", "--slurm", "long"]);
    out.assert_success();
    let run = out.run_name_or_detached();
    p.wait_log(&run, "started");
    let state = p.wait_finished(&run, Duration::from_secs(170));
    assert_eq!(state["status"], "failed", "{state}");
    assert!(
        state["message"]
            .as_str()
            .unwrap_or("")
            .contains("time limit"),
        "{state}"
    );
    let log = std::fs::read_to_string(p.shared_run_dir(&run).join("output.log")).unwrap();
    assert!(log.contains("reached its time limit"), "{log}");
}

/// `stop -x`: the job is killed through Slurm at once (its `dstack` with it); whoever looks next records
/// `aborted` from Slurm's word and saves the artifacts the job wrote. A job still waiting for a node is
/// simply cancelled and ends `stopped`.
#[test]
fn abort_kills_through_slurm_and_a_waiting_job_is_cancelled() {
    let body = "  - name: long
    provider: docker
    image: IMAGE
    commands:
      - mkdir -p out && echo partial > out/a.txt
      - echo started
      - sleep 600
    artifacts: [out]
";
    let p = project(RunAs::Root, body, "");
    let out = p.run(&["run", "-d", "--slurm", "long"]);
    out.assert_success();
    let run = out.run_name_or_detached();
    p.wait_log(&run, "started");
    p.run(&["stop", "-x", &run])
        .assert_success()
        .assert_stderr_contains(&format!("{run} aborted"));
    let state = p.state(&run);
    assert_eq!(state["status"], "aborted", "{state}");
    let kept = p.shared_run_dir(&run).join("artifacts/out/a.txt");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "partial\n");
    assert_eq!(
        slurm::slurm().wait_for_end(&p.job_id(&run), Duration::from_secs(60)),
        "CANCELLED"
    );

    // Held: it waits for a node until released, which never comes.
    let held = project(RunAs::Root, body, "sbatch_options: [--hold]\n");
    let out = held.run(&["run", "-d", "--slurm", "long"]);
    out.assert_success();
    let run = out.run_name_or_detached();
    let ps = held.run(&["ps"]);
    assert!(ps.stdout.contains("PENDING"), "{ps}");
    held.run(&["stop", &run])
        .assert_success()
        .assert_stderr_contains(&format!("{run} stopped"));
    assert!(
        !held.shared_run_dir(&run).join("slurm-job.json").exists(),
        "the inputs (secrets) go when the run ends"
    );
}

/// A store shared by nodes: a pull waiting for a layer whose lock another puller holds fetches the other
/// layers meanwhile, and goes on as soon as the holder dies (the kernel drops a dead process's flock; an
/// NFSv4 server drops a dead client's when its lease expires).
#[test]
fn a_dead_holder_of_a_layer_lock_holds_up_only_that_layer() {
    let registry = TestRegistry::plain();
    let extra = LayerBuilder::new()
        .dir("opt")
        .file("opt/big", vec![7u8; 1 << 20])
        .build(Compression::Gzip);
    let image = busybox_image().layer(extra).build();
    registry.push("demo/two:1", &image);
    let d = Dstack::root();
    let hex = |diff_id: &str| diff_id.trim_start_matches("sha256:").to_string();
    let locks = d.state_root().join("store/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let held = locks.join(format!("layer-{}", hex(&image.layers[0].diff_id)));
    // A puller on another node that died holding the first layer's lock, as far as we can tell.
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&held)
        .args(["sleep", "600"])
        .process_group(0)
        .spawn()
        .unwrap();
    wait_until(
        "the holder to take the lock",
        Duration::from_secs(10),
        || {
            let free = std::process::Command::new("flock")
                .args(["-n", "-x"])
                .arg(&held)
                .arg("true")
                .status()
                .unwrap()
                .success();
            (!free).then_some(())
        },
    );
    let pull = d.spawn(&["pull", &registry.image("demo/two:1")]);
    let layers = d.state_root().join("store/layers");
    let other = layers.join(hex(&image.layers[1].diff_id));
    wait_until(
        "the other layer to be unpacked",
        Duration::from_secs(60),
        || other.join("meta.json").exists().then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !layers.join(hex(&image.layers[0].diff_id)).exists(),
        "the held layer waits"
    );
    assert!(pull.stderr_so_far().is_empty() || !pull.stderr_so_far().contains("error"));
    // The holder dies: flock and the sleep that inherited its descriptor.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(holder.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    holder.wait().unwrap();
    pull.wait().assert_success();
    d.run(&["images"])
        .assert_success()
        .assert_stdout_contains("demo/two");
}

/// Two jobs at once (one CPU each on the two-CPU node) pull into the same store at the same time and
/// run side by side; `-d` then `logs -f` streams each to its end.
#[test]
fn two_jobs_at_once_share_the_node_store_and_logs_follow_them() {
    let body = |n: u32| {
        format!(
            "  - name: job{n}
    provider: docker
    image: IMAGE
    commands:
      - echo begin-{n}
      - sleep 4
      - echo end-{n}
    resources:
      cpu: 1
      memory: 128MB
"
        )
    };
    let _cpus = node_cpus();
    let p = project(RunAs::Root, &(body(1) + &body(2)), "");
    let runs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = [1, 2]
            .map(|n| {
                let p = &p;
                s.spawn(move || {
                    let out = p.run(&["run", "-d", "--slurm", &format!("job{n}")]);
                    out.assert_success();
                    out.run_name_or_detached()
                })
            })
            .into();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (n, run) in runs.iter().enumerate() {
        let logs = p.run(&["logs", "-f", run]);
        logs.assert_success();
        assert_eq!(
            logs.stdout,
            format!("begin-{0}\nend-{0}\n", n + 1),
            "{logs}"
        );
        assert_eq!(
            p.wait_finished(run, Duration::from_secs(60))["status"],
            "done"
        );
    }
    let cluster = slurm::slurm();
    let times: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            let job = cluster.job(&p.job_id(r));
            (job["StartTime"].clone(), job["EndTime"].clone())
        })
        .collect();
    // ISO times compare as strings: each started before the other ended.
    assert!(
        times[0].0 < times[1].1 && times[1].0 < times[0].1,
        "the jobs ran one after the other: {times:?}"
    );
    // One image in the node's store, pulled once for both.
    let images = p.d.home().join("node/store/images");
    assert_eq!(
        std::fs::read_dir(&images).unwrap().count(),
        1,
        "{}",
        images.display()
    );
}

/// A requeued interruptible job goes on under the same run: same record, status back to running, and
/// the project copy (with what the first start wrote there) kept.
#[test]
fn a_requeued_job_continues_the_same_run() {
    let _cpus = node_cpus();
    let p = project(
        RunAs::Root,
        "  - name: resumable
    provider: docker
    image: IMAGE
    commands:
      - n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count
      - echo attempt $n
      - if [ $n -eq 1 ]; then sleep 600; fi
      - echo finished
    resources:
      interruptible: true
",
        "",
    );
    let out = p.run(&["run", "-d", "--slurm", "resumable"]);
    out.assert_success();
    let run = out.run_name_or_detached();
    let id = p.job_id(&run);
    p.wait_log(&run, "attempt 1");
    let cluster = slurm::slurm();
    let requeue = std::process::Command::new("scontrol")
        .args(["requeue", &id])
        .output()
        .unwrap();
    assert!(requeue.status.success(), "{requeue:?}");
    wait_until("the job to wait again", Duration::from_secs(60), || {
        (cluster.job(&id)["JobState"] == "PENDING").then_some(())
    });
    // Slurm holds requeued jobs back for a while: let it start now.
    wait_until("the requeued job to start", Duration::from_secs(60), || {
        let _ = std::process::Command::new("scontrol")
            .args(["update", &format!("JobId={id}"), "StartTime=now"])
            .output();
        (cluster.job(&id)["JobState"] != "PENDING").then_some(())
    });
    let state = p.wait_finished(&run, Duration::from_secs(90));
    assert_eq!(state["status"], "done", "{state}");
    assert_eq!(state["slurm"]["restarts"], 1);
    let log = p.run(&["logs", &run]);
    let text = &log.stdout;
    let (one, requeued, two) = (
        text.find("attempt 1").unwrap(),
        text.find("requeued by Slurm").unwrap(),
        text.find("attempt 2").unwrap(),
    );
    assert!(one < requeued && requeued < two, "{log}");
    log.assert_stdout_contains("finished");
}

/// The ports are on the node: `NODE:PORT` and the `ssh -L` line are printed, and the port answers.
#[test]
fn ports_are_printed_as_node_and_port_with_an_ssh_line() {
    let p = project(
        RunAs::Root,
        "  - name: app
    provider: docker
    image: IMAGE
    ports: 1
    commands:
      - mkdir -p /tmp/www && echo hello-port > /tmp/www/index.html
      - echo serving
      - httpd -f -p 0.0.0.0:$PORT_0 -h /tmp/www
",
        "",
    );
    let child = p.d.spawn(&["run", "--slurm", "app"]);
    let node = &slurm::slurm().node;
    child.wait_for_output("the ssh line", |_, err| err.contains("ssh -L"));
    let err = child.stderr_so_far();
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix(&format!("PORT_0: {node}:")))
        .unwrap_or_else(|| panic!("no PORT_0 line:\n{err}"));
    let port: u16 = line.trim().parse().unwrap();
    assert!(
        err.contains(&format!("ssh -L {port}:{node}:{port} ")),
        "{err}"
    );
    let body = wait_until("the app to answer", Duration::from_secs(30), || {
        ureq::get(&format!("http://127.0.0.1:{port}/"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
    });
    assert_eq!(body, "hello-port\n");
    let run = err
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .unwrap()
        .to_string();
    p.run(&["stop", &run]).assert_success();
    let out = child.wait();
    assert_eq!(p.state(&run)["status"], "stopped", "{out}");
}

/// No Slurm here, an unknown partition, a request no node can meet, an unknown GPU type: one line each,
/// saying what to do, and no run is left behind.
#[test]
fn errors_are_one_line_and_say_what_to_do() {
    let p = project(
        RunAs::Root,
        "  - name: big
    provider: docker
    image: IMAGE
    commands: [true]
    resources:
      cpu: 64
  - name: odd-gpu
    provider: docker
    image: IMAGE
    commands: [true]
    resources:
      gpu: {name: K80, count: 1}
  - name: small
    provider: docker
    image: IMAGE
    commands: [true]
",
        "",
    );
    let check = |out: &Output, needles: &[&str]| {
        out.assert_failure();
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "one line:\n{out}");
        for needle in needles {
            assert!(errors[0].contains(needle), "{needle:?} missing:\n{out}");
        }
    };
    let mut cmd = p.d.command(&["run", "--slurm", "small"]);
    cmd.env("PATH", "/nonexistent");
    let out = Output::of(cmd);
    check(&out, &["sbatch not found", "login node"]);
    check(
        &p.run(&["run", "--slurm", "big"]),
        &["no node in", "64 CPUs", "ask for less"],
    );
    check(
        &p.run(&["run", "--slurm", "odd-gpu"]),
        &["gpu:k80:1", "gres:"],
    );
    p.d.write_home_file(
        "project/.dstack/slurm.yaml",
        format!(
            "state_dir: {}\npartition: nope\n",
            p.d.home().join("shared").display()
        ),
    );
    check(
        &p.run(&["run", "--slurm", "small"]),
        &["no partition `nope`", PARTITION, "slurm.yaml"],
    );
    let ps = p.run(&["ps", "-a"]);
    assert_eq!(
        ps.stdout.lines().count(),
        1,
        "no run was left behind:\n{ps}"
    );
}

/// The harness's cluster runs a plain batch job: the base every other test stands on.
#[test]
fn the_test_cluster_runs_a_batch_job() {
    let cluster = slurm::slurm();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sbatch")
        .args([
            "--parsable",
            "--cpus-per-task=1",
            "--mem=64M",
            "--wrap",
            "echo on $(hostname -s)",
        ])
        .arg(format!("--output={}/out.txt", dir.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        cluster.wait_for_end(&id, Duration::from_secs(60)),
        "COMPLETED"
    );
    let job = cluster.job(&id);
    assert_eq!(job["Partition"], PARTITION);
    assert_eq!(job["MinMemoryNode"], "64M");
    let text = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(text.trim(), format!("on {}", cluster.node));
}

/// A workflow's volumes go with its Slurm job: bound on the node, with `home: true` the user's home at
/// the same path (`env: [HOME]` passes its path); a host path the node lacks fails the run saying so.
#[test]
fn volumes_and_the_home_are_bound_on_the_node() {
    let p = project(
        RunAs::Rootless,
        "  - name: vols
    provider: docker
    image: IMAGE
    volumes: [\"data.txt:/in/data.txt:ro\"]
    home: true
    env: [HOME]
    commands:
      - cat /in/data.txt
      - echo from the job > $HOME/from-job.txt
  - name: missing
    provider: docker
    image: IMAGE
    volumes: [/nowhere/at/all:/data]
    commands: [true]
",
        "",
    );
    let out = p.run(&["run", "vols", "--slurm"]);
    out.assert_success().assert_stdout_contains("input data");
    assert_eq!(
        std::fs::read_to_string(p.d.home().join("from-job.txt")).unwrap(),
        "from the job\n"
    );
    let out = p.run(&["run", "missing", "--slurm"]);
    out.assert_failure();
    let run = out.run_name_or_detached();
    let state = p.wait_finished(&run, Duration::from_secs(120));
    let message = state["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("on this node") && message.contains("`/nowhere/at/all:/data`"),
        "{state}\n{out}"
    );
    assert!(!std::path::Path::new("/nowhere").exists());
}
