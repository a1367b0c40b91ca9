//! Small helpers for cgroup interface files: one write per value (the kernel parses each write whole) and
//! "key value" readings.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::CgroupError;

/// How long cleanup waits for killed processes to leave a cgroup.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Writes `value` to `dir/file` in one `write(2)`; a value the kernel rejects becomes `CgroupError::Refused`.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    write_raw(&path, value).map_err(|source| classify(path, value, source))
}

/// Writes each of `values` to `dir/file` in a `write(2)` of its own, through one open (a list file such
/// as v1's `devices.allow` takes one entry a write).
pub(crate) fn write_each(dir: &Path, file: &str, values: &[String]) -> Result<(), CgroupError> {
    let path = dir.join(file);
    let mut handle = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|source| classify(path.clone(), &values.join(", "), source))?;
    for value in values {
        match handle.write(value.as_bytes()) {
            Ok(n) if n == value.len() => {}
            Ok(_) => {
                let short = io::Error::new(io::ErrorKind::WriteZero, "short write");
                return Err(classify(path, value, short));
            }
            Err(source) => return Err(classify(path, value, source)),
        }
    }
    Ok(())
}

/// Writes without classifying, for callers that react to particular errnos.
pub(crate) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    let written = file.write(value.as_bytes())?;
    if written != value.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
    }
    Ok(())
}

/// Turns the errnos with which the kernel rejects a value into a one-line `Refused` naming file and value.
pub(crate) fn classify(path: PathBuf, value: &str, source: io::Error) -> CgroupError {
    let reason = match source.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EBUSY) => {
            "the value is below what the cgroup already uses, or the cgroup is busy"
        }
        Some(Errno::EINVAL) | Some(Errno::ERANGE) | Some(Errno::EOVERFLOW) => {
            "the value is out of range"
        }
        Some(Errno::EOPNOTSUPP) => "the kernel does not support it here",
        _ => {
            return CgroupError::Write {
                path,
                value: value.to_string(),
                source,
            };
        }
    };
    CgroupError::Refused {
        file: path,
        value: value.to_string(),
        reason: format!("{reason} ({source})"),
    }
}

/// Reads a whole interface file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(text)
}

/// The number after `key` in a "key value" file such as `memory.events` or `cpu.stat`.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next() == Some(key))
            .then(|| fields.next()?.parse().ok())
            .flatten()
    })
}

/// Reads `key` from `dir/file`, or `None` when the file or key is absent.
pub(crate) fn read_keyed(dir: &Path, file: &str, key: &str) -> Option<u64> {
    keyed(&read(&dir.join(file)).ok()?, key)
}

/// Reads a file holding one number (`cpuacct.usage`, `memory.peak`).
pub(crate) fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read(&dir.join(file)).ok()?.trim().parse().ok()
}

/// The pids listed in `dir/cgroup.procs` (empty when the cgroup is gone).
pub(crate) fn procs(dir: &Path) -> Vec<i32> {
    read(&dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs whatever runs in `dirs` until they are empty (a fork bomb may add processes while we kill).
/// Returns false when processes remain after `KILL_WAIT`.
pub(crate) fn kill_until_empty(dirs: &[&Path]) -> bool {
    wait_until(|| {
        let pids: Vec<i32> = dirs.iter().flat_map(|d| procs(d)).collect();
        for &pid in &pids {
            // ESRCH: it exited meanwhile; anything else (EPERM) shows up again as a remaining pid.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        pids.is_empty()
    })
}

/// Polls `done` with a short sleep until it holds or `KILL_WAIT` passes.
pub(crate) fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > KILL_WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes an (empty) cgroup directory, retrying while the kernel still tears down exiting tasks.
pub(crate) fn rmdir(dir: &Path) -> Result<(), CgroupError> {
    let mut last = None;
    let removed = wait_until(|| match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            last = Some(e);
            false
        }
    });
    match (removed, last) {
        (true, _) => Ok(()),
        (false, Some(e)) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::StillBusy {
            path: dir.to_path_buf(),
        }),
        (false, Some(source)) => Err(CgroupError::Remove {
            path: dir.to_path_buf(),
            source,
        }),
        (false, None) => Err(CgroupError::StillBusy {
            path: dir.to_path_buf(),
        }),
    }
}

/// `dir` and every cgroup below it, parents first.
pub(crate) fn collect_tree(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    for sub in subdirs(dir) {
        collect_tree(&sub, out);
    }
}

/// Removes `dir` and the (empty) cgroups a job may have created below it, children first.
pub(crate) fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    for sub in subdirs(dir) {
        rmdir_tree(&sub)?;
    }
    rmdir(dir)
}

/// Child cgroups: the subdirectories (interface files are regular files).
pub(crate) fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// True when the directory and the named files in it are writable by this process.
pub(crate) fn writable(dir: &Path, files: &[&str]) -> bool {
    use nix::unistd::{AccessFlags, access};
    access(dir, AccessFlags::W_OK).is_ok()
        && files
            .iter()
            .all(|f| access(&dir.join(f), AccessFlags::W_OK).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_finds_the_value_after_the_key() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom_kill"), Some(1));
        assert_eq!(keyed(events, "max"), Some(12));
        assert_eq!(keyed(events, "oom_group"), None);
    }

    #[test]
    fn a_rejected_value_names_file_and_value() {
        let err = classify(
            PathBuf::from("/sys/fs/cgroup/x/memory.max"),
            "4096",
            io::Error::from_raw_os_error(libc::EBUSY),
        );
        let text = err.to_string();
        assert!(
            text.contains("/sys/fs/cgroup/x/memory.max") && text.contains("4096"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }
}
