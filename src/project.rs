//! The project: the directory whose `.dstack/workflows/` holds the workflows, whose files a run sees at
//! `/workflow`, and to which secrets and caches belong.
//!
//! It is the nearest ancestor of the current directory that has a `.dstack/` folder, else the git root,
//! else the current directory itself.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("cannot read the current directory")]
    CurrentDir(#[source] io::Error),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A project directory, canonical (symlinks resolved), so that one project has one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    dir: PathBuf,
}

impl Project {
    /// The project that the current directory belongs to.
    pub fn current() -> Result<Project, ProjectError> {
        let cwd = std::env::current_dir().map_err(ProjectError::CurrentDir)?;
        Project::find(&cwd)
    }

    /// The project that `start` belongs to: see the module's rule.
    pub fn find(start: &Path) -> Result<Project, ProjectError> {
        let start = fs::canonicalize(start).map_err(|source| ProjectError::Read {
            path: start.to_path_buf(),
            source,
        })?;
        let found = nearest_ancestor_with(&start, ".dstack", Path::is_dir)
            .or_else(|| nearest_ancestor_with(&start, ".git", Path::exists))
            .unwrap_or(start);
        Ok(Project { dir: found })
    }

    /// A project at exactly this directory (tests, and commands given a directory explicitly).
    pub fn at(dir: &Path) -> Result<Project, ProjectError> {
        let dir = fs::canonicalize(dir).map_err(|source| ProjectError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Project { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn workflows_dir(&self) -> PathBuf {
        self.dir.join(".dstack").join("workflows")
    }

    /// The workflow files (`*.yaml`, `*.yml`), sorted by name so that errors and listings are stable.
    /// A project without `.dstack/workflows/` has none.
    pub fn workflow_files(&self) -> Result<Vec<PathBuf>, ProjectError> {
        let dir = self.workflows_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ProjectError::Read { path: dir, source }),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ProjectError::Read {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let is_yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            if is_yaml && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// `path` as the user should read it in messages: relative to the project when inside it.
    pub fn display_path(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// A stable short identity for the project, derived from its canonical path: names its secrets
    /// file and its cache directory under the state root.
    pub fn id(&self) -> String {
        use std::os::unix::ffi::OsStrExt as _;
        let digest = Sha256::digest(self.dir.as_os_str().as_bytes());
        hex::encode(&digest[..12])
    }
}

fn nearest_ancestor_with(
    start: &Path,
    marker: &str,
    present: fn(&Path) -> bool,
) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| present(&dir.join(marker)))
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_dstack_folder_wins_over_the_git_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join(".git")).unwrap();
        fs::create_dir_all(root.join("app/.dstack/workflows")).unwrap();
        fs::create_dir_all(root.join("app/src/deep")).unwrap();
        let project = Project::find(&root.join("app/src/deep")).unwrap();
        assert_eq!(project.dir(), fs::canonicalize(root.join("app")).unwrap());
    }

    #[test]
    fn the_git_root_is_used_without_a_dstack_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join(".git"), "gitdir: elsewhere\n").unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        let project = Project::find(&root.join("a/b")).unwrap();
        assert_eq!(project.dir(), fs::canonicalize(root).unwrap());
    }

    #[test]
    fn otherwise_the_current_directory_is_the_project() {
        let tmp = tempfile::tempdir().unwrap();
        let here = tmp.path().join("plain");
        fs::create_dir_all(&here).unwrap();
        let project = Project::find(&here).unwrap();
        assert_eq!(project.dir(), fs::canonicalize(&here).unwrap());
    }

    #[test]
    fn workflow_files_are_yaml_and_yml_sorted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".dstack/workflows");
        fs::create_dir_all(&dir).unwrap();
        for name in ["b.yml", "a.yaml", "notes.txt", "c.yaml.bak"] {
            fs::write(dir.join(name), "").unwrap();
        }
        fs::create_dir(dir.join("d.yaml")).unwrap();
        let project = Project::find(tmp.path()).unwrap();
        let names: Vec<String> = project
            .workflow_files()
            .unwrap()
            .iter()
            .map(|p| project.display_path(p))
            .collect();
        assert_eq!(
            names,
            [".dstack/workflows/a.yaml", ".dstack/workflows/b.yml"]
        );
    }

    #[test]
    fn the_id_is_stable_and_differs_between_projects() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = Project::at(a.path()).unwrap();
        assert_eq!(pa.id(), Project::at(a.path()).unwrap().id());
        assert_ne!(pa.id(), Project::at(b.path()).unwrap().id());
        assert_eq!(pa.id().len(), 24);
    }
}
