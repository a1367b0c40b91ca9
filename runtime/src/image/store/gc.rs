//! Removing what nothing references: `rmi` (records, then garbage) and `prune images` (garbage only).
//! Both hold the store lock exclusively, so no pull is half-way and every ingest or temp file is abandoned.

use std::collections::HashSet;
use std::path::Path;

use super::layers::TEMP_PREFIX;
use super::{ImageName, Store, StoreError, fsutil, lease};
use crate::fsops::LockMode;
use crate::image::Digest;

/// What a removal freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Names whose records were removed (by `rmi`).
    pub images: Vec<String>,
    pub blobs: usize,
    pub layers: usize,
    /// Abandoned downloads and half-built or half-removed layers.
    pub temporary: usize,
    /// Unreferenced layers kept because a running container holds a lease on them.
    pub leased: usize,
    pub bytes_freed: u64,
}

impl Store {
    /// Removes the records of `names` (all must exist; nothing is removed otherwise), then everything no
    /// remaining record or lease references.
    pub fn remove(&self, names: &[ImageName]) -> Result<PruneReport, StoreError> {
        let _store = self.lock_store(LockMode::Exclusive)?;
        let mut keys = Vec::new();
        for name in names {
            let record = self
                .find_record(name)?
                .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
            keys.push(record.name);
        }
        let mut report = PruneReport::default();
        for key in keys {
            if self.delete_record(&key)? {
                report.images.push(key);
            }
        }
        self.collect(&mut report)?;
        Ok(report)
    }

    /// Removes unreferenced blobs and layers and abandoned downloads and temp files.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        let _store = self.lock_store(LockMode::Exclusive)?;
        let mut report = PruneReport::default();
        self.collect(&mut report)?;
        Ok(report)
    }

    fn collect(&self, report: &mut PruneReport) -> Result<(), StoreError> {
        let mut blobs: HashSet<Digest> = HashSet::new();
        let mut layers: HashSet<Digest> = HashSet::new();
        for record in self.read_records()? {
            blobs.insert(record.manifest_digest);
            blobs.insert(record.config_digest);
            if let Some(index) = record.index_digest {
                blobs.insert(index);
            }
            for layer in record.layers {
                blobs.insert(layer.blob);
                layers.insert(layer.diff_id);
            }
        }
        let leased: HashSet<Digest> = lease::held_layers(self)?.into_iter().collect();

        let blob_dir = self.root.join("blobs/sha256");
        for path in fsutil::list_dir(&blob_dir).map_err(self.io("list", &blob_dir))? {
            match digest_named(&path) {
                Some(d) if blobs.contains(&d) => {}
                Some(_) => {
                    report.bytes_freed += fsutil::disk_usage(&path);
                    self.remove_path(&path)?;
                    report.blobs += 1;
                }
                None => {
                    report.bytes_freed += fsutil::disk_usage(&path);
                    self.remove_path(&path)?;
                    report.temporary += 1;
                }
            }
        }

        let layer_dir = self.root.join("layers");
        for path in fsutil::list_dir(&layer_dir).map_err(self.io("list", &layer_dir))? {
            let temp = file_name(&path).starts_with(TEMP_PREFIX);
            let unreferenced = match digest_named(&path) {
                Some(d) if layers.contains(&d) => false,
                Some(d) if leased.contains(&d) => {
                    report.leased += 1;
                    false
                }
                Some(_) => true,
                None => false,
            };
            if !(temp || unreferenced) {
                continue;
            }
            report.bytes_freed += fsutil::disk_usage(&path);
            if unreferenced {
                // Renamed out of sight first: a removal cut short leaves a temp directory, never half a layer.
                let doomed = layer_dir.join(fsutil::unique_name(&format!("{TEMP_PREFIX}gc-")));
                std::fs::rename(&path, &doomed).map_err(self.io("rename", &path))?;
                self.remove_path(&doomed)?;
                report.layers += 1;
            } else {
                self.remove_path(&path)?;
                report.temporary += 1;
            }
        }

        for sub in ["ingest", "images"] {
            let dir = self.root.join(sub);
            for path in fsutil::list_dir(&dir).map_err(self.io("list", &dir))? {
                if sub == "images" && !file_name(&path).starts_with(TEMP_PREFIX) {
                    continue;
                }
                report.bytes_freed += fsutil::disk_usage(&path);
                self.remove_path(&path)?;
                report.temporary += 1;
            }
        }

        // Nobody waits on blob or layer locks while the store lock is held exclusively, so their files can
        // go without the unlink-while-waiting race.
        let locks = self.root.join("locks");
        for path in fsutil::list_dir(&locks).map_err(self.io("list", &locks))? {
            let name = file_name(&path);
            if name.starts_with("blob-") || name.starts_with("layer-") {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }

    fn remove_path(&self, path: &Path) -> Result<(), StoreError> {
        crate::fsops::remove_tree(path).map_err(self.io("remove", path))
    }
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// The digest a store file or directory is named after, if it is named after one.
fn digest_named(path: &Path) -> Option<Digest> {
    format!("sha256:{}", file_name(path)).parse().ok()
}
