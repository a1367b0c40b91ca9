//! Allocation across the dstack jobs of one machine (per state root): `gpu/<uuid>.lease` is locked with flock
//! by the job that has the GPU, for as long as it runs, and names the holder. The kernel drops the lock when the
//! holder dies, however it dies, so a killed job's GPUs are free again with nothing to clean up. `gpu/lock` is
//! held while choosing, so two jobs asking at once never split the GPUs between them and both fail.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use super::inventory::Gpu;
use super::{GpuError, GpuRequest, select};
use crate::cgroup::DeviceRule;
use crate::fsops::{FileLock, LockMode};

/// GPUs given to one job, with the cgroup rules for their device nodes. Dropping it frees the GPUs: keep it
/// until the job has exited.
#[derive(Debug)]
pub struct GpuLease {
    pub(crate) gpus: Vec<Gpu>,
    pub(crate) rules: Vec<DeviceRule>,
    _locks: Vec<FileLock>,
}

impl GpuLease {
    /// No GPUs.
    pub fn none() -> GpuLease {
        GpuLease {
            gpus: Vec::new(),
            rules: Vec::new(),
            _locks: Vec::new(),
        }
    }

    /// The GPUs given, in index order.
    pub fn gpus(&self) -> &[Gpu] {
        &self.gpus
    }

    /// Device-cgroup rules for the injected nodes, for the job's `DevicePolicy` (empty rootless, where the
    /// kernel checks the device files' permissions instead).
    pub fn device_rules(&self) -> &[DeviceRule] {
        &self.rules
    }
}

/// Takes `request.count` GPUs of `gpus` that fit the request and no other job holds.
pub(crate) fn acquire(
    dir: &Path,
    gpus: &[Gpu],
    request: &GpuRequest,
) -> Result<GpuLease, GpuError> {
    crate::private::create_dir_all(dir).map_err(GpuError::io("create", dir))?;
    let lock_path = dir.join("lock");
    let lock = open(&lock_path)?;
    let _choosing =
        FileLock::wait_on(lock, LockMode::Exclusive).map_err(GpuError::io("lock", &lock_path))?;
    let mut held = Vec::new();
    let mut listing = Vec::new();
    for gpu in gpus {
        let path = dir.join(format!("{}.lease", file_name(gpu)));
        match FileLock::try_on(open(&path)?, LockMode::Exclusive)
            .map_err(GpuError::io("lock", &path))?
        {
            Ok(lock) => {
                listing.push(gpu.describe());
                if select::fits(gpu, request) {
                    held.push((gpu.clone(), lock));
                }
            }
            Err(mut file) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                let owner = if owner.is_empty() {
                    "another dstack job"
                } else {
                    owner
                };
                listing.push(format!("{} [in use by {owner}]", gpu.describe()));
            }
        }
    }
    let count = request.count as usize;
    if held.len() < count {
        return Err(GpuError::Unmet {
            request: select::describe(request),
            listing: listing.join(", "),
        });
    }
    held.truncate(count);
    let mut lease = GpuLease::none();
    for (gpu, mut lock) in held {
        let owner = if request.owner.is_empty() {
            format!("pid {}", std::process::id())
        } else {
            request.owner.clone()
        };
        let path = dir.join(format!("{}.lease", file_name(&gpu)));
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| lock.write_all(format!("{owner}\n").as_bytes()))
            .map_err(GpuError::io("write", &path))?;
        lease.gpus.push(gpu);
        lease._locks.push(lock);
    }
    Ok(lease)
}

fn open(path: &Path) -> Result<File, GpuError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::private::FILE_MODE)
        .open(path)
        .map_err(GpuError::io("open", path))
}

/// The UUID, reduced to characters safe in a file name (the bus id when there is no UUID).
fn file_name(gpu: &Gpu) -> String {
    let id = if gpu.uuid.is_empty() {
        &gpu.pci_bus_id
    } else {
        &gpu.uuid
    };
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    use super::*;

    fn machine() -> Vec<Gpu> {
        (0..3)
            .map(|i| Gpu {
                index: i,
                uuid: format!("GPU-{i}"),
                name: if i == 2 {
                    "NVIDIA A100-SXM4-80GB".into()
                } else {
                    "NVIDIA H100 80GB HBM3".into()
                },
                memory_mib: Some(81559),
                pci_bus_id: format!("0000:0{i}:00.0"),
                minor: i,
            })
            .collect()
    }

    /// After a lease is dropped: another test thread's fork may hold a copy of its descriptor until it execs.
    fn acquire_soon(dir: &Path, gpus: &[Gpu], request: &GpuRequest) -> GpuLease {
        for _ in 0..100 {
            if let Ok(lease) = acquire(dir, gpus, request) {
                return lease;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        acquire(dir, gpus, request).unwrap()
    }

    fn ask(count: u32, name: Option<&str>, owner: &str) -> GpuRequest {
        GpuRequest {
            count,
            name: name.map(String::from),
            owner: owner.into(),
            ..GpuRequest::default()
        }
    }

    #[test]
    fn two_leases_never_share_a_gpu_and_a_dropped_lease_frees_its_gpus() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), &machine(), &ask(2, None, "run brave-fox-1")).unwrap();
        assert_eq!(
            first.gpus().iter().map(|g| g.index).collect::<Vec<_>>(),
            [0, 1]
        );
        let second = acquire(dir.path(), &machine(), &ask(1, None, "run calm-owl-2")).unwrap();
        assert_eq!(second.gpus()[0].index, 2);
        let err = acquire(dir.path(), &machine(), &ask(1, None, "run third")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "requested 1 GPU; this machine has: 0: NVIDIA H100 80GB HBM3 (81559 MiB) [in use by run brave-fox-1], \
             1: NVIDIA H100 80GB HBM3 (81559 MiB) [in use by run brave-fox-1], \
             2: NVIDIA A100-SXM4-80GB (81559 MiB) [in use by run calm-owl-2]"
        );
        drop(first);
        let third = acquire_soon(dir.path(), &machine(), &ask(2, Some("H100"), "run third"));
        assert_eq!(third.gpus().len(), 2);
    }

    #[test]
    fn an_unmet_name_lists_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let err = acquire(dir.path(), &machine(), &ask(2, Some("A100"), "x")).unwrap_err();
        assert!(matches!(err, GpuError::Unmet { .. }));
        assert!(
            err.to_string()
                .starts_with("requested 2 GPUs named A100; this machine has: 0: NVIDIA H100"),
            "{err}"
        );
        // A failed request holds nothing.
        acquire_soon(dir.path(), &machine(), &ask(3, None, "y"));
    }

    /// The holder is another process; once it is killed, its GPU is free again.
    #[test]
    fn a_dead_holders_lease_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let gpus = &machine()[..1];
        let lease = acquire(dir.path(), gpus, &ask(1, None, "run doomed-job-9")).unwrap();
        // Hand the locked file to a child process (as fd 3), then let go of ours.
        let fd = lease._locks[0].as_raw_fd();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("600");
        // SAFETY: only dup2 between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut holder = cmd.spawn().unwrap();
        std::mem::forget(lease);
        let err = acquire(dir.path(), gpus, &ask(1, None, "run next")).unwrap_err();
        assert!(
            err.to_string().contains("[in use by run doomed-job-9]"),
            "{err}"
        );
        // The forgotten lease still has our copy of the descriptor: close it so the child is the only holder.
        // SAFETY: `fd` belongs to the forgotten lease, which nothing else uses.
        unsafe { libc::close(fd) };
        assert!(acquire(dir.path(), gpus, &ask(1, None, "run next")).is_err());
        holder.kill().unwrap();
        holder.wait().unwrap();
        let lease = acquire_soon(dir.path(), gpus, &ask(1, None, "run next"));
        assert_eq!(lease.gpus()[0].uuid, "GPU-0");
        let owner = std::fs::read_to_string(dir.path().join("GPU-0.lease")).unwrap();
        assert_eq!(owner, "run next\n");
    }
}
