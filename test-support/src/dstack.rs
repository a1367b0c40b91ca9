//! Runs the `dstack` binary under test the way a user would: with its own `HOME` and `DSTACK_HOME` (temp
//! dirs), a clean environment, a timeout, and as root or as an unprivileged test user (`setpriv`). Tests run as
//! root; rootless cases drop to `dstack-test` (subordinate ids in /etc/subuid) or `dstack-test-nosubid` (none:
//! the single-mapping case). `scripts/setup` creates both users.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, User};

use super::registry::TestRegistry;

/// The `dstack` binary cargo built for the test running: `CARGO_BIN_EXE_dstack` where cargo sets it at run
/// time, else the one beside the test executable's `deps/` directory (`target/debug/dstack`). A library
/// cannot read that variable at compile time as a test file can.
pub fn dstack_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_dstack") {
            return bin.to_string_lossy().into_owned();
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("dstack"))
            .expect("the test executable lies in target/PROFILE/deps/");
        assert!(
            bin.is_file(),
            "{}: not built; `cargo test` builds it for the tests of the dstack package",
            bin.display()
        );
        bin.to_string_lossy().into_owned()
    })
}
pub const TEST_USER: &str = "dstack-test";
pub const TEST_USER_NOSUBID: &str = "dstack-test-nosubid";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// The test process's own user (root in CI).
    Root,
    /// `dstack-test`: an ordinary user with a 65536-id range in /etc/subuid and /etc/subgid.
    Rootless,
    /// `dstack-test-nosubid`: an ordinary user without subordinate ids.
    RootlessNoSubid,
}

impl RunAs {
    pub fn user_name(self) -> Option<&'static str> {
        match self {
            RunAs::Root => None,
            RunAs::Rootless => Some(TEST_USER),
            RunAs::RootlessNoSubid => Some(TEST_USER_NOSUBID),
        }
    }

    /// The user's (uid, gid). Fails, never skips, when the user is missing.
    pub fn ids(self) -> (u32, u32) {
        let Some(name) = self.user_name() else {
            return (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            );
        };
        match User::from_name(name) {
            Ok(Some(user)) => (user.uid.as_raw(), user.gid.as_raw()),
            _ => panic!(
                "the test user {name} does not exist: run scripts/setup first (as root; it creates the \
                 unprivileged users the rootless tests run as)"
            ),
        }
    }
}

/// One isolated `dstack` environment: a temp dir holding `home/` (`HOME`) and `state/` (`DSTACK_HOME`), owned by
/// the user it runs as. Every `run` uses the same dirs, so a pull then an `images` see the same store.
pub struct Dstack {
    run_as: RunAs,
    base: tempfile::TempDir,
    env: Vec<(String, Option<String>)>,
    timeout: Duration,
    cwd: Option<PathBuf>,
}

impl Dstack {
    pub fn root() -> Dstack {
        Self::new(RunAs::Root)
    }
    pub fn rootless() -> Dstack {
        Self::new(RunAs::Rootless)
    }
    pub fn rootless_nosubid() -> Dstack {
        Self::new(RunAs::RootlessNoSubid)
    }

    pub fn new(run_as: RunAs) -> Dstack {
        let (uid, gid) = run_as.ids();
        if run_as != RunAs::Root {
            assert!(
                nix::unistd::geteuid().is_root(),
                "rootless tests start as root and drop to {}: run the tests as root",
                run_as.user_name().unwrap()
            );
            check_reachable(Path::new(dstack_bin()), run_as.user_name().unwrap());
        }
        let base = tempfile::Builder::new()
            .prefix("dstack-test-")
            .tempdir()
            .expect("create temp dir");
        for dir in ["home", "state"] {
            std::fs::create_dir(base.path().join(dir)).expect("create test dir");
        }
        let dstack = Dstack {
            run_as,
            base,
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            cwd: None,
        };
        for path in [
            dstack.base.path().to_path_buf(),
            dstack.home(),
            dstack.state_root(),
        ] {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown test dir");
        }
        dstack
    }

    pub fn run_as(&self) -> RunAs {
        self.run_as
    }

    /// `HOME` of every run.
    pub fn home(&self) -> PathBuf {
        self.base.path().join("home")
    }

    /// `DSTACK_HOME` of every run (the state root: store, containers, runs).
    pub fn state_root(&self) -> PathBuf {
        self.base.path().join("state")
    }

    /// The record of run `run` (`runs/RUN/state.json` under the state root).
    #[track_caller]
    pub fn run_record(&self, run: &str) -> serde_json::Value {
        let path = self.state_root().join("runs").join(run).join("state.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The scratch directories left under the state root once the runs' cleanup is over: a run's own
    /// goes moments after `dstack` exits (a detached child recycles or removes it), so this waits up to
    /// 5 s for none. Recycled ones (`.free-*`, see [`Dstack::scratch_pool`]) are not left over.
    pub fn scratch_left(&self) -> Vec<std::ffi::OsString> {
        let containers = self.state_root().join("containers");
        let list = || -> Vec<std::ffi::OsString> {
            std::fs::read_dir(&containers)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name())
                        .filter(|n| !n.to_string_lossy().starts_with(".free-"))
                        .collect()
                })
                .unwrap_or_default()
        };
        super::process::wait_until(std::time::Duration::from_secs(5), || {
            list().is_empty().then_some(())
        });
        list()
    }

    /// The recycled scratch directories waiting for a run (path, inode), once the runs' cleanup is over.
    pub fn scratch_pool(&self) -> Vec<(PathBuf, u64)> {
        use std::os::unix::fs::MetadataExt;
        let left = self.scratch_left();
        assert!(left.is_empty(), "scratch directories left: {left:?}");
        let mut pool: Vec<(PathBuf, u64)> = std::fs::read_dir(self.state_root().join("containers"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".free-"))
                    .map(|e| (e.path(), e.metadata().map(|m| m.ino()).unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        pool.sort();
        pool
    }

    /// Sets a variable for every run (after the defaults: this can override `HOME`, `PATH`...).
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.env.push((
            key.to_string(),
            Some(value.as_ref().to_string_lossy().into_owned()),
        ));
        self
    }

    /// Unsets a default variable (e.g. `DSTACK_HOME`, to test the default state root).
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.to_string(), None));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs in `dir` (default: `home()`). It must be reachable by the user.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Makes the runs trust `registry`'s CA: installs it in `~/.config/containers/certs.d/127.0.0.1:PORT/`.
    pub fn trust(&self, registry: &TestRegistry) {
        if let Some(dest) = registry.install_ca(&self.home()) {
            self.give_to_user(&self.home().join(".config"));
            assert!(dest.exists());
        }
    }

    /// Writes `contents` to `home()/relative` (parents created), owned by the user: credential files, configs,
    /// workflow projects.
    pub fn write_home_file(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.home().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).expect("create parent dirs");
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let top = self.home().join(relative.split('/').next().unwrap());
        self.give_to_user(&top);
        path
    }

    /// Recursively hands `path` (made by the test as root) to the user this environment runs as.
    pub fn give_to_user(&self, path: &Path) {
        let (uid, gid) = self.run_as.ids();
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown -R {}", path.display());
    }

    /// The command line `run` would execute, not started (for tests that need their own handling).
    pub fn command(&self, args: &[&str]) -> Command {
        self.program_command(dstack_bin(), args)
    }

    /// Any program with this environment's user, variables and directory (`sh -c ...` to look around as the
    /// user, a peer tool in a comparison).
    pub fn program_command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = match self.run_as.user_name() {
            None => Command::new(program),
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid",
                    user,
                    "--regid",
                    user,
                    "--init-groups",
                    "--",
                    program,
                ]);
                c
            }
        };
        let user = self
            .run_as
            .user_name()
            .map(String::from)
            .unwrap_or_else(|| {
                User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_else(|| "root".into())
            });
        cmd.args(args)
            .env_clear()
            .env("PATH", PATH_ENV)
            .env("HOME", self.home())
            .env("DSTACK_HOME", self.state_root())
            .env("USER", &user)
            .env("LOGNAME", &user)
            .env("LANG", "C.UTF-8")
            .env("RUST_BACKTRACE", "1");
        if let Ok(filter) = std::env::var("RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        for (key, value) in &self.env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.current_dir(self.cwd.clone().unwrap_or_else(|| self.home()));
        // Its own process group, so a timeout kills everything it started.
        cmd.process_group(0);
        cmd
    }

    /// Runs `dstack ARGS` in `dir` to its end, without `run`'s timeout.
    pub fn run_in(&self, dir: &Path, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.current_dir(dir);
        Output::of(cmd)
    }

    /// Runs `dstack ARGS` to the end (stdin closed). Panics, with what it printed, if it outlives the timeout.
    pub fn run(&self, args: &[&str]) -> Output {
        self.spawn(args).wait()
    }

    /// Runs `program ARGS` like `run` does `dstack`.
    pub fn run_program(&self, program: &str, args: &[&str]) -> Output {
        self.spawn_command(
            self.program_command(program, args),
            &format!("{program} {}", args.join(" ")),
        )
        .wait()
    }

    /// Runs `dstack ARGS` with `input` on its stdin (a pipe, closed after the input: not a terminal).
    pub fn run_with_stdin(&self, args: &[&str], input: impl AsRef<[u8]>) -> Output {
        let what = format!("dstack {}", args.join(" "));
        self.spawn_with(self.command(args), &what, Some(input.as_ref()))
            .wait()
    }

    /// Runs `program ARGS` with `input` on its stdin, like `run_with_stdin`.
    pub fn run_program_with_stdin(
        &self,
        program: &str,
        args: &[&str],
        input: impl AsRef<[u8]>,
    ) -> Output {
        let what = format!("{program} {}", args.join(" "));
        self.spawn_with(
            self.program_command(program, args),
            &what,
            Some(input.as_ref()),
        )
        .wait()
    }

    /// Starts `dstack ARGS` (stdin closed) and returns at once.
    pub fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_command(self.command(args), &format!("dstack {}", args.join(" ")))
    }

    fn spawn_command(&self, cmd: Command, what: &str) -> Running {
        self.spawn_with(cmd, what, None)
    }

    fn spawn_with(&self, mut cmd: Command, what: &str, input: Option<&[u8]>) -> Running {
        let stdin = if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
        if let Some(input) = input {
            let mut pipe = child.stdin.take().unwrap();
            let input = input.to_vec();
            // A writer thread, so a child that never reads cannot block the test before the timeout applies.
            std::thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut pipe, &input);
            });
        }
        let stdout = capture(child.stdout.take().unwrap());
        let stderr = capture(child.stderr.take().unwrap());
        Running {
            child: Some(child),
            description: format!("{what} (as {:?})", self.run_as),
            stdout,
            stderr,
            deadline: Instant::now() + self.timeout,
        }
    }
}

/// A `dstack` process started by `Dstack::spawn`; killed with its process group if dropped while running.
pub struct Running {
    child: Option<Child>,
    description: String,
    stdout: Captured,
    stderr: Captured,
    deadline: Instant,
}

type Captured = (Arc<Mutex<Vec<u8>>>, Option<JoinHandle<()>>);

fn capture(mut pipe: impl Read + Send + 'static) -> Captured {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let handle = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, Some(handle))
}

impl Running {
    /// The dstack process id (setpriv execs it, so this is dstack itself).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `signal` to the dstack process only (not its children).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("send signal");
    }

    /// What it has printed so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.0.lock().unwrap()).into_owned()
    }
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.0.lock().unwrap()).into_owned()
    }

    /// Waits until `check(stdout, stderr)` holds (e.g. a line was printed); panics at the deadline.
    pub fn wait_for_output(&self, what: &str, check: impl Fn(&str, &str) -> bool) {
        while Instant::now() < self.deadline {
            if check(&self.stdout_so_far(), &self.stderr_so_far()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} never printed {what}\n--- stdout\n{}\n--- stderr\n{}",
            self.description,
            self.stdout_so_far(),
            self.stderr_so_far()
        );
    }

    /// `Some(status)` if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().expect("try_wait")
    }

    /// Waits for exit and for its output to close. Panics at the deadline (after killing its process group),
    /// or if something it left behind still holds its stdout or stderr 5 s after it exited.
    pub fn wait(mut self) -> Output {
        let mut child = self.child.take().unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > self.deadline {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                panic!(
                    "{} timed out; killed.\n--- stdout\n{}\n--- stderr\n{}",
                    self.description,
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let grace = Instant::now() + Duration::from_secs(5);
        let handles = [self.stdout.1.take().unwrap(), self.stderr.1.take().unwrap()];
        for handle in handles {
            while !handle.is_finished() {
                if Instant::now() > grace {
                    panic!(
                        "{} exited ({status}) but a process it left behind still holds its output open\n\
                         --- stdout\n{}\n--- stderr\n{}",
                        self.description,
                        self.stdout_so_far(),
                        self.stderr_so_far()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            handle.join().unwrap();
        }
        Output {
            description: self.description.clone(),
            status,
            stdout: self.stdout_so_far(),
            stderr: self.stderr_so_far(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// What a finished `dstack` printed and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    pub description: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The run name a foreground `dstack run` printed (`run NAME` on stderr).
    #[track_caller]
    pub fn run_name(&self) -> String {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("run "))
            .unwrap_or_else(|| panic!("no run name printed:\n{self}"))
            .trim()
            .to_string()
    }

    /// The run name `dstack run` printed, in the foreground (`run NAME` on stderr) or with `-d` (the name
    /// alone on stdout).
    #[track_caller]
    pub fn run_name_or_detached(&self) -> String {
        match self.stderr.lines().find_map(|l| l.strip_prefix("run ")) {
            Some(name) => name.trim().to_string(),
            None => self
                .stdout
                .lines()
                .next()
                .unwrap_or_else(|| panic!("no run name printed:\n{self}"))
                .trim()
                .to_string(),
        }
    }

    /// Runs `cmd` to its end (no timeout) and captures what it printed.
    pub fn of(mut cmd: Command) -> Output {
        let out = cmd.output().expect("run the command");
        Output {
            description: format!("{cmd:?}"),
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The exit code, or 128+N for death by signal N (as a shell reports it).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(!self.success(), "expected failure:\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "unexpected exit code:\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{self}"
        );
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} exited with {} ({})\n--- stdout\n{}\n--- stderr\n{}",
            self.description,
            self.code(),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// Fails with a clear message if `user` cannot reach `path` (every parent searchable, the file executable by
/// others): a target dir under /root is the usual cause.
fn check_reachable(path: &Path, user: &str) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        let mode = std::fs::metadata(d)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        assert!(
            mode & 0o001 != 0,
            "{user} cannot reach {} ({} is mode {:o}): put the build where others can read it, or make it \
             world-searchable (scripts/setup does this for the repository and /work/target-*)",
            path.display(),
            d.display(),
            mode & 0o7777
        );
        dir = d.parent();
    }
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    assert!(
        mode & 0o005 == 0o005,
        "{user} cannot execute {} (mode {:o})",
        path.display(),
        mode & 0o7777
    );
}
