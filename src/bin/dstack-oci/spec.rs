//! `spec [--rootless] [--bundle DIR]`: writes a default config.json (runc's defaults: `sh` in `rootfs/`,
//! the default namespaces, masked paths and devices; `--rootless` adds a user namespace mapping you to root).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use oci_spec::runtime::{Linux, Spec};

use crate::error::{CmdResult, Failure, fail};

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Where to write config.json
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
}

/// `rootless` (the global `--rootless`): a spec for an unprivileged user (a user namespace, no network
/// namespace, no cgroup limits).
pub fn spec(args: SpecArgs, rootless: bool) -> CmdResult {
    let path = args.bundle.join("config.json");
    if path.exists() {
        return Err(Failure::new(format!("{} already exists", path.display())));
    }
    let mut spec = Spec::default();
    if rootless {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        spec.set_linux(Some(Linux::rootless(uid, gid)));
        // Without a network namespace of its own the container cannot mount a fresh sysfs, and an
        // unprivileged user has no cgroup to mount: bind the host's /sys instead, as runc's rootless spec does.
        if let Some(mounts) = spec.mounts_mut() {
            mounts.retain(|m| m.typ().as_deref() != Some("cgroup"));
            for m in mounts.iter_mut() {
                if m.typ().as_deref() == Some("sysfs") {
                    m.set_typ(Some("none".into()));
                    m.set_source(Some("/sys".into()));
                    m.set_options(Some(vec![
                        "rbind".into(),
                        "nosuid".into(),
                        "noexec".into(),
                        "nodev".into(),
                        "ro".into(),
                    ]));
                }
            }
        }
    }
    let text = serde_json::to_string_pretty(&spec).expect("specs serialize");
    std::fs::write(&path, text).map_err(fail(path.display()))?;
    Ok(ExitCode::SUCCESS)
}
