//! Leftovers of supervisors that were SIGKILLed: their containers' mounts died with the mount namespace,
//! but their scratch directories remain. A directory whose lock is not held belongs to nobody.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::fsops::{FileLock, LockMode};

/// A hidden `.new-<id>` directory younger than this may be between its creation and its rename: leave it.
const NEWBORN: Duration = Duration::from_secs(60);

/// Removes the scratch directories under `<state_root>/containers/` that no live process holds, and the
/// cgroups named after them; returns the ids removed. Only those cgroups: cgroups are shared by every state
/// root on the machine, and one whose container lives under another state root is not ours to judge.
pub fn sweep_leftovers(state_root: &Path) -> Vec<String> {
    let dead = sweep_dirs(state_root, NEWBORN);
    if !dead.is_empty()
        && let Err(e) = crate::cgroup::sweep_leftovers(|name| !dead.iter().any(|d| d == name))
    {
        tracing::debug!("sweeping cgroups: {}", crate::report::Chain(&e));
    }
    dead
}

fn sweep_dirs(state_root: &Path, newborn_age: Duration) -> Vec<String> {
    let dir = state_root.join("containers");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // A recycled scratch directory is nobody's and clean: it waits for a run to claim it.
        if name.starts_with(super::scratch::FREE_PREFIX) {
            continue;
        }
        let hidden = name.starts_with('.');
        let newborn = hidden
            && entry
                .metadata()
                .and_then(|m| m.created().or_else(|_| m.modified()))
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_none_or(|age| age < newborn_age);
        let unlocked = File::open(&path)
            .and_then(|d| FileLock::try_on(d, LockMode::Exclusive))
            .is_ok_and(|taken| taken.is_ok());
        if newborn || !unlocked {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!("removed the leftovers of container {name}");
                removed.push(name);
            }
            Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::super::ContainerError;
    use super::super::scratch::ScratchDir;
    use super::*;

    #[test]
    fn only_unlocked_directories_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let live = ScratchDir::create(root.path(), "live").unwrap();
        let dead = root.path().join("containers/dead");
        std::fs::create_dir_all(dead.join("upper")).unwrap();
        let being_made = root.path().join("containers/.new-abc");
        std::fs::create_dir_all(&being_made).unwrap();
        assert_eq!(sweep_dirs(root.path(), NEWBORN), vec!["dead".to_string()]);
        assert!(live.path().exists());
        assert!(!dead.exists());
        assert!(being_made.exists(), "a directory being made was swept");
        assert_eq!(
            sweep_dirs(root.path(), Duration::ZERO),
            vec![".new-abc".to_string()]
        );
        assert!(matches!(
            ScratchDir::create(root.path(), "live"),
            Err(ContainerError::Exists(_))
        ));
    }
}
