//! The plan: what to run, as pure data. Both the ad hoc form (`dstack run docker IMAGE ...`) and workflows
//! produce a [`JobRequest`]; the planner combines it with the image's configuration into one OCI runtime
//! `Spec` for the runtime, so both forms share one code path. `--dry-run` prints it.
//!
//! Docker's rules (see `workflow-semantics.md`): commands are joined with ` && ` (a trailing `&` wrapped
//! as `{ cmd & }`) and run by `/bin/sh -c`, or passed as the last argument of a given entrypoint; an
//! entrypoint alone drops the image's CMD; neither means the image's ENTRYPOINT + CMD. Image Env < request
//! env. The image's USER is looked up by name in its own `/etc/passwd` and `/etc/group`.

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPids, LinuxResourcesBuilder, LinuxSeccomp,
    MountBuilder, Spec, UserBuilder,
};
use runtime::container::seccomp_profile;

/// What the user asked to run, before the image is known. Sizes are bytes; `cpu` is in cores.
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    /// The image reference as the user wrote it.
    pub image: String,
    /// Shell command lines; when non-empty they are joined with ` && ` and run by `/bin/sh -c` (or by
    /// `entrypoint` when given), replacing the image's CMD.
    pub commands: Vec<String>,
    /// Replaces the image's ENTRYPOINT (and drops its CMD, as Docker does).
    pub entrypoint: Option<Vec<String>>,
    /// Environment on top of the image's, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Absolute path inside the container; the image's WorkingDir otherwise.
    pub working_dir: Option<String>,
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
    pub shm_size: Option<u64>,
    /// Fail instead of warning when a limit cannot be enforced (rootless without a delegated cgroup).
    pub strict_limits: bool,
    /// Host paths bound into the container.
    pub mounts: Vec<BindMount>,
    pub hostname: Option<String>,
    /// The job's seccomp filter (`--security-opt seccomp=...`, a workflow's `security_opt`).
    pub seccomp: SeccompChoice,
}

pub use crate::workflow::SeccompChoice;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// Facts about the machine the plan depends on, passed in so the planner stays pure.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// Total RAM in bytes (the default `/dev/shm` is half of it when no memory limit is set).
    pub memory: u64,
}

impl Host {
    /// This machine, from `/proc/meminfo`.
    pub fn current() -> Host {
        let kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(1 << 20);
        Host { memory: kib * 1024 }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "image {0} has neither ENTRYPOINT nor CMD: give a command with -c (or `commands:`) or --entrypoint"
    )]
    NoCommand(String),
    #[error("user {} (the image's USER) is not in the image's /etc/passwd", runtime::text::quote(.user))]
    UnknownUser { user: String },
    #[error("group {} (the image's USER) is not in the image's /etc/group", runtime::text::quote(.group))]
    UnknownGroup { group: String },
    #[error(
        "the image's USER {} resolves to id 4294967295, which is no id (the kernel reads it as \"unchanged\"): give the image another USER",
        runtime::text::quote(.user)
    )]
    ReservedId { user: String },
    #[error("working directory {} must be an absolute path", runtime::text::quote(.0))]
    RelativeWorkingDir(String),
    #[error("mount source {0} must be an absolute path")]
    RelativeMount(PathBuf),
    #[error("invalid plan: {0}")]
    Invalid(String),
    #[error("{0}: fix it, or run with `--security-opt seccomp=unconfined` (no filter)")]
    Seccomp(String),
}

/// `commands` as one shell line: joined with ` && `, a trailing `&` wrapped as `{ cmd & }`.
pub fn join_commands(commands: &[String]) -> Option<String> {
    let parts: Vec<String> = commands
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .map(|c| {
            if c.ends_with('&') && !c.ends_with("&&") {
                format!("{{ {c} }}")
            } else {
                c.to_string()
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" && "))
}

/// The process arguments by Docker's override rules.
pub fn command_line(
    req: &JobRequest,
    image_entrypoint: &[String],
    image_cmd: &[String],
) -> Result<Vec<String>, PlanError> {
    let line = join_commands(&req.commands);
    let args = match (&req.entrypoint, line) {
        (None, Some(line)) => vec!["/bin/sh".into(), "-c".into(), line],
        (Some(ep), Some(line)) => ep.iter().cloned().chain([line]).collect(),
        // `--entrypoint ""` clears the image's ENTRYPOINT and keeps its CMD, as Docker does.
        (Some(ep), None) if ep.is_empty() => image_cmd.to_vec(),
        (Some(ep), None) => ep.clone(),
        (None, None) => image_entrypoint.iter().chain(image_cmd).cloned().collect(),
    };
    if args.is_empty() {
        return Err(PlanError::NoCommand(req.image.clone()));
    }
    Ok(args)
}

/// The process identity the image's USER names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 7).then(|| {
                Some(PasswdEntry {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_string(),
                })
            })?
        })
        .collect()
}

/// (name, gid, members)
fn parse_group(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`; empty is root) against the image's
/// `/etc/passwd` and `/etc/group` texts, with the supplementary groups that list the user.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<ResolvedUser, PlanError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => users.iter().find(|e| e.uid == uid),
        Err(_) => Some(users.iter().find(|e| e.name == user_part).ok_or_else(|| {
            PlanError::UnknownUser {
                user: user_part.to_string(),
            }
        })?),
    };
    let uid = entry.map_or_else(|| user_part.parse().unwrap_or(0), |e| e.uid);
    let mut gid = entry.map_or(0, |e| e.gid);
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|(name, _, _)| name == g)
                .map(|(_, gid, _)| *gid)
                .ok_or_else(|| PlanError::UnknownGroup {
                    group: g.to_string(),
                })?,
        };
    }
    let mut additional_gids = vec![gid];
    if let Some(e) = entry {
        for (_, g, members) in &groups {
            if members.contains(&e.name) && !additional_gids.contains(g) {
                additional_gids.push(*g);
            }
        }
    }
    // (uid_t)-1 would leave the job as root: refused here whether it was written or came from the image's
    // /etc/passwd or /etc/group.
    if uid == u32::MAX || additional_gids.contains(&u32::MAX) {
        return Err(PlanError::ReservedId {
            user: user.chars().take(200).collect(),
        });
    }
    let home = entry.map_or_else(|| "/".to_string(), |e| e.home.clone());
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// The image's `/etc/passwd` and `/etc/group` texts, from its topmost layers (empty when absent).
fn image_user_files(layer_dirs: &[PathBuf]) -> (String, String) {
    let read = |rel: &str| {
        runtime::rootfs::lookup_file(layer_dirs, rel)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    (read("etc/passwd"), read("etc/group"))
}

/// The default `/dev/shm` size: the request's, else half the memory limit, else half of RAM.
pub fn shm_size(req: &JobRequest, host: Host) -> u64 {
    req.shm_size
        .or(req.memory.map(|m| m / 2))
        .unwrap_or(host.memory / 2)
}

/// Combines `req` with the image's configuration (and its layers, for the user lookup) into one spec.
pub fn plan(
    req: &JobRequest,
    image: &ImageConfiguration,
    layer_dirs: &[PathBuf],
    host: Host,
) -> Result<Spec, PlanError> {
    let (passwd, group) = image_user_files(layer_dirs);
    plan_with_user_files(req, image, &passwd, &group, host)
}

/// [`plan`] with the image's `/etc/passwd` and `/etc/group` given as text.
pub fn plan_with_user_files(
    req: &JobRequest,
    image: &ImageConfiguration,
    passwd: &str,
    group: &str,
    host: Host,
) -> Result<Spec, PlanError> {
    let config = image.config().clone().unwrap_or_default();
    let entrypoint = config.entrypoint().clone().unwrap_or_default();
    let cmd = config.cmd().clone().unwrap_or_default();
    let args = command_line(req, &entrypoint, &cmd)?;
    let user = resolve_user(config.user().as_deref().unwrap_or(""), passwd, group)?;

    let cwd = match req
        .working_dir
        .clone()
        .or_else(|| config.working_dir().clone())
    {
        Some(dir) if dir.is_empty() => "/".to_string(),
        Some(dir) if !dir.starts_with('/') => return Err(PlanError::RelativeWorkingDir(dir)),
        Some(dir) => dir,
        None => "/".to_string(),
    };
    let hostname = req.hostname.clone().unwrap_or_else(|| "dstack".into());

    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    };
    for kv in config.env().as_deref().unwrap_or_default() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    for (k, v) in &req.env {
        set(k, v);
    }
    let mut env_list: Vec<String> = Vec::new();
    let has = |k: &str, env: &[(String, String)]| env.iter().any(|(key, _)| key == k);
    if !has("PATH", &env) {
        env_list.push(format!("PATH={}", runtime::container::DEFAULT_PATH));
    }
    if !has("HOSTNAME", &env) {
        env_list.push(format!("HOSTNAME={hostname}"));
    }
    if !has("HOME", &env) {
        env_list.push(format!("HOME={}", user.home));
    }
    env_list.extend(env.iter().map(|(k, v)| format!("{k}={v}")));

    let mut spec = runtime::container::default_spec(args.clone(), shm_size(req, host));
    let process = spec
        .process_mut()
        .as_mut()
        .expect("the default spec has a process");
    process.set_args(Some(args));
    process.set_env(Some(env_list));
    process.set_cwd(PathBuf::from(&cwd));
    process.set_user(
        UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.additional_gids.clone())
            .build()
            .map_err(|e| PlanError::Invalid(e.to_string()))?,
    );
    spec.set_hostname(Some(hostname));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &req.mounts {
        if !m.source.is_absolute() {
            return Err(PlanError::RelativeMount(m.source.clone()));
        }
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        if m.readonly {
            options.push("ro".into());
        }
        mounts.push(
            MountBuilder::default()
                .destination(Path::new("/").join(&m.destination))
                .typ("bind")
                .source(m.source.clone())
                .options(options)
                .build()
                .map_err(|e| PlanError::Invalid(e.to_string()))?,
        );
    }
    spec.set_mounts(Some(mounts));

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(memory) = req.memory {
        let limit = i64::try_from(memory)
            .map_err(|_| PlanError::Invalid("memory limit too large".into()))?;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .map_err(|e| PlanError::Invalid(e.to_string()))?,
        );
    }
    if let Some(cpu) = req.cpu {
        if !(cpu.is_finite() && cpu > 0.0) {
            return Err(PlanError::Invalid(format!(
                "cpu {cpu} must be a positive number of cores"
            )));
        }
        let period = runtime::cgroup::CPU_PERIOD_US;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota((cpu * period as f64).round() as i64)
                .build()
                .map_err(|e| PlanError::Invalid(e.to_string()))?,
        );
    }
    let linux = spec
        .linux_mut()
        .as_mut()
        .expect("the default spec has linux settings");
    linux.set_resources(Some(
        resources
            .build()
            .map_err(|e| PlanError::Invalid(e.to_string()))?,
    ));
    let seccomp = seccomp_profile(&req.seccomp, &spec)?;
    if let Some(linux) = spec.linux_mut().as_mut() {
        linux.set_seccomp(seccomp);
    }
    Ok(spec)
}

/// Reads a profile file once before a run exists, so that a bad one stops the run before it starts.
pub fn check_seccomp(choice: &SeccompChoice) -> Result<(), PlanError> {
    match choice {
        SeccompChoice::File(path) => seccomp_profile::load(path, &Default::default())
            .map(drop)
            .map_err(|e| PlanError::Seccomp(runtime::report::chain(&e))),
        _ => Ok(()),
    }
}

/// The seccomp profile `choice` gives a job of `spec`'s bounding capabilities (Docker decides by them).
fn seccomp_profile(choice: &SeccompChoice, spec: &Spec) -> Result<Option<LinuxSeccomp>, PlanError> {
    let bounding = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().clone())
        .unwrap_or_default();
    match choice {
        SeccompChoice::Default => Ok(Some(seccomp_profile::docker_default(&bounding))),
        SeccompChoice::Unconfined => Ok(None),
        SeccompChoice::File(path) => seccomp_profile::load(path, &bounding)
            .map(Some)
            .map_err(|e| PlanError::Seccomp(runtime::report::chain(&e))),
    }
}

/// The tasks limit of a job that asks for none (podman's default): enough for any sane job, and a fork bomb
/// stops there instead of taking the machine. Applied where the pids controller is available; `-1` (or
/// `0`) asks for no limit.
pub const DEFAULT_PIDS_LIMIT: u64 = 2048;

/// Caps the tasks (processes and threads) the job may have at once; `limit <= 0` asks for no cap, kept as
/// -1 (OCI's "max") so that no default replaces it. A spec without a pids limit gets the launcher's default.
pub fn limit_pids(spec: &mut Spec, limit: i64) {
    let mut pids = LinuxPids::default();
    pids.set_limit(if limit > 0 { limit } else { -1 });
    if let Some(linux) = spec.linux_mut().as_mut() {
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_pids(Some(pids));
        linux.set_resources(Some(resources));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    const GIB: u64 = 1 << 30;
    const HOST: Host = Host { memory: 16 * GIB };
    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1000:\nvideo:x:44:app,other\n";

    fn image(entrypoint: &[&str], cmd: &[&str], user: &str) -> ImageConfiguration {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let config = ConfigBuilder::default()
            .entrypoint(s(entrypoint))
            .cmd(s(cmd))
            .user(user.to_string())
            .env(s(&["PATH=/image/bin", "A=image", "B=image"]))
            .working_dir("/srv".to_string())
            .build()
            .unwrap();
        ImageConfigurationBuilder::default()
            .config(config)
            .build()
            .unwrap()
    }

    fn req(commands: &[&str], entrypoint: Option<&[&str]>) -> JobRequest {
        JobRequest {
            image: "busybox".into(),
            commands: commands.iter().map(|c| c.to_string()).collect(),
            entrypoint: entrypoint.map(|e| e.iter().map(|x| x.to_string()).collect()),
            ..Default::default()
        }
    }

    fn args(spec: &Spec) -> Vec<String> {
        spec.process().as_ref().unwrap().args().clone().unwrap()
    }

    fn plan(req: &JobRequest, image: &ImageConfiguration) -> Result<Spec, PlanError> {
        plan_with_user_files(req, image, PASSWD, GROUP, HOST)
    }

    #[test]
    fn commands_run_through_the_shell_joined_with_and() {
        let spec = plan(
            &req(&["echo a", "sleep 1 &", "", "echo b"], None),
            &image(&["/ep"], &["cmd"], ""),
        )
        .unwrap();
        assert_eq!(
            args(&spec),
            ["/bin/sh", "-c", "echo a && { sleep 1 & } && echo b"]
        );
    }

    #[test]
    fn entrypoint_and_commands_pass_the_line_as_last_argument() {
        let spec = plan(
            &req(&["echo a"], Some(&["/bin/bash", "-lc"])),
            &image(&["/ep"], &["cmd"], ""),
        )
        .unwrap();
        assert_eq!(args(&spec), ["/bin/bash", "-lc", "echo a"]);
    }

    #[test]
    fn entrypoint_alone_drops_the_image_cmd() {
        let spec = plan(
            &req(&[], Some(&["/bin/true"])),
            &image(&["/ep"], &["cmd"], ""),
        )
        .unwrap();
        assert_eq!(args(&spec), ["/bin/true"]);
    }

    #[test]
    fn an_empty_entrypoint_clears_the_images_and_keeps_its_cmd() {
        let spec = plan(&req(&[], Some(&[])), &image(&["/ep"], &["cmd", "x"], "")).unwrap();
        assert_eq!(args(&spec), ["cmd", "x"]);
    }

    #[test]
    fn neither_runs_the_image_entrypoint_and_cmd() {
        let spec = plan(&req(&[], None), &image(&["/ep", "x"], &["cmd"], "")).unwrap();
        assert_eq!(args(&spec), ["/ep", "x", "cmd"]);
        let err = plan(&req(&[], None), &image(&[], &[], "")).unwrap_err();
        assert_eq!(err, PlanError::NoCommand("busybox".into()));
        assert!(err.to_string().contains("-c"));
    }

    #[test]
    fn request_env_overrides_the_image_env() {
        let mut r = req(&["true"], None);
        r.env = vec![("B".into(), "req".into()), ("C".into(), "req".into())];
        let spec = plan(&r, &image(&[], &[], "")).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"PATH=/image/bin".to_string()));
        assert!(env.contains(&"A=image".to_string()));
        assert!(env.contains(&"B=req".to_string()));
        assert!(!env.contains(&"B=image".to_string()));
        assert!(env.contains(&"HOME=/root".to_string()));
        assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new("/srv"));
    }

    #[test]
    fn the_unchanged_id_is_no_user() {
        let passwd = "root:x:0:0::/root:/bin/sh\nevil:x:4294967295:0::/:/bin/sh\n";
        let group = "root:x:0:\nevil:x:4294967295:root\n";
        for user in ["4294967295", "0:4294967295", "evil", "4294967295:0"] {
            let err = resolve_user(user, passwd, "").unwrap_err();
            assert!(matches!(err, PlanError::ReservedId { .. }), "{user}: {err}");
        }
        // A supplementary group from the image's /etc/group counts too.
        assert!(matches!(
            resolve_user("root", passwd, group),
            Err(PlanError::ReservedId { .. })
        ));
    }

    #[test]
    fn users_resolve_by_name_with_supplementary_groups() {
        let u = resolve_user("app", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(u.additional_gids, vec![1000, 50, 44]);
        assert_eq!(resolve_user("app:staff", PASSWD, GROUP).unwrap().gid, 50);
        assert_eq!(resolve_user("1000:44", PASSWD, GROUP).unwrap().gid, 44);
        let numeric = resolve_user("4242", PASSWD, GROUP).unwrap();
        assert_eq!(
            (numeric.uid, numeric.gid, numeric.home.as_str()),
            (4242, 0, "/")
        );
        assert_eq!(resolve_user("", PASSWD, GROUP).unwrap().uid, 0);
        assert!(matches!(
            resolve_user("nobody", PASSWD, GROUP),
            Err(PlanError::UnknownUser { .. })
        ));
        assert!(matches!(
            resolve_user("app:wheel", PASSWD, GROUP),
            Err(PlanError::UnknownGroup { .. })
        ));
    }

    #[test]
    fn security_opt_values_follow_docker() {
        let parse = SeccompChoice::parse_security_opt;
        assert_eq!(
            parse("seccomp=unconfined"),
            Ok(Some(SeccompChoice::Unconfined))
        );
        assert_eq!(
            parse("seccomp:unconfined"),
            Ok(Some(SeccompChoice::Unconfined))
        );
        assert_eq!(
            parse("seccomp=p.json"),
            Ok(Some(SeccompChoice::File("p.json".into())))
        );
        assert_eq!(parse("no-new-privileges"), Ok(None));
        assert!(parse("seccomp=").is_err());
        let long = format!("label={}", "x".repeat(5000));
        let err = parse(&long).unwrap_err();
        assert!(err.len() < 400 && err.contains("seccomp=FILE"), "{err}");
        assert_eq!(
            SeccompChoice::File("p.json".into()).relative_to(Path::new("/project")),
            SeccompChoice::File("/project/p.json".into())
        );
        assert_eq!(
            SeccompChoice::File("/etc/p.json".into()).relative_to(Path::new("/project")),
            SeccompChoice::File("/etc/p.json".into())
        );
    }

    #[test]
    fn jobs_get_dockers_seccomp_profile_unless_asked_otherwise() {
        let names = |spec: &Spec| -> Vec<String> {
            let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
            seccomp
                .syscalls()
                .clone()
                .unwrap()
                .iter()
                .filter(|s| s.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow)
                .flat_map(|s| s.names().clone())
                .collect()
        };
        let spec = plan(&req(&["true"], None), &image(&[], &[], "")).unwrap();
        let allowed = names(&spec);
        assert!(allowed.contains(&"read".to_string()));
        assert!(
            allowed.contains(&"chroot".to_string()),
            "CAP_SYS_CHROOT is a default"
        );
        for denied in [
            "add_key",
            "keyctl",
            "unshare",
            "mount",
            "bpf",
            "ptrace_nothing",
        ] {
            assert!(!allowed.contains(&denied.to_string()), "{denied}");
        }
        let mut r = req(&["true"], None);
        r.seccomp = SeccompChoice::Unconfined;
        let spec = plan(&r, &image(&[], &[], "")).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
        r.seccomp = SeccompChoice::File("/nonexistent/profile.json".into());
        let err = plan(&r, &image(&[], &[], "")).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/profile.json") && err.contains("seccomp=unconfined"),
            "{err}"
        );
    }

    #[test]
    fn shm_defaults_to_half_the_memory_limit_else_half_of_ram() {
        let mut r = req(&["true"], None);
        assert_eq!(shm_size(&r, HOST), 8 * GIB);
        r.memory = Some(GIB);
        assert_eq!(shm_size(&r, HOST), GIB / 2);
        r.shm_size = Some(3 * GIB);
        assert_eq!(shm_size(&r, HOST), 3 * GIB);
    }

    #[test]
    fn limits_round_trip_through_the_spec() {
        let mut r = req(&["true"], None);
        r.memory = Some(64 << 20);
        r.cpu = Some(0.5);
        let mut spec = plan(&r, &image(&[], &[], "app")).unwrap();
        let limits = |spec: &Spec| {
            let resources = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
            runtime::cgroup::Limits::from_oci(resources).unwrap()
        };
        let l = limits(&spec);
        assert_eq!((l.memory, l.cpu, l.pids), (Some(64 << 20), Some(0.5), None));
        // No swap beyond the memory limit.
        assert_eq!(l.memory_swap, Some(64 << 20));
        limit_pids(&mut spec, 100);
        assert_eq!(limits(&spec).pids, Some(100));
        // "No limit" stays in the spec (so no default replaces it) and limits nothing.
        limit_pids(&mut spec, 0);
        let pids = spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .pids();
        assert_eq!(pids.map(|p| p.limit()), Some(-1));
        assert_eq!(limits(&spec).pids, None);
        let user = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((user.uid(), user.gid()), (1000, 1000));
    }
}
