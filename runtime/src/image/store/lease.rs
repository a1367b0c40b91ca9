//! Leases: a running container's claim on its layers. A lease is a file under `leases/` naming the layers,
//! flocked for as long as the [`Lease`] lives; prune keeps every layer named by a locked lease and removes
//! lease files whose lock nobody holds (their container died without cleaning up).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil;
use super::{Image, Store, StoreError};
use crate::fsops::{FileLock, LockMode};
use crate::image::Digest;

/// Holds an image's layers in the store until dropped. Taken by the container runtime for each run.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    _lock: FileLock,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LeaseFile {
    pub image: String,
    pub pid: u32,
    pub layers: Vec<Digest>,
}

impl Store {
    /// Protects `image`'s layers from prune and rmi until the returned guard is dropped.
    pub fn lease(&self, image: &Image) -> Result<Lease, StoreError> {
        // Shared: no prune runs between checking the layers and locking the lease.
        let _store = self.lock_store(LockMode::Shared)?;
        for diff_id in &image.layers {
            if !self.has_layer(diff_id) {
                return Err(StoreError::NotFound(image.reference.clone()));
            }
        }
        let path = self.root.join("leases").join(fsutil::unique_name("lease-"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(crate::private::FILE_MODE)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(self.io("create", &path))?;
        let lock = FileLock::wait_on(file, LockMode::Exclusive).map_err(self.io("lock", &path))?;
        let content = LeaseFile {
            image: image.reference.clone(),
            pid: std::process::id(),
            layers: image.layers.clone(),
        };
        let json = serde_json::to_vec(&content).expect("leases serialize");
        let mut writer = lock.file();
        if let Err(e) = writer.write_all(&json) {
            let _ = std::fs::remove_file(&path);
            return Err(self.io("write", &path)(e));
        }
        Ok(Lease { path, _lock: lock })
    }
}

impl Lease {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Removed while still locked, so prune never mistakes it for an abandoned one mid-way.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The layers named by leases that are still held; abandoned lease files are removed. Called with the
/// store lock held exclusively.
pub(crate) fn held_layers(store: &Store) -> Result<Vec<Digest>, StoreError> {
    let dir = store.root.join("leases");
    let mut layers = Vec::new();
    for path in fsutil::list_dir(&dir).map_err(store.io("list", &dir))? {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(store.io("open", &path)(e)),
        };
        match FileLock::try_on(file, LockMode::Exclusive).map_err(store.io("lock", &path))? {
            Ok(_abandoned) => {
                tracing::debug!("removing the abandoned lease {}", path.display());
                let _ = std::fs::remove_file(&path);
            }
            Err(_held) => {
                let bytes = std::fs::read(&path).unwrap_or_default();
                match serde_json::from_slice::<LeaseFile>(&bytes) {
                    Ok(lease) => layers.extend(lease.layers),
                    Err(e) => tracing::warn!("unreadable lease {}: {e}", path.display()),
                }
            }
        }
    }
    Ok(layers)
}
