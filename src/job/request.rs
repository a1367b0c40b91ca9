//! What a workflow's container gets from its run: the environment and the bind mounts (`/workflow`,
//! artifacts, caches), worked out as data first and then made on disk.
//!
//! `/workflow` is a copy of the project taken when the run starts (in `runs/<name>/workflow/`), bound
//! read-write: the job sees the files as they were at start, and what it writes there never reaches the
//! user's files. A copy rather than an overlay: it works the same rootless and as root, on any file system
//! the state root is on, and a change the user makes to the project during the run cannot show through.
//! Artifacts the job writes into `/workflow` are moved out of the copy when the run ends.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::plan::{BindMount, JobRequest, Volume};
use crate::runs::copy;
use crate::runs::record::ArtifactRecord;
use crate::workflow::{WORKFLOW_DIR, Workflow};

/// The job's environment on top of the image's: injected variables, then the project's secrets, then the
/// workflow's own `environment` (later entries win). `host_env` gives values for bare `NAME` entries.
pub fn environment(
    workflow: &Workflow,
    run_name: &str,
    job_id: &str,
    ports: &[u16],
    secrets: &BTreeMap<String, String>,
    host_env: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PYTHONUNBUFFERED".into(), "1".into()),
        ("RUN_NAME".into(), run_name.into()),
        ("JOB_ID".into(), job_id.into()),
        ("HOSTNAME".into(), run_name.into()),
        ("JOB_HOSTNAME".into(), run_name.into()),
    ];
    env.extend(crate::plan::network::port_env(ports));
    env.extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    for var in &workflow.env {
        let value = match &var.value {
            Some(value) => Some(value.clone()),
            None => host_env(&var.name),
        };
        if let Some(value) = value {
            env.push((var.name.clone(), value));
        }
    }
    env
}

/// The planner's request for `workflow` run as `run_name` (also its hostname), with its environment and
/// mounts; `dstack`'s own environment gives the values of bare `NAME` entries.
pub fn request(
    workflow: &Workflow,
    run_name: &str,
    job_id: &str,
    ports: &[u16],
    secrets: &BTreeMap<String, String>,
    mounts: &MountPlan,
) -> JobRequest {
    JobRequest {
        image: workflow.image.clone(),
        commands: workflow.commands.clone(),
        entrypoint: workflow.entrypoint.clone(),
        env: environment(workflow, run_name, job_id, ports, secrets, |k| {
            std::env::var(k).ok()
        }),
        working_dir: Some(workflow.container_working_dir()),
        cpu: workflow.resources.cpu,
        memory: workflow.resources.memory,
        shm_size: workflow.resources.shm_size,
        strict_limits: false,
        mounts: mounts.mounts.clone(),
        hostname: Some(run_name.to_string()),
        container_id: job_id.to_string(),
        pids_limit: None,
        seccomp: workflow.seccomp.clone(),
        volumes: Vec::new(),
        volume_base: PathBuf::new(),
        user: workflow.user.clone(),
    }
}

/// The workflow's `volumes:` (and its home with `home: true`) on `request`, relative host paths below
/// `project`.
pub fn add_volumes(request: &mut JobRequest, workflow: &Workflow, project: &Path) {
    request.volumes = workflow.volumes.clone();
    if workflow.home {
        // At the same path; without $HOME the plan refuses the `~` and says so.
        let home = std::env::var("HOME").unwrap_or_else(|_| "~".into());
        request.volumes.push(Volume {
            host: "~".into(),
            path: home,
            read_only: false,
        });
    }
    request.volume_base = project.to_path_buf();
}

/// Inside a Slurm job: the job's cgroup already confines the CPUs and memory Slurm allocated, and the
/// container stays in it, so it gets no limits of its own (a cgroup of ours would sit outside Slurm's and
/// escape them). `/dev/shm` keeps the size the memory limit would have given it.
pub fn leave_limits_to_slurm(request: &mut JobRequest) {
    if request.shm_size.is_none() {
        request.shm_size = request.memory.map(|m| m / 2);
    }
    request.cpu = None;
    request.memory = None;
}

/// Where a run keeps what it binds into its container.
#[derive(Debug, Clone)]
pub struct HostDirs {
    /// The run's copy of the project.
    pub project_copy: PathBuf,
    /// `runs/<name>/artifacts`.
    pub artifacts: PathBuf,
    /// The workflow's cache directory (one subdirectory per cache path).
    pub cache: PathBuf,
}

/// The mounts of a run and what has to exist for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// In mount order: `/workflow` first, then what lies below it.
    pub mounts: Vec<BindMount>,
    pub artifacts: Vec<ArtifactRecord>,
    /// Directories (relative to the project copy) that mounts below `/workflow` need as mount points.
    pub mount_points: Vec<String>,
    /// Bind-mounted artifacts inside `/workflow`: (place in the copy, artifact path). What the project has
    /// there is moved into the artifact directory first, so the job still sees it.
    pub prefill: Vec<(String, String)>,
}

/// The mounts for `workflow`, whose container user's home is `home`.
pub fn plan_mounts(workflow: &Workflow, home: &str, dirs: &HostDirs) -> MountPlan {
    let working_dir = workflow.container_working_dir();
    let in_copy = |abs: &str| -> Option<String> {
        abs.strip_prefix(WORKFLOW_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_string)
    };
    let mut plan = MountPlan {
        mounts: vec![BindMount {
            source: dirs.project_copy.clone(),
            destination: WORKFLOW_DIR.to_string(),
            readonly: false,
        }],
        artifacts: Vec::new(),
        mount_points: Vec::new(),
        prefill: Vec::new(),
    };
    let mut nested = Vec::new();
    for artifact in &workflow.artifacts {
        let abs = artifact.path.resolve(&working_dir, home);
        let key = artifact.path.key();
        let inside = in_copy(&abs);
        match (&inside, artifact.mount) {
            // Written into the copy, moved out at the end.
            (Some(rel), false) => plan.artifacts.push(ArtifactRecord {
                path: key,
                mount: false,
                from_project_copy: Some(rel.clone()),
            }),
            // Bound from the artifact directory: in real time (`mount: true`), or because the path lies
            // outside the project copy, where nothing else would keep it.
            _ => {
                if let Some(rel) = &inside {
                    plan.mount_points.push(rel.clone());
                    plan.prefill.push((rel.clone(), key.clone()));
                }
                nested.push(BindMount {
                    source: dirs.artifacts.join(&key),
                    destination: abs,
                    readonly: false,
                });
                plan.artifacts.push(ArtifactRecord {
                    path: key,
                    mount: true,
                    from_project_copy: None,
                });
            }
        }
    }
    for path in &workflow.cache {
        let abs = path.resolve(&working_dir, home);
        if let Some(rel) = in_copy(&abs) {
            plan.mount_points.push(rel);
        }
        nested.push(BindMount {
            source: dirs.cache.join(path.key()),
            destination: abs,
            readonly: false,
        });
    }
    // Parents before children, whatever order the workflow listed them in.
    nested.sort_by_key(|m| m.destination.matches('/').count());
    plan.mounts.extend(nested);
    plan
}

/// Makes the plan's directories: the mount points in the copy, the artifact and cache directories (with
/// what the project had at a bind-mounted artifact's place moved in first).
pub fn prepare(plan: &MountPlan, dirs: &HostDirs) -> Result<(), copy::CopyError> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| copy::CopyError { path, source }
    };
    for (rel, key) in &plan.prefill {
        let existing = dirs.project_copy.join(rel);
        let target = dirs.artifacts.join(key);
        if existing.is_dir() && !target.exists() {
            copy::move_tree(&existing, &target)?;
        }
    }
    for rel in &plan.mount_points {
        let dir = dirs.project_copy.join(rel);
        fs::create_dir_all(&dir).map_err(at(&dir))?;
    }
    for mount in &plan.mounts[1..] {
        fs::create_dir_all(&mount.source).map_err(at(&mount.source))?;
    }
    Ok(())
}

/// Gives the project copy and the bound artifact and cache directories to the job's user.
pub fn hand_over(plan: &MountPlan, uid: u32, gid: u32) -> Result<(), copy::CopyError> {
    for mount in &plan.mounts {
        copy::chown_tree(&mount.source, uid, gid)?;
    }
    Ok(())
}

/// The project copied to `dest` (the state root left out when it lies inside the project).
pub fn copy_project(
    project: &Path,
    dest: &Path,
    state_root: &Path,
) -> Result<copy::Copied, copy::CopyError> {
    let skip: Vec<PathBuf> = fs::canonicalize(state_root).into_iter().collect();
    copy::copy_tree(project, dest, &skip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::model::{Artifact, ContainerPath, EnvVar};

    fn workflow() -> Workflow {
        Workflow::minimal("train", "busybox")
    }

    fn dirs() -> HostDirs {
        HostDirs {
            project_copy: "/state/runs/r/workflow".into(),
            artifacts: "/state/runs/r/artifacts".into(),
            cache: "/state/cache/p/train".into(),
        }
    }

    fn value<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn injected_then_secrets_then_workflow_env() {
        let mut w = workflow();
        w.env = vec![
            EnvVar {
                name: "TOKEN".into(),
                value: Some("from-workflow".into()),
            },
            EnvVar {
                name: "RUN_NAME".into(),
                value: Some("renamed".into()),
            },
            EnvVar {
                name: "FROM_HOST".into(),
                value: None,
            },
            EnvVar {
                name: "UNSET_ON_HOST".into(),
                value: None,
            },
        ];
        let secrets = BTreeMap::from([
            ("TOKEN".to_string(), "s3cret".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ]);
        let host = |k: &str| (k == "FROM_HOST").then(|| "host-value".to_string());
        let env = environment(&w, "brave-otter-1", "abc123", &[8080, 9090], &secrets, host);
        assert_eq!(value(&env, "PYTHONUNBUFFERED"), Some("1"));
        assert_eq!(value(&env, "JOB_ID"), Some("abc123"));
        assert_eq!(value(&env, "HOSTNAME"), Some("brave-otter-1"));
        assert_eq!(value(&env, "JOB_HOSTNAME"), Some("brave-otter-1"));
        assert_eq!(value(&env, "PORT_0"), Some("8080"));
        assert_eq!(value(&env, "JOB_PORT_1"), Some("9090"));
        assert_eq!(
            value(&env, "OTHER"),
            Some("x"),
            "secrets are environment variables too"
        );
        assert_eq!(
            value(&env, "TOKEN"),
            Some("from-workflow"),
            "the workflow wins over secrets"
        );
        assert_eq!(
            value(&env, "RUN_NAME"),
            Some("renamed"),
            "the workflow wins over injected ones"
        );
        assert_eq!(value(&env, "FROM_HOST"), Some("host-value"));
        assert_eq!(value(&env, "UNSET_ON_HOST"), None);
    }

    #[test]
    fn the_request_carries_the_workflow_the_run_and_its_mounts() {
        let mut w = workflow();
        w.commands = vec!["python train.py".into()];
        w.working_dir = Some("src".into());
        w.resources.memory = Some(1 << 30);
        let mounts = plan_mounts(&w, "/root", &dirs());
        let req = request(&w, "brave-otter-1", "abc", &[], &BTreeMap::new(), &mounts);
        assert_eq!(req.commands, ["python train.py"]);
        assert_eq!(req.working_dir.as_deref(), Some("/workflow/src"));
        assert_eq!(req.hostname.as_deref(), Some("brave-otter-1"));
        assert_eq!((req.memory, req.strict_limits), (Some(1 << 30), false));
        assert_eq!(req.mounts, mounts.mounts);
        assert_eq!(value(&req.env, "RUN_NAME"), Some("brave-otter-1"));
    }

    #[test]
    fn slurm_keeps_the_limits_and_shm_follows_the_memory_it_gave() {
        let mut w = workflow();
        w.resources.cpu = Some(2.0);
        w.resources.memory = Some(1 << 30);
        let mounts = plan_mounts(&w, "/root", &dirs());
        let mut req = request(&w, "r", "j", &[], &BTreeMap::new(), &mounts);
        leave_limits_to_slurm(&mut req);
        assert_eq!(
            (req.cpu, req.memory, req.shm_size),
            (None, None, Some(1 << 29))
        );
        w.resources.shm_size = Some(1 << 20);
        let mut req = request(&w, "r", "j", &[], &BTreeMap::new(), &mounts);
        leave_limits_to_slurm(&mut req);
        assert_eq!(req.shm_size, Some(1 << 20));
    }

    #[test]
    fn the_project_copy_is_at_workflow_and_artifacts_are_placed_by_kind() {
        let mut w = workflow();
        w.working_dir = Some("src".into());
        w.artifacts = vec![
            Artifact {
                path: ContainerPath::Relative("output".into()),
                mount: false,
            },
            Artifact {
                path: ContainerPath::Relative("ckpt".into()),
                mount: true,
            },
            Artifact {
                path: ContainerPath::Absolute("/data/out".into()),
                mount: false,
            },
        ];
        let plan = plan_mounts(&w, "/root", &dirs());
        let mounts: Vec<(String, String)> = plan
            .mounts
            .iter()
            .map(|m| (m.source.display().to_string(), m.destination.clone()))
            .collect();
        assert_eq!(
            mounts,
            [
                (
                    "/state/runs/r/workflow".to_string(),
                    "/workflow".to_string()
                ),
                (
                    "/state/runs/r/artifacts/data/out".to_string(),
                    "/data/out".to_string()
                ),
                (
                    "/state/runs/r/artifacts/ckpt".to_string(),
                    "/workflow/src/ckpt".to_string()
                ),
            ]
        );
        assert_eq!(
            plan.artifacts,
            [
                ArtifactRecord {
                    path: "output".into(),
                    mount: false,
                    from_project_copy: Some("src/output".into())
                },
                ArtifactRecord {
                    path: "ckpt".into(),
                    mount: true,
                    from_project_copy: None
                },
                ArtifactRecord {
                    path: "data/out".into(),
                    mount: true,
                    from_project_copy: None
                },
            ]
        );
        assert_eq!(plan.mount_points, ["src/ckpt"]);
        assert_eq!(plan.prefill, [("src/ckpt".to_string(), "ckpt".to_string())]);
    }

    #[test]
    fn caches_bind_their_directories_at_home_relative_or_absolute_paths() {
        let mut w = workflow();
        w.cache = vec![
            ContainerPath::Home(".cache/pip".into()),
            ContainerPath::Relative("data".into()),
            ContainerPath::Absolute("/opt/models".into()),
        ];
        let plan = plan_mounts(&w, "/home/app", &dirs());
        let mounts: Vec<(String, String)> = plan.mounts[1..]
            .iter()
            .map(|m| (m.source.display().to_string(), m.destination.clone()))
            .collect();
        assert_eq!(
            mounts,
            [
                (
                    "/state/cache/p/train/data".to_string(),
                    "/workflow/data".to_string()
                ),
                (
                    "/state/cache/p/train/opt/models".to_string(),
                    "/opt/models".to_string()
                ),
                (
                    "/state/cache/p/train/~/.cache/pip".to_string(),
                    "/home/app/.cache/pip".to_string()
                ),
            ]
        );
        assert_eq!(plan.mount_points, ["data"]);
    }

    #[test]
    fn preparing_moves_existing_files_into_mounted_artifacts() {
        let tmp = tempfile::tempdir().unwrap();
        let d = HostDirs {
            project_copy: tmp.path().join("workflow"),
            artifacts: tmp.path().join("artifacts"),
            cache: tmp.path().join("cache"),
        };
        fs::create_dir_all(d.project_copy.join("ckpt")).unwrap();
        fs::write(d.project_copy.join("ckpt/seed.pt"), "weights").unwrap();
        let mut w = workflow();
        w.artifacts = vec![Artifact {
            path: ContainerPath::Relative("ckpt".into()),
            mount: true,
        }];
        w.cache = vec![ContainerPath::Relative("data".into())];
        let plan = plan_mounts(&w, "/root", &d);
        prepare(&plan, &d).unwrap();
        assert_eq!(
            fs::read_to_string(d.artifacts.join("ckpt/seed.pt")).unwrap(),
            "weights"
        );
        assert!(
            d.project_copy.join("ckpt").is_dir(),
            "the mount point is back in place"
        );
        assert!(d.project_copy.join("data").is_dir());
        assert!(d.cache.join("data").is_dir());
    }

    #[test]
    fn the_project_copy_leaves_out_a_state_root_inside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("project");
        fs::create_dir_all(project.join(".dstack-home/runs/x/workflow")).unwrap();
        fs::write(project.join("train.py"), "print(1)").unwrap();
        let dest = project.join(".dstack-home/runs/x/workflow");
        copy_project(&project, &dest, &project.join(".dstack-home")).unwrap();
        assert!(dest.join("train.py").exists());
        assert!(!dest.join(".dstack-home").exists());
    }
}
