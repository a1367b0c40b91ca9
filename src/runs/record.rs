//! `state.json`: what `ps`, `logs`, `stop` and `artifacts` know about a run. It never holds a secret's
//! value: messages are masked before they are stored.

use std::fmt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Submitted,
    Pulling,
    Running,
    Uploading,
    Done,
    Failed,
    Stopped,
    Aborted,
}

impl Status {
    /// The run has ended (whatever way) and will not change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Status::Done | Status::Failed | Status::Stopped | Status::Aborted
        )
    }

    /// Whether a run may go from `self` to `next`: forward through the pipeline, or to an end from any
    /// unfinished state; never out of an end.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        if self.is_finished() {
            return false;
        }
        let rank = |s: Status| match s {
            Submitted => 0,
            Pulling => 1,
            Running => 2,
            Uploading => 3,
            Done | Failed | Stopped | Aborted => 4,
        };
        rank(next) > rank(self)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Status::Submitted => "submitted",
            Status::Pulling => "pulling",
            Status::Running => "running",
            Status::Uploading => "uploading",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Stopped => "stopped",
            Status::Aborted => "aborted",
        };
        f.write_str(text)
    }
}

/// One artifact of a run: where it is kept under `artifacts/`, and how it gets there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// The artifact's path as the workflow wrote it, normalized: also its place under `artifacts/`.
    pub path: String,
    /// Bind-mounted from `artifacts/<path>` while the job runs.
    pub mount: bool,
    /// Where the job's files are in the run's copy of the project (`workflow/`), to move them into
    /// `artifacts/` when the run ends; `None` for bind-mounted artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_project_copy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub name: String,
    pub workflow: String,
    pub project: PathBuf,
    pub image: String,
    pub status: Status,
    /// The job's exit code (128+N when signal N ended it).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Unix time, seconds with fractions.
    pub submitted_at: f64,
    #[serde(default)]
    pub started_at: Option<f64>,
    #[serde(default)]
    pub finished_at: Option<f64>,
    /// The `dstack` process that supervises the run (and holds its lock).
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    #[serde(default)]
    pub container_id: Option<String>,
    /// The container's init as the host sees it (for `stop -x`).
    #[serde(default)]
    pub container_pid: Option<i32>,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub artifacts: Vec<ArtifactRecord>,
    /// Why it failed or was aborted, for `ps --json` and `logs`.
    #[serde(default)]
    pub message: Option<String>,
    /// The Slurm job that runs it (`dstack run --slurm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRecord>,
    /// The job's volumes, `HOST:CONTAINER[:ro]` with the host path resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
}

/// A run's Slurm job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmRecord {
    pub job_id: String,
    #[serde(default)]
    pub partition: Option<String>,
    /// The login node it was submitted from (for the `ssh -L` line that reaches its ports).
    #[serde(default)]
    pub login: Option<String>,
    /// The compute node it runs on, once it runs.
    #[serde(default)]
    pub node: Option<String>,
    /// How often Slurm requeued it.
    #[serde(default)]
    pub restarts: u32,
    /// Slurm's final state when the job ended without `dstack` recording it (`TIMEOUT`, `NODE_FAIL`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl RunRecord {
    pub fn new(name: &str, workflow: &str, project: PathBuf, image: &str) -> RunRecord {
        RunRecord {
            name: name.to_string(),
            workflow: workflow.to_string(),
            project,
            image: image.to_string(),
            status: Status::Submitted,
            exit_code: None,
            submitted_at: now(),
            started_at: None,
            finished_at: None,
            supervisor_pid: Some(std::process::id()),
            container_id: None,
            container_pid: None,
            ports: Vec::new(),
            artifacts: Vec::new(),
            message: None,
            slurm: None,
            volumes: Vec::new(),
        }
    }

    /// Seconds from submission to the end (or to now, while it runs).
    pub fn duration(&self, now: f64) -> f64 {
        (self.finished_at.unwrap_or(now) - self.submitted_at).max(0.0)
    }
}

/// Unix time in seconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// "just now", "5 sec ago", "3 min ago", "2 hours ago", "4 days ago".
pub fn ago(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=4 => "just now".to_string(),
        5..=59 => format!("{s} sec ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=7199 => "1 hour ago".to_string(),
        7200..=86_399 => format!("{} hours ago", s / 3600),
        86_400..=172_799 => "1 day ago".to_string(),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// "4s", "3m 12s", "1h 02m".
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_move_forward_and_ends_are_final() {
        use Status::*;
        assert!(Submitted.can_become(Pulling));
        assert!(Pulling.can_become(Running));
        assert!(Running.can_become(Uploading));
        assert!(Uploading.can_become(Done));
        assert!(Submitted.can_become(Failed), "a pull can fail");
        assert!(Running.can_become(Aborted));
        assert!(!Running.can_become(Pulling));
        assert!(!Running.can_become(Running));
        for end in [Done, Failed, Stopped, Aborted] {
            assert!(end.is_finished());
            assert!(!end.can_become(Running));
            assert!(!end.can_become(Failed));
        }
        for live in [Submitted, Pulling, Running, Uploading] {
            assert!(!live.is_finished());
        }
    }

    #[test]
    fn statuses_serialize_in_lowercase() {
        assert_eq!(
            serde_json::to_string(&Status::Uploading).unwrap(),
            "\"uploading\""
        );
        assert_eq!(Status::Aborted.to_string(), "aborted");
    }

    #[test]
    fn records_round_trip_and_tolerate_missing_optional_fields() {
        let mut record = RunRecord::new("brave-otter-1", "train", "/p".into(), "busybox");
        record.ports = vec![8080];
        // (A time JSON writes and reads back exactly; `now()` has more digits than f64 round-trips.)
        record.submitted_at = 1_700_000_000.5;
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<RunRecord>(&text).unwrap(), record);
        let minimal = r#"{"name":"a-b-1","workflow":"w","project":"/p","image":"i","status":"done","submitted_at":1.0}"#;
        let parsed: RunRecord = serde_json::from_str(minimal).unwrap();
        assert_eq!(parsed.status, Status::Done);
        assert!(parsed.artifacts.is_empty());
    }

    #[test]
    fn times_read_as_people_say_them() {
        assert_eq!(ago(2.0), "just now");
        assert_eq!(ago(30.0), "30 sec ago");
        assert_eq!(ago(185.0), "3 min ago");
        assert_eq!(ago(3600.0), "1 hour ago");
        assert_eq!(ago(3.0 * 86_400.0), "3 days ago");
        assert_eq!(duration(4.2), "4s");
        assert_eq!(duration(192.0), "3m 12s");
        assert_eq!(duration(3720.0), "1h 02m");
    }
}
