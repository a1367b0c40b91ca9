//! The job's process: its command line by Docker's override rules, its user from the image's own
//! `/etc/passwd` and `/etc/group`, its environment and working directory.

use std::path::PathBuf;

use oci_spec::runtime::{Spec, UserBuilder};

use super::keep_id::{self, IdRange};
use super::{Host, JobRequest, PlanError, UserChoice};

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

/// The image's `/etc/passwd` and `/etc/group` texts (empty when absent), read once per job: the plan
/// resolves the user from them, and a workflow's mounts need the user's home before that.
#[derive(Debug, Clone, Default)]
pub struct UserFiles {
    pub passwd: String,
    pub group: String,
}

impl UserFiles {
    /// From the image's topmost layers.
    pub fn read(layer_dirs: &[PathBuf]) -> UserFiles {
        let read = |rel: &str| {
            runtime::rootfs::lookup_file(layer_dirs, rel)
                .and_then(|p| read_image_text(&p))
                .unwrap_or_default()
        };
        UserFiles {
            passwd: read("etc/passwd"),
            group: read("etc/group"),
        }
    }

    /// The job's user as `choice` says: the image's USER (root when it names none), the one asked for
    /// (looked up in the image's files), or the invoking user's ids.
    pub fn job_user(
        &self,
        image: &oci_spec::image::ImageConfiguration,
        choice: &UserChoice,
        host: &Host,
    ) -> Result<ResolvedUser, PlanError> {
        match choice {
            UserChoice::Image => {
                let user = image
                    .config()
                    .as_ref()
                    .and_then(|c| c.user().clone())
                    .unwrap_or_default();
                resolve_user(&user, &self.passwd, &self.group)
            }
            UserChoice::Named(user) => {
                resolve_user(user, &self.passwd, &self.group).map_err(|e| match e {
                    PlanError::UnknownUser { user } => PlanError::UnknownChosenUser { user },
                    PlanError::UnknownGroup { group } => PlanError::UnknownChosenGroup { group },
                    PlanError::ReservedId { user } => PlanError::ChosenReservedId { user },
                    other => other,
                })
            }
            UserChoice::Host => Ok(self.invoking_user(&host.invoker)),
        }
    }

    /// The invoking user's ids; the home is the image's for that uid, else `/`.
    fn invoking_user(&self, invoker: &Invoker) -> ResolvedUser {
        let home = parse_passwd(&self.passwd)
            .into_iter()
            .find(|e| e.uid == invoker.uid)
            .map_or_else(|| "/".to_string(), |e| e.home);
        let mut additional_gids = vec![invoker.gid];
        for g in &invoker.groups {
            if !additional_gids.contains(g) {
                additional_gids.push(*g);
            }
        }
        ResolvedUser {
            uid: invoker.uid,
            gid: invoker.gid,
            additional_gids,
            home,
        }
    }
}

/// Who runs `dstack`, as the host knows them: what `user: host` gives the job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invoker {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: all of them as root; rootless, those dstack's namespace maps (a rootless job
    /// keeps the others too, unnamed: see `keep_id`).
    pub groups: Vec<u32>,
    /// Rootless: the uid and gid maps of dstack's user namespace (the user is 0 there); `None` as root.
    pub rootless: Option<(Vec<IdRange>, Vec<IdRange>)>,
}

impl Invoker {
    /// This process's user: as root, its ids and groups; rootless (after the re-execution into dstack's
    /// own namespace), the ids that namespace's 0 stands for.
    pub fn current() -> Invoker {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let groups: Vec<u32> = nix::unistd::getgroups()
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        // Root in a namespace not dstack's (in a container, say) is the invoker as it sees itself.
        if runtime::userns::mapped_range().is_none() {
            return Invoker {
                uid,
                gid,
                groups,
                rootless: None,
            };
        }
        let map =
            |file: &str| keep_id::parse_map(&std::fs::read_to_string(file).unwrap_or_default());
        let (uids, gids) = (map("/proc/self/uid_map"), map("/proc/self/gid_map"));
        let outside_of_root =
            |m: &[IdRange], id: u32| m.iter().find(|r| r.inside == 0).map_or(id, |r| r.outside);
        // The groups as the host knows them; those the namespace does not map read as the overflow id.
        let overflow = std::fs::read_to_string("/proc/sys/kernel/overflowgid")
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .unwrap_or(65534);
        let groups = groups
            .into_iter()
            .filter(|&g| g != overflow)
            .filter_map(|g| keep_id::outside_of(&gids, g))
            .collect();
        Invoker {
            uid: outside_of_root(&uids, uid),
            gid: outside_of_root(&gids, gid),
            groups,
            rootless: Some((uids, gids)),
        }
    }
}

/// The working directory: the request's, else the image's, else `/`.
pub(super) fn working_dir(
    req: &JobRequest,
    image_dir: Option<String>,
) -> Result<String, PlanError> {
    match req.working_dir.clone().or(image_dir) {
        Some(dir) if dir.is_empty() => Ok("/".to_string()),
        Some(dir) if !dir.starts_with('/') => Err(PlanError::RelativeWorkingDir(dir)),
        Some(dir) => Ok(dir),
        None => Ok("/".to_string()),
    }
}

/// The image's environment, then the request's (later entries win), with Docker's `PATH`, `HOSTNAME` and
/// `HOME` where neither sets them, and `TERM` when the job gets a terminal.
pub(super) fn environment(
    image_env: &[String],
    req: &JobRequest,
    hostname: &str,
    user: &ResolvedUser,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    };
    for kv in image_env {
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
    env_list
}

/// Sets the process: arguments, environment, working directory and user, and the user's capabilities by
/// Docker's rule (a job that is not root keeps only its bounding set).
pub(super) fn set_process(
    spec: &mut Spec,
    args: Vec<String>,
    env: Vec<String>,
    cwd: &str,
    user: &ResolvedUser,
    host: &Host,
) -> Result<(), PlanError> {
    let process = spec
        .process_mut()
        .as_mut()
        .expect("the default spec has a process");
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(
        UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.additional_gids.clone())
            .build()
            .map_err(|e| PlanError::Invalid(e.to_string()))?,
    );
    runtime::container::docker_user_caps(spec);
    if let Some(term) = &host.terminal {
        runtime::container::set_term(spec, term);
    }
    Ok(())
}

/// At most this much of an image's `/etc/passwd` or `/etc/group` is read.
const USER_FILE_LIMIT: u64 = 1 << 20;

/// The text of an image's file, if it is a regular file: a FIFO or a device there (the image's choice)
/// must not block or feed the planner, and a huge one is read only as far as the limit.
fn read_image_text(path: &std::path::Path) -> Option<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(USER_FILE_LIMIT).read_to_string(&mut text).ok()?;
    Some(text)
}
