//! `dstack exec RUN [-- CMD ...]` through the real binary, as root and as an unprivileged user: the
//! command runs as the job runs (the job's PID 1, hostname, environment, working directory, user and
//! files), is nobody's child in the job, gets a terminal when asked, passes its exit code through, and a
//! run that ended (or never was) is refused.

use std::time::Duration;

use test_support::*;

/// Both ways a user meets dstack.
const MODES: [RunAs; 2] = [RunAs::Root, RunAs::Rootless];

fn setup(run_as: RunAs) -> PulledImage {
    setup_with(run_as, &busybox_image().build())
}

fn setup_with(run_as: RunAs, image: &Image) -> PulledImage {
    PulledImage::new(Dstack::new(run_as), "test/img:1", image)
}

/// What the job and an exec'ed command both print, to be compared: PID 1's command line, the hostname,
/// `/etc/hostname`, a variable set on the job, the working directory, the user and groups, the cgroup,
/// capabilities, no_new_privs and seccomp.
const LOOK: &str = "echo \"$(tr '\\0' ' ' < /proc/1/cmdline)|$(hostname)|$(cat /etc/hostname)|$GREETING|$(pwd)|$(id)|$(cat /proc/self/cgroup)|$(grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status | tr '\\n\\t' '  ')\"";

/// Starts `script` detached (with `flags`) and returns the run's name once the job has said `ready`.
fn start(s: &PulledImage, flags: &[&str], script: &str) -> String {
    let mut args = vec!["run", "-d", "docker", s.image.as_str()];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["-c", script]);
    let out = s.dstack.run(&args);
    out.assert_success();
    let name = out.stdout.trim().to_string();
    let ready = test_support::process::wait_until(Duration::from_secs(30), || {
        s.dstack
            .run(&["logs", &name])
            .stdout
            .contains("ready")
            .then_some(())
    });
    assert!(ready.is_some(), "the job never said ready: {name}");
    name
}

fn logs(s: &PulledImage, name: &str) -> String {
    s.dstack.run(&["logs", name]).stdout
}

#[test]
fn exec_runs_as_the_job_runs_and_its_files_are_the_jobs() {
    for mode in MODES {
        // A user of the image's own, with a supplementary group and a working directory.
        let s = setup_with(
            mode,
            &busybox_image().user("app").workdir("/home/app").build(),
        );
        let script = format!(
            "{LOOK}; echo ready; while [ ! -f /tmp/from-exec ]; do sleep 0.05; done; echo job-saw-it; sleep 60"
        );
        let name = start(&s, &["-e", "GREETING=hello"], &script);
        let log = logs(&s, &name);
        let job_view = log.split("ready\n").next().unwrap_or_default().trim();
        assert!(
            job_view.contains(
                "|hello|/home/app|uid=1000(app) gid=1000(app) groups=50(staff),1000(app)|"
            ),
            "{mode:?}: {job_view}"
        );

        let exec = s.dstack.run(&["exec", &name, "--", "sh", "-c", LOOK]);
        exec.assert_success();
        assert_eq!(exec.stdout.trim(), job_view, "{mode:?}: {exec}");

        // Nobody in the job is its parent: it came in from outside the pid namespace.
        let parent = s
            .dstack
            .run(&["exec", &name, "--", "sh", "-c", "grep PPid /proc/$$/status"]);
        parent.assert_success();
        assert_eq!(
            parent.stdout.split_whitespace().nth(1),
            Some("0"),
            "{mode:?}: {parent}"
        );

        // The same root: what exec writes, the job sees.
        s.dstack
            .run(&["exec", &name, "touch", "/tmp/from-exec"])
            .assert_success();
        let seen = test_support::process::wait_until(Duration::from_secs(10), || {
            logs(&s, &name).contains("job-saw-it").then_some(())
        });
        assert!(seen.is_some(), "{mode:?}: the job never saw the file");

        // Without a command, the user's shell, reading our stdin.
        let shell = s
            .dstack
            .run_with_stdin(&["exec", &name], "echo in-the-shell; exit 4\n");
        shell.assert_code(4);
        shell.assert_stdout_contains("in-the-shell");

        // The exit code comes back, and so do the shell's codes for a command that cannot run.
        s.dstack
            .run(&["exec", &name, "--", "sh", "-c", "exit 7"])
            .assert_code(7);
        s.dstack
            .run(&["exec", &name, "--", "no-such-program"])
            .assert_code(127);

        s.dstack.run(&["stop", &name]).assert_success();
    }
}

#[test]
fn with_a_terminal_exec_gets_a_pty_of_the_job() {
    for mode in MODES {
        let s = setup(mode);
        let name = start(&s, &[], "echo ready; sleep 60");
        // `script` gives dstack a pty as its stdin and stdout, as an interactive shell would.
        let line = format!(
            "{} exec {name} -- sh -c 'tty; exit 3'",
            test_support::dstack::dstack_bin()
        );
        let out = s
            .dstack
            .run_program("script", &["-qec", &line, "/dev/null"]);
        out.assert_code(3);
        out.assert_stdout_contains("/dev/pts/");
        // The pty has our terminal's size.
        let sized = format!(
            "stty rows 33 cols 101; {} exec {name} -- stty size",
            test_support::dstack::dstack_bin()
        );
        let out = s
            .dstack
            .run_program("script", &["-qec", &sized, "/dev/null"]);
        out.assert_success();
        out.assert_stdout_contains("33 101");
        // A resize of our terminal while the command runs reaches its pty (SIGWINCH is passed on).
        let resized = format!(
            "stty rows 33 cols 101; {} exec {name} -- sh -c 'sleep 2; stty size' </dev/tty & \
             sleep 1; stty rows 41 cols 123; wait",
            test_support::dstack::dstack_bin()
        );
        let out = s
            .dstack
            .run_program("script", &["-qec", &resized, "/dev/null"]);
        out.assert_success();
        out.assert_stdout_contains("41 123");
        // Without one (stdin a pipe), none; `-t` asks for one all the same.
        let plain = s.dstack.run(&["exec", &name, "--", "tty"]);
        plain.assert_code(1);
        plain.assert_stdout_contains("not a tty");
        let forced = s.dstack.run(&["exec", "-it", &name, "--", "tty"]);
        forced.assert_success();
        forced.assert_stdout_contains("/dev/pts/");
        s.dstack.run(&["stop", &name]).assert_success();
    }
}

#[test]
fn an_ended_or_unknown_run_is_refused() {
    for mode in MODES {
        let s = setup(mode);
        let done = s.sh("true");
        done.assert_success();
        let name = done
            .stderr
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("run "))
            .expect("the run's name")
            .to_string();
        // What exec starts from holds the job's environment: it does not outlive the run.
        let kept = s
            .dstack
            .state_root()
            .join("runs")
            .join(&name)
            .join("exec.json");
        assert_eq!(
            std::fs::read(&kept).map(|b| b.len()).ok(),
            Some(0),
            "{mode:?}"
        );
        let out = s.dstack.run(&["exec", &name, "--", "true"]);
        out.assert_code(1);
        assert!(
            out.stderr
                .contains(&format!("run `{name}` has ended (done)")),
            "{mode:?}: {out}"
        );
        let unknown = s.dstack.run(&["exec", "no-such-run-1", "--", "true"]);
        unknown.assert_code(1);
        assert!(
            unknown.stderr.contains("no run named `no-such-run-1`"),
            "{mode:?}: {unknown}"
        );
    }
}

/// A signal to `dstack exec` reaches the command, which may end its own way; its code comes back.
#[test]
fn signals_to_exec_reach_the_command() {
    for mode in MODES {
        let s = setup(mode);
        let name = start(&s, &[], "echo ready; sleep 60");
        let script =
            "trap 'echo got-term; exit 5' TERM; echo waiting; while :; do sleep 0.05; done";
        let running = s.dstack.spawn(&["exec", &name, "--", "sh", "-c", script]);
        running.wait_for_output("waiting", |out, _| out.contains("waiting"));
        running.signal(nix::sys::signal::Signal::SIGTERM);
        let out = running.wait();
        out.assert_code(5);
        out.assert_stdout_contains("got-term");
        s.dstack.run(&["stop", &name]).assert_success();
    }
}

/// Without `/etc/subuid` ranges only the user is mapped (and `setgroups` is denied): exec joins all the same.
#[test]
fn exec_works_rootless_without_subordinate_ids() {
    let s = setup(RunAs::RootlessNoSubid);
    let name = start(&s, &["-e", "GREETING=hello"], "echo ready; sleep 60");
    let out = s
        .dstack
        .run(&["exec", &name, "--", "sh", "-c", "echo $GREETING $(id -u)"]);
    out.assert_success();
    assert_eq!(out.stdout, "hello 0\n", "{out}");
    s.dstack.run(&["stop", &name]).assert_success();
}

/// The default shell is looked up in the job's `/etc/passwd` through its root: a job that puts a FIFO
/// there neither hangs `dstack exec` nor changes the command (`/bin/sh`).
#[test]
fn a_hostile_passwd_falls_back_to_bin_sh() {
    let s = setup(RunAs::Root);
    let name = start(
        &s,
        &[],
        "rm /etc/passwd && mkfifo /etc/passwd && echo ready; sleep 60",
    );
    let out = s
        .dstack
        .run_with_stdin(&["exec", &name], "echo in-the-shell $0\n");
    out.assert_success();
    assert_eq!(out.stdout, "in-the-shell /bin/sh\n", "{out}");
    s.dstack.run(&["stop", &name]).assert_success();
}
