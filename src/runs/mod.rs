//! Run records: one directory per run under `<state root>/runs/`:
//! ```text
//! runs/.lock                    name allocation (flock); it holds the run counter
//! runs/<name>/state.json        the record (each write whole; `.state.json.next` is the one before)
//! runs/<name>/lock              held (flock) by the supervisor for the run's whole life
//! runs/<name>/output.log        the job's output
//! runs/<name>/artifacts/<path>  saved artifacts
//! runs/<name>/workflow/         the run's copy of the project, seen at /workflow (removed at the end)
//! runs/<name>/stop-request      `stop` or `abort`, written by `dstack stop`
//! runs/<name>/exec.json         while the job runs: its process and seccomp profile, for `dstack exec`
//!                               (emptied at the end)
//! ```
//! A run whose record says it is unfinished but whose lock nobody holds lost its supervisor (killed, or
//! the machine rebooted): it is shown, and recorded, as `aborted` rather than running forever. A Slurm
//! run's supervisor is on a compute node and may not have started yet: Slurm's view of its job decides
//! (see `scheduler`; `crate::slurm` implements it).

pub mod artifacts;
pub mod cache;
pub mod copy;
pub mod detach;
pub mod logs;
pub mod name;
pub mod record;
pub mod scheduler;
pub mod signals;
pub mod supervised;

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runtime::container::exec::ExecBase;

use crate::fsutil;
use scheduler::{JobState, Scheduler, SchedulerError};

pub use record::{RunRecord, SlurmRecord, Status};

#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error("no run named `{name}`{hint}")]
    NotFound { name: String, hint: String },
    #[error("run `{0}` is still going: stop it first with `dstack stop {0}`")]
    StillRunning(String),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    // The parser's words sit inside the advice, so they are no `source()`.
    #[error("{}: the run record is damaged ({reason}); remove the run with `dstack rm`", path.display())]
    Damaged {
        path: PathBuf,
        reason: runtime::text::JsonError,
    },
    #[error(transparent)]
    Copy(#[from] copy::CopyError),
    #[error(transparent)]
    Scheduler(SchedulerError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RunsError + '_ {
    move |source| RunsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const STATE: &str = "state.json";
const LOCK: &str = "lock";
const LOG: &str = "output.log";
const ARTIFACTS: &str = "artifacts";
const PROJECT_COPY: &str = "workflow";
const STOP_REQUEST: &str = "stop-request";
/// A scheduled job's inputs (they hold the project's secrets until the run ends).
pub const JOB_INPUTS: &str = "slurm-job.json";
/// What `dstack exec` starts from while the job runs (its process and seccomp profile). It holds the
/// job's environment, secrets included, so it is emptied when the run ends.
const EXEC_BASE: &str = "exec.json";

/// How `dstack stop` asked a run to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// SIGTERM, a grace period, then SIGKILL; the run ends `stopped`.
    Graceful,
    /// Killed at once; the run ends `aborted`.
    Abort,
}

impl StopRequest {
    fn as_str(self) -> &'static str {
        match self {
            StopRequest::Graceful => "stop",
            StopRequest::Abort => "abort",
        }
    }

    pub fn status(self) -> Status {
        match self {
            StopRequest::Graceful => Status::Stopped,
            StopRequest::Abort => Status::Aborted,
        }
    }
}

/// The runs directory of one state root, where new runs go, and others whose runs it also finds (a
/// project's Slurm state directory).
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
    also: Vec<PathBuf>,
    /// Asked about runs whose job was submitted to it; without one such runs count as live.
    scheduler: Option<Arc<dyn Scheduler>>,
}

/// A run as others see it: its record (with the end filled in if its supervisor died) and whether its
/// supervisor is alive.
#[derive(Debug, Clone)]
pub struct RunView {
    pub record: RunRecord,
    pub live: bool,
    pub dir: PathBuf,
}

impl RunView {
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG)
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.dir.join(ARTIFACTS)
    }

    /// What `dstack exec` starts from, while the job runs (`None` before it runs and after it ended).
    pub fn exec_base(&self) -> Result<Option<ExecBase>, RunsError> {
        let path = self.dir.join(EXEC_BASE);
        match fs::read(&path) {
            Ok(bytes) if bytes.is_empty() => Ok(None),
            Ok(bytes) => runtime::text::parse_json(&bytes)
                .map(Some)
                .map_err(|reason| RunsError::Damaged { path, reason }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }
}

impl RunStore {
    pub fn new(state_root: &Path) -> RunStore {
        RunStore {
            dir: state_root.join("runs"),
            also: Vec::new(),
            scheduler: None,
        }
    }

    /// Asks `scheduler` about the runs whose job it holds (liveness, stop).
    pub fn scheduled_by(mut self, scheduler: Arc<dyn Scheduler>) -> RunStore {
        self.scheduler = Some(scheduler);
        self
    }

    /// Also finds the runs of `state_root` (new names avoid theirs too); new runs still go to this
    /// store's own directory.
    pub fn also(mut self, state_root: &Path) -> RunStore {
        let dir = state_root.join("runs");
        if dir != self.dir && !self.also.contains(&dir) {
            self.also.push(dir);
        }
        self
    }

    /// Allocates a new run: a unique name (under the store's lock), its directory, its record (status
    /// `submitted`), and its lock, held by the returned [`ActiveRun`] until the run ends.
    pub fn create(&self, template: RunRecord) -> Result<ActiveRun, RunsError> {
        runtime::private::create_dir_all(&self.dir).map_err(io_at(&self.dir))?;
        // Run directories stay: made near `runs/`, not spread (an older state root had runs/ +T). What
        // comes and goes below one (the project's copy) is spread from it.
        runtime::fsops::mark_top_directory(&self.dir, false);
        let store_lock_path = self.dir.join(".lock");
        let store_lock = fsutil::lock(&store_lock_path).map_err(io_at(&store_lock_path))?;
        let last = read_counter(&store_lock, &self.dir).map_err(io_at(&store_lock_path))?;
        let mut number = last + 1;
        let (name, dir) = loop {
            let name = name::generate(number);
            let dir = self.dir.join(&name);
            if self.also.iter().any(|d| d.join(&name).exists()) {
                number += 1;
                continue;
            }
            match runtime::private::create_dir(&dir) {
                Ok(()) => break (name, dir),
                // A counter file lost or reset: skip numbers in use.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => number += 1,
                Err(e) => return Err(io_at(&dir)(e)),
            }
        };
        write_counter(&store_lock, number).map_err(io_at(&store_lock_path))?;
        runtime::fsops::mark_top_directory(&dir, true);
        let lock_path = dir.join(LOCK);
        let lock = fsutil::lock(&lock_path).map_err(io_at(&lock_path))?;
        let mut record = template;
        record.name = name;
        let run = ActiveRun { dir, record, lock };
        run.save()?;
        Ok(run)
    }

    /// Every run, oldest first.
    pub fn list(&self) -> Result<Vec<RunView>, RunsError> {
        let mut runs: Vec<RunView> = Vec::new();
        for (i, dir) in std::iter::once(&self.dir).chain(&self.also).enumerate() {
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // Another store may be on a file system that is not there now: show what is.
                Err(e) if i > 0 => {
                    tracing::warn!("{}: {e}", dir.display());
                    continue;
                }
                Err(e) => return Err(io_at(dir)(e)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name::looks_like_run_name(&name) || runs.iter().any(|r| r.record.name == name) {
                    continue;
                }
                match self.view_at(dir.join(&name)) {
                    Ok(Some(view)) => runs.push(view),
                    Ok(None) => {}
                    // One damaged record should not hide the others.
                    Err(err) => tracing::warn!("{}", runtime::report::Chain(&err)),
                }
            }
        }
        runs.sort_by(|a, b| {
            a.record
                .submitted_at
                .total_cmp(&b.record.submitted_at)
                .then_with(|| a.record.name.cmp(&b.record.name))
        });
        Ok(runs)
    }

    /// One run by name.
    pub fn get(&self, name: &str) -> Result<RunView, RunsError> {
        let found = if name::looks_like_run_name(name) {
            self.view(name)?
        } else {
            None
        };
        found.ok_or_else(|| self.not_found(name))
    }

    fn not_found(&self, name: &str) -> RunsError {
        let names: Vec<String> = self
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.record.name)
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hint = match crate::workflow::suggest_closest(name, &refs) {
            Some(near) => format!(": did you mean `{near}`?"),
            None => " (see `dstack ps -a`)".to_string(),
        };
        RunsError::NotFound {
            name: name.to_string(),
            hint,
        }
    }

    /// Reads a run's record, from the first directory that has it.
    fn view(&self, name: &str) -> Result<Option<RunView>, RunsError> {
        let dirs = std::iter::once(&self.dir).chain(&self.also);
        let dir = dirs
            .map(|d| d.join(name))
            .find(|d| d.exists())
            .unwrap_or_else(|| self.dir.join(name));
        self.view_at(dir)
    }

    /// Reads the record in `dir`; finishes the record of a run whose supervisor is gone.
    fn view_at(&self, dir: PathBuf) -> Result<Option<RunView>, RunsError> {
        let Some(record) = read_record(&dir)? else {
            return Ok(None);
        };
        if record.status.is_finished() {
            return Ok(Some(RunView {
                record,
                live: false,
                dir,
            }));
        }
        let lock_path = dir.join(LOCK);
        let Some(lock) = fsutil::try_lock(&lock_path).map_err(io_at(&lock_path))? else {
            return Ok(Some(RunView {
                record,
                live: true,
                dir,
            }));
        };
        // Nobody holds the lock: the supervisor is gone. Read again under the lock (it may have just
        // finished properly), then record the end it did not.
        let Some(record) = read_record(&dir)? else {
            return Ok(None);
        };
        let mut run = ActiveRun { dir, record, lock };
        if !run.record.status.is_finished() {
            let job_state = match (&run.record.slurm, &self.scheduler) {
                (Some(job), Some(scheduler)) => Some(scheduler.state(job, run.stop_request())),
                (Some(_), None) => Some(JobState::Unknown),
                (None, _) => None,
            };
            let (status, message) = match job_state {
                Some(JobState::Active | JobState::Unknown) => {
                    return Ok(Some(RunView {
                        record: run.record.clone(),
                        live: true,
                        dir: run.dir.clone(),
                    }));
                }
                Some(JobState::Ended {
                    status,
                    message,
                    state,
                }) => {
                    if let Some(state) = state {
                        run.update(|r| {
                            if let Some(s) = r.slurm.as_mut() {
                                s.state = Some(state.clone());
                            }
                        })?;
                    }
                    (status, message)
                }
                None => (
                    run.stop_request()
                        .map_or(Status::Aborted, StopRequest::status),
                    "the run's supervisor ended before the run did (killed, or the machine restarted)"
                        .to_string(),
                ),
            };
            let _ = run.save_artifacts();
            run.remove_inputs();
            run.finish(status, None, Some(&message))?;
        }
        Ok(Some(RunView {
            record: run.record.clone(),
            live: false,
            dir: run.dir.clone(),
        }))
    }

    /// Removes a finished run and everything it kept.
    pub fn remove(&self, name: &str) -> Result<(), RunsError> {
        let view = self.get(name)?;
        if view.live {
            return Err(RunsError::StillRunning(name.to_string()));
        }
        // Hold the run's lock while removing, so a racing `dstack run` cannot be mistaken for it.
        let lock_path = view.dir.join(LOCK);
        let _lock = fsutil::try_lock(&lock_path)
            .map_err(io_at(&lock_path))?
            .ok_or_else(|| RunsError::StillRunning(name.to_string()))?;
        // Rename first so that a half-removed run never shows in `ps`.
        let doomed = view
            .dir
            .parent()
            .unwrap_or(&self.dir)
            .join(format!(".removing-{name}-{}", std::process::id()));
        fs::rename(&view.dir, &doomed).map_err(io_at(&view.dir))?;
        copy::remove_tree(&doomed)?;
        Ok(())
    }

    /// Ends a Slurm run's job that did not end on `request_stop`'s signal: SIGKILL to everything in it,
    /// then Slurm's cancel. Local runs need nothing: their supervisor kills after its grace period.
    pub fn force_stop(&self, name: &str) -> Result<(), RunsError> {
        let view = self.get(name)?;
        if let (Some(job), Some(scheduler)) = (view.record.slurm.as_ref(), &self.scheduler)
            && view.live
        {
            scheduler.kill(job).map_err(RunsError::Scheduler)?;
        }
        Ok(())
    }

    /// Takes over an existing run as its supervisor (a Slurm job on its node): waits for its lock (held
    /// for moments by whoever looks at the run), then reads its record.
    pub fn attach(&self, name: &str) -> Result<ActiveRun, RunsError> {
        let dir = self.dir.join(name);
        let lock_path = dir.join(LOCK);
        if !lock_path.exists() {
            return Err(self.not_found(name));
        }
        let lock = fsutil::lock(&lock_path).map_err(io_at(&lock_path))?;
        let record = read_record(&dir)?.ok_or_else(|| self.not_found(name))?;
        Ok(ActiveRun { dir, record, lock })
    }

    /// Asks a live run to end: records the request (so the run ends `stopped` or `aborted` even if its
    /// supervisor dies on the signal) and signals it. Returns false when the run had already ended.
    pub fn request_stop(&self, name: &str, how: StopRequest) -> Result<bool, RunsError> {
        let view = self.get(name)?;
        if !view.live {
            return Ok(false);
        }
        let path = view.dir.join(STOP_REQUEST);
        fsutil::write_atomic(&path, how.as_str().as_bytes(), runtime::private::FILE_MODE)
            .map_err(io_at(&path))?;
        let record = &view.record;
        if let Some(job) = &record.slurm {
            // The supervisor is on a compute node: the scheduler delivers the signals. A job still waiting
            // for a node is simply cancelled.
            let scheduler = self.scheduler.as_ref().ok_or_else(|| {
                RunsError::Scheduler(
                    format!("{name} is a Slurm run: stop it where Slurm runs").into(),
                )
            })?;
            scheduler
                .stop(job, how, record.status == Status::Submitted)
                .map_err(RunsError::Scheduler)?;
            return Ok(true);
        }
        let signal_pid = |pid: i32, sig: nix::sys::signal::Signal| {
            // ESRCH: it ended meanwhile, which is what we want.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        };
        use nix::sys::signal::Signal;
        match (how, record.container_pid, record.supervisor_pid) {
            // Killing the container's init ends its whole pid namespace at once; the supervisor then
            // saves the artifacts and records `aborted`.
            (StopRequest::Abort, Some(init), _) if record.status == Status::Running => {
                signal_pid(init, Signal::SIGKILL)
            }
            (StopRequest::Abort, _, Some(supervisor)) => {
                signal_pid(supervisor as i32, Signal::SIGKILL)
            }
            (StopRequest::Graceful, _, Some(supervisor)) => {
                signal_pid(supervisor as i32, Signal::SIGTERM)
            }
            _ => {}
        }
        Ok(true)
    }
}

/// The run counter, kept in the runs' lock file and rewritten in place under the lock: renaming a new
/// file over an old one makes ext4 write the new one's data out at once, which cost 0.3-0.8 ms of every
/// start here. A counter lost or damaged reads as 0, and `create` then skips the names in use. Before it
/// lived in the lock file, it was `runs/.counter`.
fn read_counter(lock: &fs::File, runs_dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = [0u8; 32];
    let n = lock.read_at(&mut buf, 0)?;
    let text = match n {
        0 => fs::read_to_string(runs_dir.join(".counter")).unwrap_or_default(),
        n => String::from_utf8_lossy(&buf[..n]).into_owned(),
    };
    Ok(text.trim().parse().unwrap_or(0))
}

/// Writes the counter at a fixed width, so that each write covers the last one whole.
fn write_counter(lock: &fs::File, number: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    lock.write_all_at(format!("{number:020}\n").as_bytes(), 0)
}

fn read_record(dir: &Path) -> Result<Option<RunRecord>, RunsError> {
    let path = dir.join(STATE);
    match fsutil::read_settled(&path, runtime::text::parse_json::<RunRecord>) {
        Ok(parsed) => parsed
            .map(Some)
            .map_err(|reason| RunsError::Damaged { path, reason }),
        // A directory being created or removed.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(&path)(e)),
    }
}

/// A run held by its supervisor: the only writer of its record.
#[derive(Debug)]
pub struct ActiveRun {
    dir: PathBuf,
    record: RunRecord,
    lock: fsutil::Lock,
}

impl ActiveRun {
    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG)
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.dir.join(ARTIFACTS)
    }

    /// Where the run's copy of the project goes (bound at `/workflow`).
    pub fn project_copy_dir(&self) -> PathBuf {
        self.dir.join(PROJECT_COPY)
    }

    /// Changes the record and writes it (atomically).
    pub fn update(&mut self, change: impl FnOnce(&mut RunRecord)) -> Result<(), RunsError> {
        change(&mut self.record);
        self.save()
    }

    /// Moves the run forward to `status` (never back, never out of an end).
    pub fn set_status(&mut self, status: Status) -> Result<(), RunsError> {
        if !self.record.status.can_become(status) {
            return Ok(());
        }
        self.update(|r| {
            r.status = status;
            if status == Status::Running {
                r.started_at = Some(record::now());
            }
        })
    }

    /// Records the end: status, exit code, time, and why (already masked of secrets).
    pub fn finish(
        &mut self,
        status: Status,
        exit_code: Option<i32>,
        message: Option<&str>,
    ) -> Result<(), RunsError> {
        if !self.record.status.can_become(status) {
            return Ok(());
        }
        // Emptied rather than removed: an inode freed per run slows the next allocations (see ARCHITECTURE).
        let _ = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.dir.join(EXEC_BASE));
        self.update(|r| {
            r.status = status;
            r.exit_code = exit_code;
            r.finished_at = Some(record::now());
            r.message = message.map(str::to_string);
        })
    }

    /// What `dstack stop` asked for, if anything.
    pub fn stop_request(&self) -> Option<StopRequest> {
        match fs::read_to_string(self.dir.join(STOP_REQUEST)).ok()?.trim() {
            "abort" => Some(StopRequest::Abort),
            "stop" => Some(StopRequest::Graceful),
            _ => None,
        }
    }

    /// The path the stop request is written to (a signal handler may create it: see `run_workflow`).
    pub fn stop_request_path(&self) -> PathBuf {
        self.dir.join(STOP_REQUEST)
    }

    /// Moves artifacts the job wrote into the project copy to `artifacts/`, then removes the copy.
    /// Bind-mounted artifacts are there already.
    pub fn save_artifacts(&mut self) -> Result<(), RunsError> {
        artifacts::collect(
            &self.dir.join(PROJECT_COPY),
            &self.dir.join(ARTIFACTS),
            &self.record.artifacts,
        )?;
        copy::remove_tree(&self.dir.join(PROJECT_COPY))?;
        Ok(())
    }

    /// A requeued Slurm run starting again: back to `submitted` (from wherever its last start left it),
    /// its last start's traces cleared. A run that has ended stays ended.
    pub fn requeued(&mut self, restarts: u32) -> Result<(), RunsError> {
        if self.record.status.is_finished() {
            return Ok(());
        }
        self.update(|r| {
            r.status = Status::Submitted;
            r.started_at = None;
            r.container_pid = None;
            r.container_id = None;
            r.ports.clear();
            r.message = None;
            if let Some(s) = r.slurm.as_mut() {
                s.restarts = restarts;
            }
        })
    }

    /// The record as it is now.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// The run's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps what `dstack exec` starts from, before the record says the job runs (so that whoever reads
    /// `running` finds it whole).
    pub fn keep_exec_base(&self, base: &ExecBase) -> Result<(), RunsError> {
        let path = self.dir.join(EXEC_BASE);
        let bytes = serde_json::to_vec(base).map_err(|e| io_at(&path)(io::Error::other(e)))?;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(runtime::private::FILE_MODE)
            .open(&path)
            .and_then(|mut f| io::Write::write_all(&mut f, &bytes))
            .map_err(io_at(&path))
    }

    /// Removes the Slurm job's inputs (they hold the project's secrets) once the run has ended.
    pub fn remove_inputs(&self) {
        let _ = fs::remove_file(self.dir.join(JOB_INPUTS));
    }

    /// Removes a run that never started (its workflow could not be resolved with its name).
    pub fn discard(self) -> Result<(), RunsError> {
        let parent = self.dir.parent().unwrap_or(&self.dir);
        let doomed = parent.join(format!(
            ".removing-{}-{}",
            self.record.name,
            std::process::id()
        ));
        fs::rename(&self.dir, &doomed).map_err(io_at(&self.dir))?;
        copy::remove_tree(&doomed)?;
        Ok(())
    }

    /// For the process that forks a detached supervisor: leaves the lock to the child (which shares the
    /// locked file description) instead of unlocking it on drop.
    pub fn hand_over_lock(self) {
        std::mem::forget(self.lock);
    }

    fn save(&self) -> Result<(), RunsError> {
        let path = self.dir.join(STATE);
        let bytes =
            serde_json::to_vec_pretty(&self.record).expect("a run record always serializes");
        fsutil::replace_in_turn(&path, &bytes, runtime::private::FILE_MODE).map_err(io_at(&path))
    }
}

#[cfg(test)]
mod tests;
