//! Test images built from scratch: layers as tar (written header by header, so malformed and malicious
//! entries are possible), compressed with gzip or zstd or not at all; image configs; OCI and Docker schema 2
//! manifests; OCI image indexes and Docker manifest lists.

use std::io::Write as _;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

/// The mtime entries get unless told otherwise (2023-11-14), so layers are reproducible.
pub const DEFAULT_MTIME: u64 = 1_700_000_000;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Oci,
    Docker,
}

/// Metadata of one entry. `Meta::default()` is root-owned, `DEFAULT_MTIME`, and the entry kind's usual mode.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub mode: Option<u32>,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Option<u64>,
    /// Written as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    pub fn mode(mode: u32) -> Meta {
        Meta {
            mode: Some(mode),
            ..Meta::default()
        }
    }
    pub fn with_mode(mut self, mode: u32) -> Meta {
        self.mode = Some(mode);
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Meta {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> Meta {
        self.mtime = Some(mtime);
        self
    }
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Meta {
        self.xattrs.push((name.to_string(), value.to_vec()));
        self
    }
}

/// One entry written exactly as given: any path bytes (`../x`, `/abs`, ...), any type, any link target.
/// For the escapes a safe unpacker must refuse; the `tar` crate's own API rejects most of these.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub path: Vec<u8>,
    pub kind: EntryType,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    pub meta: Meta,
}

impl RawEntry {
    pub fn file(path: &str, data: &[u8]) -> RawEntry {
        Self::new(path, EntryType::Regular, "", data)
    }
    pub fn dir(path: &str) -> RawEntry {
        Self::new(path, EntryType::Directory, "", b"")
    }
    pub fn symlink(path: &str, target: &str) -> RawEntry {
        Self::new(path, EntryType::Symlink, target, b"")
    }
    pub fn hardlink(path: &str, target: &str) -> RawEntry {
        Self::new(path, EntryType::Link, target, b"")
    }
    pub fn new(path: &str, kind: EntryType, link: &str, data: &[u8]) -> RawEntry {
        RawEntry {
            path: path.as_bytes().to_vec(),
            kind,
            link: link.as_bytes().to_vec(),
            data: data.to_vec(),
            meta: Meta::default(),
        }
    }
}

/// Builds one layer's tar, entry by entry, in the order given (order matters to unpackers: a symlink
/// planted by an earlier entry, a whiteout after the file it hides...).
///
/// Paths are relative to the layer root (`etc/passwd`); the checked methods refuse `..` and absolute paths so
/// that a typo never makes an accidental malicious layer; use `raw` for deliberate ones.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    pub fn dir(self, path: &str) -> Self {
        self.dir_with(path, Meta::default())
    }
    pub fn dir_with(mut self, path: &str, meta: Meta) -> Self {
        let name = format!("{}/", checked(path).trim_end_matches('/'));
        self.append(
            name.as_bytes(),
            EntryType::Directory,
            b"",
            b"",
            &meta,
            0o755,
        );
        self
    }

    pub fn file(self, path: &str, data: impl AsRef<[u8]>) -> Self {
        self.file_with(path, data, Meta::default())
    }
    pub fn executable(self, path: &str, data: impl AsRef<[u8]>) -> Self {
        self.file_with(path, data, Meta::mode(0o755))
    }
    pub fn file_with(mut self, path: &str, data: impl AsRef<[u8]>, meta: Meta) -> Self {
        self.append(
            checked(path).as_bytes(),
            EntryType::Regular,
            b"",
            data.as_ref(),
            &meta,
            0o644,
        );
        self
    }

    /// A symlink; `target` may be absolute (`/bin/busybox`): it must resolve inside the image at run time.
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.symlink_with(path, target, Meta::default())
    }
    pub fn symlink_with(mut self, path: &str, target: &str, meta: Meta) -> Self {
        self.append(
            checked(path).as_bytes(),
            EntryType::Symlink,
            target.as_bytes(),
            b"",
            &meta,
            0o777,
        );
        self
    }

    /// A hardlink to `target`, a path in this layer or a lower one (relative to the layer root, as tar has it).
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let target = checked(target).to_string();
        self.append(
            checked(path).as_bytes(),
            EntryType::Link,
            target.as_bytes(),
            b"",
            &Meta::default(),
            0o644,
        );
        self
    }

    /// Deletes `path` of a lower layer: the entry `DIR/.wh.NAME`.
    pub fn whiteout(mut self, path: &str) -> Self {
        let path = checked(path);
        let name = match path.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{path}"),
        };
        self.append(
            name.as_bytes(),
            EntryType::Regular,
            b"",
            b"",
            &Meta::default(),
            0o644,
        );
        self
    }

    /// Hides everything lower layers have in `dir`: the entry `DIR/.wh..wh..opq`.
    pub fn opaque(mut self, dir: &str) -> Self {
        let name = format!("{}/.wh..wh..opq", checked(dir).trim_end_matches('/'));
        self.append(
            name.as_bytes(),
            EntryType::Regular,
            b"",
            b"",
            &Meta::default(),
            0o644,
        );
        self
    }

    pub fn char_device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut header = Header::new_ustar();
        header.set_device_major(major).expect("device major");
        header.set_device_minor(minor).expect("device minor");
        self.append_header(
            header,
            checked(path).as_bytes(),
            EntryType::Char,
            b"",
            b"",
            &Meta::default(),
            0o666,
        );
        self
    }

    pub fn block_device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut header = Header::new_ustar();
        header.set_device_major(major).expect("device major");
        header.set_device_minor(minor).expect("device minor");
        self.append_header(
            header,
            checked(path).as_bytes(),
            EntryType::Block,
            b"",
            b"",
            &Meta::default(),
            0o660,
        );
        self
    }

    pub fn fifo(mut self, path: &str) -> Self {
        self.append(
            checked(path).as_bytes(),
            EntryType::Fifo,
            b"",
            b"",
            &Meta::default(),
            0o644,
        );
        self
    }

    /// An entry written verbatim: see `RawEntry`.
    pub fn raw(mut self, entry: RawEntry) -> Self {
        let default_mode = match entry.kind {
            EntryType::Directory => 0o755,
            EntryType::Symlink => 0o777,
            _ => 0o644,
        };
        self.append(
            &entry.path,
            entry.kind,
            &entry.link,
            &entry.data,
            &entry.meta,
            default_mode,
        );
        self
    }

    /// Appends arbitrary bytes after the entries written so far (e.g. garbage for a corrupt layer).
    pub fn raw_bytes(mut self, bytes: &[u8]) -> Self {
        self.tar.get_mut().extend_from_slice(bytes);
        self
    }

    /// The uncompressed tar, with its end-of-archive blocks.
    pub fn into_tar(self) -> Vec<u8> {
        self.tar.into_inner().expect("finish tar")
    }

    pub fn build(self, compression: Compression) -> Layer {
        Layer::from_tar(self.into_tar(), compression)
    }

    fn append(
        &mut self,
        path: &[u8],
        kind: EntryType,
        link: &[u8],
        data: &[u8],
        meta: &Meta,
        mode: u32,
    ) {
        self.append_header(Header::new_ustar(), path, kind, link, data, meta, mode);
    }

    #[allow(clippy::too_many_arguments)]
    fn append_header(
        &mut self,
        mut header: Header,
        path: &[u8],
        kind: EntryType,
        link: &[u8],
        data: &[u8],
        meta: &Meta,
        default_mode: u32,
    ) {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        // Names are written byte for byte; longer ones go in PAX records (with a truncated copy in the header).
        let old = header.as_old_mut();
        if path.len() > old.name.len() {
            pax.push(("path".into(), path.to_vec()));
        }
        let n = path.len().min(old.name.len());
        old.name[..n].copy_from_slice(&path[..n]);
        if link.len() > old.linkname.len() {
            pax.push(("linkpath".into(), link.to_vec()));
        }
        let n = link.len().min(old.linkname.len());
        old.linkname[..n].copy_from_slice(&link[..n]);
        for (name, value) in &meta.xattrs {
            pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
        }
        if !pax.is_empty() {
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .expect("append pax header");
        }
        header.set_entry_type(kind);
        header.set_mode(meta.mode.unwrap_or(default_mode));
        header.set_uid(meta.uid);
        header.set_gid(meta.gid);
        header.set_mtime(meta.mtime.unwrap_or(DEFAULT_MTIME));
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.tar.append(&header, data).expect("append tar entry");
    }
}

fn checked(path: &str) -> &str {
    assert!(
        !path.starts_with('/') && !path.split('/').any(|c| c == ".."),
        "LayerBuilder: {path:?} escapes the layer; use LayerBuilder::raw for deliberate escapes"
    );
    path
}

/// One layer blob: its uncompressed tar (whose digest is the config's diff_id) and the bytes pushed.
#[derive(Debug, Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub diff_id: String,
    pub blob: Vec<u8>,
    pub digest: String,
    pub compression: Compression,
    /// Overrides the media type manifests give this layer (for unknown-media-type tests).
    pub media_type: Option<String>,
}

impl Layer {
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Layer {
        let blob = match compression {
            Compression::None => tar.clone(),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&tar).expect("gzip");
                enc.finish().expect("gzip")
            }
            Compression::Zstd => zstd::encode_all(&tar[..], 3).expect("zstd"),
        };
        Layer {
            diff_id: sha256_digest(&tar),
            digest: sha256_digest(&blob),
            tar,
            blob,
            compression,
            media_type: None,
        }
    }

    pub fn with_media_type(mut self, media_type: &str) -> Layer {
        self.media_type = Some(media_type.to_string());
        self
    }

    pub fn media_type(&self, format: ManifestFormat) -> String {
        if let Some(m) = &self.media_type {
            return m.clone();
        }
        let m = match (format, self.compression) {
            (ManifestFormat::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (ManifestFormat::Oci, Compression::Gzip) => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            (ManifestFormat::Oci, Compression::Zstd) => {
                "application/vnd.oci.image.layer.v1.tar+zstd"
            }
            (ManifestFormat::Docker, Compression::None) => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            (ManifestFormat::Docker, Compression::Gzip) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            (ManifestFormat::Docker, Compression::Zstd) => {
                "application/vnd.docker.image.rootfs.diff.tar.zstd"
            }
        };
        m.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform in OCI terms (`linux/amd64`, `linux/arm64/v8`...).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            other => (other, None),
        };
        Platform::new("linux", architecture, variant)
    }

    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"os": self.os, "architecture": self.architecture});
        if let Some(variant) = &self.variant {
            v["variant"] = json!(variant);
        }
        v
    }
}

/// An image's config and layers, sealed into a manifest by `build`.
#[derive(Clone)]
pub struct ImageBuilder {
    layers: Vec<Layer>,
    config: serde_json::Map<String, Value>,
    platform: Platform,
    format: ManifestFormat,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// No layers, no config, this machine's platform, an OCI manifest.
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            layers: Vec::new(),
            config: serde_json::Map::new(),
            platform: Platform::host(),
            format: ManifestFormat::Oci,
        }
    }

    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Adds `KEY=VALUE` to `Env`.
    pub fn env(mut self, key_value: &str) -> Self {
        let env = self.config.entry("Env").or_insert_with(|| json!([]));
        env.as_array_mut().unwrap().push(json!(key_value));
        self
    }
    pub fn entrypoint(self, args: &[&str]) -> Self {
        self.config_value("Entrypoint", json!(args))
    }
    pub fn cmd(self, args: &[&str]) -> Self {
        self.config_value("Cmd", json!(args))
    }
    pub fn user(self, user: &str) -> Self {
        self.config_value("User", json!(user))
    }
    pub fn workdir(self, dir: &str) -> Self {
        self.config_value("WorkingDir", json!(dir))
    }
    /// Any other key of the config's `config` object (`Labels`, `StopSignal`, `ExposedPorts`...).
    pub fn config_value(mut self, key: &str, value: Value) -> Self {
        self.config.insert(key.to_string(), value);
        self
    }

    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }
    pub fn format(mut self, format: ManifestFormat) -> Self {
        self.format = format;
        self
    }

    pub fn build(self) -> Image {
        let diff_ids: Vec<&str> = self.layers.iter().map(|l| l.diff_id.as_str()).collect();
        let history: Vec<Value> = self
            .layers
            .iter()
            .map(
                |_| json!({"created": "2023-11-14T22:13:20Z", "created_by": "dstack test harness"}),
            )
            .collect();
        let mut config = json!({
            "created": "2023-11-14T22:13:20Z",
            "os": self.platform.os,
            "architecture": self.platform.architecture,
            "config": Value::Object(self.config),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        if let Some(variant) = &self.platform.variant {
            config["variant"] = json!(variant);
        }
        let config = serde_json::to_vec(&config).unwrap();
        let (manifest_type, config_type) = match self.format {
            ManifestFormat::Oci => (OCI_MANIFEST, OCI_CONFIG),
            ManifestFormat::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        };
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type(self.format), "digest": l.digest, "size": l.blob.len()}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": sha256_digest(&config), "size": config.len()},
            "layers": layers,
        });
        let manifest = serde_json::to_vec_pretty(&manifest).unwrap();
        Image {
            config_digest: sha256_digest(&config),
            config,
            manifest_digest: sha256_digest(&manifest),
            manifest,
            manifest_media_type: manifest_type.to_string(),
            layers: self.layers,
            platform: self.platform,
            format: self.format,
        }
    }
}

/// A built image: what a registry stores for it.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub platform: Platform,
    pub format: ManifestFormat,
}

impl Image {
    /// The config as JSON.
    pub fn config_json(&self) -> Value {
        serde_json::from_slice(&self.config).unwrap()
    }
    /// Sum of the layer blobs' sizes.
    pub fn layers_size(&self) -> u64 {
        self.layers.iter().map(|l| l.blob.len() as u64).sum()
    }
}

/// An OCI image index or a Docker manifest list over several images (one per platform).
#[derive(Debug, Clone)]
pub struct Index {
    pub images: Vec<Image>,
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

impl Index {
    /// Lists `images`, each with its own platform, as `format` (OCI index or Docker manifest list).
    pub fn new(format: ManifestFormat, images: Vec<Image>) -> Index {
        let media_type = match format {
            ManifestFormat::Oci => OCI_INDEX,
            ManifestFormat::Docker => DOCKER_MANIFEST_LIST,
        };
        let manifests: Vec<Value> = images
            .iter()
            .map(|i| {
                json!({
                    "mediaType": i.manifest_media_type,
                    "digest": i.manifest_digest,
                    "size": i.manifest.len(),
                    "platform": i.platform.to_json(),
                })
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        }))
        .unwrap();
        Index {
            images,
            digest: sha256_digest(&bytes),
            bytes,
            media_type: media_type.to_string(),
        }
    }

    /// The image for `platform`, if listed.
    pub fn image_for(&self, platform: &Platform) -> Option<&Image> {
        self.images.iter().find(|i| &i.platform == platform)
    }
}

/// One entry of a tar as the `tar` crate reads it (for checking what a builder wrote).
#[derive(Debug, Clone)]
pub struct TarEntry {
    pub path: Vec<u8>,
    pub kind: EntryType,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub data: Vec<u8>,
    /// From PAX `SCHILY.xattr.*` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Reads every entry of an uncompressed tar, names verbatim (no path checks).
pub fn list_tar(tar: &[u8]) -> Vec<TarEntry> {
    use std::io::Read as _;
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().expect("read tar") {
        let mut entry = entry.expect("read tar entry");
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().expect("read pax records") {
            for ext in exts {
                let ext = ext.expect("pax record");
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let header = entry.header().clone();
        let path = entry.path_bytes().into_owned();
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry data");
        out.push(TarEntry {
            path,
            kind: header.entry_type(),
            link,
            mode: header.mode().unwrap_or(0),
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mtime: header.mtime().unwrap_or(0),
            data,
            xattrs,
        });
    }
    out
}
