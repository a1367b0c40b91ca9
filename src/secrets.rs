//! A project's secrets: names and values that workflows use as `${{ secrets.NAME }}` and that runs also
//! get as environment variables.
//!
//! They live under the state root, one file per project (named by the project's id, which is derived from
//! its canonical path): `<state root>/secrets/<id>.json`, mode 0600 in a 0700 directory, replaced
//! atomically under a lock so that two shells adding secrets at once both land.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::project::Project;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "`{0}` is not a valid secret name: use letters, digits and `_`, not starting with a digit (e.g. `HF_TOKEN`)"
    )]
    BadName(String),
    #[error("no secret named `{0}` in this project (see `dstack secrets list`)")]
    NotFound(String),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    // The parser's words sit inside the advice, so they are no `source()`.
    #[error("{}: the secrets file is damaged ({reason}); remove it and add the secrets again", path.display())]
    Damaged {
        path: PathBuf,
        reason: serde_json::Error,
    },
}

/// True for names a secret may have: `[A-Za-z_][A-Za-z0-9_]*` (they become environment variables).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The on-disk form. `project` says whose secrets these are, for people reading the directory.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SecretsFile {
    project: PathBuf,
    secrets: BTreeMap<String, String>,
}

/// The secrets of one project.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
    file: PathBuf,
    project: PathBuf,
}

impl SecretStore {
    pub fn for_project(state_root: &Path, project: &Project) -> SecretStore {
        let dir = state_root.join("secrets");
        SecretStore {
            file: dir.join(format!("{}.json", project.id())),
            dir,
            project: project.dir().to_path_buf(),
        }
    }

    /// Every secret, name to value.
    pub fn load(&self) -> Result<BTreeMap<String, String>, SecretsError> {
        Ok(self.read()?.secrets)
    }

    /// The secrets' names, sorted.
    pub fn names(&self) -> Result<Vec<String>, SecretsError> {
        Ok(self.load()?.into_keys().collect())
    }

    /// Adds `name` or replaces its value.
    pub fn set(&self, name: &str, value: &str) -> Result<(), SecretsError> {
        if !valid_name(name) {
            return Err(SecretsError::BadName(name.to_string()));
        }
        self.update(|secrets| {
            secrets.insert(name.to_string(), value.to_string());
            Ok(())
        })
    }

    pub fn delete(&self, name: &str) -> Result<(), SecretsError> {
        self.update(|secrets| match secrets.remove(name) {
            Some(_) => Ok(()),
            None => Err(SecretsError::NotFound(name.to_string())),
        })
    }

    fn read(&self) -> Result<SecretsFile, SecretsError> {
        match fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|reason| SecretsError::Damaged {
                path: self.file.clone(),
                reason,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SecretsFile::default()),
            Err(source) => Err(self.io(&self.file, source)),
        }
    }

    fn update(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), SecretsError>,
    ) -> Result<(), SecretsError> {
        fsutil::private_dir(&self.dir, 0o700).map_err(|e| self.io(&self.dir, e))?;
        let lock_path = self.file.with_extension("lock");
        let _lock = fsutil::lock(&lock_path).map_err(|e| self.io(&lock_path, e))?;
        let mut file = self.read()?;
        change(&mut file.secrets)?;
        file.project = self.project.clone();
        let bytes = serde_json::to_vec_pretty(&file).expect("a map of strings always serializes");
        fsutil::write_atomic(&self.file, &bytes, 0o600).map_err(|e| self.io(&self.file, e))
    }

    fn io(&self, path: &Path, source: io::Error) -> SecretsError {
        SecretsError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn store(state: &Path, project_dir: &Path) -> SecretStore {
        SecretStore::for_project(state, &Project::at(project_dir).unwrap())
    }

    #[test]
    fn add_list_replace_delete() {
        let state = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let s = store(state.path(), project.path());
        assert!(s.names().unwrap().is_empty());
        s.set("B_TOKEN", "one").unwrap();
        s.set("A_USER", "alice").unwrap();
        s.set("B_TOKEN", "two").unwrap();
        assert_eq!(s.names().unwrap(), ["A_USER", "B_TOKEN"]);
        assert_eq!(s.load().unwrap()["B_TOKEN"], "two");
        s.delete("A_USER").unwrap();
        assert_eq!(s.names().unwrap(), ["B_TOKEN"]);
        let err = s.delete("A_USER").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no secret named `A_USER` in this project (see `dstack secrets list`)"
        );
    }

    #[test]
    fn stored_privately_with_mode_0600_in_a_0700_directory() {
        let state = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let s = store(state.path(), project.path());
        s.set("TOKEN", "hunter2").unwrap();
        let dir_mode = fs::metadata(state.path().join("secrets")).unwrap().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(fs::metadata(&s.file).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn secrets_belong_to_their_project() {
        let state = tempfile::tempdir().unwrap();
        let (p1, p2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        store(state.path(), p1.path()).set("TOKEN", "one").unwrap();
        assert!(store(state.path(), p2.path()).names().unwrap().is_empty());
        assert_eq!(store(state.path(), p1.path()).names().unwrap(), ["TOKEN"]);
    }

    #[test]
    fn names_are_validated() {
        for good in ["TOKEN", "_x", "a1_B2"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "1TOKEN", "MY-TOKEN", "A.B", "A B", "É"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let state = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let err = store(state.path(), project.path())
            .set("MY-TOKEN", "x")
            .unwrap_err();
        assert!(matches!(err, SecretsError::BadName(_)));
    }

    #[test]
    fn a_damaged_file_says_what_to_do() {
        let state = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let s = store(state.path(), project.path());
        s.set("TOKEN", "x").unwrap();
        fs::write(&s.file, "{not json").unwrap();
        let err = s.names().unwrap_err().to_string();
        assert!(err.contains("the secrets file is damaged"), "{err}");
    }
}
