//! Caches: directories that persist between runs of one workflow in one project,
//! `<state root>/cache/<project id>/<workflow>/<path>`, bind-mounted into the container and empty the
//! first time.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::copy;
use crate::project::Project;

/// The directory holding every cache path of `workflow` in `project`.
pub fn workflow_dir(state_root: &Path, project: &Project, workflow: &str) -> PathBuf {
    state_root.join("cache").join(project.id()).join(workflow)
}

/// The host directory for one cache path (its key, see `ContainerPath::key`), created if needed.
pub fn prepare(
    state_root: &Path,
    project: &Project,
    workflow: &str,
    key: &str,
) -> io::Result<PathBuf> {
    let dir = workflow_dir(state_root, project, workflow).join(key);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Empties the caches of `workflow` in `project`; false when there were none.
pub fn prune(
    state_root: &Path,
    project: &Project,
    workflow: &str,
) -> Result<bool, copy::CopyError> {
    let dir = workflow_dir(state_root, project, workflow);
    if fs::symlink_metadata(&dir).is_err() {
        return Ok(false);
    }
    copy::remove_tree(&dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_are_per_project_and_workflow_and_prunable() {
        let state = tempfile::tempdir().unwrap();
        let (p1, p2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (p1, p2) = (
            Project::at(p1.path()).unwrap(),
            Project::at(p2.path()).unwrap(),
        );
        let a = prepare(state.path(), &p1, "train", "~/.cache/pip").unwrap();
        fs::write(a.join("wheel"), "x").unwrap();
        let again = prepare(state.path(), &p1, "train", "~/.cache/pip").unwrap();
        assert_eq!(a, again);
        assert!(
            again.join("wheel").exists(),
            "a cache persists between runs"
        );
        let other_project = prepare(state.path(), &p2, "train", "~/.cache/pip").unwrap();
        assert_ne!(a, other_project);
        let other_workflow = prepare(state.path(), &p1, "serve", "~/.cache/pip").unwrap();
        assert_ne!(a, other_workflow);
        assert!(prune(state.path(), &p1, "train").unwrap());
        assert!(!a.exists());
        assert!(other_workflow.exists());
        assert!(!prune(state.path(), &p1, "train").unwrap());
    }
}
