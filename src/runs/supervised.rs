//! A supervised run, the same for `dstack run NAME`, `dstack run docker IMAGE` and a Slurm job on its node:
//! the run is allocated and its name printed (or the process detaches and prints it, and the detached child
//! supervises), the job stage starts its job and records the container (`job::launch::start_and_wait`), and
//! the end is recorded here (with the artifacts saved, when it has any) however it comes. Secret values are
//! masked in everything kept.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::Path;
use std::time::{Duration, Instant};

use runtime::container::ExitStatus;

use super::detach::{self, Side};
use super::{ActiveRun, RunStore, Status, StopRequest, logs, signals};
use crate::error::{CliError, CliResult};

/// The exit code of a job that could not start.
pub const START_FAILED: u8 = 125;

/// A failure of the run before the job ended: the whole cause chain in one line, secrets masked.
pub struct Failure {
    pub message: String,
    pub code: u8,
}

/// Replaces the project's secret values with `***` in anything shown or stored.
pub struct Masker {
    values: Vec<String>,
}

impl Masker {
    pub fn new(secrets: &BTreeMap<String, String>) -> Masker {
        let mut values: Vec<String> = Vec::new();
        for value in secrets.values().filter(|v| !v.is_empty()) {
            values.push(value.clone());
            // As it appears inside JSON strings too (`--dry-run` prints JSON).
            let quoted = serde_json::to_string(value).expect("strings serialize");
            values.push(quoted[1..quoted.len() - 1].to_string());
        }
        Masker { values }
    }

    /// The secret values (and their JSON-escaped forms) it masks.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    pub fn text(&self, text: &str) -> String {
        logs::mask(text, &self.values)
    }

    /// Masks the run's kept output, in case the job printed a secret.
    pub fn log(&self, run: &ActiveRun) {
        if let Err(e) = logs::mask_file(&run.log_path(), &self.values) {
            eprintln!("warning: masking secrets in the log of {}: {e}", run.name());
        }
    }

    /// An error and its causes as one masked line.
    pub fn chain(&self, err: &(dyn StdError + 'static)) -> String {
        self.text(&one_line(err))
    }

    pub fn error(&self, err: &(dyn StdError + 'static), code: u8) -> CliError {
        CliError::new(self.chain(err)).with_exit_code(code)
    }

    pub fn failure(&self, what: &str, err: &(dyn StdError + 'static), code: u8) -> Failure {
        Failure {
            message: format!("{what}: {}", self.chain(err)),
            code,
        }
    }
}

/// After `store.create`: detaches when asked (the command prints the name and returns `None`; the
/// detached child carries on as the supervisor), else says the run's name first. Either way, a stop
/// signal before the job starts now ends the run as stopped.
pub fn begin(store: &RunStore, run: ActiveRun, detach: bool) -> CliResult<Option<ActiveRun>> {
    let mut run = run;
    if detach {
        match detach::detach() {
            Ok(Side::Parent { supervisor }) => {
                // Return once the record names the supervisor, so that `dstack stop` right after `-d`
                // signals the right process.
                let name = run.name().to_string();
                run.hand_over_lock();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline
                    && store.get(&name).ok().and_then(|v| v.record.supervisor_pid)
                        != Some(supervisor)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                println!("{name}");
                return Ok(None);
            }
            Ok(Side::Supervisor) => run.update(|r| r.supervisor_pid = Some(std::process::id()))?,
            Err(err) => {
                let _ = run.discard();
                return Err(err.into());
            }
        }
    } else {
        eprintln!("run {}", run.name());
    }
    if let Err(err) = signals::record_stop_on_signal(&run.stop_request_path()) {
        tracing::warn!("stop signals before the job starts will abort the run: {err}");
    }
    Ok(Some(run))
}

/// Saves the artifacts (if the run has any) and records how the job ended.
pub fn finish(run: &mut ActiveRun, status: &ExitStatus, mask: &Masker) {
    let end = end_of(run.stop_request(), status);
    finish_as(run, status, mask, end);
}

/// As [`finish`], with the end decided by the caller (who knows more than the exit status says).
pub fn finish_as(
    run: &mut ActiveRun,
    status: &ExitStatus,
    mask: &Masker,
    (end, message): (Status, Option<String>),
) {
    let _ = signals::ignore_stop_signals();
    save_artifacts(run, mask);
    if let Err(e) = run.finish(end, Some(status.code), message.as_deref()) {
        eprintln!(
            "warning: recording the end of {}: {}",
            run.name(),
            one_line(&e)
        );
    }
}

/// Records a run that failed before its job ended (artifacts saved all the same); the error to report.
pub fn record_failure(run: &mut ActiveRun, failure: Failure, mask: &Masker) -> CliError {
    let _ = signals::ignore_stop_signals();
    append_to_log(&run.log_path(), &format!("error: {}\n", failure.message));
    save_artifacts(run, mask);
    let status = run
        .stop_request()
        .map_or(Status::Failed, StopRequest::status);
    let _ = run.finish(status, None, Some(&failure.message));
    CliError::new(failure.message).with_exit_code(failure.code)
}

/// Masks the log, then moves the artifacts into place (`uploading` meanwhile) and removes the project
/// copy. A run with neither (`dstack run docker`) skips the status change: nothing is uploaded.
fn save_artifacts(run: &mut ActiveRun, mask: &Masker) {
    mask.log(run);
    if run.record().artifacts.is_empty() && !run.project_copy_dir().exists() {
        return;
    }
    let _ = run.set_status(Status::Uploading);
    if let Err(e) = run.save_artifacts() {
        eprintln!(
            "warning: saving the artifacts of {}: {}",
            run.name(),
            mask.text(&one_line(&e))
        );
    }
}

/// How a run whose job exited with `status` ended.
pub fn end_of(request: Option<StopRequest>, status: &ExitStatus) -> (Status, Option<String>) {
    if let Some(request) = request {
        return (request.status(), None);
    }
    if status.oom_killed {
        return (
            Status::Failed,
            Some("out of memory: the job exceeded its memory limit".into()),
        );
    }
    match status.code {
        0 => (Status::Done, None),
        // Ended by SIGHUP, SIGINT or SIGTERM: Ctrl-C at the terminal (through the pty the supervisor
        // never sees it) or a stop signal sent to the supervisor without `dstack stop`.
        129 | 130 | 143 => (Status::Stopped, None),
        code => (
            Status::Failed,
            Some(format!("the job exited with code {code}")),
        ),
    }
}

/// An error and its causes in one line.
pub fn one_line(err: &(dyn StdError + 'static)) -> String {
    runtime::report::chain(err)
}

pub fn append_to_log(path: &Path, line: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(runtime::private::FILE_MODE)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus {
            code,
            signal: None,
            oom_killed: false,
        }
    }

    #[test]
    fn how_a_run_ends() {
        assert_eq!(end_of(None, &exit(0)), (Status::Done, None));
        let (status, message) = end_of(None, &exit(3));
        assert_eq!(
            (status, message.as_deref()),
            (Status::Failed, Some("the job exited with code 3"))
        );
        assert_eq!(end_of(None, &exit(130)).0, Status::Stopped, "Ctrl-C");
        assert_eq!(end_of(None, &exit(143)).0, Status::Stopped, "SIGTERM");
        assert_eq!(
            end_of(Some(StopRequest::Graceful), &exit(1)).0,
            Status::Stopped
        );
        assert_eq!(
            end_of(Some(StopRequest::Abort), &exit(137)).0,
            Status::Aborted
        );
        let oom = ExitStatus {
            code: 137,
            signal: Some(9),
            oom_killed: true,
        };
        assert_eq!(end_of(None, &oom).0, Status::Failed);
    }

    #[test]
    fn secrets_are_masked_in_text_json_and_error_chains() {
        let secrets = BTreeMap::from([("T".to_string(), "p\"ss".to_string())]);
        let m = Masker::new(&secrets);
        assert_eq!(m.text("login with p\"ss"), "login with ***");
        let json = serde_json::json!({ "env": ["T=p\"ss"] }).to_string();
        assert!(!m.text(&json).contains("ss"), "{}", m.text(&json));
        let io = std::io::Error::other("bad password p\"ss");
        assert_eq!(m.chain(&io), "bad password ***");
    }
}
