//! Verified blobs: written under `ingest/`, checked, fsynced and renamed into `blobs/sha256/<hex>`, then made
//! read-only. Nothing unverified ever appears under `blobs/`.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use super::{Store, StoreError};
use crate::fsops::{FileLock, LockMode};
use crate::image::Digest;

/// A download in progress: `ingest/<hex>`, opened for appending. Only the holder of the blob's lock opens it.
#[derive(Debug)]
pub struct Ingest {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// Bytes already there from an interrupted download, to be resumed after.
    pub(crate) resumed_from: u64,
}

impl Store {
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub(crate) fn ingest_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("ingest").join(digest.hex())
    }

    /// Serializes everyone who would download `digest`.
    pub(crate) fn lock_blob(&self, digest: &Digest) -> Result<FileLock, StoreError> {
        let path = self
            .root
            .join("locks")
            .join(format!("blob-{}", digest.hex()));
        FileLock::acquire(&path, LockMode::Exclusive).map_err(self.io("lock", &path))
    }

    /// Stores a small blob held in memory (a manifest or config) after checking its digest.
    pub(crate) fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.clone(),
                actual,
            });
        }
        let path = self.blob_path(digest);
        crate::fsops::write_atomic(&path, bytes, 0o444).map_err(self.io("write", &path))
    }

    pub(crate) fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(self.io("read", &path))
    }

    /// Opens the ingest file for `digest`, keeping what an interrupted download left unless it is already
    /// longer than the blob can be. The caller holds [`Store::lock_blob`].
    pub(crate) fn open_ingest(&self, digest: &Digest, size: u64) -> Result<Ingest, StoreError> {
        let path = self.ingest_path(digest);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(self.io("create", &path))?;
        let mut resumed_from = file.metadata().map_err(self.io("stat", &path))?.len();
        if resumed_from > size {
            file.set_len(0).map_err(self.io("truncate", &path))?;
            resumed_from = 0;
        }
        file.seek(SeekFrom::End(0))
            .map_err(self.io("seek", &path))?;
        if resumed_from > 0 {
            tracing::info!("resuming {digest} after {resumed_from} bytes");
        }
        Ok(Ingest {
            path,
            file,
            resumed_from,
        })
    }

    /// Publishes a completely written ingest file whose digest and size the caller measured.
    pub(crate) fn publish_ingest(
        &self,
        ingest: Ingest,
        expected: &Digest,
        expected_size: u64,
        actual: &Digest,
        actual_size: u64,
    ) -> Result<(), StoreError> {
        if actual != expected || actual_size != expected_size {
            self.discard_ingest(ingest);
            return Err(StoreError::DigestMismatch {
                what: format!("blob {expected} ({actual_size} of {expected_size} bytes)"),
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
        let Ingest { path, file, .. } = ingest;
        file.sync_all().map_err(self.io("sync", &path))?;
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(self.io("chmod", &path))?;
        drop(file);
        let target = self.blob_path(expected);
        fs::rename(&path, &target).map_err(self.io("publish", &target))?;
        Ok(())
    }

    pub(crate) fn discard_ingest(&self, ingest: Ingest) {
        let _ = fs::remove_file(&ingest.path);
    }
}
