//! The local image store, after containerd's content store: verified blobs published by atomic rename,
//! each layer unpacked once into its own directory, and image records pointing at both.
//!
//! ```text
//! <store>/blobs/sha256/<hex>   verified blobs (layers, configs, manifests), read-only
//! <store>/ingest/<hex>         downloads in progress, resumed or discarded by the next pull
//! <store>/layers/<diffid-hex>/ fs/ (the directory overlay stacks) and meta.json
//! <store>/images/<hash>.json   one record per reference (several tags may name one manifest)
//! <store>/leases/<id>          layers a running container uses, protected from prune while locked
//! <store>/locks/               flock files: the store (pulls shared, prune and rmi exclusive), blobs, layers
//! ```
//!
//! Layer directories are keyed by the layer's diff_id (the digest of its uncompressed tar), not by its chain
//! id: an overlay lower directory holds only that layer's own changes, whatever lies beneath it, so two
//! images that share a layer anywhere in their stacks share its directory.

mod blobs;
mod fsutil;
mod gc;
pub(crate) mod ingest;
mod layers;
mod lease;
mod records;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_spec::image::ImageConfiguration;

use super::Digest;

pub use crate::fsops::FileLock;
pub use gc::PruneReport;
pub use layers::{LayerBuild, LayerMeta};
pub use lease::Lease;
pub use records::{ImageName, ImageNameError, ImageRecord, LayerRecord};

pub(crate) use crate::fsops::LockMode;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "no space left on device under {0}: free space or point DSTACK_HOME at a bigger filesystem"
    )]
    NoSpace(PathBuf),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {0} is not in the local store: pull it first with `dstack pull {0}`")]
    NotFound(String),
    #[error(
        "the store's {what} at {path} is damaged ({reason}): remove the image with `dstack rmi` and pull it again"
    )]
    Damaged {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what}: digest mismatch (expected {expected}, got {actual})")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
}

/// An image ready to run: its config and its unpacked layers, bottom to top.
#[derive(Debug, Clone)]
pub struct Image {
    /// The name it was pulled as: `docker.io/library/debian:bookworm`, `oci:/path:tag`.
    pub reference: String,
    pub manifest_digest: Digest,
    pub config: ImageConfiguration,
    /// The layers' `fs/` directories, bottom to top (overlay wants them reversed in `lowerdir=`).
    pub layer_dirs: Vec<PathBuf>,
    /// The layers' diff_ids, bottom to top (what a [`Lease`] protects).
    pub layers: Vec<Digest>,
    /// Bytes of file content in all layers.
    pub size: u64,
    pub pulled_at: SystemTime,
}

/// The store under one state root. Cheap to open; all state is on disk.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store in `<state root>/store`.
    pub fn open_default() -> Result<Store, StoreError> {
        Store::open(&crate::paths::state_root().join("store"))
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [
            "blobs/sha256",
            "ingest",
            "layers",
            "images",
            "leases",
            "locks",
        ] {
            let path = root.join(dir);
            crate::private::create_dir_all(&path).map_err(store.io("create", &path))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image recorded under `name`, with its config read and its layer directories checked.
    pub fn lookup(&self, name: &ImageName) -> Result<Image, StoreError> {
        let record = self
            .find_record(name)?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        self.image(&record)
    }

    /// Every image record, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut records = self.read_records()?;
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// The runnable image a record describes.
    pub fn image(&self, record: &ImageRecord) -> Result<Image, StoreError> {
        let config_path = self.blob_path(&record.config_digest);
        let bytes = std::fs::read(&config_path).map_err(|e| StoreError::Damaged {
            what: "image config",
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        let config = crate::text::parse_json::<ImageConfiguration>(&bytes).map_err(|e| {
            StoreError::Damaged {
                what: "image config",
                path: config_path.clone(),
                reason: e.to_string(),
            }
        })?;
        let mut layer_dirs = Vec::with_capacity(record.layers.len());
        for layer in &record.layers {
            if !self.has_layer(&layer.diff_id) {
                return Err(StoreError::Damaged {
                    what: "layer",
                    path: self.layer_dir(&layer.diff_id),
                    reason: "missing".into(),
                });
            }
            layer_dirs.push(self.layer_fs(&layer.diff_id));
        }
        Ok(Image {
            reference: record.name.clone(),
            manifest_digest: record.manifest_digest.clone(),
            config,
            layer_dirs,
            layers: record.layers.iter().map(|l| l.diff_id.clone()).collect(),
            size: record.size,
            pulled_at: SystemTime::UNIX_EPOCH + Duration::from_secs(record.pulled_at),
        })
    }

    /// The store-wide lock: pulls hold it shared, garbage collection exclusive.
    pub(crate) fn lock_store(&self, mode: LockMode) -> Result<FileLock, StoreError> {
        let path = self.root.join("locks/store.lock");
        FileLock::acquire(&path, mode).map_err(self.io("lock", &path))
    }

    /// Maps an io::Error to a StoreError, recognizing a full disk.
    pub(crate) fn io<'p>(
        &self,
        what: &'static str,
        path: &'p Path,
    ) -> impl FnOnce(io::Error) -> StoreError + 'p {
        let root = self.root.clone();
        move |source| {
            if crate::image::unpack::is_no_space(&source) {
                StoreError::NoSpace(root)
            } else {
                StoreError::Io {
                    what,
                    path: path.to_path_buf(),
                    source,
                }
            }
        }
    }
}
