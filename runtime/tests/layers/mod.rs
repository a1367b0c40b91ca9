//! Test images in an OCI layout for the store's tests, from the raw layer tars of `test_support::raw_tar`.

use std::io::Write;
use std::path::Path;

use test_support::raw_tar::Layer;

/// One layer of a test image: the blob as served, the uncompressed tar, and its media type.
pub struct Blob {
    pub bytes: Vec<u8>,
    pub diff_id: runtime::image::Digest,
    pub media_type: &'static str,
}

impl Blob {
    pub fn gzip(layer: &mut Layer) -> Blob {
        let tar = layer.tar();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&tar).unwrap();
        Blob {
            bytes: enc.finish().unwrap(),
            diff_id: runtime::image::Digest::of(&tar),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }

    pub fn zstd(layer: &mut Layer) -> Blob {
        let tar = layer.tar();
        Blob {
            bytes: zstd::encode_all(&tar[..], 3).unwrap(),
            diff_id: runtime::image::Digest::of(&tar),
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    pub fn plain(layer: &mut Layer) -> Blob {
        let tar = layer.tar();
        Blob {
            diff_id: runtime::image::Digest::of(&tar),
            bytes: tar,
            media_type: "application/vnd.oci.image.layer.v1.tar",
        }
    }

    pub fn digest(&self) -> runtime::image::Digest {
        runtime::image::Digest::of(&self.bytes)
    }
}

fn put(dir: &Path, bytes: &[u8]) -> serde_json::Value {
    let digest = runtime::image::Digest::of(bytes);
    let path = dir.join("blobs/sha256").join(digest.hex());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    serde_json::json!({"digest": digest.to_string(), "size": bytes.len()})
}

/// Adds an image tagged `tag` to the OCI layout at `dir` (created if needed). `diff_ids` overrides the
/// config's list (to build a lying image). Returns the manifest digest.
pub fn add_to_layout(
    dir: &Path,
    tag: &str,
    layers: &[Blob],
    diff_ids: Option<Vec<String>>,
) -> runtime::image::Digest {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let diff_ids =
        diff_ids.unwrap_or_else(|| layers.iter().map(|l| l.diff_id.to_string()).collect());
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let mut config_desc = put(dir, config.to_string().as_bytes());
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let mut d = put(dir, &l.bytes);
            d["mediaType"] = l.media_type.into();
            d
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layer_descs,
    });
    let manifest_bytes = manifest.to_string().into_bytes();
    let mut desc = put(dir, &manifest_bytes);
    desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
    index["manifests"].as_array_mut().unwrap().push(desc);
    std::fs::write(index_path, index.to_string()).unwrap();
    runtime::image::Digest::of(&manifest_bytes)
}
