//! Unpacking one layer tar into its own directory, safely and fast.
//!
//! Never `tar::Archive::unpack`: it writes whiteouts as plain files and rejects the absolute symlinks real
//! images contain. Each entry is created relative to a directory resolved inside the layer directory
//! (`fs::resolve_dir`, `openat2` with `RESOLVE_IN_ROOT`), the last component is never followed, and the
//! overlay conventions are applied: `.wh.NAME` becomes a 0:0 character device, `.wh..wh..opq` the opaque
//! xattr. Regular files are written by a small pool of threads (`pool`) while the stream is read;
//! directories, symlinks and everything else are created in order on the reading thread, so later entries
//! always find their parents.

mod fs;
mod meta;
mod path;
mod pool;

use std::collections::HashSet;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

pub use fs::is_no_space;
pub use meta::Privilege;

use fs::Existing;
use meta::Meta;
use path::{EntryPath, Special};
use pool::{FileJob, Pool};

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Threads creating regular files.
    pub workers: usize,
    /// File contents buffered for those threads at most, in bytes.
    pub buffer_bytes: usize,
    /// Files larger than this are written by the reading thread straight from the stream.
    pub max_buffered_file: u64,
    pub privilege: Privilege,
}

impl UnpackOptions {
    pub fn for_this_process() -> UnpackOptions {
        UnpackOptions {
            workers: 4,
            buffer_bytes: 64 << 20,
            max_buffered_file: 4 << 20,
            privilege: Privilege::detect(),
        }
    }
}

/// What a layer held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries created (files, directories, links, whiteouts...).
    pub entries: u64,
    /// Bytes of regular file content.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the layer is not a valid tar archive")]
    Archive(#[source] io::Error),
    #[error(
        "layer entry {} climbs out of the layer directory: the layer is refused",
        crate::text::quote(.0)
    )]
    Escapes(String),
    #[error(
        "layer entry {} is a hard link to {}, outside the layer: the layer is refused",
        crate::text::quote(.path),
        crate::text::quote(.target)
    )]
    LinkEscapes { path: String, target: String },
    #[error(
        "layer entry {} is a whiteout of nothing, of its own directory or of its parent: the layer is \
         refused",
        crate::text::quote(.0)
    )]
    BadWhiteout(String),
    #[error(
        "layer entry {} is a hard link to {}, which the layer does not contain",
        crate::text::quote(.path),
        crate::text::quote(.target)
    )]
    LinkTargetMissing { path: String, target: String },
    #[error("cannot unpack layer entry {}", crate::text::quote(.path))]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    /// True when the filesystem ran out of space or quota.
    pub fn is_no_space(&self) -> bool {
        match self {
            UnpackError::Archive(e) | UnpackError::Io { source: e, .. } => is_no_space(e),
            _ => false,
        }
    }
}

fn io_err(path: &str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_string(),
        source,
    }
}

/// Unpacks the tar stream `reader` (already decompressed) into the existing, empty directory `dest`.
/// Reads up to the end-of-archive marker; the caller drains what follows (to finish its digests).
pub fn unpack<R: Read>(
    reader: R,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let root = fs::open_dir(dest).map_err(io_err(&dest.display().to_string()))?;
    let mut archive = tar::Archive::new(reader);
    std::thread::scope(|scope| {
        let pool = Pool::start(
            scope,
            options.workers,
            options.buffer_bytes,
            options.privilege,
        );
        let mut walk = Walk {
            root,
            options,
            pool: &pool,
            pending: HashSet::new(),
            parent: None,
            dirs: Vec::new(),
            dir_paths: HashSet::new(),
            root_meta: None,
            stats: UnpackStats::default(),
            skipped_devices: Vec::new(),
        };
        for entry in archive.entries().map_err(UnpackError::Archive)? {
            let mut entry = entry.map_err(UnpackError::Archive)?;
            walk.entry(&mut entry)?;
        }
        walk.drain()?;
        walk.finish_directories()?;
        if !walk.skipped_devices.is_empty() {
            tracing::debug!(
                "{} device node(s) in the layer not created (the container's /dev is its own): {}",
                walk.skipped_devices.len(),
                walk.skipped_devices
                    .iter()
                    .take(8)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(walk.stats)
    })
}

/// The reading thread's state for one layer.
struct Walk<'a> {
    root: OwnedFd,
    options: &'a UnpackOptions,
    pool: &'a Pool,
    /// Files handed to the pool and perhaps not yet written: a second entry for one of them waits.
    pending: HashSet<EntryPath>,
    /// The last parent directory opened: entries of one directory come together in a tar.
    parent: Option<(Vec<u8>, Arc<OwnedFd>)>,
    /// Directories whose mode and times are set at the end, when nothing is created in them any more.
    dirs: Vec<(EntryPath, Meta)>,
    /// Every directory created, so that an entry replacing one is handled on this thread.
    dir_paths: HashSet<EntryPath>,
    root_meta: Option<Meta>,
    stats: UnpackStats,
    /// Device nodes left out (said once, at the end).
    skipped_devices: Vec<String>,
}

impl Walk<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let meta = Meta::from_entry(entry).map_err(UnpackError::Archive)?;
        let path = match EntryPath::parse(&raw) {
            Err(path::Escapes) => return Err(UnpackError::Escapes(shown)),
            Ok(None) => {
                if kind.is_dir() {
                    self.root_meta = Some(meta);
                }
                return Ok(());
            }
            Ok(Some(path)) => path,
        };
        let (parent, name) = path.split();
        match path::special(name) {
            Some(Special::Opaque) => return self.opaque(parent, &shown),
            Some(Special::Whiteout(target)) => {
                let target = path.sibling(target);
                return self.whiteout(&target, &shown);
            }
            Some(Special::AufsMeta) => return Ok(()),
            Some(Special::BadWhiteout) => return Err(UnpackError::BadWhiteout(shown)),
            None => {}
        }
        if self.pending.contains(&path) {
            self.drain()?;
        }
        let dir = self.parent_dir(parent, &shown)?;
        let name = fs::c_bytes(name).map_err(io_err(&shown))?;
        let privilege = self.options.privilege;
        if kind.is_dir() {
            match fs::mkdir(dir.as_fd(), &name, 0o700) {
                Ok(()) => {}
                Err(e) if fs::is_exists(&e) => {
                    if fs::existing(dir.as_fd(), &name).map_err(io_err(&shown))?
                        != Existing::Directory
                    {
                        fs::unlink(dir.as_fd(), &name).map_err(io_err(&shown))?;
                        fs::mkdir(dir.as_fd(), &name, 0o700).map_err(io_err(&shown))?;
                    }
                }
                Err(e) => return Err(io_err(&shown)(e)),
            }
            let fd = fs::open_child_dir(dir.as_fd(), &name).map_err(io_err(&shown))?;
            meta::chown_fd(fd.as_fd(), &meta, &privilege).map_err(io_err(&shown))?;
            meta::set_xattrs(fd.as_fd(), &meta, &privilege, &shown).map_err(io_err(&shown))?;
            self.dir_paths.insert(path.clone());
            self.dirs.push((path, meta));
            self.stats.entries += 1;
            return Ok(());
        }
        if self.dir_paths.remove(&path) {
            // A directory becomes something else: files queued inside it must land first.
            self.clear(&dir, &name, Existing::Directory, &shown)?;
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.regular(entry, dir, name, path, meta, shown)
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    UnpackError::Archive(invalid(&shown, "symlink without a target"))
                })?;
                // Kept as written, absolute or not: it is resolved inside the container's root at run time.
                let target = fs::c_bytes(&target).map_err(io_err(&shown))?;
                self.create(&dir, &name, &shown, || {
                    fs::symlink(&target, dir.as_fd(), &name)
                })?;
                meta::chown_name(dir.as_fd(), &name, &meta, &privilege).map_err(io_err(&shown))?;
                fs::utimes_at(dir.as_fd(), &name, meta.mtime_secs, meta.mtime_nanos)
                    .map_err(io_err(&shown))?;
                self.stats.entries += 1;
                Ok(())
            }
            tar::EntryType::Link => self.hardlink(entry, &dir, &name, shown),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.special_file(entry, &dir, &name, &meta, kind, &shown)
            }
            other => {
                tracing::debug!("{shown}: skipping tar entry of type {other:?}");
                Ok(())
            }
        }
    }

    /// Runs `make` to create `name`; if the name is taken (a later entry replaces an earlier one), clears it
    /// and runs `make` again. The layer directory starts empty, so checking first would only cost time.
    fn create<T>(
        &mut self,
        dir: &Arc<OwnedFd>,
        name: &CString,
        shown: &str,
        mut make: impl FnMut() -> io::Result<T>,
    ) -> Result<T, UnpackError> {
        match make() {
            Err(e) if fs::is_exists(&e) => {
                let existing = fs::existing(dir.as_fd(), name).map_err(io_err(shown))?;
                self.clear(dir, name, existing, shown)?;
                make().map_err(io_err(shown))
            }
            other => other.map_err(io_err(shown)),
        }
    }

    /// Makes room for a new entry at `name`: a later entry for the same name replaces the earlier one.
    fn clear(
        &mut self,
        dir: &Arc<OwnedFd>,
        name: &CString,
        existing: Existing,
        shown: &str,
    ) -> Result<(), UnpackError> {
        match existing {
            Existing::Nothing => Ok(()),
            Existing::Other => fs::unlink(dir.as_fd(), name).map_err(io_err(shown)),
            Existing::Directory => {
                // Files queued inside it must land before it goes, and cached handles may point into it.
                self.drain()?;
                self.parent = None;
                fs::remove_tree(dir.as_fd(), name).map_err(io_err(shown))
            }
        }
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: Arc<OwnedFd>,
        name: CString,
        path: EntryPath,
        meta: Meta,
        shown: String,
    ) -> Result<(), UnpackError> {
        let size = entry.size();
        self.stats.entries += 1;
        self.stats.bytes += size;
        if size > self.options.max_buffered_file {
            let mode = meta.mode;
            let mut file = self.create(&dir, &name, &shown, || {
                fs::create_file(dir.as_fd(), &name, mode)
            })?;
            io::copy(entry, &mut file).map_err(|e| self.read_or_write_error(e, &shown))?;
            return meta::apply_to_file(file.as_fd(), &meta, &self.options.privilege, &shown)
                .map_err(io_err(&shown));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut data).map_err(UnpackError::Archive)?;
        self.pending.insert(path);
        self.pool
            .submit(FileJob {
                dir,
                name,
                data,
                meta,
                path: shown,
            })
            .map_err(|(path, source)| UnpackError::Io { path, source })
    }

    /// io::copy mixes reading the archive and writing the file; a full disk must still be recognizable.
    fn read_or_write_error(&self, e: io::Error, shown: &str) -> UnpackError {
        if e.raw_os_error().is_some() {
            io_err(shown)(e)
        } else {
            UnpackError::Archive(e)
        }
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: &Arc<OwnedFd>,
        name: &CString,
        shown: String,
    ) -> Result<(), UnpackError> {
        let raw = entry
            .link_name_bytes()
            .ok_or_else(|| UnpackError::Archive(invalid(&shown, "hard link without a target")))?;
        let target_shown = String::from_utf8_lossy(&raw).into_owned();
        // Hard link targets are names inside the archive; one that climbs above the root points outside.
        let target = match EntryPath::parse(&raw) {
            Ok(Some(target)) => target,
            _ => {
                return Err(UnpackError::LinkEscapes {
                    path: shown,
                    target: target_shown,
                });
            }
        };
        if self.pending.contains(&target) {
            self.drain()?;
        }
        let (target_parent, target_name) = target.split();
        let target_dir = match fs::resolve_dir(self.root.as_fd(), target_parent) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Err(UnpackError::LinkTargetMissing {
                    path: shown,
                    target: target_shown,
                });
            }
            Err(e) => return Err(io_err(&shown)(e)),
        };
        let target_name = fs::c_bytes(target_name).map_err(io_err(&shown))?;
        let linked = self.create(dir, name, &shown, || {
            fs::hardlink(target_dir.as_fd(), &target_name, dir.as_fd(), name)
        });
        match linked {
            Ok(()) => {
                self.stats.entries += 1;
                Ok(())
            }
            Err(UnpackError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                Err(UnpackError::LinkTargetMissing {
                    path: shown,
                    target: target_shown,
                })
            }
            Err(e) => Err(e),
        }
    }

    fn special_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: &Arc<OwnedFd>,
        name: &CString,
        meta: &Meta,
        kind: tar::EntryType,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let privilege = self.options.privilege;
        let header = entry.header();
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        let file_type = match kind {
            tar::EntryType::Fifo => libc::S_IFIFO,
            // An overlay whiteout written as such: a 0:0 character device opens nothing.
            tar::EntryType::Char if (major, minor) == (0, 0) => libc::S_IFCHR,
            _ => {
                // A device node in the store would give whoever reaches it the host's device (a block
                // device, /dev/mem); the container's /dev comes from its own tmpfs instead.
                self.skipped_devices.push(shown.to_string());
                return Ok(());
            }
        };
        // A whiteout keeps no permission bits: there is nothing to open.
        let mode = if file_type == libc::S_IFCHR {
            0
        } else {
            meta.mode
        };
        self.create(dir, name, shown, || {
            fs::mknod(dir.as_fd(), name, file_type | mode, major, minor)
        })?;
        meta::chown_name(dir.as_fd(), name, meta, &privilege).map_err(io_err(shown))?;
        fs::utimes_at(dir.as_fd(), name, meta.mtime_secs, meta.mtime_nanos)
            .map_err(io_err(shown))?;
        self.stats.entries += 1;
        Ok(())
    }

    /// `.wh.NAME`: an overlay whiteout (character device 0:0) named NAME, replacing anything there.
    fn whiteout(&mut self, target: &EntryPath, shown: &str) -> Result<(), UnpackError> {
        if self.pending.iter().any(|p| p.is_within(target)) {
            self.drain()?;
        }
        let (parent, name) = target.split();
        let dir = self.parent_dir(parent, shown)?;
        let name = fs::c_bytes(name).map_err(io_err(shown))?;
        let existing = fs::existing(dir.as_fd(), &name).map_err(io_err(shown))?;
        self.clear(&dir, &name, existing, shown)?;
        fs::mknod(dir.as_fd(), &name, libc::S_IFCHR, 0, 0).map_err(io_err(shown))?;
        self.stats.entries += 1;
        Ok(())
    }

    /// `.wh..wh..opq`: the directory hides everything lower layers have in it.
    fn opaque(&mut self, dir: &[u8], shown: &str) -> Result<(), UnpackError> {
        let fd = self.parent_dir(dir, shown)?;
        let xattr = CString::new(self.options.privilege.opaque_xattr())
            .map_err(|e| io_err(shown)(e.into()))?;
        fs::fsetxattr(fd.as_fd(), &xattr, b"y").map_err(io_err(shown))?;
        self.stats.entries += 1;
        Ok(())
    }

    /// Opens (creating if the archive did not list it) the directory `rel`, resolved inside the layer.
    fn parent_dir(&mut self, rel: &[u8], shown: &str) -> Result<Arc<OwnedFd>, UnpackError> {
        if let Some((cached, fd)) = &self.parent
            && cached == rel
        {
            return Ok(Arc::clone(fd));
        }
        let fd = match fs::resolve_dir(self.root.as_fd(), rel) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.make_parents(rel, shown)?,
            Err(e) => return Err(io_err(shown)(e)),
        };
        let fd = Arc::new(fd);
        self.parent = Some((rel.to_vec(), Arc::clone(&fd)));
        Ok(fd)
    }

    /// `mkdir -p` inside the layer, for archives that omit directory entries. Each prefix is resolved from
    /// the layer root, so a symlink among the components is followed as the container would follow it.
    fn make_parents(&mut self, rel: &[u8], shown: &str) -> Result<OwnedFd, UnpackError> {
        let mut fd = fs::resolve_dir(self.root.as_fd(), b"").map_err(io_err(shown))?;
        let mut end = 0;
        for component in rel.split(|&b| b == b'/') {
            end += component.len();
            fd = match fs::resolve_dir(self.root.as_fd(), &rel[..end]) {
                Ok(next) => next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = fs::c_bytes(component).map_err(io_err(shown))?;
                    fs::mkdir(fd.as_fd(), &name, 0o755).map_err(io_err(shown))?;
                    if let Ok(Some(created)) = EntryPath::parse(&rel[..end]) {
                        self.dir_paths.insert(created);
                    }
                    fs::open_child_dir(fd.as_fd(), &name).map_err(io_err(shown))?
                }
                Err(e) => return Err(io_err(shown)(e)),
            };
            end += 1;
        }
        Ok(fd)
    }

    fn drain(&mut self) -> Result<(), UnpackError> {
        self.pending.clear();
        self.pool
            .drain()
            .map_err(|(path, source)| UnpackError::Io { path, source })
    }

    /// Modes and times of directories, once their contents are complete (creating a child changes a
    /// directory's mtime, and a read-only mode would stop an unprivileged unpacker from filling it).
    fn finish_directories(&mut self) -> Result<(), UnpackError> {
        let privilege = self.options.privilege;
        for (path, meta) in self.dirs.iter().rev() {
            let shown = path.display();
            let fd = match fs::resolve_dir_nofollow(self.root.as_fd(), path.as_bytes()) {
                Ok(fd) => fd,
                // Replaced or removed by a later entry.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(io_err(&shown)(e)),
            };
            fs::fchmod(fd.as_fd(), meta.mode).map_err(io_err(&shown))?;
            fs::futimes(fd.as_fd(), meta.mtime_secs, meta.mtime_nanos).map_err(io_err(&shown))?;
        }
        if let Some(meta) = &self.root_meta {
            meta::chown_fd(self.root.as_fd(), meta, &privilege).map_err(io_err("/"))?;
            fs::fchmod(self.root.as_fd(), meta.mode).map_err(io_err("/"))?;
            fs::futimes(self.root.as_fd(), meta.mtime_secs, meta.mtime_nanos)
                .map_err(io_err("/"))?;
        }
        Ok(())
    }
}

fn invalid(path: &str, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(names: &[&str]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for name in names {
            let mut header = tar::Header::new_ustar();
            header.set_size(0);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_path(name).unwrap();
            header.set_cksum();
            builder.append(&header, &[][..]).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// Found by fuzz_unpack: `.wh...` at the top of a layer was a whiteout of `..`, and emptied the
    /// directory holding the destination (the sentinel's other files here).
    #[test]
    fn whiteouts_of_dot_and_dot_dot_are_refused_and_delete_nothing() {
        for name in [
            ".wh...",
            ".wh..",
            ".wh.",
            "d/.wh...",
            "d/e/.wh..",
            "./.wh...",
        ] {
            let sentinel = tempfile::tempdir().unwrap();
            let root = sentinel.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let neighbour = sentinel.path().join("other-layer");
            std::fs::write(&neighbour, "kept").unwrap();
            std::fs::write(root.join("kept"), "kept").unwrap();
            let options = UnpackOptions {
                workers: 1,
                ..UnpackOptions::for_this_process()
            };
            let err = unpack(&layer(&["d/e/f", name])[..], &root, &options).unwrap_err();
            assert!(matches!(err, UnpackError::BadWhiteout(_)), "{name}: {err}");
            assert!(err.to_string().contains("whiteout of nothing"), "{err}");
            assert!(neighbour.exists(), "{name} deleted a file beside the layer");
            assert!(
                root.join("kept").exists(),
                "{name} deleted a file in the layer"
            );
        }
    }
}
