//! `dstack run NAME` end to end, through the binary, against a real registry and the real runtime, as root
//! and rootless: the seed's examples, artifacts however a run ends, caches, secrets and `registry_auth`,
//! run records, `stop`, and runs in parallel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use test_support::*;

/// A project in the user's home with these workflow files; returns its directory.
fn project(d: &Dstack, files: &[(&str, String)]) -> PathBuf {
    for (name, text) in files {
        d.write_home_file(&format!("project/.dstack/workflows/{name}"), text);
    }
    d.write_home_file("project/src/train.py", "print('hello')\n");
    d.home().join("project")
}

/// The seed's hello-docker: the artifact is saved and `artifacts download` returns it.
fn hello_docker_saves_its_artifact(d: Dstack) {
    let registry = busybox_registry();
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.dstack/workflows/hello-docker.yaml"
    ))
    .unwrap()
    .replace("localhost:5000", &registry.host());
    let dir = project(&d, &[("hello-docker.yaml", seed)]);
    let out = d.run_in(&dir, &["run", "hello-docker"]);
    out.assert_success().assert_stdout_contains("Hello, world!");
    let run = out.run_name();
    assert!(
        out.stderr.starts_with(&format!("run {run}\n")),
        "the run name comes first:\n{out}"
    );
    let ps = d.run_in(&dir, &["ps", "-a"]);
    ps.assert_success();
    let row = ps
        .stdout
        .lines()
        .find(|l| l.starts_with(&run))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(
        row.contains("hello-docker") && row.contains(" done ") && row.contains(" 0 "),
        "{row}"
    );
    d.run_in(&dir, &["artifacts", "list", &run])
        .assert_success()
        .assert_stdout_contains("output");
    let download = d.home().join("download");
    std::fs::create_dir_all(&download).unwrap();
    d.give_to_user(&download);
    d.run_in(&download, &["artifacts", "download", &run])
        .assert_success();
    assert_eq!(
        std::fs::read_to_string(download.join("output/hello.txt")).unwrap(),
        "Hello, world!\n"
    );
    // The job's writes to /workflow never reached the user's files.
    assert!(!dir.join("output").exists());
}
as_root_and_rootless!(hello_docker_saves_its_artifact);

/// A failing job returns its exit code and keeps what it wrote.
fn a_failing_job_keeps_its_artifacts_and_exit_code(d: Dstack) {
    let registry = busybox_registry();
    let body = "    commands:\n      - mkdir -p output\n      - echo partial > output/part.txt\n      - exit 3\n    artifacts:\n      - output\n";
    let dir = project(
        &d,
        &[("fail.yaml", busybox_workflow(&registry, "fail", body))],
    );
    let out = d.run_in(&dir, &["run", "fail"]);
    out.assert_code(3);
    let run = out.run_name();
    let record = d.run_record(&run);
    assert_eq!(record["status"], "failed");
    assert_eq!(record["exit_code"], 3);
    let saved = d
        .state_root()
        .join("runs")
        .join(&run)
        .join("artifacts/output/part.txt");
    assert_eq!(std::fs::read_to_string(saved).unwrap(), "partial\n");
    d.run_in(&dir, &["artifacts", "list", &run, "--json"])
        .assert_success()
        .assert_stdout_contains("\"files\": 1");
}
as_root_and_rootless!(a_failing_job_keeps_its_artifacts_and_exit_code);

/// `mount: true`: files appear on the host while the job still runs; `stop` then ends it `stopped` and
/// keeps what a non-mounted artifact had too.
fn mounted_artifacts_are_live_and_stop_saves_artifacts(d: Dstack) {
    let registry = busybox_registry();
    let body = "    commands:\n      - mkdir -p ckpt out\n      - echo step1 > ckpt/step1\n      - echo kept > out/kept.txt\n      - echo ready\n      - sleep 60\n    artifacts:\n      - path: ckpt\n        mount: true\n      - path: out\n";
    let dir = project(
        &d,
        &[("live.yaml", busybox_workflow(&registry, "live", body))],
    );
    let out = d.run_in(&dir, &["run", "-d", "live"]);
    out.assert_success();
    let run = out.stdout.trim().to_string();
    assert!(!run.is_empty(), "-d prints the run name:\n{out}");
    let live_file = d
        .state_root()
        .join("runs")
        .join(&run)
        .join("artifacts/ckpt/step1");
    wait_for(
        "the mounted artifact's file",
        Duration::from_secs(60),
        || live_file.exists(),
    );
    // (The job may write before its supervisor has recorded `running`.)
    wait_for(
        "the run to be recorded running",
        Duration::from_secs(10),
        || d.run_record(&run)["status"] == "running",
    );
    d.run_in(&dir, &["ps"])
        .assert_success()
        .assert_stdout_contains(&run);
    wait_for("the job's `ready`", Duration::from_secs(30), || {
        d.run_in(&dir, &["logs", &run]).stdout.contains("ready")
    });
    d.run_in(&dir, &["stop", &run]).assert_success();
    let record = d.run_record(&run);
    assert_eq!(record["status"], "stopped", "{record}");
    let saved = d
        .state_root()
        .join("runs")
        .join(&run)
        .join("artifacts/out/kept.txt");
    assert_eq!(std::fs::read_to_string(saved).unwrap(), "kept\n");
    assert_eq!(std::fs::read_to_string(&live_file).unwrap(), "step1\n");
    // Only finished runs can be removed; this one is.
    d.run_in(&dir, &["rm", &run]).assert_success();
    assert!(!d.state_root().join("runs").join(&run).exists());
}
as_root_and_rootless!(mounted_artifacts_are_live_and_stop_saves_artifacts);

/// A cache directory written by one run is read by the next; `prune cache` empties it.
fn the_cache_persists_between_runs(d: Dstack) {
    let registry = busybox_registry();
    let body = "    cache:\n      - path: ~/.cache/app\n    commands:\n      - cat ~/.cache/app/seen 2>/dev/null || echo first-run\n      - echo $RUN_NAME > ~/.cache/app/seen\n";
    let dir = project(
        &d,
        &[("cache.yaml", busybox_workflow(&registry, "cached", body))],
    );
    let first = d.run_in(&dir, &["run", "cached"]);
    first.assert_success().assert_stdout_contains("first-run");
    let second = d.run_in(&dir, &["run", "cached"]);
    second
        .assert_success()
        .assert_stdout_contains(&first.run_name());
    d.run_in(&dir, &["prune", "cache", "cached"])
        .assert_success();
    d.run_in(&dir, &["run", "cached"])
        .assert_success()
        .assert_stdout_contains("first-run");
}
as_root_and_rootless!(the_cache_persists_between_runs);

/// `registry_auth` from secrets pulls a private image; a wrong secret fails with an authentication
/// message; the secret's value appears nowhere: not in `ps`, `logs`, the run's files or `--dry-run`.
fn registry_auth_from_secrets(d: Dstack) {
    let registry = TestRegistry::tls_token();
    push_busybox(&registry, "private/busybox:latest");
    d.trust(&registry);
    let text = format!(
        "workflows:\n  - name: private\n    image: {}\n    registry_auth:\n      username: ${{{{ secrets.REGISTRY_USER }}}}\n      password: ${{{{ secrets.REGISTRY_PASSWORD }}}}\n    commands:\n      - echo pulled privately\n      - echo \"the job printed $REGISTRY_PASSWORD\"\n",
        registry.image("private/busybox:latest")
    );
    let dir = project(&d, &[("private.yaml", text)]);
    // A missing secret stops the run before anything starts.
    let missing = d.run_in(&dir, &["run", "private"]);
    missing
        .assert_failure()
        .assert_stderr_contains("secret `REGISTRY_USER`");
    assert!(
        !d.state_root().join("runs").exists(),
        "nothing was recorded"
    );

    d.run_in(&dir, &["secrets", "add", "REGISTRY_USER", REGISTRY_USER])
        .assert_success();
    let added = d.run_with_stdin_in(
        &dir,
        &["secrets", "add", "REGISTRY_PASSWORD"],
        "not-the-password\n",
    );
    added.assert_success();
    let wrong = d.run_in(&dir, &["run", "private"]);
    wrong.assert_failure();
    assert!(
        wrong.stderr.contains("refused") || wrong.stderr.contains("authentication"),
        "{wrong}"
    );
    assert!(!wrong.stderr.contains("not-the-password"), "{wrong}");

    d.run_with_stdin_in(
        &dir,
        &["secrets", "add", "REGISTRY_PASSWORD"],
        format!("{REGISTRY_PASSWORD}\n"),
    )
    .assert_success();
    let list = d.run_in(&dir, &["secrets", "list"]);
    assert_eq!(list.stdout, "REGISTRY_PASSWORD\nREGISTRY_USER\n");
    let out = d.run_in(&dir, &["run", "private"]);
    out.assert_success()
        .assert_stdout_contains("pulled privately");
    let run = out.run_name();
    // The job's own terminal shows what it printed; what dstack keeps and shows later is masked.
    out.assert_stdout_contains(&format!("the job printed {REGISTRY_PASSWORD}"));
    d.run_in(&dir, &["logs", &run])
        .assert_stdout_contains("the job printed ***");

    let dry = d.run_in(&dir, &["run", "--dry-run", "private"]);
    dry.assert_success()
        .assert_stdout_contains("REGISTRY_PASSWORD=***");
    for shown in [
        dry.stdout.clone(),
        out.stderr.clone(),
        d.run_in(&dir, &["ps", "-a", "--json"]).stdout,
        d.run_in(&dir, &["logs", &run]).stdout,
    ] {
        assert!(
            !shown.contains(REGISTRY_PASSWORD),
            "the secret leaked:\n{shown}"
        );
    }
    for file in walk(&d.state_root().join("runs")) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(REGISTRY_PASSWORD),
            "the secret is in {}",
            file.display()
        );
    }
}
as_root_and_rootless!(registry_auth_from_secrets);

/// Every regular file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                files.extend(walk(&path));
            } else if kind.is_file() {
                files.push(path);
            }
        }
    }
    files
}

trait StdinIn {
    fn run_with_stdin_in(&self, dir: &Path, args: &[&str], input: impl AsRef<[u8]>) -> Output;
}

impl StdinIn for Dstack {
    fn run_with_stdin_in(&self, dir: &Path, args: &[&str], input: impl AsRef<[u8]>) -> Output {
        use std::io::Write as _;
        let mut cmd = self.command(args);
        cmd.current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("start dstack");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_ref())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        Output {
            description: format!("{cmd:?}"),
            status: std::process::ExitStatus::from_raw(out.status.into_raw()),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Two runs started at once from two processes get distinct names and records.
fn parallel_runs_never_clash(d: Dstack) {
    let registry = busybox_registry();
    let body = "    commands:\n      - echo run $RUN_NAME\n      - sleep 1\n";
    let dir = project(
        &d,
        &[("par.yaml", busybox_workflow(&registry, "par", body))],
    );
    // Pull once first, so both runs race on names and records rather than on the pull.
    d.run_in(&dir, &["run", "par"]).assert_success();
    let spawn = || {
        let mut cmd = d.command(&["run", "par"]);
        cmd.current_dir(&dir);
        std::thread::spawn(move || Output::of(cmd))
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    a.assert_success();
    b.assert_success();
    let (na, nb) = (a.run_name(), b.run_name());
    assert_ne!(na, nb);
    assert!(a.stdout.contains(&format!("run {na}")) && b.stdout.contains(&format!("run {nb}")));
    for name in [&na, &nb] {
        let record = d.run_record(name);
        assert_eq!(record["name"], name.as_str());
        assert_eq!(record["status"], "done");
    }
}
as_root_and_rootless!(parallel_runs_never_clash);

/// The environment: injected variables, secrets, the workflow's own (which wins), `run.args`, the project
/// at `/workflow` with `working_dir` relative to it, and writes that never reach the user's files.
fn environment_code_and_arguments(d: Dstack) {
    let registry = busybox_registry();
    let body = "    ports: 2\n    working_dir: src\n    environment:\n      GREETING: hi\n      RUN_NAME: overridden\n    commands:\n      - echo cwd=$(pwd) greeting=$GREETING run=$RUN_NAME job=$JOB_ID host=$(hostname) unbuffered=$PYTHONUNBUFFERED\n      - echo ports=$PORT_0,$PORT_1 job_ports=$JOB_PORT_0,$JOB_PORT_1 secret=$MY_SECRET\n      - echo args=${{ run.args }} name=${{ run.name }}\n      - cat train.py\n      - echo changed > train.py\n";
    let dir = project(
        &d,
        &[("env.yaml", busybox_workflow(&registry, "env", body))],
    );
    d.run_in(&dir, &["secrets", "add", "MY_SECRET", "visible-to-the-job"])
        .assert_success();
    let out = d.run_in(&dir, &["run", "env", "--lr", "0.1", "two words"]);
    out.assert_success();
    let run = out.run_name();
    out.assert_stdout_contains("cwd=/workflow/src greeting=hi run=overridden")
        .assert_stdout_contains(&format!("host={run} unbuffered=1"))
        .assert_stdout_contains("secret=visible-to-the-job")
        .assert_stdout_contains(&format!("args=--lr 0.1 two words name={run}"))
        .assert_stdout_contains("print('hello')");
    let ports: Vec<u64> = d.run_record(&run)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(ports.len(), 2);
    out.assert_stdout_contains(&format!(
        "ports={},{} job_ports={},{}",
        ports[0], ports[1], ports[0], ports[1]
    ));
    assert_eq!(
        std::fs::read_to_string(dir.join("src/train.py")).unwrap(),
        "print('hello')\n"
    );
}
as_root_and_rootless!(environment_code_and_arguments);

/// An image whose USER is not root can write `/workflow`, its artifacts and its caches (under its own
/// home).
fn a_non_root_image_user_can_write_its_directories(d: Dstack) {
    let registry = TestRegistry::plain();
    registry.push("demo/app:latest", &busybox_image().user("app").build());
    let text = format!(
        "workflows:\n  - name: app\n    image: {}\n    cache:\n      - ~/.cache/app\n    artifacts:\n      - path: out\n      - path: live\n        mount: true\n    commands:\n      - id -un\n      - mkdir -p out && echo x > out/x && echo y > live/y && echo z > ~/.cache/app/z\n      - ls ~/.cache/app\n",
        registry.image("demo/app:latest")
    );
    let dir = project(&d, &[("app.yaml", text)]);
    let out = d.run_in(&dir, &["run", "app"]);
    out.assert_success().assert_stdout_contains("app\n");
    let run = out.run_name();
    let artifacts = d.state_root().join("runs").join(&run).join("artifacts");
    assert!(
        artifacts.join("out/x").exists() && artifacts.join("live/y").exists(),
        "{out}"
    );
    d.run_in(&dir, &["run", "app"])
        .assert_success()
        .assert_stdout_contains("z\n");
}
as_root_and_rootless!(a_non_root_image_user_can_write_its_directories);

/// The seed's ports example: an HTTP server the job starts on `$PORT_0` answers on the host.
fn ports_are_reachable_from_the_host(d: Dstack) {
    let registry = busybox_registry();
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.dstack/workflows/app.yaml"
    ))
    .unwrap()
    .replace("localhost:5000", &registry.host());
    let dir = project(&d, &[("app.yaml", seed)]);
    let out = d.run_in(&dir, &["run", "-d", "hello-app"]);
    out.assert_success();
    let run = out.stdout.trim().to_string();
    wait_for("the server", Duration::from_secs(60), || {
        d.run_in(&dir, &["logs", &run])
            .stdout
            .contains("serving on port")
    });
    let port = d.run_record(&run)["ports"][0].as_u64().unwrap() as u16;
    let mut page = String::new();
    wait_for(
        "an answer on the published port",
        Duration::from_secs(20),
        || {
            use std::io::{Read as _, Write as _};
            let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
            page.clear();
            conn.read_to_string(&mut page).is_ok() && page.contains("200")
        },
    );
    assert!(page.contains(&format!("Hello from {run}")), "{page}");
    d.run_in(&dir, &["stop", &run]).assert_success();
    assert_eq!(d.run_record(&run)["status"], "stopped");
}
as_root_and_rootless!(ports_are_reachable_from_the_host);

/// Mistakes are reported before anything starts, with the file, line and a suggestion.
#[test]
fn mistakes_fail_before_anything_starts() {
    let d = Dstack::root();
    let registry = busybox_registry();
    let body = "    enviroment:\n      - A=1\n";
    let dir = project(
        &d,
        &[
            ("typo.yaml", busybox_workflow(&registry, "typo", body)),
            (
                "bash.yaml",
                "workflows:\n  - name: old\n    provider: bash\n    commands: [ls]\n".into(),
            ),
        ],
    );
    let out = d.run_in(&dir, &["run", "typo"]);
    out.assert_failure().assert_stderr_contains(
        ".dstack/workflows/bash.yaml:3: provider `bash` is not supported by this runtime (only docker)",
    );
    std::fs::remove_file(dir.join(".dstack/workflows/bash.yaml")).unwrap();
    let out = d.run_in(&dir, &["run", "typo"]);
    out.assert_failure().assert_stderr_contains(
        ".dstack/workflows/typo.yaml:5: unknown key `enviroment` in workflow `typo`: did you mean `environment`?",
    );
    let fixed = busybox_workflow(&registry, "typo", "    commands: [true]\n");
    d.write_home_file("project/.dstack/workflows/typo.yaml", fixed);
    let out = d.run_in(&dir, &["run", "tpyo"]);
    out.assert_failure()
        .assert_stderr_contains("no workflow named `tpyo`")
        .assert_stderr_contains("did you mean `typo`?");
    let big = "    resources:\n      memory: 100TB\n    commands: [true]\n";
    d.write_home_file(
        "project/.dstack/workflows/typo.yaml",
        busybox_workflow(&registry, "big", big),
    );
    let out = d.run_in(&dir, &["run", "big"]);
    out.assert_failure()
        .assert_stderr_contains("of memory; this machine has");
    let gpu = "    resources:\n      gpu: 1\n    commands: [true]\n";
    d.write_home_file(
        "project/.dstack/workflows/typo.yaml",
        busybox_workflow(&registry, "gpu", gpu),
    );
    let out = d.run_in(&dir, &["run", "gpu"]);
    out.assert_failure();
    if !Path::new("/proc/driver/nvidia/gpus").exists() {
        out.assert_stderr_contains("this machine has no NVIDIA GPU");
    }
    assert!(!d.state_root().join("runs").exists(), "no run was recorded");
}

/// `stop -x` kills at once (still saving artifacts) and a killed supervisor shows as `aborted`.
#[test]
fn aborted_runs_are_recorded_as_aborted() {
    let d = Dstack::root();
    let registry = busybox_registry();
    let body = "    commands:\n      - mkdir -p out && echo early > out/early.txt\n      - echo ready\n      - sleep 60\n    artifacts:\n      - out\n";
    let dir = project(
        &d,
        &[("long.yaml", busybox_workflow(&registry, "long", body))],
    );
    let started = |d: &Dstack| {
        let out = d.run_in(&dir, &["run", "-d", "long"]);
        out.assert_success();
        let run = out.stdout.trim().to_string();
        wait_for("ready", Duration::from_secs(60), || {
            d.run_in(&dir, &["logs", &run]).stdout.contains("ready")
        });
        run
    };
    let run = started(&d);
    d.run_in(&dir, &["stop", "-x", &run]).assert_success();
    assert_eq!(d.run_record(&run)["status"], "aborted");
    let early = d
        .state_root()
        .join("runs")
        .join(&run)
        .join("artifacts/out/early.txt");
    assert!(early.exists(), "artifacts are saved on abort too");

    let run = started(&d);
    let pid = d.run_record(&run)["supervisor_pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "the run to show as aborted",
        Duration::from_secs(10),
        || {
            d.run_in(&dir, &["ps", "-a"])
                .stdout
                .lines()
                .any(|l| l.starts_with(&run) && l.contains("aborted"))
        },
    );
    let early = d
        .state_root()
        .join("runs")
        .join(&run)
        .join("artifacts/out/early.txt");
    assert!(
        early.exists(),
        "what the job wrote before its supervisor died is kept"
    );
}

/// `logs -f` follows a detached run and ends when it ends.
#[test]
fn logs_follow_a_detached_run_to_its_end() {
    let d = Dstack::root();
    let registry = busybox_registry();
    let body = "    commands:\n      - for i in 1 2 3; do echo line $i; sleep 0.5; done\n";
    let dir = project(
        &d,
        &[("f.yaml", busybox_workflow(&registry, "follow", body))],
    );
    let out = d.run_in(&dir, &["run", "-d", "follow"]);
    out.assert_success();
    let run = out.stdout.trim().to_string();
    let logs = d.run_in(&dir, &["logs", "-f", &run]);
    logs.assert_success();
    assert!(logs.stdout.contains("line 1\nline 2\nline 3\n"), "{logs}");
    assert_eq!(d.run_record(&run)["status"], "done");
}

/// SIGINT to a foreground run (Ctrl-C without a terminal) stops it gracefully.
#[test]
fn interrupting_a_foreground_run_stops_it() {
    let d = Dstack::root();
    let registry = busybox_registry();
    let body = "    commands:\n      - mkdir -p out && echo saved > out/x\n      - echo ready\n      - sleep 60\n    artifacts:\n      - out\n";
    let dir = project(
        &d,
        &[("i.yaml", busybox_workflow(&registry, "interrupt", body))],
    );
    let d = d.current_dir(&dir);
    let running = d.spawn(&["run", "interrupt"]);
    running.wait_for_output("ready", |out, _| out.contains("ready"));
    running.signal(nix::sys::signal::Signal::SIGINT);
    let out = running.wait();
    out.assert_code(130);
    let run = out.run_name();
    assert_eq!(d.run_record(&run)["status"], "stopped");
    assert!(
        d.state_root()
            .join("runs")
            .join(&run)
            .join("artifacts/out/x")
            .exists()
    );
}
