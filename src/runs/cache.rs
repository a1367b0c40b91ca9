//! Caches: directories that persist between runs of one workflow in one project,
//! `<state root>/cache/<project id>/<workflow>/<path>`, bind-mounted into the container and empty the
//! first time.

use std::fs;
use std::path::{Path, PathBuf};

use super::copy;
use crate::project::Project;

/// The directory holding every cache path of `workflow` in `project`.
pub fn workflow_dir(state_root: &Path, project: &Project, workflow: &str) -> PathBuf {
    state_root.join("cache").join(project.id()).join(workflow)
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
        let a = workflow_dir(state.path(), &p1, "train");
        fs::create_dir_all(a.join("~/.cache/pip")).unwrap();
        fs::write(a.join("~/.cache/pip/wheel"), "x").unwrap();
        assert_eq!(
            a,
            workflow_dir(state.path(), &p1, "train"),
            "the same place every run"
        );
        assert_ne!(a, workflow_dir(state.path(), &p2, "train"));
        let other_workflow = workflow_dir(state.path(), &p1, "serve");
        assert_ne!(a, other_workflow);
        fs::create_dir_all(&other_workflow).unwrap();
        assert!(prune(state.path(), &p1, "train").unwrap());
        assert!(!a.exists());
        assert!(other_workflow.exists());
        assert!(!prune(state.path(), &p1, "train").unwrap());
    }
}
