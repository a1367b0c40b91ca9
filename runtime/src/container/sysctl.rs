//! The spec's `linux.sysctl`: written under `/proc/sys` after pivot_root, before it is made read-only.
//! The kernel allows only namespaced keys (net.*, kernel.shm*, kernel.msg*, fs.mqueue.*...) from inside.

use std::collections::HashMap;

pub(super) fn apply(sysctl: &HashMap<String, String>) -> Result<(), String> {
    for (key, value) in sysctl {
        if key.contains("..") || key.starts_with('/') {
            return Err(format!("sysctl {key:?}: not a kernel parameter name"));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
    }
    Ok(())
}
