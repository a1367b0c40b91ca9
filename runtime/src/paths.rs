//! Where the state root lives: the image store, containers' scratch space and run records all hang off it.
//!
//! `DSTACK_HOME` wins; otherwise root uses `/var/lib/dstack` and everyone else
//! `$XDG_DATA_HOME/dstack` (`~/.local/share/dstack`), so users and test runs never share state by accident.

use std::path::PathBuf;

/// The state root for this process, chosen from the environment and the effective user.
pub fn state_root() -> PathBuf {
    if let Some(home) = std::env::var_os("DSTACK_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if running_as_host_root() {
        return PathBuf::from("/var/lib/dstack");
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(data).join("dstack");
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp").join(format!("dstack-{}", nix::unistd::getuid())));
    home.join(".local/share/dstack")
}

/// True when this process is root in the initial user namespace (not merely root inside a rootless one).
pub fn running_as_host_root() -> bool {
    nix::unistd::geteuid().is_root() && !crate::paths::in_child_user_namespace()
}

/// True when this process runs in a user namespace other than the initial one, as rootless `dstack` does
/// after it re-executes itself into one.
pub fn in_child_user_namespace() -> bool {
    // The initial namespace maps the whole 32-bit range starting at 0; any other mapping is a child's.
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => !map.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields == ["0", "0", "4294967295"]
        }),
        Err(_) => false,
    }
}
