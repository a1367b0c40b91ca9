//! A container's state directory, `<root>/<id>/`: `state.json` (what `create` recorded), `config.json`
//! (the spec it ran, for hooks and `exec`), and the start gate while it waits. Its status is read from
//! the kernel: init's pid with its start time (so a reused pid is not mistaken for it), then the gate.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use runtime::container::{State, gate};
use runtime::fsops::{FileLock, LockMode};
use serde::{Deserialize, Serialize};

use crate::Globals;
use crate::error::{Failure, fail};

/// What `create` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub pid: i32,
    /// Init's start time in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    pub bundle: PathBuf,
    pub oci_version: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// RFC 3339.
    pub created: String,
    pub owner: String,
    /// The cgroup directories `create` made, when it made any: only these are removed at `delete`.
    #[serde(default)]
    pub cgroup: Option<CgroupDirs>,
}

/// The container's cgroup (one leaf per hierarchy on v1) and the parents made on the way to it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CgroupDirs {
    pub leaves: Vec<PathBuf>,
    pub made_parents: Vec<PathBuf>,
}

impl CgroupDirs {
    /// Kills what still runs in the container's cgroup and removes what `create` made.
    pub fn remove(&self) -> Result<(), runtime::cgroup::CgroupError> {
        runtime::cgroup::remove_created(&self.leaves, &self.made_parents)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// Ids become directory and cgroup names: keep them to what both accept.
pub fn check_id(id: &str) -> Result<(), Failure> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "invalid container id {id:?}: use letters, digits, and - _ . + @"
        )))
    }
}

pub fn dir(globals: &Globals, id: &str) -> PathBuf {
    globals.root.join(id)
}

/// The state directory, locked for the life of the returned guard (flock: commands on one container
/// take turns).
pub struct Locked {
    pub dir: PathBuf,
    _lock: FileLock,
}

pub fn lock(dir: &Path) -> Result<Locked, Failure> {
    let file = File::open(dir).map_err(fail(format!("{}", dir.display())))?;
    let file = FileLock::wait_on(file, LockMode::Exclusive)
        .map_err(fail(format!("cannot lock {}", dir.display())))?;
    Ok(Locked {
        dir: dir.to_path_buf(),
        _lock: file,
    })
}

pub fn load(globals: &Globals, id: &str) -> Result<(Locked, Record), Failure> {
    check_id(id)?;
    let dir = dir(globals, id);
    if !dir.join("state.json").exists() {
        return Err(Failure::new(format!("container {id} does not exist")));
    }
    let locked = lock(&dir)?;
    let text = std::fs::read_to_string(dir.join("state.json"))
        .map_err(fail(format!("container {id} does not exist")))?;
    let record = runtime::text::parse_json(text.as_bytes())
        .map_err(fail(format!("{}", dir.join("state.json").display())))?;
    Ok((locked, record))
}

pub fn save(dir: &Path, record: &Record) -> Result<(), Failure> {
    let tmp = dir.join(".state.json");
    let text = serde_json::to_string_pretty(record).expect("records serialize");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, dir.join("state.json")))
        .map_err(fail(format!("writing {}", dir.display())))
}

pub fn config(dir: &Path) -> Result<Spec, Failure> {
    let text = std::fs::read_to_string(dir.join("config.json"))
        .map_err(fail(format!("{}", dir.join("config.json").display())))?;
    runtime::text::parse_json(text.as_bytes())
        .map_err(fail(format!("{}", dir.join("config.json").display())))
}

/// (start time, state letter) of `pid`.
fn stat(pid: i32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

pub fn start_time(pid: i32) -> u64 {
    stat(pid).map(|(t, _)| t).unwrap_or(0)
}

impl Record {
    /// True while init (this container's, not a later process with its pid) lives.
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((t, s)) if t == self.start_time && s != 'Z' && s != 'X')
    }

    pub fn status(&self, dir: &Path) -> Status {
        if !self.alive() {
            Status::Stopped
        } else if gate::is_waiting(dir) {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// The runtime spec's state.
    pub fn state(&self, status: Status) -> State {
        State {
            oci_version: self.oci_version.clone(),
            id: self.id.clone(),
            status: status.as_str().into(),
            pid: (status != Status::Stopped).then_some(self.pid),
            bundle: self.bundle.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Now, RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_dates() {
        assert!(check_id("job.1000.5.0.0").is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_id("").is_err());
        assert_eq!(now_rfc3339().len(), 20);
        let me = std::process::id() as i32;
        assert!(start_time(me) > 0);
    }
}
