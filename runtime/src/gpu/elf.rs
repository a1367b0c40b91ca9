//! The one ELF fact needed here: a shared library's `DT_SONAME` (`libcuda.so.550.54.15` → `libcuda.so.1`),
//! for libraries found by scanning directories rather than through the linker's cache.

use std::path::Path;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_STRTAB: u64 = 5;
const DT_SONAME: u64 = 14;

/// The SONAME of the 64-bit little-endian ELF library at `path`, if it has one.
pub(crate) fn soname(path: &Path) -> Option<String> {
    soname_of(&std::fs::read(path).ok()?)
}

pub(crate) fn soname_of(data: &[u8]) -> Option<String> {
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = u64_at(data, 0x20)? as usize;
    let phentsize = u16_at(data, 0x36)? as usize;
    let phnum = u16_at(data, 0x38)? as usize;
    let mut dynamic = None;
    let mut loads = Vec::new();
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let kind = u32_at(data, at)?;
        let (offset, vaddr, filesz) = (
            u64_at(data, at + 8)?,
            u64_at(data, at + 16)?,
            u64_at(data, at + 32)?,
        );
        match kind {
            PT_DYNAMIC => dynamic = Some((offset as usize, filesz as usize)),
            PT_LOAD => loads.push((offset, vaddr, filesz)),
            _ => {}
        }
    }
    let (dyn_at, dyn_size) = dynamic?;
    let (mut strtab, mut soname) = (None, None);
    for i in 0..dyn_size / 16 {
        let at = dyn_at.checked_add(i * 16)?;
        let (tag, value) = (u64_at(data, at)?, u64_at(data, at + 8)?);
        match tag {
            DT_NULL => break,
            DT_STRTAB => strtab = Some(value),
            DT_SONAME => soname = Some(value),
            _ => {}
        }
    }
    // DT_STRTAB is an address: map it to a file offset through the segment that holds it.
    let strtab = strtab?;
    let (offset, vaddr, _) = loads
        .iter()
        .find(|(_, v, size)| strtab >= *v && strtab < v + size)?;
    let at = (strtab - vaddr + offset).checked_add(soname?)? as usize;
    let rest = data.get(at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        data.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        data.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testing::elf_library;
    use super::*;

    #[test]
    fn sonames_of_real_and_fake_libraries() {
        assert_eq!(
            soname_of(&elf_library("libnvidia-nvvm.so.4")).as_deref(),
            Some("libnvidia-nvvm.so.4")
        );
        let libc = super::super::ldcache::read(Path::new("/etc/ld.so.cache"))
            .unwrap()
            .into_iter()
            .find(|e| e.soname == "libc.so.6" && e.is_native())
            .unwrap();
        assert_eq!(soname(&libc.path).as_deref(), Some("libc.so.6"));
        assert_eq!(soname_of(b"not an elf file"), None);
    }
}
