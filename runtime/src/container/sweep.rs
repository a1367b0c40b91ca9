//! Leftovers of supervisors that were SIGKILLed: their containers' mounts died with the mount namespace,
//! but their scratch directories remain. A directory whose lock is not held belongs to nobody.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::scratch::{LOCK_FILE, lock_exclusive};

/// A directory without a lock file this old was abandoned between its creation and its lock.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// Removes the scratch directories under `<state_root>/containers/` that no live process holds, and the
/// cgroups named after them; returns the ids removed. Only those cgroups: cgroups are shared by every state
/// root on the machine, and one whose container lives under another state root is not ours to judge.
pub fn sweep_leftovers(state_root: &Path) -> Vec<String> {
    let dead = sweep_dirs(state_root);
    if !dead.is_empty()
        && let Err(e) = crate::cgroup::sweep_leftovers(|name| !dead.iter().any(|d| d == name))
    {
        tracing::debug!("sweeping cgroups: {e}");
    }
    dead
}

fn sweep_dirs(state_root: &Path) -> Vec<String> {
    let dir = state_root.join("containers");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = match File::open(path.join(LOCK_FILE)) {
            Ok(lock) => lock_exclusive(&lock, true).is_ok(),
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > UNLOCKED_GRACE),
        };
        if !stale {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(
                    "removed the leftovers of container {}",
                    entry.file_name().to_string_lossy()
                );
                removed.push(entry.file_name().to_string_lossy().into_owned());
            }
            Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::super::scratch::ScratchDir;
    use super::*;

    #[test]
    fn only_unlocked_directories_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let live = ScratchDir::create(root.path(), "live").unwrap();
        let dead = root.path().join("containers/dead");
        std::fs::create_dir_all(dead.join("upper")).unwrap();
        std::fs::write(dead.join(LOCK_FILE), "").unwrap();
        assert_eq!(sweep_dirs(root.path()), vec!["dead".to_string()]);
        assert!(live.path().exists());
        assert!(!dead.exists());
    }
}
