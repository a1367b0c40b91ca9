//! Extended attributes of paths, without following symlinks.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

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
    let Ok(p) = cpath(path) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: llistxattr writes at most `buf.len()` bytes into `buf`.
        let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE)
            || buf.len() > 1 << 16
        {
            return Vec::new();
        }
        buf.resize(buf.len() * 4, 0);
    }
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
