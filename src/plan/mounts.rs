//! The job's mounts: Docker's defaults (from the runtime's default spec), the request's host paths, the
//! user's volumes, and the bind mounts of the `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` the
//! runtime writes at start.
//!
//! A volume is a recursive bind, `nosuid,nodev` (and `ro` when asked, which the runtime applies to every
//! submount too). Its host path must exist: dstack creates nothing on the host. Its target is checked
//! here as text; the runtime resolves it inside the root, where no link leads out.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{MountBuilder, Spec};

use super::{Host, JobRequest, PlanError, Volume};

/// Container paths a volume may not cover: the kernel's views and devices the runtime sets up.
const RESERVED: &[&str] = &["/proc", "/sys", "/dev"];

/// Why a volume is refused; each names the entry as the user wrote it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VolumeError {
    #[error(
        "volume `{entry}`: the host path {} does not exist (dstack creates nothing on the host: make it first)",
        .host.display()
    )]
    MissingHost { entry: String, host: PathBuf },
    #[error("volume `{entry}`: the host path {} cannot be reached: {reason}", .host.display())]
    Unreachable {
        entry: String,
        host: PathBuf,
        reason: String,
    },
    #[error("volume `{entry}`: the host path starts with `~` but $HOME is not set")]
    NoHome { entry: String },
    #[error("volume `{entry}`: the container path must be absolute, e.g. `/data`")]
    RelativeTarget { entry: String },
    #[error("volume `{entry}`: the container path may not be `/` or lie at or below {reserved}")]
    ReservedTarget {
        entry: String,
        reserved: &'static str,
    },
}

/// Adds the request's bind mounts and volumes, then the `/etc` files' (unless the request mounts
/// something there).
pub(super) fn set_mounts(spec: &mut Spec, req: &JobRequest, host: &Host) -> Result<(), PlanError> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let bind = |source: PathBuf, destination: PathBuf, options: Vec<String>| {
        MountBuilder::default()
            .destination(destination)
            .typ("bind")
            .source(source)
            .options(options)
            .build()
            .map_err(|e| PlanError::Invalid(e.to_string()))
    };
    for m in &req.mounts {
        if !m.source.is_absolute() {
            return Err(PlanError::RelativeMount(m.source.clone()));
        }
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        if m.readonly {
            options.push("ro".into());
        }
        mounts.push(bind(
            m.source.clone(),
            Path::new("/").join(&m.destination),
            options,
        )?);
    }
    for volume in &req.volumes {
        let (source, target) = volume_paths(volume, req, host)?;
        let mut options: Vec<String> = ["rbind", "rprivate", "nosuid", "nodev"]
            .map(String::from)
            .into();
        if volume.read_only {
            options.push("ro".into());
        }
        mounts.push(bind(source, target, options)?);
    }
    spec.set_mounts(Some(mounts));
    let staged = runtime::container::staged_etc_dir(&host.state_root, &req.container_id);
    runtime::container::add_etc_file_mounts(spec, &staged)
        .map_err(|e| PlanError::Invalid(e.to_string()))
}

/// Checks every volume of `req` as the plan will (host paths exist, targets allowed): a command calls it
/// before a run exists.
pub fn check_volumes(req: &JobRequest, host: &Host) -> Result<(), VolumeError> {
    req.volumes
        .iter()
        .try_for_each(|v| volume_paths(v, req, host).map(drop))
}

/// A volume's host path (which must exist) and its target.
fn volume_paths(
    volume: &Volume,
    req: &JobRequest,
    host: &Host,
) -> Result<(PathBuf, PathBuf), VolumeError> {
    let source = volume_source(volume, &req.volume_base, host.home.as_deref())?;
    let target = volume_target(volume)?;
    match std::fs::metadata(&source) {
        Ok(_) => Ok((source, target)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(VolumeError::MissingHost {
            entry: volume.to_string(),
            host: source,
        }),
        Err(e) => Err(VolumeError::Unreachable {
            entry: volume.to_string(),
            host: source,
            reason: e.to_string(),
        }),
    }
}

/// A volume's host path: `~` is `home`, a relative path is below `base` (the project directory).
fn volume_source(
    volume: &Volume,
    base: &Path,
    home: Option<&Path>,
) -> Result<PathBuf, VolumeError> {
    let host = volume.host.as_str();
    let under_home = match host {
        "~" => Some(""),
        _ => host.strip_prefix("~/"),
    };
    let path = match under_home {
        Some(rest) => match home {
            Some(home) => home.join(rest),
            None => {
                return Err(VolumeError::NoHome {
                    entry: volume.to_string(),
                });
            }
        },
        None => base.join(host),
    };
    Ok(normalize(&path))
}

/// A volume's container path, normalized; refused when relative, `/`, or over `/proc`, `/sys`, `/dev`.
fn volume_target(volume: &Volume) -> Result<PathBuf, VolumeError> {
    let entry = || volume.to_string();
    let path = Path::new(&volume.path);
    if !path.is_absolute() {
        return Err(VolumeError::RelativeTarget { entry: entry() });
    }
    let target = normalize(path);
    if target == Path::new("/") {
        return Err(VolumeError::ReservedTarget {
            entry: entry(),
            reserved: "/",
        });
    }
    if let Some(reserved) = RESERVED.iter().find(|r| target.starts_with(r)) {
        return Err(VolumeError::ReservedTarget {
            entry: entry(),
            reserved,
        });
    }
    Ok(target)
}

/// `.` and `..` taken out as text (`..` at `/` stays at `/`), as Docker cleans a volume's paths.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The volumes as a run records them: `HOST:CONTAINER[:ro]` with the host path resolved (as written
/// where it cannot be).
pub fn recorded_volumes(req: &JobRequest, host: &Host) -> Vec<String> {
    req.volumes
        .iter()
        .map(
            |v| match volume_source(v, &req.volume_base, host.home.as_deref()) {
                Ok(source) => Volume {
                    host: source.display().to_string(),
                    ..v.clone()
                }
                .to_string(),
                Err(_) => v.to_string(),
            },
        )
        .collect()
}
