//! Compiled seccomp profiles kept between runs. seccompiler resolves syscall names one filter at a time
//! (a syscall table per call): Docker's default profile takes ~4 ms to compile, half a run's start. Its
//! BPF is therefore kept under the state root, `seccomp/<key>.bpf`, keyed by a SHA-256 of the profile's
//! JSON, the architecture and this compiler (crate version and the source of `seccomp.rs`), and loaded in
//! ~50 us when the key matches.
//!
//! A cache file is used only when it is a regular file of ours that no one else may write (0600 in a 0700
//! directory) and its checksum holds; anything else is compiled again and replaced. The state root is the
//! user's own, so a file there is no more trusted than the user who runs the job.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use oci_spec::runtime::LinuxSeccomp;
use sha2::{Digest, Sha256};

use super::seccomp::{self, SeccompError, SeccompProgram};

/// Changes whenever the compiler's sources do, so a new compiler never loads an old compiler's output.
const COMPILER_ID: u64 =
    fnv1a(include_bytes!("seccomp.rs")) ^ fnv1a(include_bytes!("seccomp_bpf.rs")).rotate_left(1);
/// Larger cache files are not read (Docker's default profile compiles to ~4 KB).
const MAX_FILE_BYTES: u64 = 1 << 20;
const CHECKSUM_BYTES: usize = 32;

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Feeds serde_json's output straight into the hash.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn key(profile: &LinuxSeccomp) -> String {
    let mut hasher = HashWriter(Sha256::new());
    hasher.0.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.0.update(COMPILER_ID.to_le_bytes());
    hasher.0.update(std::env::consts::ARCH.as_bytes());
    // Serializing plain data into a hash cannot fail.
    let _ = serde_json::to_writer(&mut hasher, profile);
    hex::encode(hasher.0.finalize())
}

/// `profile` compiled, from `dir` when it holds it, else compiled and stored there for the next run.
pub(crate) fn compile(profile: &LinuxSeccomp, dir: &Path) -> Result<SeccompProgram, SeccompError> {
    let key = key(profile);
    let path = dir.join(format!("{key}.bpf"));
    if let Some(program) = load(&path) {
        return Ok(program);
    }
    let program = seccomp::compile(profile)?;
    if let Err(e) = store(dir, &path, &program) {
        tracing::debug!(
            "seccomp: cannot keep the compiled profile in {}: {e}",
            dir.display()
        );
    }
    Ok(program)
}

fn load(path: &Path) -> Option<SeccompProgram> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    // SAFETY: geteuid has no preconditions.
    let ours = meta.uid() == unsafe { libc::geteuid() };
    if !meta.is_file() || !ours || meta.mode() & 0o077 != 0 || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).ok()?;
    if bytes.len() < CHECKSUM_BYTES {
        return None;
    }
    let (checksum, payload) = bytes.split_at(CHECKSUM_BYTES);
    if Sha256::digest(payload).as_slice() != checksum {
        return None;
    }
    SeccompProgram::from_bytes(payload)
}

fn store(dir: &Path, path: &Path, program: &SeccompProgram) -> std::io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let payload = program.to_bytes();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = dir.join(format!(".new-{}-{nanos}", std::process::id()));
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temp)?;
    let written = file
        .write_all(&Sha256::digest(&payload))
        .and_then(|()| file.write_all(&payload))
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::seccomp_profile::docker_default;
    use std::os::unix::fs::PermissionsExt;

    fn profile() -> LinuxSeccomp {
        docker_default(&crate::container::DOCKER_DEFAULT_CAPS.into_iter().collect())
    }

    #[test]
    fn a_compiled_profile_is_stored_private_and_loaded_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("seccomp");
        let fresh = compile(&profile(), &cache).unwrap();
        let files: Vec<_> = fs::read_dir(&cache).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(files.len(), 1);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&files[0].path()), 0o600);
        let loaded = load(&files[0].path()).expect("the stored program loads");
        assert_eq!(loaded.to_bytes(), fresh.to_bytes());
        assert_eq!(
            compile(&profile(), &cache).unwrap().to_bytes(),
            fresh.to_bytes()
        );
    }

    #[test]
    fn a_tampered_or_exposed_cache_file_is_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("seccomp");
        let fresh = compile(&profile(), &cache).unwrap();
        let path = cache.join(format!("{}.bpf", key(&profile())));
        // One instruction changed: an allow-everything filter would have the same length.
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(load(&path).is_none(), "a bad checksum is not loaded");
        assert_eq!(
            compile(&profile(), &cache).unwrap().to_bytes(),
            fresh.to_bytes()
        );
        assert!(load(&path).is_some(), "and it was replaced");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load(&path).is_none(),
            "a file others may read or write is not used"
        );
    }

    #[test]
    fn the_key_follows_the_profile() {
        let mut other = profile();
        other.set_default_errno_ret(Some(libc::ENOSYS as u32));
        assert_ne!(key(&profile()), key(&other));
        assert_eq!(key(&profile()), key(&profile()));
    }
}

#[cfg(test)]
mod timing {
    #[test]
    #[ignore = "a timing, run by hand in release"]
    fn cached_load_timing() {
        let profile = crate::container::seccomp_profile::docker_default(
            &crate::container::DOCKER_DEFAULT_CAPS.into_iter().collect(),
        );
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("seccomp");
        super::compile(&profile, &cache).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..100 {
            super::compile(&profile, &cache).unwrap();
        }
        let cached = t.elapsed() / 100;
        let t = std::time::Instant::now();
        for _ in 0..10 {
            crate::container::seccomp::compile(&profile).unwrap();
        }
        let fresh = t.elapsed() / 10;
        let t = std::time::Instant::now();
        for _ in 0..100 {
            crate::container::seccomp_profile::docker_default(
                &crate::container::DOCKER_DEFAULT_CAPS.into_iter().collect(),
            );
        }
        let build = t.elapsed() / 100;
        eprintln!("cached {cached:?} compiled {fresh:?} profile built {build:?}");
    }
}

#[cfg(test)]
mod install_timing {
    #[test]
    #[ignore = "a timing, run by hand in release"]
    fn install_timing() {
        let profile = crate::container::seccomp_profile::docker_default(
            &crate::container::DOCKER_DEFAULT_CAPS.into_iter().collect(),
        );
        let program = crate::container::seccomp::compile(&profile).unwrap();
        for f in &program.filters_for_timing() {
            eprintln!("filter of {} instructions", f);
        }
        for _ in 0..5 {
            // SAFETY: test-only fork; the child only times the install and exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: prctl with integer arguments only, in the forked child.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let t = std::time::Instant::now();
                program.install().unwrap();
                let e = t.elapsed();
                eprintln!("install {e:?}");
                // SAFETY: the child leaves without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            let mut st = 0;
            // SAFETY: waits for our own child into a local status word.
            unsafe { libc::waitpid(pid, &mut st, 0) };
        }
    }
}
