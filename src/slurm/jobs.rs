//! Slurm's commands, as `dstack` uses them: `sbatch` to submit, `scontrol show job` to look at a job,
//! `scancel` to signal or cancel it. sbatch's refusals become one-line errors that say what to do.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process::{Command, Output};

use super::SlurmError;
use super::options;

/// What Slurm says about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `CANCELLED`, `TIMEOUT`...
    pub state: String,
    /// Why it waits or why it ended (`Priority`, `Resources`, `TimeLimit`...).
    pub reason: Option<String>,
    pub node: Option<String>,
    pub partition: Option<String>,
    /// How often it was requeued.
    pub restarts: u32,
}

/// States a job leaves again; the others (`COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, `NODE_FAIL`,
/// `PREEMPTED`, `OUT_OF_MEMORY`, `BOOT_FAIL`, `DEADLINE`) are ends.
const ACTIVE: &[&str] = &[
    "PENDING",
    "RUNNING",
    "SUSPENDED",
    "COMPLETING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "SPECIAL_EXIT",
    "RESV_DEL_HOLD",
];

impl JobInfo {
    pub fn is_active(&self) -> bool {
        ACTIVE.contains(&self.state.as_str())
    }

    /// Ended (or ending: `COMPLETING` while its processes go) by its time limit.
    pub fn hit_time_limit(&self) -> bool {
        self.state == "TIMEOUT" || self.reason.as_deref() == Some("TimeLimit")
    }
}

/// Submits `script` with `args` (which include `--parsable`); returns the job id.
pub fn submit(args: &[String], script: &Path) -> Result<String, SlurmError> {
    let out = run(Command::new("sbatch").args(args).arg(script), "sbatch")?;
    if !out.status.success() {
        return Err(explain(&String::from_utf8_lossy(&out.stderr), args));
    }
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return Err(SlurmError::Refused(format!(
            "sbatch printed no job id ({})",
            text.trim()
        )));
    }
    // Clusters without `EnforcePartLimits` accept a job the partition can never run and leave it
    // pending: take it back and say why.
    if let Ok(Some(job)) = info(&id)
        && job.state == "PENDING"
        && let Some(why) = job.reason.as_deref().and_then(never_runs)
    {
        let _ = cancel(&id);
        return Err(explain(why, args));
    }
    Ok(id)
}

/// A pending job's reason that means it will never start as the partition is, as the refusal sbatch
/// would have printed with `EnforcePartLimits`.
fn never_runs(reason: &str) -> Option<&'static str> {
    match reason {
        "PartitionConfig" | "PartitionNodeLimit" | "BadConstraints" => Some(
            "Requested node configuration is not available (the partition's nodes are too small)",
        ),
        "PartitionTimeLimit" => {
            Some("Requested time limit is invalid (it exceeds the partition's)")
        }
        _ => None,
    }
}

/// The job as `scontrol show job` reports it; `None` once Slurm has forgotten it (ended more than
/// `MinJobAge` ago) or never knew it.
pub fn info(job_id: &str) -> Result<Option<JobInfo>, SlurmError> {
    let out = run(
        Command::new("scontrol").args(["show", "job", "-o", job_id]),
        "scontrol",
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || stdout.trim().is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("Invalid job id") {
            return Ok(None);
        }
        return Err(SlurmError::Query(format!(
            "scontrol show job {job_id}: {}",
            stderr.trim()
        )));
    }
    // An array or a het job prints one line per component; ours is the first.
    let fields = parse_show(stdout.lines().next().unwrap_or(""));
    let get = |key: &str| {
        fields
            .get(key)
            .filter(|v| !v.is_empty() && *v != "(null)" && *v != "None")
            .cloned()
    };
    Ok(Some(JobInfo {
        state: get("JobState").unwrap_or_else(|| "UNKNOWN".into()),
        reason: get("Reason"),
        node: get("BatchHost").or_else(|| get("NodeList")),
        partition: get("Partition"),
        restarts: get("Restarts").and_then(|r| r.parse().ok()).unwrap_or(0),
    }))
}

/// `scancel --signal=SIGNAL --full`: the signal reaches the batch script and everything it started, and
/// the job goes on until they exit.
pub fn signal(job_id: &str, signal: &str) -> Result<(), SlurmError> {
    scancel(&[&format!("--signal={signal}"), "--full", job_id])
}

/// `scancel`: Slurm ends the job (SIGTERM, then SIGKILL after the cluster's `KillWait`).
pub fn cancel(job_id: &str) -> Result<(), SlurmError> {
    scancel(&[job_id])
}

fn scancel(args: &[&str]) -> Result<(), SlurmError> {
    let out = run(Command::new("scancel").args(args), "scancel")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A job that has just ended is not an error for whoever wanted it to end.
    if out.status.success() || stderr.contains("already completing or completed") {
        return Ok(());
    }
    Err(SlurmError::Query(format!(
        "scancel {}: {}",
        args.join(" "),
        stderr.trim()
    )))
}

/// The partitions `sinfo` lists (for messages); empty when it cannot be asked.
pub fn partitions() -> Vec<String> {
    let Ok(out) = Command::new("sinfo").args(["-h", "-o", "%R"]).output() else {
        return Vec::new();
    };
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    names.dedup();
    names
}

fn run(cmd: &mut Command, tool: &'static str) -> Result<Output, SlurmError> {
    cmd.output().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            SlurmError::NoSlurm { tool }
        } else {
            SlurmError::Run { tool, source }
        }
    })
}

/// sbatch's refusal (`sbatch: error: Batch job submission failed: ...`) as what the user should do.
pub fn explain(stderr: &str, args: &[String]) -> SlurmError {
    let why = stderr
        .lines()
        .rev()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .unwrap_or("no reason given")
        .trim_start_matches("sbatch: error: ")
        .trim_start_matches("Batch job submission failed: ")
        .to_string();
    let arg = |prefix: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(prefix))
            .map(str::to_string)
    };
    let has = |needle: &str| stderr.contains(needle);
    if has("Invalid partition name") {
        let known = partitions();
        return SlurmError::UnknownPartition {
            partition: arg("--partition=").unwrap_or_else(|| "(the default)".into()),
            known: if known.is_empty() {
                String::new()
            } else {
                format!(" (it has {})", known.join(", "))
            },
        };
    }
    if has("Invalid generic resource") || has("Invalid gres") {
        return SlurmError::UnknownGres {
            gres: arg("--gres=").unwrap_or_default(),
        };
    }
    if has("Requested node configuration is not available")
        || has("Memory specification can not be satisfied")
        || has("More processors requested than permitted")
        || has("Node count specification invalid")
    {
        let gres_type =
            arg("--gres=gpu:").and_then(|g| g.rsplit_once(':').map(|(t, _)| t.to_string()));
        return SlurmError::Unsatisfiable {
            request: options::describe(args),
            partition: arg("--partition=").unwrap_or_else(|| "the default partition".into()),
            why,
            gres_hint: gres_type
                .map(|t| {
                    format!(
                        "; if the cluster calls its GPUs other than `{t}`, map the workflow's GPU name in \
                         .dstack/slurm.yaml (`gres: {{NAME: type}}`; `sinfo -o '%G'` lists them)"
                    )
                })
                .unwrap_or_default(),
        };
    }
    let hint = if has("Invalid account") {
        "; set `account` in .dstack/slurm.yaml to one of yours (`sacctmgr show assoc user=$USER`)"
    } else if has("Invalid qos") {
        "; set `qos` (or `preemptible.qos`) in .dstack/slurm.yaml to one your account may use"
    } else if has("time limit") {
        "; set `time` in .dstack/slurm.yaml within the partition's limit (`sinfo -o '%P %l'`)"
    } else {
        ""
    };
    SlurmError::Refused(format!("{why}{hint}"))
}

/// `Key=Value Key=Value ...`, one line of `scontrol show -o`; a word without `=` continues the previous
/// value (values such as `Reason` may hold spaces).
pub fn parse_show(text: &str) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for word in text.split_whitespace() {
        let key_value = word.split_once('=').filter(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '/' || c == ':')
        });
        match (key_value, &last) {
            (Some((key, value)), _) => {
                map.insert(key.to_string(), value.to_string());
                last = Some(key.to_string());
            }
            (None, Some(key)) => {
                if let Some(value) = map.get_mut(key) {
                    value.push(' ');
                    value.push_str(word);
                }
            }
            (None, None) => {}
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_lines_parse_with_spaces_in_values() {
        let m = parse_show(
            "JobId=7 JobName=brave-otter-1 JobState=PENDING Reason=Nodes required for job are DOWN Dependency=(null) Restarts=2 NodeList=(null) TRES=cpu=1,mem=64M,node=1",
        );
        assert_eq!(m["JobState"], "PENDING");
        assert_eq!(m["Reason"], "Nodes required for job are DOWN");
        assert_eq!(m["Restarts"], "2");
        assert_eq!(m["TRES"], "cpu=1,mem=64M,node=1");
    }

    #[test]
    fn refusals_say_what_to_do() {
        let args: Vec<String> = ["--partition=nope", "--cpus-per-task=64", "--mem=1000M"]
            .map(String::from)
            .to_vec();
        let e = explain(
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
            &args,
        );
        assert!(
            matches!(e, SlurmError::UnknownPartition { ref partition, .. } if partition == "nope")
        );
        let e = explain(
            "sbatch: error: CPU count per node can not be satisfied\nsbatch: error: Batch job submission failed: Requested node configuration is not available\n",
            &args,
        );
        let text = e.to_string();
        assert!(
            text.contains("64 CPUs, 1000 MiB") && text.contains("nope"),
            "{text}"
        );
        let e = explain(
            "sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification\n",
            &["--gres=gpu:x:1".into()],
        );
        assert!(
            e.to_string().contains("gpu:x:1") && e.to_string().contains("gres:"),
            "{e}"
        );
        let e = explain(
            "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n",
            &args,
        );
        assert!(e.to_string().contains("`account`"), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);
    }

    #[test]
    fn active_states_are_not_ends() {
        let job = |state: &str| JobInfo {
            state: state.into(),
            reason: None,
            node: None,
            partition: None,
            restarts: 0,
        };
        assert!(job("PENDING").is_active() && job("COMPLETING").is_active());
        assert!(!job("COMPLETED").is_active() && !job("TIMEOUT").is_active());
    }
}
