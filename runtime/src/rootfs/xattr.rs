//! Extended attributes of paths, without following symlinks.

use std::ffi::CString;
use std::path::Path;

use crate::fsops::c_path as cpath;

/// The value of `name` on `path`, or `None` when it has none.
pub(super) fn get(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = cpath(path).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: lgetxattr writes at most `buf.len()` bytes into `buf`.
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Some(buf);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE)
            || buf.len() > 1 << 16
        {
            return None;
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// The names of `path`'s extended attributes (empty when the filesystem has none).
pub(super) fn list(path: &Path) -> Vec<String> {
    try_list(path).unwrap_or_default()
}

/// The names of `path`'s extended attributes, or why they cannot be listed.
pub(crate) fn try_list(path: &Path) -> std::io::Result<Vec<String>> {
    let p = cpath(path)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: llistxattr writes at most `buf.len()` bytes into `buf`.
        let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || buf.len() > 1 << 16 {
            return Err(err);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// Removes the attribute `name` from `path`.
pub(crate) fn remove(path: &Path, name: &str) -> std::io::Result<()> {
    let (p, n) = (
        cpath(path)?,
        CString::new(name).map_err(std::io::Error::other)?,
    );
    // SAFETY: lremovexattr with two NUL-terminated strings.
    if unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn set(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: lsetxattr reads `value.len()` bytes from `value`.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// True when `dir` is marked opaque for overlay (root's or rootless' attribute).
pub(super) fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|n| get(dir, n).is_some_and(|v| v == b"y"))
}
