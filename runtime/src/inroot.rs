//! Paths opened inside a root directory by descriptor, never by re-joining strings: the one resolver for
//! everything the runtime mounts on, creates or unpacks inside a root filesystem it does not trust (a
//! container's, a layer's, a bundle's) and for the CLI's artifact downloads.
//!
//! [`Scope::InRoot`] resolves with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: `..` and symlinks
//! (absolute ones included) are interpreted as if the root were `/`, so nothing reached through them is
//! outside it. [`Scope::Beneath`] (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`) follows no symlink at all.
//! Missing components are created one by one with `mkdirat`/`openat(O_CREAT | O_EXCL | O_NOFOLLOW)` on
//! the descriptor of their parent; the work is then done on the returned descriptor (`*at` calls, or
//! [`proc_path`] as a mount target: mount(2) on a `/proc/self/fd` link mounts on the object the
//! descriptor refers to, as runc and crun do).

use std::collections::VecDeque;
use std::ffi::{CStr, CString, OsString};
use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use crate::fsops::{c_bytes, check};

/// The kernel's limit on symlinks in one lookup, kept for the components this module creates itself.
const MAX_HOPS: u32 = 40;

/// How symlinks inside the root are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Followed as if the root were `/` (magic links such as `/proc/self/root` refused).
    InRoot,
    /// Refused: every component must be a real directory beneath the root.
    Beneath,
}

impl Scope {
    fn resolve_flags(self) -> u64 {
        match self {
            Scope::InRoot => libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
            Scope::Beneath => libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
        }
    }
}

/// What to create where a path is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Nothing: a missing path is an error.
    Nothing,
    /// Directories, the last one included.
    Dir,
    /// Directories, and an empty regular file (mode 0644) last.
    File,
}

/// A path that could not be opened or created inside a root, named as the root's own view shows it.
#[derive(Debug)]
pub struct Error {
    pub path: PathBuf,
    pub source: io::Error,
}

impl Error {
    fn new(path: &Path, source: io::Error) -> Error {
        Error {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The system error number, for callers that skip a missing path.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = shorten(&self.path.display().to_string());
        match self.errno() {
            Some(libc::ELOOP) => write!(
                f,
                "{shown}: too many symbolic links on the way (a loop, a chain of more than {MAX_HOPS}, \
                 a /proc magic link, or a link where none may be followed): make it a real directory \
                 or file"
            ),
            Some(libc::EXDEV) => write!(f, "{shown}: leads outside its root directory"),
            _ => write!(f, "{shown}: {}", self.source),
        }
    }
}

/// No `source()`: the message already says the system error, in words that fit the path.
impl std::error::Error for Error {}

/// At most 200 characters of a value echoed in an error.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// A root directory, held open; paths are resolved inside it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    scope: Scope,
}

impl Root {
    /// Opens the directory `dir` (by ordinary path: the caller chose it) as a root.
    pub fn open(dir: &Path, scope: Scope) -> io::Result<Root> {
        let c = c_bytes(dir.as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated path; the descriptor is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Root { fd, scope })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `path` (absolute or relative, both taken from the root) with `flags` (`O_CLOEXEC` added).
    pub fn open_with(&self, path: &Path, flags: libc::c_int) -> Result<OwnedFd, Error> {
        let rel = relative(path);
        let c = c_bytes(rel.as_os_str().as_bytes()).map_err(|e| Error::new(path, e))?;
        openat2(self.fd(), &c, (flags | libc::O_CLOEXEC) as u64, self.scope)
            .map_err(|e| Error::new(path, e))
    }

    /// An `O_PATH` descriptor of `path` (a final symlink followed as the scope says).
    pub fn open_path(&self, path: &Path) -> Result<OwnedFd, Error> {
        self.open_with(path, libc::O_PATH)
    }

    /// A readable descriptor of the directory `path`, usable for `*at` calls.
    pub fn open_dir(&self, path: &Path) -> Result<OwnedFd, Error> {
        self.open_with(path, libc::O_RDONLY | libc::O_DIRECTORY)
    }

    /// A descriptor of `path`, created first as `create` says where it is missing: an `O_PATH` one for
    /// what was there, a readable one for what this call made. A dangling symlink on the way is followed
    /// (inside the root) and its target created, as `mkdir -p` would.
    pub fn make(&self, path: &Path, create: Create) -> Result<OwnedFd, Error> {
        let fail = |e: io::Error| Error::new(path, e);
        match self.open_path(path) {
            Ok(fd) => return Ok(fd),
            Err(e) if create != Create::Nothing && e.errno() == Some(libc::ENOENT) => {}
            Err(e) if e.errno() == Some(libc::ELOOP) && self.scope == Scope::Beneath => {
                return Err(Error::new(&self.first_link(path), e.source));
            }
            Err(e) => return Err(e),
        }
        let mut todo: VecDeque<OsString> = components(path).into();
        let mut done = PathBuf::new();
        let mut parent = self.open_path(Path::new(".")).map_err(|e| fail(e.source))?;
        let (mut hops, mut races) = (0, 0);
        while let Some(name) = todo.pop_front() {
            let candidate = done.join(&name);
            match self.open_path(&candidate) {
                Ok(fd) => {
                    (parent, done) = (fd, candidate);
                    continue;
                }
                Err(e) if e.errno() == Some(libc::ENOENT) && name != ".." => {}
                Err(e) => return Err(fail(e.source)),
            }
            let c_name = c_bytes(name.as_bytes()).map_err(fail)?;
            match lstat_kind(parent.as_fd(), &c_name).map_err(fail)? {
                Some(libc::S_IFLNK) if self.scope == Scope::InRoot => {
                    // A dangling link: go on at its target, as the kernel would.
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(fail(io::Error::from_raw_os_error(libc::ELOOP)));
                    }
                    let target = read_link(parent.as_fd(), &c_name).map_err(fail)?;
                    if target.is_absolute() {
                        done = PathBuf::new();
                        parent = self.open_path(Path::new(".")).map_err(|e| fail(e.source))?;
                    }
                    for part in components(&target).into_iter().rev() {
                        todo.push_front(part);
                    }
                    continue;
                }
                Some(libc::S_IFLNK) => return Err(fail(io::Error::from_raw_os_error(libc::ELOOP))),
                Some(_) | None => {}
            }
            let made = if todo.is_empty() && create == Create::File {
                create_file(parent.as_fd(), &c_name, 0o644).map(Some)
            } else {
                mkdir(parent.as_fd(), &c_name, 0o755).map(|()| None)
            };
            match made {
                Ok(Some(file)) => return Ok(file),
                Ok(None) => {}
                // Made by someone else meanwhile: look again, a few times.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && races < 8 => races += 1,
                Err(e) => return Err(fail(e)),
            }
            todo.push_front(name);
        }
        Ok(parent)
    }

    /// The first component of `path` that is a symlink (where [`Scope::Beneath`] refused it), or `path`.
    fn first_link(&self, path: &Path) -> PathBuf {
        let mut prefix = PathBuf::new();
        for part in components(path) {
            prefix.push(part);
            if self
                .open_path(&prefix)
                .is_err_and(|e| e.errno() == Some(libc::ELOOP))
            {
                return prefix;
            }
        }
        path.to_path_buf()
    }

    /// The directory that holds `path` (created as needed) and the last component's name, for `mknodat`,
    /// `symlinkat` and the like. The last component must be a name (not `/`, `.` or `..`).
    pub fn make_parent(&self, path: &Path) -> Result<(OwnedFd, CString), Error> {
        let fail = |e: io::Error| Error::new(path, e);
        let name = match path.components().next_back() {
            Some(Component::Normal(name)) => name,
            _ => {
                return Err(fail(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "does not end in a file name",
                )));
            }
        };
        let parent = path.parent().unwrap_or(Path::new("/"));
        let dir = self.make(parent, Create::Dir)?;
        // Readable, for the *at calls that refuse an O_PATH descriptor (fchownat with an empty path).
        let dir = reopen_dir(dir.as_fd()).map_err(fail)?;
        Ok((dir, c_bytes(name.as_bytes()).map_err(fail)?))
    }
}

/// `/proc/self/fd/N`: the object `fd` refers to, as a path mount(2) and friends accept.
pub fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `openat2(2)`; `RESOLVE_IN_ROOT` answers EAGAIN when a concurrent rename might have let `..` escape, and
/// retrying is the documented remedy.
pub(crate) fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: u64,
    scope: Scope,
) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { mem::zeroed() };
    how.flags = flags;
    how.resolve = scope.resolve_flags();
    if flags & libc::O_CREAT as u64 != 0 {
        how.mode = 0o644;
    }
    for _ in 0..16 {
        // SAFETY: `path` is NUL-terminated, `how` lives across the call and its size is passed.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            // SAFETY: the kernel returned a new descriptor that nobody else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// The components of `path` to walk from the root: names and `..`; `/` and `.` dropped.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// `path` relative to the root (`.` for the root itself).
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = components(path).into_iter().collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// The file type bits of `name` in `dir`, not following a symlink; `None` when nothing is there.
fn lstat_kind(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::mode_t>> {
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, writable `st`.
    let ret = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(ret) {
        Ok(_) => Ok(Some(st.st_mode & libc::S_IFMT)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_link(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid descriptor and name; the kernel writes at most `buf.len()` bytes.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

fn mkdir(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// A new, empty regular file `name` in `dir`, never following or reusing what is there.
fn create_file(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: valid descriptor and NUL-terminated name.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A readable descriptor of the directory `fd` (an `O_PATH` one) refers to.
fn reopen_dir(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: an empty path relative to a valid descriptor names the descriptor's own directory only
    // through its magic link, which we made ourselves.
    let fd = check(unsafe {
        libc::openat(
            fd.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root(scope: Scope) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path(), scope).unwrap();
        (dir, root)
    }

    /// The path `fd` refers to, as the host sees it.
    fn where_is(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(proc_path(fd.as_fd())).unwrap()
    }

    #[test]
    fn dot_dot_and_absolute_links_stay_inside() {
        let (dir, r) = root(Scope::InRoot);
        let d = dir.path();
        std::fs::create_dir_all(d.join("etc")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), d.join("etc/abs")).unwrap();
        symlink("../../../../../..", d.join("etc/rel")).unwrap();
        let made = r.make(Path::new("/../../etc/hosts"), Create::File).unwrap();
        assert_eq!(where_is(&made), d.join("etc/hosts"));
        let made = r.make(Path::new("/etc/abs/x"), Create::Dir).unwrap();
        assert_eq!(
            where_is(&made),
            d.join(outside.path().strip_prefix("/").unwrap()).join("x")
        );
        let made = r.make(Path::new("/etc/rel/y"), Create::Dir).unwrap();
        assert_eq!(where_is(&made), d.join("y"));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn dangling_links_are_created_inside() {
        let (dir, r) = root(Scope::InRoot);
        let d = dir.path();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("made");
        symlink(&target, d.join("dev")).unwrap();
        let made = r.make(Path::new("/dev/shm"), Create::Dir).unwrap();
        assert!(!target.exists(), "created outside the root");
        assert_eq!(
            where_is(&made),
            d.join(target.strip_prefix("/").unwrap()).join("shm")
        );
    }

    #[test]
    fn magic_links_are_refused() {
        // The host's /proc stands for a container's own: its magic links lead anywhere.
        let root = Root::open(Path::new("/"), Scope::InRoot).unwrap();
        let err = root
            .open_path(Path::new("/proc/self/root/etc"))
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ELOOP), "{err}");
        assert!(
            err.to_string().starts_with("/proc/self/root/etc: "),
            "{err}"
        );
    }

    #[test]
    fn long_chains_and_loops_name_the_path() {
        let (dir, r) = root(Scope::InRoot);
        let d = dir.path();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path().join("gone"), d.join("l45")).unwrap();
        for i in 0..45 {
            symlink(format!("/l{}", i + 1), d.join(format!("l{i}"))).unwrap();
        }
        symlink("/loop", d.join("loop")).unwrap();
        for (path, create) in [
            ("/l0", Create::Dir),
            ("/l0/x", Create::File),
            ("/loop", Create::Dir),
        ] {
            let err = r.make(Path::new(path), create).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ELOOP), "{path}: {err}");
            assert!(err.to_string().starts_with(&format!("{path}: ")), "{err}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // A chain the kernel would not follow, dangling at its end, is not followed here either.
        for i in 0..45 {
            std::fs::remove_file(d.join(format!("l{i}"))).unwrap();
            symlink(format!("l{}", i + 1), d.join(format!("l{i}"))).unwrap();
        }
        let err = r.make(Path::new("/l0"), Create::Dir).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ELOOP), "{err}");
    }

    #[test]
    fn beneath_follows_no_link() {
        let (dir, r) = root(Scope::Beneath);
        let d = dir.path();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), d.join("res")).unwrap();
        std::fs::create_dir(d.join("real")).unwrap();
        symlink("real", d.join("inner")).unwrap();
        for (path, link) in [("res/owned", "res"), ("inner/x/y", "inner")] {
            let err = r.make(Path::new(path), Create::Dir).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ELOOP), "{path}: {err}");
            assert_eq!(err.path, Path::new(link), "the symlink is named");
        }
        let err = r.make(Path::new("../x"), Create::Dir).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EXDEV), "{err}");
        assert!(err.to_string().contains("outside"), "{err}");
        let made = r.make(Path::new("a/b/c"), Create::File).unwrap();
        assert_eq!(where_is(&made), d.join("a/b/c"));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn make_parent_names_the_last_component() {
        let (dir, r) = root(Scope::InRoot);
        let (parent, name) = r.make_parent(Path::new("/dev/../dev/x/test1")).unwrap();
        assert_eq!(where_is(&parent), dir.path().join("dev/x"));
        assert_eq!(name.as_bytes(), b"test1");
        assert!(r.make_parent(Path::new("/dev/..")).is_err());
    }
}
