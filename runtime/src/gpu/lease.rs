//! Allocation across every dstack job of one machine, whoever runs it and whatever its state root: a job holds a
//! GPU by holding an exclusive flock on a lease file of its own, `<gpu>.<random>.lease`, in one machine-wide
//! directory (`/run/dstack/gpu`), for as long as it runs. The kernel drops the lock when the holder dies, however
//! it dies, so a killed job's GPUs are free again; its file is swept by the next job that may remove it.
//!
//! The directory is shared by every user (sticky and world-writable, made by root), so nothing in it is trusted:
//! - each job makes its own files, under random names with `O_EXCL`, locked before they get a lease name (a
//!   rename), so a lease is never visible unlocked and a planted file can neither stand in for ours nor be
//!   written through (`O_NOFOLLOW`, regular files only; the sticky bit keeps others from removing ours);
//! - there is no machine-wide "choosing" lock another user could hold forever: a job first claims a GPU (its
//!   locked file says `claim`), then looks at the other files for that GPU; if any is locked, it backs off. Of two
//!   jobs claiming at once, the later looker always sees the earlier claim, so at most one keeps the GPU (both
//!   may back off, and retry after a random pause);
//! - a user can hold a GPU only as a job does, by keeping a lease locked; the listing then names what its file
//!   says (clipped to printable text). A file others cannot read counts as held.
//!
//! Rootless, when root has not made the machine-wide directory yet, the leases stay in `<state root>/gpu` (with
//! a warning): they then hold only among that user's own jobs.

use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt, OpenOptionsExt as _, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::inventory::Gpu;
use super::{GpuError, GpuRequest, select};
use crate::cgroup::DeviceRule;
use crate::fsops::{FileLock, LockMode};

/// The machine-wide lease directory under the driver root (`/`, or a fake tree in tests).
pub(crate) fn machine_dir(root: &Path) -> PathBuf {
    root.join("run/dstack/gpu")
}

/// Where this process takes its leases: the machine-wide directory when it exists or host root can make it; else
/// (rootless before root ever made it) the state root's own, which only this user's jobs see.
pub(crate) fn lease_dir(root: &Path, state_root: &Path, host_root: bool) -> PathBuf {
    let shared = machine_dir(root);
    if host_root || shared.is_dir() {
        return shared;
    }
    state_root.join("gpu")
}

/// Says once per process that leases in `dir` (not the machine-wide directory) hold only among this user's jobs.
pub(crate) fn warn_if_private(root: &Path, dir: &Path) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let shared = machine_dir(root);
    if dir == shared {
        return;
    }
    WARNED.call_once(|| {
        tracing::warn!(
            "{} does not exist: GPU leases are kept in {} and hold only among your own jobs; \
             ask the administrator to create it (`install -d -m 1777 {}`) or to run a GPU job as root once",
            shared.display(),
            dir.display(),
            shared.display()
        )
    });
}

/// GPUs given to one job, with the cgroup rules for their device nodes. Dropping it frees the GPUs: keep it
/// until the job has exited.
#[derive(Debug)]
pub struct GpuLease {
    pub(crate) gpus: Vec<Gpu>,
    pub(crate) rules: Vec<DeviceRule>,
    files: Vec<LeaseFile>,
}

impl GpuLease {
    /// No GPUs.
    pub fn none() -> GpuLease {
        GpuLease {
            gpus: Vec::new(),
            rules: Vec::new(),
            files: Vec::new(),
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

    /// A read-only file of `contents` in `dir` for the job to have bound in, kept (and removed) with the lease.
    pub(crate) fn keep_file(
        &mut self,
        dir: &Path,
        what: &str,
        contents: &str,
    ) -> Result<PathBuf, GpuError> {
        let path = dir.join(format!(".{}.{what}", crate::fsops::random_suffix()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(GpuError::io("create", &path))?;
        // Locked like a lease file (it is one's companion), which also keeps a sweeper from taking it.
        let held = file
            .try_clone()
            .and_then(|f| FileLock::wait_on(f, LockMode::Exclusive))
            .map_err(GpuError::io("write", &path))?;
        let kept = LeaseFile {
            path: path.clone(),
            file: held,
        };
        self.files.push(kept);
        file.write_all(contents.as_bytes())
            .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o444)))
            .map_err(GpuError::io("write", &path))?;
        Ok(path)
    }
}

/// One of our lease files, locked. Dropping it removes the name first, so that a looker that still finds the
/// file open sees it unlinked and ignores it, then closes (which unlocks).
#[derive(Debug)]
struct LeaseFile {
    path: PathBuf,
    file: FileLock,
}

impl Drop for LeaseFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How many times a request is looked at again when another job was claiming a GPU at the same moment.
const CONTENDED_TRIES: u32 = 40;
/// How many times when a GPU only looked held (a lease being swept or released just then).
const HELD_TRIES: u32 = 3;

/// Takes `request.count` GPUs of `gpus` that fit the request and no other job holds.
pub(crate) fn acquire(
    dir: &Path,
    gpus: &[Gpu],
    request: &GpuRequest,
) -> Result<GpuLease, GpuError> {
    prepare_dir(dir)?;
    let owner = if request.owner.is_empty() {
        format!("pid {}", std::process::id())
    } else {
        request.owner.clone()
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let round = try_acquire(dir, gpus, request, &owner)?;
        match round {
            Round::Taken(lease) => return Ok(lease),
            Round::Unmet { listing, contended } => {
                let limit = if contended {
                    CONTENDED_TRIES
                } else {
                    HELD_TRIES
                };
                if tries >= limit {
                    return Err(GpuError::Unmet {
                        request: select::describe(request),
                        listing: listing.join(", "),
                    });
                }
                let pause = 5 + u64::from_str_radix(&crate::fsops::random_suffix()[..2], 16)
                    .unwrap_or(0)
                    % 40;
                std::thread::sleep(Duration::from_millis(pause));
            }
        }
    }
}

enum Round {
    Taken(GpuLease),
    Unmet {
        listing: Vec<String>,
        /// Some GPU was being claimed by another job at the same moment: worth looking again.
        contended: bool,
    },
}

fn try_acquire(
    dir: &Path,
    gpus: &[Gpu],
    request: &GpuRequest,
    owner: &str,
) -> Result<Round, GpuError> {
    let count = request.count as usize;
    let mut claims: Vec<(Gpu, LeaseFile)> = Vec::new();
    let mut listing = Vec::new();
    let mut contended = false;
    for gpu in gpus {
        let id = file_id(gpu);
        let holder = if claims.len() < count && select::fits(gpu, request) {
            let claim = claim(dir, &id, owner)?;
            match others_holding(dir, &id, Some(&claim.path))? {
                None => {
                    claims.push((gpu.clone(), claim));
                    None
                }
                // Ours goes (dropped here): the GPU is someone else's, or both of us back off and retry.
                Some(holder) => Some(holder),
            }
        } else {
            others_holding(dir, &id, None)?
        };
        match holder {
            None => listing.push(gpu.describe()),
            Some(Holder::Claiming) => {
                contended = true;
                listing.push(format!("{} [being taken by another job]", gpu.describe()));
            }
            Some(Holder::Job(name)) => {
                listing.push(format!("{} [in use by {name}]", gpu.describe()))
            }
        }
    }
    if claims.len() < count {
        return Ok(Round::Unmet { listing, contended });
    }
    let mut lease = GpuLease::none();
    for (gpu, mut claim) in claims {
        commit(&mut claim, owner)?;
        lease.gpus.push(gpu);
        lease.files.push(claim);
    }
    Ok(Round::Taken(lease))
}

/// Makes the directory if it is missing (sticky and world-writable, as `/tmp`: every user's jobs lease here) and
/// refuses one that others could empty or swap: a symlink, or a directory writable by others without the sticky
/// bit.
fn prepare_dir(dir: &Path) -> Result<(), GpuError> {
    if std::fs::symlink_metadata(dir).is_err() {
        if let Some(parent) = dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(GpuError::io("create", parent))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))
                .map_err(GpuError::io("set the mode of", dir))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(GpuError::io("create", dir)(e)),
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(GpuError::io("stat", dir))?;
    let mode = meta.mode() & 0o7777;
    let why = if !meta.is_dir() {
        Some("it is not a directory")
    } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        Some(
            "others may write to it but it lacks the sticky bit, so they could remove the leases in it",
        )
    } else {
        None
    };
    match why {
        Some(why) => Err(GpuError::UnsafeLeaseDir {
            path: dir.to_path_buf(),
            why: why.into(),
        }),
        None => Ok(()),
    }
}

/// Makes a locked file under a private name, then renames it to a lease name: no one ever sees it unlocked.
fn claim(dir: &Path, id: &str, owner: &str) -> Result<LeaseFile, GpuError> {
    loop {
        let random = crate::fsops::random_suffix();
        let temp = dir.join(format!(".{random}.tmp"));
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(GpuError::io("create", &temp)(e)),
        };
        let path = dir.join(format!("{id}.{random}.lease"));
        // A file this call just made: no one else can hold its lock.
        let mut file = match FileLock::try_on(file, LockMode::Exclusive) {
            Ok(Ok(held)) => held,
            Ok(Err(_)) => continue,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(GpuError::io("lock", &temp)(e));
            }
        };
        // Readable by all: others open it to test the lock and to name the holder.
        let written = file
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .and_then(|()| file.write_all(format!("claim {owner}\n").as_bytes()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(GpuError::io("lock", &temp)(e));
        }
        if let Err(e) = std::fs::rename(&temp, &path) {
            let _ = std::fs::remove_file(&temp);
            return Err(GpuError::io("create", &path)(e));
        }
        return Ok(LeaseFile { path, file });
    }
}

/// Turns a claim into a lease: the file now names its holder.
fn commit(claim: &mut LeaseFile, owner: &str) -> Result<(), GpuError> {
    let file = &mut claim.file;
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(format!("{owner}\n").as_bytes()))
        .map_err(GpuError::io("write", &claim.path))
}

/// Who else has the GPU `id`, as its lease files in `dir` say (except `ours`).
#[derive(Debug, PartialEq, Eq)]
enum Holder {
    /// A job that is choosing its GPUs right now.
    Claiming,
    /// A job that has it, as its lease file names it.
    Job(String),
}

fn others_holding(dir: &Path, id: &str, ours: Option<&Path>) -> Result<Option<Holder>, GpuError> {
    let entries = std::fs::read_dir(dir).map_err(GpuError::io("read", dir))?;
    let prefix = format!("{id}.");
    let mut found = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if !name.starts_with(&prefix) || !name.ends_with(".lease") || Some(path.as_path()) == ours {
            continue;
        }
        match look_at(&path) {
            None => {}
            Some(Holder::Claiming) => {
                found.get_or_insert(Holder::Claiming);
            }
            Some(job) => return Ok(Some(job)),
        }
    }
    Ok(found)
}

/// Whether the lease file at `path` is held; a stale one (its job died) is removed when we may.
fn look_at(path: &Path) -> Option<Holder> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // Its owner keeps others out; held is the safe reading, so never hand its GPU out twice.
            let uid = std::fs::symlink_metadata(path).map(|m| m.uid()).ok()?;
            return Some(Holder::Job(format!(
                "uid {uid} (its lease file is unreadable)"
            )));
        }
        // Gone (released or swept), a symlink, or anything else no job of ours would make.
        Err(_) => return None,
    };
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    match FileLock::try_on(file, LockMode::Shared) {
        Ok(Ok(unheld)) => {
            // Nobody holds it: its job is gone (a lease is locked before it is visible, and its name is
            // never used again). Sweep it if it is ours to remove (sticky directory).
            drop(unheld);
            let swept = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
                .ok()
                .and_then(|f| FileLock::try_on(f, LockMode::Exclusive).ok())
                .is_some_and(|lock| lock.is_ok());
            if swept {
                let _ = std::fs::remove_file(path);
            }
            None
        }
        // The lock could not even be tried: held is the safe reading.
        Err(_) => Some(Holder::Claiming),
        Ok(Err(file)) => {
            // Unlinked by its holder on release (or by a sweeper): not a lease any more.
            if file.metadata().map_or(true, |m| m.nlink() == 0) {
                return None;
            }
            let mut text = String::new();
            let _ = (&file).take(256).read_to_string(&mut text);
            let line = text.lines().next().unwrap_or("");
            if line.is_empty() || line.starts_with("claim ") {
                return Some(Holder::Claiming);
            }
            Some(Holder::Job(printable(line)))
        }
    }
}

/// At most 80 printable characters of what another user's file says.
fn printable(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).take(80).collect();
    if clean.trim().is_empty() {
        "another dstack job".into()
    } else {
        clean.trim().to_string()
    }
}

/// The UUID, reduced to characters safe in a file name (the bus id when there is no UUID).
fn file_id(gpu: &Gpu) -> String {
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

    fn ask(count: u32, name: Option<&str>, owner: &str) -> GpuRequest {
        GpuRequest {
            count,
            name: name.map(String::from),
            owner: owner.into(),
            ..GpuRequest::default()
        }
    }

    /// The lease files in `dir`, as (name, contents).
    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                (e.file_name().to_string_lossy().into_owned(), text)
            })
            .collect();
        v.sort();
        v
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
        let third = acquire(dir.path(), &machine(), &ask(2, Some("H100"), "run third")).unwrap();
        assert_eq!(third.gpus().len(), 2);
        // One file per held GPU, each naming its job; a released lease leaves no file behind.
        let held: Vec<_> = files(dir.path()).into_iter().map(|f| f.1).collect();
        assert_eq!(held, ["run third\n", "run third\n", "run calm-owl-2\n"]);
        drop((second, third));
        assert_eq!(files(dir.path()), []);
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
        // A failed request holds nothing and leaves nothing.
        assert_eq!(files(dir.path()), []);
        acquire(dir.path(), &machine(), &ask(3, None, "y")).unwrap();
    }

    /// The holder is another process; once it is killed, its GPU is free again and its file is swept.
    #[test]
    fn a_dead_holders_lease_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let gpus = &machine()[..1];
        let mut lease = acquire(dir.path(), gpus, &ask(1, None, "run doomed-job-9")).unwrap();
        // Hand the locked file to a child process (kept open across exec), then close ours.
        let file = lease.files.pop().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(file.file.file());
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("600");
        // SAFETY: only fcntl between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut holder = cmd.spawn().unwrap();
        // Close our copy without removing the name or unlocking (FileLock's drop would unlock the
        // description the child shares), as a killed job leaves it.
        let path = file.path.clone();
        std::mem::forget(file);
        // SAFETY: `fd` is ours, forgotten above, and closed once.
        unsafe { libc::close(fd) };
        let err = acquire(dir.path(), gpus, &ask(1, None, "run next")).unwrap_err();
        assert!(
            err.to_string().contains("[in use by run doomed-job-9]"),
            "{err}"
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
        let lease = acquire(dir.path(), gpus, &ask(1, None, "run next")).unwrap();
        assert_eq!(lease.gpus()[0].uuid, "GPU-0");
        assert!(!path.exists(), "the dead job's file is swept");
        assert_eq!(
            files(dir.path())
                .into_iter()
                .map(|f| f.1)
                .collect::<Vec<_>>(),
            ["run next\n"]
        );
    }

    /// Another user's tricks in the shared directory: a symlink, a directory, a fifo or an unlocked file with a
    /// lease's name neither hold the GPU nor get written through; the directory itself must be sticky.
    #[test]
    fn files_planted_in_the_directory_hold_nothing_and_are_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let target = d.join("victim");
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, d.join("GPU-0.aaaa.lease")).unwrap();
        std::fs::create_dir(d.join("GPU-1.bbbb.lease")).unwrap();
        nix::unistd::mkfifo(&d.join("GPU-2.cccc.lease"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(d.join("GPU-0.dddd.lease"), "run ghost\n").unwrap();
        let lease = acquire(d, &machine(), &ask(3, None, "run real")).unwrap();
        assert_eq!(lease.gpus().len(), 3);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert!(
            !d.join("GPU-0.dddd.lease").exists(),
            "an unlocked file is swept"
        );
        drop(lease);
        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = acquire(open.path(), &machine(), &ask(1, None, "x")).unwrap_err();
        assert!(err.to_string().contains("lacks the sticky bit"), "{err}");
        let made = d.join("run/dstack/gpu");
        acquire(&made, &machine(), &ask(1, None, "x")).unwrap();
        let mode = std::fs::metadata(&made).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
    }

    /// Many jobs asking at once, each in its own open files as separate processes would be: no GPU twice.
    #[test]
    fn jobs_asking_at_the_same_moment_never_get_the_same_gpu() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::sync::Barrier::new(8);
        let taken: Vec<Vec<String>> = std::thread::scope(|s| {
            let jobs: Vec<_> = (0..8)
                .map(|i| {
                    let (dir, start) = (dir.path(), &start);
                    s.spawn(move || {
                        start.wait();
                        let lease = acquire(dir, &machine(), &ask(1, None, &format!("run {i}")));
                        // Hold it until every job has tried.
                        std::thread::sleep(Duration::from_millis(500));
                        lease
                            .map(|l| l.gpus().iter().map(|g| g.uuid.clone()).collect())
                            .unwrap_or_default()
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        let mut all: Vec<String> = taken.into_iter().flatten().collect();
        let granted = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), granted, "a GPU was given twice");
        assert!(granted >= 1);
    }

    #[test]
    fn every_state_root_and_user_share_the_machine_directory_once_it_exists() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (Path::new("/home/a/.dstack"), Path::new("/srv/b"));
        let shared = root.path().join("run/dstack/gpu");
        assert_eq!(lease_dir(root.path(), a, true), shared);
        // Rootless, before root has made it: only the user's own jobs see each other.
        assert_eq!(lease_dir(root.path(), a, false), a.join("gpu"));
        std::fs::create_dir_all(&shared).unwrap();
        assert_eq!(lease_dir(root.path(), a, false), shared);
        assert_eq!(lease_dir(root.path(), b, false), shared);
    }
}
