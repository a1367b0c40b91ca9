//! Image records: `images/<sha256 of the name>.json`, one per name an image was pulled as. Several tags may
//! point at one manifest; each record lists the layers it keeps alive.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::fsutil;
use super::{Store, StoreError};
use crate::image::Digest;
use crate::image::reference::{Reference, ReferenceError};

/// What an image is called in the store: a registry reference, or a tag in an OCI layout directory
/// (`oci:DIR[:TAG]`, as skopeo writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageName {
    Registry(Reference),
    Layout { dir: PathBuf, tag: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ImageNameError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("invalid OCI layout reference {0:?}: write oci:DIRECTORY or oci:DIRECTORY:TAG")]
    Layout(String),
}

impl FromStr for ImageName {
    type Err = ImageNameError;

    fn from_str(s: &str) -> Result<ImageName, ImageNameError> {
        let Some(rest) = s.strip_prefix("oci:") else {
            return Ok(ImageName::Registry(s.parse()?));
        };
        // The tag is what follows the last ':' unless that looks like part of a path.
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => (dir, tag),
            _ => (rest, "latest"),
        };
        if dir.is_empty() || tag.is_empty() {
            return Err(ImageNameError::Layout(s.to_string()));
        }
        let dir = std::path::absolute(dir).map_err(|_| ImageNameError::Layout(s.to_string()))?;
        Ok(ImageName::Layout {
            dir,
            tag: tag.to_string(),
        })
    }
}

impl From<Reference> for ImageName {
    fn from(reference: Reference) -> ImageName {
        ImageName::Registry(reference)
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageName::Registry(r) => write!(f, "{r}"),
            ImageName::Layout { dir, tag } => write!(f, "oci:{}:{tag}", dir.display()),
        }
    }
}

impl ImageName {
    /// The name a record is stored under: a pinned digest wins over a tag given with it, as the digest is
    /// what was pulled.
    pub fn key(&self) -> String {
        match self {
            ImageName::Registry(r) => match (r.digest(), r.tag()) {
                (Some(d), _) => format!("{}@{d}", r.name()),
                (None, tag) => format!("{}:{}", r.name(), tag.unwrap_or("latest")),
            },
            layout => layout.to_string(),
        }
    }

    /// The repository column of `dstack images`.
    pub fn repository(&self) -> String {
        match self {
            ImageName::Registry(r) => r.name(),
            ImageName::Layout { dir, .. } => format!("oci:{}", dir.display()),
        }
    }

    /// The tag column; a digest-only reference has none.
    pub fn tag(&self) -> Option<String> {
        match self {
            ImageName::Registry(r) if r.digest().is_some() => None,
            ImageName::Registry(r) => Some(r.tag().unwrap_or("latest").to_string()),
            ImageName::Layout { tag, .. } => Some(tag.clone()),
        }
    }

    /// The digest a reference pins, if any.
    fn pinned(&self) -> Option<&Digest> {
        match self {
            ImageName::Registry(r) => r.digest(),
            ImageName::Layout { .. } => None,
        }
    }
}

/// One layer of a recorded image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The compressed blob as the registry serves it.
    pub blob: Digest,
    /// The uncompressed digest, which names the layer directory.
    pub diff_id: Digest,
    /// Bytes of file content.
    pub size: u64,
}

/// What the store remembers about one pulled name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The record's key ([`ImageName::key`]).
    pub name: String,
    pub repository: String,
    pub tag: Option<String>,
    pub manifest_digest: Digest,
    pub index_digest: Option<Digest>,
    pub config_digest: Digest,
    /// Bottom to top.
    pub layers: Vec<LayerRecord>,
    /// Bytes of file content in all layers.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub pulled_at: u64,
}

impl Store {
    fn record_path(&self, key: &str) -> PathBuf {
        let hex = Digest::of(key.as_bytes()).hex().to_string();
        self.root.join("images").join(format!("{hex}.json"))
    }

    pub(crate) fn write_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.record_path(&record.name);
        let json = serde_json::to_vec_pretty(record).expect("image records serialize");
        crate::fsops::write_atomic(&path, &json, crate::private::FILE_MODE)
            .map_err(self.io("write", &path))
    }

    pub(crate) fn read_records(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("images");
        let mut records = Vec::new();
        for path in fsutil::list_dir(&dir).map_err(self.io("list", &dir))? {
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // Removed by a concurrent rmi.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("read", &path)(e)),
            };
            match serde_json::from_slice(&bytes) {
                Ok(record) => records.push(record),
                Err(e) => tracing::warn!(
                    "ignoring the unreadable image record {}: {e}",
                    path.display()
                ),
            }
        }
        Ok(records)
    }

    /// The record for `name`: its own, or (for `repo@sha256:...`) any record of that repository whose
    /// manifest or index has that digest.
    pub fn find_record(&self, name: &ImageName) -> Result<Option<ImageRecord>, StoreError> {
        let path = self.record_path(&name.key());
        match std::fs::read(&path) {
            Ok(bytes) => {
                if let Ok(record) = serde_json::from_slice(&bytes) {
                    return Ok(Some(record));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("read", &path)(e)),
        }
        let Some(digest) = name.pinned() else {
            return Ok(None);
        };
        let repository = name.repository();
        Ok(self.read_records()?.into_iter().find(|r| {
            r.repository == repository
                && (&r.manifest_digest == digest || r.index_digest.as_ref() == Some(digest))
        }))
    }

    /// Deletes the record stored under `key`; false when there was none.
    pub(crate) fn delete_record(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.record_path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("remove", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        let n: ImageName = "busybox".parse().unwrap();
        assert_eq!(n.key(), "docker.io/library/busybox:latest");
        assert_eq!(n.tag().as_deref(), Some("latest"));
        let d = format!("localhost:5000/app:v1@sha256:{}", "a".repeat(64));
        let n: ImageName = d.parse().unwrap();
        assert_eq!(
            n.key(),
            format!("localhost:5000/app@sha256:{}", "a".repeat(64))
        );
        assert_eq!(n.tag(), None);
        let n: ImageName = "oci:/tmp/layout:v2".parse().unwrap();
        assert_eq!(
            n,
            ImageName::Layout {
                dir: "/tmp/layout".into(),
                tag: "v2".into()
            }
        );
        let n: ImageName = "oci:/tmp/layout".parse().unwrap();
        assert_eq!(n.key(), "oci:/tmp/layout:latest");
        assert!("oci:".parse::<ImageName>().is_err());
    }
}
