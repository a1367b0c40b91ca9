//! Unpacked layers: `layers/<diffid-hex>/{fs,meta.json}`, built in a temp directory beside them and renamed
//! into place, so a layer directory that exists is complete.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil;
use super::{Store, StoreError};
use crate::fsops::{FileLock, LockMode};
use crate::image::Digest;

/// What `meta.json` records about an unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// The digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// The compressed blob it was unpacked from.
    pub blob: Digest,
    /// Bytes of file content.
    pub size: u64,
    /// Entries created (files, directories, links, whiteouts).
    pub files: u64,
}

/// A layer being unpacked: a temp directory removed on drop unless published.
#[derive(Debug)]
pub struct LayerBuild {
    dir: PathBuf,
    target: PathBuf,
    published: bool,
}

/// Prefix of the temp directories layers are built in (and of layers being deleted).
pub(crate) use crate::fsops::TEMP_PREFIX;

impl Store {
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// The directory overlay stacks: the layer's own files.
    pub fn layer_fs(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id).join("fs")
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).join("meta.json").is_file()
    }

    pub fn layer_meta(&self, diff_id: &Digest) -> Result<LayerMeta, StoreError> {
        let path = self.layer_dir(diff_id).join("meta.json");
        let bytes = fs::read(&path).map_err(self.io("read", &path))?;
        crate::text::parse_json(&bytes).map_err(|e| StoreError::Damaged {
            what: "layer record",
            path,
            reason: e.to_string(),
        })
    }

    /// Serializes everyone who would unpack `diff_id`.
    pub(crate) fn lock_layer(&self, diff_id: &Digest) -> Result<FileLock, StoreError> {
        let path = self
            .root
            .join("locks")
            .join(format!("layer-{}", diff_id.hex()));
        FileLock::acquire(&path, LockMode::Exclusive).map_err(self.io("lock", &path))
    }

    /// Starts building `diff_id` in a fresh temp directory, first removing what killed earlier attempts left.
    /// The caller holds [`Store::lock_layer`], so any other temp directory for this layer is abandoned.
    pub fn build_layer(&self, diff_id: &Digest) -> Result<LayerBuild, StoreError> {
        let layers = self.root.join("layers");
        let stale_prefix = format!("{TEMP_PREFIX}{}-", diff_id.hex());
        for path in fsutil::list_dir(&layers).map_err(self.io("list", &layers))? {
            let stale = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&stale_prefix));
            if stale {
                tracing::debug!("removing an abandoned layer build {}", path.display());
                crate::fsops::remove_tree(&path).map_err(self.io("remove", &path))?;
            }
        }
        let dir = layers.join(fsutil::unique_name(&stale_prefix));
        let fs_dir = dir.join("fs");
        crate::private::create_dir(&dir).map_err(self.io("create", &dir))?;
        let build = LayerBuild {
            dir,
            target: self.layer_dir(diff_id),
            published: false,
        };
        fs::create_dir(&fs_dir).map_err(self.io("create", &fs_dir))?;
        Ok(build)
    }

    /// Writes `meta.json` and renames the build into place.
    pub fn publish_layer(&self, mut build: LayerBuild, meta: &LayerMeta) -> Result<(), StoreError> {
        let meta_path = build.dir.join("meta.json");
        let json = serde_json::to_vec_pretty(meta).expect("layer meta serializes");
        crate::fsops::write_atomic(&meta_path, &json, 0o444)
            .map_err(self.io("write", &meta_path))?;
        if build.target.exists() {
            // An old interrupted removal or a foreign directory: the fresh build wins.
            crate::fsops::remove_tree(&build.target).map_err(self.io("remove", &build.target))?;
        }
        fs::rename(&build.dir, &build.target).map_err(self.io("publish", &build.target))?;
        build.published = true;
        Ok(())
    }
}

impl LayerBuild {
    /// Where the layer's files go.
    pub fn fs_dir(&self) -> PathBuf {
        self.dir.join("fs")
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for LayerBuild {
    fn drop(&mut self) {
        if !self.published
            && let Err(e) = crate::fsops::remove_tree(&self.dir)
        {
            tracing::warn!(
                "cannot remove the unfinished layer {}: {e}",
                self.dir.display()
            );
        }
    }
}
