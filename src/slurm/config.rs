//! `.dstack/slurm.yaml`: how the project's workflows become Slurm jobs.
//!
//! ```yaml
//! default: true                  # `dstack run NAME` submits to Slurm (`--local` runs here instead)
//! partition: gpu                 # --partition
//! account: proj42                # --account
//! qos: normal                    # --qos
//! time: "2:00:00"                # --time (Slurm's formats)
//! gres: {A100: a100, H100: h100} # the workflows' GPU names -> the cluster's GRES types
//! preemptible: {partition: scavenger, qos: low}   # where `interruptible: true` workflows go
//! state_dir: /shared/scratch/me/dstack           # run records, logs, artifacts, caches (shared)
//! store: /local/scratch/me/dstack                # the image store on the compute nodes
//! sbatch_options: ["--constraint=ib"]            # passed to sbatch as they are
//! ```
//! Paths may start with `~/` and use `$USER` and `$HOME`; relative ones are relative to the project.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SlurmError;
use crate::project::Project;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// Slurm is where `dstack run NAME` runs the project's workflows.
    #[serde(default)]
    pub default: bool,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub time: Option<String>,
    /// A workflow's `gpu.name` (matched ignoring case) -> the GRES type for `--gres=gpu:TYPE:N`.
    #[serde(default)]
    pub gres: BTreeMap<String, String>,
    pub preemptible: Option<Preemptible>,
    /// Holds `runs/` and `cache/` for the project's Slurm runs; default: the state root.
    pub state_dir: Option<PathBuf>,
    /// The state root of `dstack` on the compute nodes (image store, container scratch); default:
    /// node-local, see [`SlurmConfig::node_root`].
    pub store: Option<PathBuf>,
    #[serde(default)]
    pub sbatch_options: Vec<String>,
}

/// Where interruptible workflows are sent: a partition, a QOS, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preemptible {
    pub partition: Option<String>,
    pub qos: Option<String>,
}

pub const FILE: &str = "slurm.yaml";

impl SlurmConfig {
    /// The project's `.dstack/slurm.yaml` (or `.yml`), if it has one; paths made absolute.
    pub fn load(project: &Project) -> Result<Option<SlurmConfig>, SlurmError> {
        for name in [FILE, "slurm.yml"] {
            let path = project.dir().join(".dstack").join(name);
            // Read no more than the size limit allows: `parse` refuses a longer file.
            let read = runtime::text::read_capped(&path).and_then(|bytes| {
                String::from_utf8(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()))
            });
            let text = match read {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(SlurmError::Config {
                        path,
                        message: e.to_string(),
                    });
                }
            };
            return SlurmConfig::parse(&text, project.dir())
                .map(Some)
                .map_err(|message| SlurmError::Config { path, message });
        }
        Ok(None)
    }

    /// Parses the file's text; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<SlurmConfig, String> {
        // An empty file is an empty mapping.
        if text.trim().is_empty() {
            return Ok(SlurmConfig::default());
        }
        // Bounded before the YAML parser sees it, whose time grows with the square of the nesting depth.
        runtime::text::check_size(text.as_bytes())
            .and_then(|()| runtime::text::check_nesting(text))
            .map_err(|limit| format!("line {}: {limit}", limit.line()))?;
        let mut config: SlurmConfig =
            yaml_serde::from_str(text).map_err(|e| runtime::text::clip(&e.to_string()))?;
        for path in [&mut config.state_dir, &mut config.store]
            .into_iter()
            .flatten()
        {
            *path = expand(path, base);
        }
        if let Some(p) = &config.preemptible
            && p.partition.is_none()
            && p.qos.is_none()
        {
            return Err("`preemptible` needs a `partition`, a `qos`, or both".into());
        }
        Ok(config)
    }

    /// The GRES type for a workflow's GPU name: the configured mapping (names compared ignoring case),
    /// else the name in lower case, as most sites spell their types.
    pub fn gres_type(&self, gpu_name: &str) -> String {
        self.gres
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(gpu_name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| gpu_name.to_ascii_lowercase())
    }

    /// `dstack`'s state root on the compute nodes: `store`, else `/var/lib/dstack` for root and
    /// `/var/tmp/dstack-<user>` for others. Node-local by default: overlay upper directories cannot live
    /// on NFS, and a local store needs no cross-node locking.
    pub fn node_root(&self) -> PathBuf {
        if let Some(store) = &self.store {
            return store.clone();
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/dstack");
        }
        PathBuf::from(format!("/var/tmp/dstack-{}", user_name()))
    }
}

/// `~/x`, `$USER`, `${USER}`, `$HOME`, `${HOME}` expanded; relative paths joined to `base`.
fn expand(path: &Path, base: &Path) -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let mut text = path.to_string_lossy().into_owned();
    if text == "~" || text.starts_with("~/") {
        text = format!("{home}{}", &text[1..]);
    }
    let user = user_name();
    for (var, value) in [("USER", user.as_str()), ("HOME", home.as_str())] {
        text = text
            .replace(&format!("${{{var}}}"), value)
            .replace(&format!("${var}"), value);
    }
    base.join(text)
}

fn user_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| nix::unistd::geteuid().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_and_paths_are_made_absolute() {
        let text = "default: true\npartition: gpu\naccount: proj\nqos: normal\ntime: '1:00:00'\n\
                    gres: {A100: nvidia_a100}\npreemptible: {qos: low}\nstate_dir: shared\n\
                    store: /local/$USER/dstack\nsbatch_options: [--exclusive]\n";
        let c = SlurmConfig::parse(text, Path::new("/p")).unwrap();
        assert!(c.default);
        assert_eq!(c.partition.as_deref(), Some("gpu"));
        assert_eq!(c.time.as_deref(), Some("1:00:00"));
        assert_eq!(c.state_dir, Some(PathBuf::from("/p/shared")));
        assert_eq!(
            c.store,
            Some(PathBuf::from(format!("/local/{}/dstack", user_name())))
        );
        assert_eq!(c.preemptible.unwrap().qos.as_deref(), Some("low"));
        assert_eq!(c.sbatch_options, ["--exclusive"]);
    }

    #[test]
    fn deep_or_huge_files_are_refused_before_parsing() {
        let deep = format!("gres: {}", "{a: ".repeat(100_000));
        let err = SlurmConfig::parse(&deep, Path::new("/p")).unwrap_err();
        assert!(
            err.starts_with("line 1: it is nested deeper than 64"),
            "{err}"
        );
        let huge = format!("partition: {}\n", "x".repeat(2 << 20));
        let err = SlurmConfig::parse(&huge, Path::new("/p")).unwrap_err();
        assert!(err.contains("larger than 1 MiB"), "{err}");
    }

    #[test]
    fn unknown_keys_and_empty_preemptible_are_errors() {
        let err = SlurmConfig::parse("partiton: gpu\n", Path::new("/p")).unwrap_err();
        assert!(
            err.contains("partiton") && err.contains("partition"),
            "{err}"
        );
        let err = SlurmConfig::parse("preemptible: {}\n", Path::new("/p")).unwrap_err();
        assert!(err.contains("partition"), "{err}");
        assert_eq!(
            SlurmConfig::parse("", Path::new("/p")).unwrap(),
            SlurmConfig::default()
        );
    }

    #[test]
    fn gres_types_map_ignoring_case_else_lower_case() {
        let c = SlurmConfig::parse("gres: {A100: nvidia_a100}\n", Path::new("/p")).unwrap();
        assert_eq!(c.gres_type("a100"), "nvidia_a100");
        assert_eq!(c.gres_type("H100"), "h100");
    }
}
