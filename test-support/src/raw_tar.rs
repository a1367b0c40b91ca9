//! Layer tars written entry by entry with raw header fields, including ones no honest tool would write
//! (raw names with `..`, links pointing out), and a snapshot of a directory tree to prove that nothing
//! outside a layer changed. (`crate::image` builds whole images for a registry; this writes single tars.)

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A tar written entry by entry with raw header fields.
pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, name: &str, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_size(0);
        // Written raw: tar's own setters refuse `..` and we need to write exactly what an attacker would.
        let raw = &mut header.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header
    }

    fn set_link(header: &mut tar::Header, target: &str) {
        let raw = &mut header.as_old_mut().linkname;
        raw.fill(0);
        raw[..target.len()].copy_from_slice(target.as_bytes());
    }

    fn append(&mut self, mut header: tar::Header, data: &[u8]) -> &mut Layer {
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Layer {
        self.dir_with(name, 0o755, 1_600_000_000)
    }

    pub fn dir_with(&mut self, name: &str, mode: u32, mtime: u64) -> &mut Layer {
        let mut h = Layer::header(tar::EntryType::Directory, name, mode);
        h.set_mtime(mtime);
        self.append(h, b"")
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Layer {
        self.file_with(name, data, 0o644, 0, 0, 1_600_000_000)
    }

    pub fn file_with(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Layer {
        let mut h = Layer::header(tar::EntryType::Regular, name, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        self.append(h, data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Layer {
        let mut h = Layer::header(tar::EntryType::Symlink, name, 0o777);
        Layer::set_link(&mut h, target);
        self.append(h, b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Layer {
        let mut h = Layer::header(tar::EntryType::Link, name, 0o644);
        Layer::set_link(&mut h, target);
        self.append(h, b"")
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> &mut Layer {
        let mut h = Layer::header(tar::EntryType::Char, name, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, b"")
    }

    pub fn block_device(&mut self, name: &str, major: u32, minor: u32) -> &mut Layer {
        let mut h = Layer::header(tar::EntryType::Block, name, 0o660);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, b"")
    }

    pub fn fifo(&mut self, name: &str) -> &mut Layer {
        let h = Layer::header(tar::EntryType::Fifo, name, 0o600);
        self.append(h, b"")
    }

    /// PAX records for the next entry (`SCHILY.xattr.user.x`, `mtime`, `path`...).
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Layer {
        let mut data = Vec::new();
        for (key, value) in records {
            let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = body_len + 1;
            while len != body_len + len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            write!(data, "{len} {key}=").unwrap();
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let h = Layer::header(tar::EntryType::XHeader, "PaxHeader", 0o644);
        self.append(h, &data)
    }

    pub fn tar(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        builder.into_inner().unwrap()
    }

    pub fn gzip(&mut self) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&self.tar()).unwrap();
        enc.finish().unwrap()
    }

    pub fn zstd(&mut self) -> Vec<u8> {
        zstd::encode_all(&self.tar()[..], 3).unwrap()
    }
}

/// Everything observable about a tree: per path, kind, size, mode, mtime, link count, symlink target.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, path: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let target = std::fs::read_link(path).ok();
    out.insert(
        path.strip_prefix(root).unwrap().to_path_buf(),
        format!(
            "mode={:o} size={} mtime={} nlink={} uid={} link={target:?}",
            meta.mode(),
            if meta.is_dir() { 0 } else { meta.len() },
            meta.mtime(),
            meta.nlink(),
            meta.uid()
        ),
    );
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            walk(root, &entry.unwrap().path(), out);
        }
    }
}

/// A temp directory holding `layer/` (where the layer goes) beside `canary/` (which must never change).
pub struct Sandbox {
    pub temp: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let temp = tempfile::tempdir().unwrap();
        std::fs::create_dir(temp.path().join("layer")).unwrap();
        let canary = temp.path().join("canary");
        std::fs::create_dir(&canary).unwrap();
        std::fs::write(canary.join("secret"), b"do not touch").unwrap();
        std::fs::create_dir(canary.join("etc")).unwrap();
        std::fs::write(canary.join("etc/passwd"), b"root:x:0:0").unwrap();
        Sandbox { temp }
    }

    pub fn layer(&self) -> PathBuf {
        self.temp.path().join("layer")
    }

    pub fn canary(&self) -> PathBuf {
        self.temp.path().join("canary")
    }

    /// The sandbox outside the layer directory.
    pub fn outside(&self) -> BTreeMap<PathBuf, String> {
        let mut all = snapshot(self.temp.path());
        all.retain(|p, _| !p.starts_with("layer") || p.as_os_str() == "layer");
        all.remove(Path::new("layer"));
        all
    }
}

/// Incompressible bytes, deterministic.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
