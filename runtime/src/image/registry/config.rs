//! containers-registries.conf(5): which registries are insecure or blocked, and the mirrors to try first.
//!
//! The file podman users already have: `$CONTAINERS_REGISTRIES_CONF`, else
//! `~/.config/containers/registries.conf` when it exists, else `/etc/containers/registries.conf`, plus the
//! drop-ins in `registries.conf.d/` next to the default files. Version 2 (`[[registry]]` tables with
//! `prefix`, `location`, `insecure`, `blocked`, `[[registry.mirror]]`) and the version 1 lists
//! (`[registries.insecure]`, `[registries.block]`) are read; everything else in the file is ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::RegistryError;

const SYSTEM_FILE: &str = "/etc/containers/registries.conf";
const SYSTEM_DROP_INS: &str = "/etc/containers/registries.conf.d";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileV2 {
    #[serde(default)]
    registry: Vec<RegistryEntry>,
    #[serde(default)]
    registries: Option<V1Tables>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct V1Tables {
    #[serde(default)]
    insecure: Option<V1List>,
    #[serde(default)]
    block: Option<V1List>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct V1List {
    #[serde(default)]
    registries: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegistryEntry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<MirrorEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MirrorEntry {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: Option<String>,
}

/// The registries.conf entries that apply to a process, in the order they were read.
#[derive(Debug, Clone, Default)]
pub(crate) struct RegistriesConf {
    entries: Vec<RegistryEntry>,
}

/// One place to pull a repository from: a registry host as written (`docker.io`, `mirror:5000`) and the
/// repository path there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointSpec {
    pub registry: String,
    pub repository: String,
    pub insecure: bool,
    pub is_mirror: bool,
}

/// Where to pull a repository from: mirrors in order, then the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub endpoints: Vec<EndpointSpec>,
    pub blocked: bool,
    /// The entry's prefix, for messages about a blocked registry.
    pub prefix: Option<String>,
}

impl RegistriesConf {
    /// The configuration from an explicit file (only that file; a missing one is empty), else from the
    /// environment and the default locations.
    pub fn load(explicit: Option<&Path>) -> Result<RegistriesConf, RegistryError> {
        let mut conf = RegistriesConf::default();
        let from_env = std::env::var_os("CONTAINERS_REGISTRIES_CONF")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if let Some(path) = explicit.map(Path::to_path_buf).or(from_env) {
            conf.read_file(&path)?;
            return Ok(conf);
        }
        // podman reads the per-user file under $HOME, whatever XDG_CONFIG_HOME says.
        let user_dir = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|h| PathBuf::from(h).join(".config/containers"));
        let user_file = user_dir.as_ref().map(|d| d.join("registries.conf"));
        match user_file.filter(|f| f.exists()) {
            Some(f) => conf.read_file(&f)?,
            None => conf.read_file(Path::new(SYSTEM_FILE))?,
        }
        let mut drop_in_dirs = vec![PathBuf::from(SYSTEM_DROP_INS)];
        drop_in_dirs.extend(user_dir.map(|d| d.join("registries.conf.d")));
        for dir in drop_in_dirs {
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = read
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            files.sort();
            for f in files {
                conf.read_file(&f)?;
            }
        }
        Ok(conf)
    }

    fn read_file(&mut self, path: &Path) -> Result<(), RegistryError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(RegistryError::Config {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        self.add(&text).map_err(|reason| RegistryError::Config {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Add the entries of one file's text; an entry with the same prefix as an earlier one replaces it
    /// (drop-ins override the main file).
    fn add(&mut self, text: &str) -> Result<(), String> {
        let file: FileV2 = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut new = file.registry;
        if let Some(v1) = file.registries {
            for host in v1.insecure.map(|l| l.registries).unwrap_or_default() {
                new.push(RegistryEntry {
                    location: Some(host),
                    insecure: true,
                    ..Default::default()
                });
            }
            for host in v1.block.map(|l| l.registries).unwrap_or_default() {
                new.push(RegistryEntry {
                    location: Some(host),
                    blocked: true,
                    ..Default::default()
                });
            }
        }
        for entry in new {
            let prefix = entry_prefix(&entry)
                .ok_or("a [[registry]] table has neither prefix nor location")?;
            if prefix.starts_with("*.") && entry.location.as_deref().is_some_and(|l| !l.is_empty())
            {
                return Err(format!(
                    "the [[registry]] with wildcard prefix {prefix:?} cannot have a location"
                ));
            }
            for m in &entry.mirror {
                match m.pull_from_mirror.as_deref() {
                    None | Some("all" | "digest-only" | "tag-only") => {}
                    Some(other) => {
                        return Err(format!(
                            "pull-from-mirror = {other:?} in a mirror of {prefix:?}: use \"all\", \"digest-only\" or \
                             \"tag-only\""
                        ));
                    }
                }
            }
            self.entries
                .retain(|e| entry_prefix(e).as_deref() != Some(prefix.as_str()));
            self.entries.push(entry);
        }
        Ok(())
    }

    /// Where to pull `registry/repository` from. `by_digest` says whether the image is named by digest
    /// (mirrors marked `digest-only` are used only then, `tag-only` ones only otherwise).
    pub fn plan(&self, registry: &str, repository: &str, by_digest: bool) -> Plan {
        let name = format!("{registry}/{repository}");
        let best = self
            .entries
            .iter()
            .filter_map(|e| {
                let prefix = entry_prefix(e)?;
                prefix_matches(&prefix, registry, &name).then_some((prefix, e))
            })
            .max_by_key(|(prefix, _)| prefix.len());
        let Some((prefix, entry)) = best else {
            return Plan {
                endpoints: vec![EndpointSpec {
                    registry: registry.to_string(),
                    repository: repository.to_string(),
                    insecure: false,
                    is_mirror: false,
                }],
                blocked: false,
                prefix: None,
            };
        };
        // The part of the name after the prefix, kept when the prefix is rewritten to a location.
        let rest = if prefix.starts_with("*.") {
            format!("/{repository}")
        } else {
            name[prefix.len()..].to_string()
        };
        let rewrite = |location: &str| -> (String, String) {
            let full = format!("{}{rest}", location.trim_end_matches('/'));
            match full.split_once('/') {
                Some((host, repo)) => (host.to_string(), repo.to_string()),
                None => (full, String::new()),
            }
        };
        let mut endpoints = Vec::new();
        for m in &entry.mirror {
            let policy = m
                .pull_from_mirror
                .as_deref()
                .unwrap_or(if entry.mirror_by_digest_only {
                    "digest-only"
                } else {
                    "all"
                });
            let usable = match policy {
                "digest-only" => by_digest,
                "tag-only" => !by_digest,
                _ => true,
            };
            if usable {
                let (host, repo) = rewrite(&m.location);
                endpoints.push(EndpointSpec {
                    registry: host,
                    repository: repo,
                    insecure: m.insecure,
                    is_mirror: true,
                });
            }
        }
        let (host, repo) = match entry.location.as_deref().filter(|l| !l.is_empty()) {
            Some(location) if !prefix.starts_with("*.") => rewrite(location),
            _ => (registry.to_string(), repository.to_string()),
        };
        endpoints.push(EndpointSpec {
            registry: host,
            repository: repo,
            insecure: entry.insecure,
            is_mirror: false,
        });
        Plan {
            endpoints,
            blocked: entry.blocked,
            prefix: Some(prefix),
        }
    }
}

fn entry_prefix(e: &RegistryEntry) -> Option<String> {
    e.prefix
        .as_deref()
        .or(e.location.as_deref())
        .filter(|p| !p.is_empty())
        .map(|p| p.trim_end_matches('/').to_string())
}

/// `prefix` matches the name itself or a path below it (`host/ns` matches `host/ns/app`, not
/// `host/nsx`); `*.example.com` matches any host under `example.com`.
fn prefix_matches(prefix: &str, registry: &str, name: &str) -> bool {
    if let Some(domain) = prefix.strip_prefix("*.") {
        let host = registry.split(':').next().unwrap_or(registry);
        return host.ends_with(&format!(".{domain}"));
    }
    name == prefix || name.starts_with(&format!("{prefix}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.add(text).unwrap();
        c
    }

    fn spec(registry: &str, repository: &str, insecure: bool, is_mirror: bool) -> EndpointSpec {
        EndpointSpec {
            registry: registry.into(),
            repository: repository.into(),
            insecure,
            is_mirror,
        }
    }

    #[test]
    fn no_entry_means_the_registry_itself() {
        let p = RegistriesConf::default().plan("ghcr.io", "org/app", false);
        assert_eq!(p.endpoints, [spec("ghcr.io", "org/app", false, false)]);
        assert!(!p.blocked);
    }

    #[test]
    fn mirrors_come_first_and_rewrite_the_prefix() {
        let c = conf(
            r#"
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "mirror.example:5000/hub"
insecure = true

[[registry.mirror]]
location = "127.0.0.1:6000"

[aliases]
"ubuntu" = "docker.io/library/ubuntu"
"#,
        );
        let p = c.plan("docker.io", "library/ubuntu", false);
        assert_eq!(
            p.endpoints,
            [
                spec("mirror.example:5000", "hub/library/ubuntu", true, true),
                spec("127.0.0.1:6000", "library/ubuntu", false, true),
                spec("docker.io", "library/ubuntu", false, false),
            ]
        );
        assert!(!p.blocked);
        // Other registries are untouched.
        assert_eq!(c.plan("quay.io", "a/b", false).endpoints.len(), 1);
    }

    #[test]
    fn longest_prefix_wins_and_location_rewrites() {
        let c = conf(
            r#"
[[registry]]
location = "reg.example"
insecure = true

[[registry]]
prefix = "reg.example/team"
location = "other.example:5000/mirrored-team"

[[registry]]
prefix = "bad.example"
blocked = true
"#,
        );
        let p = c.plan("reg.example", "team/app", false);
        assert_eq!(
            p.endpoints,
            [spec(
                "other.example:5000",
                "mirrored-team/app",
                false,
                false
            )]
        );
        let p = c.plan("reg.example", "teamx/app", false);
        assert_eq!(p.endpoints, [spec("reg.example", "teamx/app", true, false)]);
        let p = c.plan("bad.example", "x", false);
        assert!(p.blocked);
        assert_eq!(p.prefix.as_deref(), Some("bad.example"));
    }

    #[test]
    fn wildcard_prefixes_and_v1_lists() {
        let c = conf(
            r#"
[[registry]]
prefix = "*.corp.example"
insecure = true

[registries.insecure]
registries = ["old.example:5000"]

[registries.block]
registries = ["evil.example"]
"#,
        );
        assert!(c.plan("a.corp.example:5000", "x", false).endpoints[0].insecure);
        assert!(!c.plan("corp.example", "x", false).endpoints[0].insecure);
        assert!(c.plan("old.example:5000", "x", false).endpoints[0].insecure);
        assert!(c.plan("evil.example", "x/y", false).blocked);
    }

    #[test]
    fn pull_from_mirror_policies() {
        let c = conf(
            r#"
[[registry]]
location = "reg.example"
[[registry.mirror]]
location = "digests.example"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.example"
pull-from-mirror = "tag-only"
"#,
        );
        let hosts = |by_digest| -> Vec<String> {
            c.plan("reg.example", "a", by_digest)
                .endpoints
                .into_iter()
                .map(|e| e.registry)
                .collect()
        };
        assert_eq!(hosts(true), ["digests.example", "reg.example"]);
        assert_eq!(hosts(false), ["tags.example", "reg.example"]);
        let old = conf(
            "[[registry]]\nlocation = \"r.example\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.example\"\n",
        );
        assert_eq!(old.plan("r.example", "a", false).endpoints.len(), 1);
        assert_eq!(old.plan("r.example", "a", true).endpoints.len(), 2);
    }

    #[test]
    fn drop_ins_replace_entries_with_the_same_prefix() {
        let mut c = conf("[[registry]]\nlocation = \"r.example\"\ninsecure = true\n");
        c.add("[[registry]]\nlocation = \"r.example\"\nblocked = true\n")
            .unwrap();
        let p = c.plan("r.example", "a", false);
        assert!(p.blocked && !p.endpoints[0].insecure);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let mut c = RegistriesConf::default();
        assert!(
            c.add("[[registry]]\ninsecure = true\n")
                .unwrap_err()
                .contains("neither prefix nor location")
        );
        assert!(c.add("[[registry]\n").is_err());
        assert!(
            c.add("[[registry]]\nlocation = \"a\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"x\"\n")
                .unwrap_err()
                .contains("pull-from-mirror")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.conf");
        std::fs::write(&path, "[[registry]\n").unwrap();
        let e = RegistriesConf::load(Some(&path)).unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        // A missing explicit file is an empty configuration.
        assert!(RegistriesConf::load(Some(&dir.path().join("none.conf"))).is_ok());
    }
}
