//! The dynamic linker's cache, `/etc/ld.so.cache`, read without running `ldconfig -p`: glibc's
//! `glibc-ld.so.cache1.1` format, alone or after the old `ld.so-1.7.0` table (the "compat" layout).
//!
//! New format: a 48-byte header (magic, version, `nlibs`, `len_strings`, flags, extension offset) and `nlibs`
//! 24-byte entries (`flags: i32`, `key: u32`, `value: u32`, `osversion: u32`, `hwcap: u64`) whose key (the
//! soname) and value (the path) are offsets from the start of that header.

use std::path::{Path, PathBuf};

const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24;
const OLD_HEADER: usize = 16;
const OLD_ENTRY: usize = 12;

/// `FLAG_ELF_LIBC6` and friends live in the low byte; the architecture in the next.
const FLAG_TYPE_MASK: i32 = 0x00ff;
const FLAG_ELF: i32 = 0x0001;
const FLAG_ELF_LIBC6: i32 = 0x0003;
const FLAG_ARCH_MASK: i32 = 0xff00;

/// One library the cache knows: soname (`libcuda.so.1`) → path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub soname: String,
    pub path: PathBuf,
    pub flags: i32,
}

impl Entry {
    /// True for an ELF library of this machine's native ABI (not the 32-bit compatibility copies).
    pub fn is_native(&self) -> bool {
        let kind = self.flags & FLAG_TYPE_MASK;
        (kind == FLAG_ELF || kind == FLAG_ELF_LIBC6)
            && native_arch().is_none_or(|a| self.flags & FLAG_ARCH_MASK == a)
    }
}

impl Entry {
    /// True for a 32-bit x86 library on an x86_64 machine (what `compat32` gives); never elsewhere.
    pub fn is_compat32(&self) -> bool {
        cfg!(target_arch = "x86_64")
            && self.flags & FLAG_TYPE_MASK == FLAG_ELF_LIBC6
            && self.flags & FLAG_ARCH_MASK == 0
    }
}

/// The architecture bits glibc's ldconfig sets for this machine's 64-bit libraries, where known.
fn native_arch() -> Option<i32> {
    if cfg!(target_arch = "x86_64") {
        Some(0x0300)
    } else if cfg!(target_arch = "aarch64") {
        Some(0x0a00)
    } else if cfg!(target_arch = "powerpc64") {
        Some(0x0500)
    } else {
        None
    }
}

/// Reads and parses `path`.
pub(crate) fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    let data = std::fs::read(path)?;
    parse(&data).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "not an ld.so.cache file")
    })
}

/// The entries of a cache file, or `None` when the bytes are not one.
pub(crate) fn parse(data: &[u8]) -> Option<Vec<Entry>> {
    if data.starts_with(NEW_MAGIC) {
        return parse_new(data);
    }
    if !data.starts_with(OLD_MAGIC) {
        return None;
    }
    let nlibs = u32_at(data, OLD_MAGIC.len() + 1)? as usize;
    let strings = OLD_HEADER.checked_add(nlibs.checked_mul(OLD_ENTRY)?)?;
    // The compat layout puts the new table after the old one, 8-byte aligned.
    let new_at = strings.next_multiple_of(8);
    if let Some(rest) = data.get(new_at..)
        && rest.starts_with(NEW_MAGIC)
    {
        return parse_new(rest);
    }
    // The old table alone: offsets count from the end of the entries.
    let mut entries = Vec::with_capacity(nlibs);
    for i in 0..nlibs {
        let at = OLD_HEADER + i * OLD_ENTRY;
        let flags = u32_at(data, at)? as i32;
        let key = strings.checked_add(u32_at(data, at + 4)? as usize)?;
        let value = strings.checked_add(u32_at(data, at + 8)? as usize)?;
        entries.push(Entry {
            soname: c_str(data, key)?,
            path: PathBuf::from(c_str(data, value)?),
            flags,
        });
    }
    Some(entries)
}

fn parse_new(data: &[u8]) -> Option<Vec<Entry>> {
    let nlibs = u32_at(data, 20)? as usize;
    if NEW_HEADER.checked_add(nlibs.checked_mul(NEW_ENTRY)?)? > data.len() {
        return None;
    }
    let mut entries = Vec::with_capacity(nlibs);
    for i in 0..nlibs {
        let at = NEW_HEADER + i * NEW_ENTRY;
        let flags = u32_at(data, at)? as i32;
        let key = u32_at(data, at + 4)? as usize;
        let value = u32_at(data, at + 8)? as usize;
        entries.push(Entry {
            soname: c_str(data, key)?,
            path: PathBuf::from(c_str(data, value)?),
            flags,
        });
    }
    Some(entries)
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn c_str(data: &[u8], at: usize) -> Option<String> {
    let rest = data.get(at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::super::testing::elf_library;
    use super::*;

    /// The host's own cache, checked against what `ldconfig -p` prints for it.
    #[test]
    fn the_hosts_cache_matches_ldconfig_p() {
        let entries = read(Path::new("/etc/ld.so.cache")).unwrap();
        let out = std::process::Command::new("ldconfig")
            .arg("-p")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let listed: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (left, path) = l.split_once(" => ")?;
                Some((
                    left.trim().split(' ').next()?.to_string(),
                    path.trim().to_string(),
                ))
            })
            .collect();
        assert!(!listed.is_empty());
        assert_eq!(entries.len(), listed.len());
        for (soname, path) in &listed {
            assert!(
                entries
                    .iter()
                    .any(|e| &e.soname == soname && e.path == Path::new(path)),
                "{soname} => {path} missing"
            );
        }
        let libc = entries
            .iter()
            .find(|e| e.soname == "libc.so.6" && e.is_native())
            .unwrap();
        assert!(libc.path.is_absolute());
    }

    /// A cache made by the real ldconfig over fake driver libraries (minimal ELF files with a SONAME).
    #[test]
    fn a_cache_built_by_ldconfig_names_the_fake_driver() {
        let dir = tempfile::tempdir().unwrap();
        let libs = dir.path().join("lib");
        std::fs::create_dir(&libs).unwrap();
        std::fs::write(
            libs.join("libcuda.so.550.54.15"),
            elf_library("libcuda.so.1"),
        )
        .unwrap();
        std::fs::write(
            libs.join("libnvidia-ml.so.550.54.15"),
            elf_library("libnvidia-ml.so.1"),
        )
        .unwrap();
        let conf = dir.path().join("ld.so.conf");
        std::fs::write(&conf, format!("{}\n", libs.display())).unwrap();
        let cache = dir.path().join("ld.so.cache");
        let status = std::process::Command::new("ldconfig")
            .arg("-C")
            .arg(&cache)
            .arg("-f")
            .arg(&conf)
            .status()
            .unwrap();
        assert!(status.success());
        let entries = read(&cache).unwrap();
        // The cache names the soname link ldconfig made, as on a real host.
        let cuda = entries.iter().find(|e| e.soname == "libcuda.so.1").unwrap();
        assert_eq!(cuda.path, libs.join("libcuda.so.1"));
        assert_eq!(
            std::fs::read_link(&cuda.path).unwrap(),
            Path::new("libcuda.so.550.54.15")
        );
        assert!(cuda.is_native(), "flags {:#x}", cuda.flags);
        assert!(entries.iter().any(|e| e.soname == "libnvidia-ml.so.1"));
    }

    #[test]
    fn garbage_is_not_a_cache() {
        assert!(parse(b"hello").is_none());
        let mut truncated = NEW_MAGIC.to_vec();
        truncated.extend_from_slice(&[0xff; 28]);
        assert!(parse(&truncated).is_none());
    }
}
