//! What this machine offers dstack, for `dstack info`: one probe per concern, each cheap and side-effect
//! free. Most read files under /proc, /sys and /etc or look along PATH; the user-namespace and overlay
//! probes run in a short-lived child (`sandbox`) so that no namespace or mount outlives them.

mod sandbox;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// One concern's findings: a line for people, the same facts as JSON, and what to do when a piece is missing.
pub struct Section {
    pub name: &'static str,
    pub summary: String,
    pub json: Value,
    pub hint: Option<String>,
}

impl Section {
    fn new(name: &'static str, summary: String, json: Value) -> Section {
        Section {
            name,
            summary,
            json,
            hint: None,
        }
    }

    fn hint(mut self, hint: Option<String>) -> Section {
        self.hint = hint;
        self
    }
}

/// Every section, in the order `dstack info` prints them.
pub fn all() -> Vec<Section> {
    let rootless = !runtime::paths::running_as_host_root();
    let state_root = runtime::paths::state_root();
    let overlay_probe = sandbox::probe(&probe_dir(&state_root), rootless);
    vec![
        version(),
        kernel(),
        cgroup(),
        user_namespaces(rootless, &overlay_probe),
        overlay(rootless, &overlay_probe),
        network(rootless),
        gpu(),
        slurm(),
        state(&state_root),
    ]
}

fn version() -> Section {
    let (release, commit, build) = (
        env!("CARGO_PKG_VERSION"),
        env!("DSTACK_COMMIT"),
        env!("DSTACK_BUILD"),
    );
    Section::new(
        "version",
        format!("{release} (commit {commit}, {build} build)"),
        json!({ "version": release, "commit": commit, "build": build }),
    )
}

fn kernel() -> Section {
    let uts = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (release, machine) = (field(|u| u.release()), field(|u| u.machine()));
    Section::new(
        "kernel",
        format!("{release} {machine}"),
        json!({ "release": release, "machine": machine }),
    )
}

fn cgroup() -> Section {
    let support = match runtime::cgroup::support() {
        Ok(s) => s,
        Err(e) => {
            return Section::new(
                "cgroup",
                format!("unreadable ({})", runtime::report::Chain(&e)),
                json!({ "version": "unknown", "controllers": [], "delegated": null, "limits_enforced": false }),
            )
            .hint(Some(
                "dstack reads /proc/self/mountinfo and /proc/self/cgroup; mount /proc".into(),
            ));
        }
    };
    let enforced = support.unenforced.is_none();
    let parent = support.parent.as_ref().map(|p| p.display().to_string());
    let mut summary = format!(
        "{}, controllers: {}",
        support.layout,
        if support.controllers.is_empty() {
            "none".into()
        } else {
            support.controllers.join(" ")
        }
    );
    summary.push_str(if enforced {
        "; limits enforced"
    } else {
        "; limits NOT enforced"
    });
    if let (Some(p), true) = (&parent, enforced) {
        summary.push_str(&format!(" (in {p})"));
    }
    Section::new(
        "cgroup",
        summary,
        json!({
            "version": support.layout,
            "controllers": support.controllers,
            "delegated": parent,
            "limits_enforced": enforced,
        }),
    )
    .hint(support.unenforced)
}

fn user_namespaces(rootless: bool, probe: &sandbox::Probe) -> Section {
    let max =
        read_trimmed("/proc/sys/user/max_user_namespaces").and_then(|v| v.parse::<u64>().ok());
    let uid = nix::unistd::getuid().as_raw();
    let user = user_name(uid);
    let range = |file: &str| {
        runtime::userns::subordinate_range(Path::new(file), &user, uid)
            .map(|r| json!({ "start": r.start, "count": r.count }))
    };
    let (subuid, subgid) = (range("/etc/subuid"), range("/etc/subgid"));
    let (newuidmap, newgidmap) = (which("newuidmap"), which("newgidmap"));
    let allowed = probe.userns.is_ok();
    let mut summary = match &probe.userns {
        Ok(()) => "allowed".to_string(),
        Err(e) => format!("NOT allowed ({e})"),
    };
    let full_map =
        subuid.is_some() && subgid.is_some() && newuidmap.is_some() && newgidmap.is_some();
    let mut hint = None;
    if !allowed && rootless {
        hint = Some(
            "rootless dstack needs unprivileged user namespaces: ask for sysctl user.max_user_namespaces > 0 \
             (and kernel.apparmor_restrict_unprivileged_userns=0 where present)"
                .to_string(),
        );
    }
    if rootless {
        summary.push_str(if full_map {
            "; images' users map to your subordinate ids"
        } else {
            "; only your own id is mapped (images that switch users fail)"
        });
        if allowed && !full_map {
            hint = Some(missing_map_hint(
                subuid.is_some() && subgid.is_some(),
                newuidmap.is_some() && newgidmap.is_some(),
                &user,
            ));
        }
    }
    Section::new(
        "user_namespaces",
        summary,
        json!({
            "allowed": allowed,
            "max_user_namespaces": max,
            "user": user,
            "subuid": subuid,
            "subgid": subgid,
            "newuidmap": newuidmap,
            "newgidmap": newgidmap,
        }),
    )
    .hint(hint)
}

fn missing_map_hint(ranges: bool, tools: bool, user: &str) -> String {
    let mut wanted = Vec::new();
    if !ranges {
        wanted.push(format!(
            "ranges for {user} in /etc/subuid and /etc/subgid (an administrator: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user})"
        ));
    }
    if !tools {
        wanted.push("newuidmap and newgidmap (package uidmap or shadow-utils)".to_string());
    }
    format!(
        "for images with several users, get {}",
        wanted.join(" and ")
    )
}

fn overlay(rootless: bool, probe: &sandbox::Probe) -> Section {
    let dev_fuse = nix::unistd::access(
        "/dev/fuse",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok();
    let fuse_overlayfs = which("fuse-overlayfs");
    let driver = match (&probe.overlay, rootless) {
        (Ok(()), _) => "overlay",
        (Err(_), true) if dev_fuse && fuse_overlayfs.is_some() => "fuse-overlayfs",
        _ => "copy",
    };
    let summary = match &probe.overlay {
        Ok(()) => format!(
            "kernel overlay{}",
            if rootless { " in a user namespace" } else { "" }
        ),
        Err(e) => format!("kernel overlay NOT usable ({e}); falls back to {driver}"),
    };
    let hint = (driver == "copy").then(|| {
        let fuse = match (dev_fuse, &fuse_overlayfs) {
            (_, None) => "install fuse-overlayfs",
            (false, Some(_)) => "ask for read-write access to /dev/fuse",
            (true, Some(_)) => "use a kernel >= 5.11",
        };
        format!(
            "each run copies the image's files (slow for big images); for overlay use a kernel >= 5.11 and a state \
             root on a local filesystem (DSTACK_HOME), or {fuse}"
        )
    });
    Section::new(
        "overlay",
        summary,
        json!({
            "kernel_overlay": probe.overlay.is_ok(),
            "error": probe.overlay.as_ref().err(),
            "driver": driver,
            "dev_fuse": dev_fuse,
            "fuse_overlayfs": fuse_overlayfs,
        }),
    )
    .hint(hint)
}

fn network(rootless: bool) -> Section {
    // Only root's runs use nf_tables, and only root may ask it.
    let nf_tables =
        (!rootless).then(|| runtime::net::nf_tables_available().map_err(|e| e.to_string()));
    let iptables = which("iptables");
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_ok();
    let (pasta, slirp4netns) = (which("pasta"), which("slirp4netns"));
    let forced = std::env::var(runtime::net::USERMODE_ENV).ok();
    let mode = if !rootless {
        "bridge"
    } else if let Some(tool @ ("pasta" | "slirp4netns")) = forced.as_deref() {
        tool
    } else if forced.as_deref() == Some("none") {
        "host"
    } else if tun && pasta.is_some() {
        "pasta"
    } else if tun && slirp4netns.is_some() {
        "slirp4netns"
    } else {
        "host"
    };
    let summary = match mode {
        "bridge" => match &nf_tables {
            Some(Err(e)) => {
                format!("private network on a bridge, but nf_tables does NOT answer ({e})")
            }
            _ => "private network on a bridge (nf_tables answers)".to_string(),
        },
        "host" => "no user-mode network: runs share the host's network".to_string(),
        tool => format!("private network through {tool}"),
    };
    let hint = match mode {
        "bridge" if matches!(nf_tables, Some(Err(_))) => Some(
            "runs need nf_tables for their network: load it (modprobe nf_tables), or run with --network host"
                .to_string(),
        ),
        "host" if !tun => Some(
            "a private network needs read-write access to /dev/net/tun (ask an administrator) and passt or \
             slirp4netns"
                .to_string(),
        ),
        "host" => Some("for a private network, install passt (pasta) or slirp4netns".to_string()),
        _ => None,
    };
    Section::new(
        "network",
        summary,
        json!({
            "mode": mode,
            "nf_tables": nf_tables.as_ref().map(|r| r.is_ok()),
            "iptables": iptables,
            "dev_net_tun": tun,
            "pasta": pasta,
            "slirp4netns": slirp4netns,
        }),
    )
    .hint(hint)
}

fn gpu() -> Section {
    // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 ..."
    let driver = read_trimmed("/proc/driver/nvidia/version").and_then(|text| {
        let line = text.lines().next()?.to_string();
        let after = line.split("Kernel Module").nth(1)?;
        after.split_whitespace().next().map(str::to_string)
    });
    let gpus = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .map(|d| d.count())
        .unwrap_or(0);
    let mut cdi_specs: Vec<String> = runtime::gpu::cdi::spec_dirs(Path::new("/"))
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml" | "yml")
            )
        })
        .map(|p| p.display().to_string())
        .collect();
    cdi_specs.sort();
    let summary = match &driver {
        Some(v) => format!(
            "NVIDIA driver {v}, {gpus} GPU(s), {} CDI spec(s)",
            cdi_specs.len()
        ),
        None => format!(
            "no NVIDIA driver, {} CDI spec(s): --gpus is not available",
            cdi_specs.len()
        ),
    };
    let hint = match (&driver, gpus) {
        (None, _) => {
            Some("for GPU runs, install the NVIDIA driver on a machine with GPUs".to_string())
        }
        (Some(_), 0) => {
            Some("the NVIDIA driver sees no GPU here (nvidia-smi says why)".to_string())
        }
        _ => None,
    };
    Section::new(
        "gpu",
        summary,
        json!({ "nvidia_driver": driver, "gpus": gpus, "cdi_specs": cdi_specs }),
    )
    .hint(hint)
}

fn slurm() -> Section {
    let commands: serde_json::Map<String, Value> = ["sbatch", "srun", "squeue", "scancel"]
        .into_iter()
        .map(|c| (c.to_string(), json!(which(c))))
        .collect();
    let present = commands.values().all(|v| !v.is_null());
    let cluster = slurm_cluster_name();
    let summary = match (present, &cluster) {
        (true, Some(name)) => format!("commands found, cluster {name}"),
        (true, None) => {
            "commands found, cluster name unknown (no ClusterName in slurm.conf)".into()
        }
        (false, _) => "sbatch, srun, squeue or scancel not found: --slurm is not available".into(),
    };
    let hint = (!present).then(|| {
        "on a Slurm cluster, load its module or put its bin directory on PATH for dstack run --slurm".to_string()
    });
    Section::new(
        "slurm",
        summary,
        json!({ "commands": commands, "cluster": cluster }),
    )
    .hint(hint)
}

/// `ClusterName=` from `$SLURM_CONF` or the usual slurm.conf places.
fn slurm_cluster_name() -> Option<String> {
    let candidates = std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/etc/slurm/slurm.conf", "/etc/slurm-llnl/slurm.conf"].map(PathBuf::from));
    candidates
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|text| cluster_name(&text))
}

/// `ClusterName=NAME` in slurm.conf's text (keys are case-insensitive; `#` starts a comment).
fn cluster_name(slurm_conf: &str) -> Option<String> {
    slurm_conf.lines().find_map(|line| {
        let (key, value) = line.split('#').next()?.split_once('=')?;
        let value = value.trim();
        (key.trim().eq_ignore_ascii_case("ClusterName") && !value.is_empty())
            .then(|| value.to_string())
    })
}

fn state(root: &Path) -> Section {
    let path = root.display().to_string();
    let meta = std::fs::metadata(root).ok();
    let Some(meta) = meta else {
        return Section::new(
            "state_root",
            format!("{path} (not made yet: the first pull or run makes it, 0700)"),
            json!({ "path": path, "exists": false, "mode": null, "owner": null, "blobs_bytes": 0, "free_bytes": free_bytes(root.parent().unwrap_or(root)) }),
        );
    };
    let mode = meta.mode() & 0o7777;
    let owner = meta.uid();
    let blobs = blobs_size(&root.join("store/blobs/sha256"));
    let free = free_bytes(root);
    let uid = nix::unistd::getuid().as_raw();
    let hint = if owner != uid {
        Some(format!(
            "{path} belongs to uid {owner}, not you: dstack refuses it; set DSTACK_HOME to a directory of your own"
        ))
    } else if mode & 0o077 != 0 {
        Some(format!(
            "{path} is open to other users ({mode:04o}); the next dstack command closes it to 0700"
        ))
    } else {
        None
    };
    Section::new(
        "state_root",
        format!(
            "{path}, mode {mode:04o}, owner uid {owner}, images' blobs {}, {} free",
            human(blobs),
            free.map(human).unwrap_or_else(|| "?".into())
        ),
        json!({
            "path": path,
            "exists": true,
            "mode": format!("{mode:04o}"),
            "owner": owner,
            "blobs_bytes": blobs,
            "free_bytes": free,
        }),
    )
    .hint(hint)
}

/// The downloaded blobs' total size: one directory read, no walk of the unpacked layers.
fn blobs_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() * st.fragment_size())
}

fn human(bytes: u64) -> String {
    crate::units::human_size(bytes)
}

/// Where the overlay probe makes its scratch directories: on the state root's filesystem (where runs'
/// overlays go), else the temporary directory.
fn probe_dir(state_root: &Path) -> PathBuf {
    if state_root.is_dir()
        && nix::unistd::access(state_root, nix::unistd::AccessFlags::W_OK).is_ok()
    {
        state_root.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn which(tool: &str) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_name_is_read_from_slurm_conf() {
        let conf = "# ClusterName=commented\nSlurmctldHost=head\nclustername = hpc1 # ours\n";
        assert_eq!(cluster_name(conf).as_deref(), Some("hpc1"));
        assert_eq!(cluster_name("ClusterName=\nNodeName=a\n"), None);
    }

    #[test]
    fn missing_id_map_hint_names_what_is_missing() {
        let both = missing_map_hint(false, false, "alice");
        assert!(
            both.contains("/etc/subuid") && both.contains("newuidmap"),
            "{both}"
        );
        let tools = missing_map_hint(true, false, "alice");
        assert!(
            !tools.contains("/etc/subuid") && tools.contains("uidmap"),
            "{tools}"
        );
    }
}
