//! Ownership, modes, times and extended attributes of unpacked entries, and what this process may set.

use std::ffi::CString;
use std::io;
use std::os::fd::BorrowedFd;

use super::fs;

/// What the unpacking process is allowed to do, decided once per pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privilege {
    /// Root in the initial user namespace: device nodes, `trusted.` xattrs, any owner.
    pub host_root: bool,
    /// Running inside a child user namespace (rootless dstack): overlay is mounted with `userxattr`.
    pub in_user_namespace: bool,
    euid: u32,
    egid: u32,
    /// The process umask, which `open(O_CREAT)` applies to the mode it is given.
    umask: u32,
}

impl Privilege {
    /// The privilege of this process.
    pub fn detect() -> Privilege {
        Privilege {
            host_root: crate::paths::running_as_host_root(),
            in_user_namespace: crate::paths::in_child_user_namespace(),
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            umask: read_umask(),
        }
    }

    /// The same process as if it were not the host's root: no device nodes, `user.` overlay xattrs, owners
    /// kept only where the kernel allows. Used to exercise the rootless rules.
    pub fn without_host_root(self) -> Privilege {
        Privilege {
            host_root: false,
            ..self
        }
    }

    /// The xattr that marks an opaque directory for the overlay mount this process will make: `trusted.`
    /// needs CAP_SYS_ADMIN in the initial namespace, so everyone else uses `user.` (overlay `userxattr`).
    pub fn opaque_xattr(&self) -> &'static str {
        if self.host_root {
            "trusted.overlay.opaque"
        } else {
            "user.overlay.opaque"
        }
    }

    fn owns(&self, uid: u32, gid: u32) -> bool {
        uid == self.euid && gid == self.egid
    }
}

/// The umask from /proc (reading it with umask(2) would briefly change it for every thread).
fn read_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

/// The metadata of one tar entry.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
    pub xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    /// Reads header fields, letting PAX records (exact times, large ids, xattrs) override them.
    pub(crate) fn from_entry<R: io::Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
        let header = entry.header();
        let mut meta = Meta {
            uid: header.uid().unwrap_or(0) as u32,
            gid: header.gid().unwrap_or(0) as u32,
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            mtime_secs: header.mtime().unwrap_or(0) as i64,
            mtime_nanos: 0,
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if let Ok(name) = CString::new(name) {
                        meta.xattrs.push((name, value.to_vec()));
                    }
                    continue;
                }
                let Ok(text) = std::str::from_utf8(value) else {
                    continue;
                };
                match key {
                    "uid" => meta.uid = text.parse().unwrap_or(meta.uid),
                    "gid" => meta.gid = text.parse().unwrap_or(meta.gid),
                    "mtime" => {
                        if let Some((secs, nanos)) = parse_pax_time(text) {
                            meta.mtime_secs = secs;
                            meta.mtime_nanos = nanos;
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(meta)
    }
}

/// `1700000000.123456789` -> (secs, nanos).
fn parse_pax_time(text: &str) -> Option<(i64, u32)> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    Some((secs, digits.parse().ok()?))
}

/// Sets the owner when it differs from ours. Where this process may not give files away (an unprivileged
/// user, or ids outside the user namespace's mapping) the file stays ours.
/// Returns whether the owner was changed (which clears setuid bits).
pub(crate) fn chown_fd(fd: BorrowedFd<'_>, meta: &Meta, privilege: &Privilege) -> io::Result<bool> {
    if privilege.owns(meta.uid, meta.gid) {
        return Ok(false);
    }
    match fs::fchown(fd, meta.uid, meta.gid) {
        Ok(()) => Ok(true),
        Err(e) => tolerate_unmapped(Err(e), privilege).map(|()| false),
    }
}

pub(crate) fn chown_name(
    dir: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    meta: &Meta,
    privilege: &Privilege,
) -> io::Result<()> {
    if privilege.owns(meta.uid, meta.gid) {
        return Ok(());
    }
    tolerate_unmapped(fs::chown_at(dir, name, meta.uid, meta.gid), privilege)
}

fn tolerate_unmapped(result: io::Result<()>, privilege: &Privilege) -> io::Result<()> {
    match result {
        Err(e)
            if !privilege.host_root
                && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM)) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Sets the entry's xattrs. Overlay's own attributes are never taken from a layer (a layer could otherwise
/// redirect lookups or fake opaque directories); refusals of `security.` and `trusted.` names that the kernel
/// reserves for the host's root are logged and skipped.
pub(crate) fn set_xattrs(
    fd: BorrowedFd<'_>,
    meta: &Meta,
    privilege: &Privilege,
    path: &str,
) -> io::Result<()> {
    for (name, value) in &meta.xattrs {
        let text = name.to_string_lossy();
        if text.starts_with("trusted.overlay.") || text.starts_with("user.overlay.") {
            tracing::debug!("{path}: ignoring the layer's overlay attribute {text}");
            continue;
        }
        match fs::fsetxattr(fd, name, value) {
            Ok(()) => {}
            Err(e) if fs::is_no_space(&e) => return Err(e),
            Err(e)
                if text.starts_with("security.")
                    || (!privilege.host_root && text.starts_with("trusted.")) =>
            {
                tracing::debug!("{path}: skipping xattr {text}: {e}");
            }
            Err(e) => tracing::warn!("{path}: cannot set xattr {text}: {e}"),
        }
    }
    Ok(())
}

/// Owner, xattrs, mode, then times, for a file created with `meta.mode`: chown clears setuid bits and file
/// capabilities, so it goes first, and times last because nothing after them may touch the file. The mode is
/// set again only where creation could not give it (umask, special bits, a chown): one syscall fewer for most
/// files, which matters at thousands of files per layer.
pub(crate) fn apply_to_file(
    fd: BorrowedFd<'_>,
    meta: &Meta,
    privilege: &Privilege,
    path: &str,
) -> io::Result<()> {
    let chowned = chown_fd(fd, meta, privilege)?;
    set_xattrs(fd, meta, privilege, path)?;
    if chowned || meta.mode & 0o7000 != 0 || meta.mode & privilege.umask != 0 {
        fs::fchmod(fd, meta.mode)?;
    }
    fs::futimes(fd, meta.mtime_secs, meta.mtime_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time("1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time("12.1234567891"), Some((12, 123_456_789)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
