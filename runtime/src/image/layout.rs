//! An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`, as `skopeo copy oci:DIR`
//! and `umoci` write it) as a [`Source`]: `dstack pull oci:DIR[:TAG]` and the tests read images from one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::ImageIndex;

use super::Digest;
use super::source::{FetchedManifest, Source, SourceError};

/// `index.json` and manifests bigger than this are refused, as from a registry.
const MANIFEST_MAX: u64 = 4 << 20;

/// The annotation naming a tag in `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// Opens the layout at `dir`, checking that it is one.
    pub fn open(dir: &Path) -> Result<OciLayout, SourceError> {
        if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
            return Err(SourceError::NotFound {
                what: "an OCI image layout (oci-layout and index.json)".into(),
                location: dir.display().to_string(),
            });
        }
        Ok(OciLayout {
            dir: dir.to_path_buf(),
        })
    }

    fn index(&self) -> Result<ImageIndex, SourceError> {
        let path = self.dir.join("index.json");
        let bytes = read_at_most(&path, MANIFEST_MAX)
            .map_err(|e| SourceError::Other(format!("reading {}: {e}", path.display())))?;
        crate::text::parse_json(&bytes).map_err(|e| {
            SourceError::Other(format!("{} is not a valid OCI index: {e}", path.display()))
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    fn read_blob(&self, digest: &Digest, what: &str) -> Result<Vec<u8>, SourceError> {
        let path = self.blob_path(digest);
        let bytes = read_at_most(&path, MANIFEST_MAX).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::NotFound {
                what: what.to_string(),
                location: self.describe(),
            },
            _ => SourceError::Other(format!("reading {}: {e}", path.display())),
        })?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(SourceError::DigestMismatch {
                what: what.to_string(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
}

impl Source for OciLayout {
    fn describe(&self) -> String {
        format!("oci:{}", self.dir.display())
    }

    fn manifest(&self, reference: &str) -> Result<FetchedManifest, SourceError> {
        let index = self.index()?;
        let (digest, media_type) = if let Ok(digest) = reference.parse::<Digest>() {
            let listed = index
                .manifests()
                .iter()
                .find(|d| d.digest().to_string() == digest.to_string())
                .map(|d| d.media_type().to_string());
            (digest, listed)
        } else {
            let tagged = index.manifests().iter().find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|name| name == reference)
            });
            // A layout holding a single untagged image answers to the default tag.
            let only = match index.manifests().as_slice() {
                [one]
                    if reference == "latest"
                        && one
                            .annotations()
                            .as_ref()
                            .is_none_or(|a| !a.contains_key(REF_NAME)) =>
                {
                    Some(one)
                }
                _ => None,
            };
            let Some(descriptor) = tagged.or(only) else {
                return Err(SourceError::NotFound {
                    what: format!("tag {reference:?}"),
                    location: self.describe(),
                });
            };
            let digest = descriptor.digest().to_string().parse().map_err(|e| {
                SourceError::Other(format!(
                    "{}: index.json names an invalid digest: {e}",
                    self.describe()
                ))
            })?;
            (digest, Some(descriptor.media_type().to_string()))
        };
        let bytes = self.read_blob(&digest, &format!("manifest {digest}"))?;
        let media_type = match media_type {
            Some(t) => t,
            None => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|t| t.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_default(),
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    fn blob(&self, digest: &Digest, offset: u64) -> Result<Box<dyn Read + Send>, SourceError> {
        let path = self.blob_path(digest);
        let mut file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::NotFound {
                what: format!("blob {digest}"),
                location: self.describe(),
            },
            _ => SourceError::Other(format!("reading {}: {e}", path.display())),
        })?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| SourceError::Other(format!("reading {}: {e}", path.display())))?;
        Ok(Box::new(file))
    }
}

/// The whole of `path` if it holds at most `max` bytes, else an error saying so.
fn read_at_most(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "it is larger than {} MiB; refusing it",
            max >> 20
        )));
    }
    Ok(bytes)
}
