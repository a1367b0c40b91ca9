//! Manifests and indexes: media types, parsing, platform selection, and [`resolve`], which turns a tag or
//! digest into the config and layers of one image.
//!
//! OCI image manifests and indexes and Docker schema 2 manifests and manifest lists are understood; Docker
//! schema 1 and unknown media types are refused with an error that says so.

use oci_spec::image::{Descriptor as OciDescriptor, ImageIndex, ImageManifest};

use super::Digest;
use super::platform::Platform;
use super::source::{FetchedManifest, Source, SourceError};

/// Media types this module knows.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_ND: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    pub const OCI_LAYER_ND_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const OCI_LAYER_ND_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// What the registry client lists in `Accept` when fetching a manifest, most preferred first.
    pub const MANIFEST_ACCEPT: [&str; 4] = [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST_LIST,
        DOCKER_MANIFEST,
    ];
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type, or `None` when it is not a layer type this runtime can unpack.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        use media_type::*;
        match media_type {
            OCI_LAYER | OCI_LAYER_ND | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Compression::None)
            }
            OCI_LAYER_GZIP | OCI_LAYER_ND_GZIP | DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN_GZIP => {
                Some(Compression::Gzip)
            }
            OCI_LAYER_ZSTD
            | OCI_LAYER_ND_ZSTD
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// A blob named by a manifest: the image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDescriptor {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// One layer of an image, in the order they are stacked (base first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
    pub media_type: String,
    /// Where a non-distributable layer may be fetched from instead of the registry (usually empty).
    pub urls: Vec<String>,
}

/// What [`resolve`] found: one image manifest for the wanted platform, and the blobs it names.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The digest of the image manifest (not of the index it was selected from).
    pub manifest_digest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_media_type: String,
    /// The digest of the index or manifest list the manifest was selected from, if any.
    pub index_digest: Option<Digest>,
    /// The platform of the index entry that was selected, if the image came from an index.
    pub platform: Option<Platform>,
    pub config: BlobDescriptor,
    pub layers: Vec<LayerDescriptor>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "{what} is a Docker schema 1 manifest: schema 1 manifests are deprecated and not supported; re-push the image with a current tool"
    )]
    Schema1 { what: String },
    #[error(
        "{what} has media type {}, which is not an image manifest or index this tool understands",
        crate::text::quote(.media_type)
    )]
    UnknownMediaType { what: String, media_type: String },
    #[error("{what} is not a valid manifest: {reason}")]
    Invalid { what: String, reason: String },
    #[error(
        "{what} names a layer of media type {}, which this tool cannot unpack",
        crate::text::quote(.media_type)
    )]
    UnsupportedLayer { what: String, media_type: String },
    #[error(
        "{what} is not a container image (its config has media type {})",
        crate::text::quote(.media_type)
    )]
    NotAnImage { what: String, media_type: String },
    #[error(
        "{what} has no image for platform {wanted}; it has {available}; choose one with --platform"
    )]
    NoMatchingPlatform {
        what: String,
        wanted: Platform,
        available: String,
    },
}

/// A manifest classified by what it is.
enum Parsed {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

/// Fetch `reference` (a tag or digest) from `source` and resolve it to one image for `platform`: an index or
/// manifest list is narrowed to the entry whose platform matches by value, then that manifest is fetched
/// and checked against the index entry.
pub fn resolve(
    source: &dyn Source,
    reference: &str,
    platform: &Platform,
) -> Result<ResolvedImage, ManifestError> {
    let top = source.manifest(reference)?;
    let what = format!("{}:{reference}", source.describe());
    let what = what.replace(":sha256:", "@sha256:");
    match parse(&top, &what)? {
        Parsed::Manifest(manifest) => image_from(top, manifest, None, None, &what),
        Parsed::Index(index) => {
            let entry = select(&index, platform, &what)?;
            let digest = to_digest(entry.digest().as_ref(), &what)?;
            let child_what = format!("{}@{digest}", source.describe());
            let child = source.manifest(&digest.to_string())?;
            if child.digest != digest {
                return Err(SourceError::DigestMismatch {
                    what: child_what,
                    expected: digest,
                    actual: child.digest,
                }
                .into());
            }
            if child.bytes.len() as u64 != entry.size() {
                return Err(ManifestError::Invalid {
                    what: child_what,
                    reason: format!(
                        "the index says {} bytes, the registry sent {}",
                        entry.size(),
                        child.bytes.len()
                    ),
                });
            }
            let selected = entry.platform().as_ref().map(oci_platform);
            match parse(&child, &child_what)? {
                Parsed::Manifest(manifest) => {
                    image_from(child, manifest, Some(top.digest), selected, &child_what)
                }
                Parsed::Index(_) => Err(ManifestError::Invalid {
                    what: child_what,
                    reason: "an index entry for a platform points to another index".to_string(),
                }),
            }
        }
    }
}

/// Strip parameters (`; charset=utf-8`) from a Content-Type.
fn bare_media_type(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}

fn parse(fetched: &FetchedManifest, what: &str) -> Result<Parsed, ManifestError> {
    use media_type::*;
    let invalid = |reason: String| ManifestError::Invalid {
        what: what.to_string(),
        reason,
    };
    let declared = bare_media_type(&fetched.media_type);
    if declared == DOCKER_SCHEMA1 || declared == DOCKER_SCHEMA1_SIGNED {
        return Err(ManifestError::Schema1 {
            what: what.to_string(),
        });
    }
    // Look inside: some registries and layouts declare a generic type (or none) and the JSON says the rest.
    let json: serde_json::Value =
        crate::text::parse_json(&fetched.bytes).map_err(|e| invalid(e.to_string()))?;
    if json.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        return Err(ManifestError::Schema1 {
            what: what.to_string(),
        });
    }
    let inner = json.get("mediaType").and_then(|v| v.as_str()).unwrap_or("");
    let generic = matches!(
        declared,
        "" | "application/json" | "text/plain" | "application/octet-stream"
    );
    let kind = if generic {
        match inner {
            "" if json.get("manifests").is_some() => OCI_INDEX,
            "" if json.get("layers").is_some() => OCI_MANIFEST,
            t => t,
        }
    } else {
        declared
    };
    match kind {
        // Parsed again from the bytes (not the Value) so that an error says its line and column.
        OCI_INDEX | DOCKER_MANIFEST_LIST => crate::text::parse_json(&fetched.bytes)
            .map(|i| Parsed::Index(Box::new(i)))
            .map_err(|e| invalid(e.to_string())),
        OCI_MANIFEST | DOCKER_MANIFEST => crate::text::parse_json(&fetched.bytes)
            .map(|m| Parsed::Manifest(Box::new(m)))
            .map_err(|e| invalid(e.to_string())),
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(ManifestError::Schema1 {
            what: what.to_string(),
        }),
        other => Err(ManifestError::UnknownMediaType {
            what: what.to_string(),
            media_type: other.to_string(),
        }),
    }
}

fn to_digest(oci: &str, what: &str) -> Result<Digest, ManifestError> {
    oci.parse().map_err(|e| ManifestError::Invalid {
        what: what.to_string(),
        reason: format!("{e}"),
    })
}

fn oci_platform(p: &oci_spec::image::Platform) -> Platform {
    Platform::new(
        &p.os().to_string(),
        &p.architecture().to_string(),
        p.variant().as_deref(),
    )
}

/// The index entry for `platform`, chosen by value: an exact variant match beats an entry without a variant;
/// among equals the first listed wins. Entries without a platform (attestations, artifacts) never match.
fn select<'a>(
    index: &'a ImageIndex,
    platform: &Platform,
    what: &str,
) -> Result<&'a OciDescriptor, ManifestError> {
    let mut best: Option<(u8, &OciDescriptor)> = None;
    for entry in index.manifests() {
        let Some(p) = entry.platform() else { continue };
        if let Some(rank) = platform.match_rank(&oci_platform(p))
            && best.is_none_or(|(r, _)| rank > r)
        {
            best = Some((rank, entry));
        }
    }
    if let Some((_, entry)) = best {
        return Ok(entry);
    }
    let mut available: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|e| e.platform().as_ref())
        .map(|p| oci_platform(p).to_string())
        .filter(|p| p != "unknown/unknown")
        .collect();
    available.dedup();
    let available = if available.is_empty() {
        "no platform-specific images".to_string()
    } else {
        // Platform names come from the index: each, and the list, cut short.
        let names: Vec<String> = available.iter().map(|p| crate::text::clip(p)).collect();
        crate::text::clip(&names.join(", "))
    };
    Err(ManifestError::NoMatchingPlatform {
        what: what.to_string(),
        wanted: platform.clone(),
        available,
    })
}

fn image_from(
    fetched: FetchedManifest,
    manifest: Box<ImageManifest>,
    index_digest: Option<Digest>,
    platform: Option<Platform>,
    what: &str,
) -> Result<ResolvedImage, ManifestError> {
    let config = manifest.config();
    let config_type = config.media_type().to_string();
    if config_type != media_type::OCI_CONFIG && config_type != media_type::DOCKER_CONFIG {
        return Err(ManifestError::NotAnImage {
            what: what.to_string(),
            media_type: config_type,
        });
    }
    let config = BlobDescriptor {
        digest: to_digest(config.digest().as_ref(), what)?,
        size: config.size(),
        media_type: config_type,
    };
    let layers = manifest
        .layers()
        .iter()
        .map(|layer| {
            let media_type = layer.media_type().to_string();
            let compression = Compression::from_media_type(&media_type).ok_or_else(|| {
                ManifestError::UnsupportedLayer {
                    what: what.to_string(),
                    media_type: media_type.clone(),
                }
            })?;
            Ok(LayerDescriptor {
                digest: to_digest(layer.digest().as_ref(), what)?,
                size: layer.size(),
                compression,
                media_type,
                urls: layer.urls().clone().unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, ManifestError>>()?;
    let manifest_media_type = match manifest.media_type() {
        Some(t) => t.to_string(),
        None => match bare_media_type(&fetched.media_type) {
            "" | "application/json" => media_type::OCI_MANIFEST.to_string(),
            t => t.to_string(),
        },
    };
    Ok(ResolvedImage {
        manifest_digest: fetched.digest,
        manifest_bytes: fetched.bytes,
        manifest_media_type,
        index_digest,
        platform,
        config,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Read;

    use super::*;

    /// An in-memory source: manifests by tag or digest, with their declared media types.
    #[derive(Default)]
    struct Fake {
        manifests: HashMap<String, (String, Vec<u8>)>,
    }

    impl Fake {
        fn put(&mut self, tag: Option<&str>, media_type: &str, json: serde_json::Value) -> Digest {
            let bytes = serde_json::to_vec(&json).unwrap();
            let digest = Digest::of(&bytes);
            let entry = (media_type.to_string(), bytes);
            if let Some(tag) = tag {
                self.manifests.insert(tag.to_string(), entry.clone());
            }
            self.manifests.insert(digest.to_string(), entry);
            digest
        }
    }

    impl Source for Fake {
        fn describe(&self) -> String {
            "registry.test/app".to_string()
        }
        fn manifest(&self, reference: &str) -> Result<FetchedManifest, SourceError> {
            let (media_type, bytes) =
                self.manifests
                    .get(reference)
                    .cloned()
                    .ok_or(SourceError::NotFound {
                        what: format!("manifest {reference}"),
                        location: "registry.test".to_string(),
                    })?;
            Ok(FetchedManifest {
                digest: Digest::of(&bytes),
                bytes,
                media_type,
            })
        }
        fn blob(&self, _: &Digest, _: u64) -> Result<Box<dyn Read + Send>, SourceError> {
            Err(SourceError::Unsupported("no blobs here".to_string()))
        }
    }

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn image_manifest(media: &str, layer_types: &[&str]) -> serde_json::Value {
        let layers: Vec<_> = layer_types
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"mediaType": t, "digest": d(10 + i as u8), "size": 100 + i}))
            .collect();
        let config_type = if media == media_type::DOCKER_MANIFEST {
            media_type::DOCKER_CONFIG
        } else {
            media_type::OCI_CONFIG
        };
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media,
            "config": {"mediaType": config_type, "digest": d(1), "size": 7},
            "layers": layers,
        })
    }

    fn linux(arch: &str, variant: Option<&str>) -> Platform {
        Platform::new("linux", arch, variant)
    }

    #[test]
    fn compression_from_every_layer_media_type() {
        use media_type::*;
        for (t, c) in [
            (OCI_LAYER, Compression::None),
            (OCI_LAYER_GZIP, Compression::Gzip),
            (OCI_LAYER_ZSTD, Compression::Zstd),
            (OCI_LAYER_ND, Compression::None),
            (OCI_LAYER_ND_GZIP, Compression::Gzip),
            (OCI_LAYER_ND_ZSTD, Compression::Zstd),
            (DOCKER_LAYER_GZIP, Compression::Gzip),
            (DOCKER_LAYER_FOREIGN_GZIP, Compression::Gzip),
        ] {
            assert_eq!(Compression::from_media_type(t), Some(c), "{t}");
        }
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+lz4"),
            None
        );
    }

    #[test]
    fn resolves_an_oci_manifest_by_tag() {
        let mut src = Fake::default();
        let json = image_manifest(
            media_type::OCI_MANIFEST,
            &[
                media_type::OCI_LAYER_GZIP,
                media_type::OCI_LAYER_ZSTD,
                media_type::OCI_LAYER,
            ],
        );
        let digest = src.put(Some("v1"), media_type::OCI_MANIFEST, json);
        let img = resolve(&src, "v1", &Platform::host()).unwrap();
        assert_eq!(img.manifest_digest, digest);
        assert_eq!(img.index_digest, None);
        assert_eq!(img.config.digest.to_string(), d(1));
        assert_eq!(img.config.size, 7);
        let kinds: Vec<_> = img.layers.iter().map(|l| l.compression).collect();
        assert_eq!(
            kinds,
            [Compression::Gzip, Compression::Zstd, Compression::None]
        );
        assert_eq!(img.layers[1].size, 101);
        assert_eq!(img.manifest_media_type, media_type::OCI_MANIFEST);
    }

    #[test]
    fn resolves_a_docker_schema2_manifest_and_keeps_urls() {
        let mut src = Fake::default();
        let mut json = image_manifest(
            media_type::DOCKER_MANIFEST,
            &[media_type::DOCKER_LAYER_GZIP],
        );
        json["layers"][0]["urls"] = serde_json::json!(["https://example.test/layer"]);
        src.put(Some("latest"), media_type::DOCKER_MANIFEST, json);
        let img = resolve(&src, "latest", &Platform::host()).unwrap();
        assert_eq!(img.config.media_type, media_type::DOCKER_CONFIG);
        assert_eq!(img.layers[0].compression, Compression::Gzip);
        assert_eq!(img.layers[0].urls, ["https://example.test/layer"]);
    }

    fn two_platform_index(
        src: &mut Fake,
        list_type: &str,
        manifest_type: &str,
    ) -> (Digest, Digest, Digest) {
        let amd = src.put(
            None,
            manifest_type,
            image_manifest(manifest_type, &[media_type::OCI_LAYER_GZIP]),
        );
        let arm = src.put(
            None,
            manifest_type,
            image_manifest(
                manifest_type,
                &[media_type::OCI_LAYER_GZIP, media_type::OCI_LAYER_GZIP],
            ),
        );
        let size = |dg: &Digest| src.manifests[&dg.to_string()].1.len();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": list_type,
            "manifests": [
                // An attestation entry first: never selected, though it comes first.
                {"mediaType": manifest_type, "digest": d(99), "size": 1,
                 "platform": {"os": "unknown", "architecture": "unknown"}},
                {"mediaType": manifest_type, "digest": arm.to_string(), "size": size(&arm),
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": manifest_type, "digest": amd.to_string(), "size": size(&amd),
                 "platform": {"os": "linux", "architecture": "amd64"}},
            ]
        });
        let idx = src.put(Some("multi"), list_type, index);
        (idx, amd, arm)
    }

    #[test]
    fn selects_from_an_index_by_platform_value() {
        let mut src = Fake::default();
        let (idx, amd, arm) =
            two_platform_index(&mut src, media_type::OCI_INDEX, media_type::OCI_MANIFEST);
        let a = resolve(&src, "multi", &linux("amd64", None)).unwrap();
        assert_eq!(
            (a.manifest_digest, a.index_digest.clone()),
            (amd, Some(idx.clone()))
        );
        assert_eq!(a.layers.len(), 1);
        assert_eq!(a.platform, Some(linux("amd64", None)));
        let b = resolve(&src, "multi", &linux("arm64", None)).unwrap();
        assert_eq!(
            (b.manifest_digest, b.index_digest),
            (arm.clone(), Some(idx.clone()))
        );
        assert_eq!(b.layers.len(), 2);
        // By digest too.
        let c = resolve(&src, &idx.to_string(), &linux("arm64", Some("v8"))).unwrap();
        assert_eq!(c.manifest_digest, arm);
    }

    #[test]
    fn selects_from_a_docker_manifest_list() {
        let mut src = Fake::default();
        let (_, amd, _) = two_platform_index(
            &mut src,
            media_type::DOCKER_MANIFEST_LIST,
            media_type::DOCKER_MANIFEST,
        );
        let a = resolve(&src, "multi", &linux("x86_64", None)).unwrap();
        assert_eq!(a.manifest_digest, amd);
        assert_eq!(a.manifest_media_type, media_type::DOCKER_MANIFEST);
    }

    #[test]
    fn no_matching_platform_lists_what_there_is() {
        let mut src = Fake::default();
        two_platform_index(&mut src, media_type::OCI_INDEX, media_type::OCI_MANIFEST);
        let e = resolve(&src, "multi", &linux("s390x", None)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ManifestError::NoMatchingPlatform { .. }));
        assert!(msg.contains("linux/arm64/v8, linux/amd64"), "{msg}");
        assert!(msg.contains("--platform"), "{msg}");
        assert!(!msg.contains("unknown/unknown"), "{msg}");
    }

    #[test]
    fn exact_variant_beats_an_entry_without_one() {
        let mut src = Fake::default();
        let plain = src.put(
            None,
            media_type::OCI_MANIFEST,
            image_manifest(media_type::OCI_MANIFEST, &[]),
        );
        let v7 = src.put(
            None,
            media_type::OCI_MANIFEST,
            image_manifest(media_type::OCI_MANIFEST, &[media_type::OCI_LAYER]),
        );
        let size = |dg: &Digest| src.manifests[&dg.to_string()].1.len();
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": media_type::OCI_MANIFEST, "digest": plain.to_string(), "size": size(&plain),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media_type::OCI_MANIFEST, "digest": v7.to_string(), "size": size(&v7),
             "platform": {"os": "linux", "architecture": "amd64", "variant": "v3"}},
        ]});
        src.put(Some("x"), media_type::OCI_INDEX, index);
        assert_eq!(
            resolve(&src, "x", &linux("amd64", Some("v3")))
                .unwrap()
                .manifest_digest,
            v7
        );
        assert_eq!(
            resolve(&src, "x", &linux("amd64", None))
                .unwrap()
                .manifest_digest,
            plain
        );
    }

    #[test]
    fn index_entry_with_wrong_size_is_refused() {
        let mut src = Fake::default();
        let m = src.put(
            None,
            media_type::OCI_MANIFEST,
            image_manifest(media_type::OCI_MANIFEST, &[]),
        );
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": [
            {"mediaType": media_type::OCI_MANIFEST, "digest": m.to_string(), "size": 3,
             "platform": {"os": "linux", "architecture": "amd64"}}]});
        src.put(Some("x"), media_type::OCI_INDEX, index);
        let e = resolve(&src, "x", &linux("amd64", None)).unwrap_err();
        assert!(matches!(e, ManifestError::Invalid { .. }), "{e}");
    }

    #[test]
    fn schema1_is_refused_by_media_type_or_content() {
        let mut src = Fake::default();
        let v1 =
            serde_json::json!({"schemaVersion": 1, "name": "app", "tag": "old", "fsLayers": []});
        src.put(
            Some("signed"),
            media_type::DOCKER_SCHEMA1_SIGNED,
            v1.clone(),
        );
        src.put(Some("plain"), media_type::DOCKER_SCHEMA1, v1.clone());
        src.put(Some("json"), "application/json", v1);
        for tag in ["signed", "plain", "json"] {
            let e = resolve(&src, tag, &Platform::host()).unwrap_err();
            assert!(matches!(e, ManifestError::Schema1 { .. }), "{tag}: {e}");
            assert!(
                e.to_string()
                    .contains("schema 1 manifests are deprecated and not supported; re-push")
            );
        }
    }

    #[test]
    fn unknown_media_types_and_non_images_are_refused() {
        let mut src = Fake::default();
        src.put(
            Some("weird"),
            "application/vnd.example.thing+json",
            serde_json::json!({"schemaVersion": 2}),
        );
        let e = resolve(&src, "weird", &Platform::host()).unwrap_err();
        assert!(matches!(e, ManifestError::UnknownMediaType { .. }), "{e}");
        assert!(e.to_string().contains("application/vnd.example.thing+json"));

        let mut helm = image_manifest(media_type::OCI_MANIFEST, &[]);
        helm["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json".into();
        src.put(Some("chart"), media_type::OCI_MANIFEST, helm);
        let e = resolve(&src, "chart", &Platform::host()).unwrap_err();
        assert!(matches!(e, ManifestError::NotAnImage { .. }), "{e}");

        let lz4 = image_manifest(
            media_type::OCI_MANIFEST,
            &["application/vnd.oci.image.layer.v1.tar+lz4"],
        );
        src.put(Some("lz4"), media_type::OCI_MANIFEST, lz4);
        let e = resolve(&src, "lz4", &Platform::host()).unwrap_err();
        assert!(matches!(e, ManifestError::UnsupportedLayer { .. }), "{e}");
    }

    #[test]
    fn generic_content_types_are_classified_by_content() {
        let mut src = Fake::default();
        let mut json = image_manifest(media_type::OCI_MANIFEST, &[media_type::OCI_LAYER]);
        json.as_object_mut().unwrap().remove("mediaType");
        src.put(Some("t"), "application/json; charset=utf-8", json);
        let img = resolve(&src, "t", &Platform::host()).unwrap();
        assert_eq!(img.manifest_media_type, media_type::OCI_MANIFEST);
        src.put(
            Some("bad"),
            media_type::OCI_MANIFEST,
            serde_json::json!({"schemaVersion": 2}),
        );
        assert!(matches!(
            resolve(&src, "bad", &Platform::host()),
            Err(ManifestError::Invalid { .. })
        ));
    }

    #[test]
    fn source_errors_pass_through() {
        let src = Fake::default();
        let e = resolve(&src, "missing", &Platform::host()).unwrap_err();
        assert!(
            matches!(e, ManifestError::Source(SourceError::NotFound { .. })),
            "{e}"
        );
    }
}
