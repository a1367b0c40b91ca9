//! A run's artifacts under `runs/<name>/artifacts/<path>`: gathered when the run ends, listed, downloaded.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use runtime::inroot::{Root, Scope};
use serde::Serialize;

use super::RunsError;
use super::copy::{self, Copied};
use super::record::ArtifactRecord;

/// One artifact as `dstack artifacts list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub path: String,
    pub files: u64,
    pub size: u64,
}

/// Moves what the job wrote at each artifact's place in the project copy into `artifacts/<path>`.
/// Artifacts that are missing (the job never wrote them) are simply absent. The job owns the project
/// copy: each artifact's parent is opened beneath it with no symlink followed, so a link the job made
/// (`src -> /home/user`) cannot have a host file moved into the run; the artifact itself, if a link,
/// is moved as one.
pub fn collect(
    project_copy: &Path,
    artifacts_dir: &Path,
    artifacts: &[ArtifactRecord],
) -> Result<(), RunsError> {
    if artifacts.iter().all(|a| a.from_project_copy.is_none()) {
        return Ok(());
    }
    let root = match Root::open(project_copy, Scope::Beneath) {
        Ok(root) => root,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RunsError::Io {
                path: project_copy.to_path_buf(),
                source,
            });
        }
    };
    for artifact in artifacts {
        let Some(rel) = &artifact.from_project_copy else {
            continue;
        };
        let rel = Path::new(rel);
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let dir = match root.open_path(parent) {
            Ok(dir) => dir,
            Err(e) if e.errno() == Some(libc::ENOENT) => continue,
            Err(e) => {
                return Err(RunsError::Io {
                    path: project_copy.join(&e.path),
                    source: explain(e.source),
                });
            }
        };
        let src = runtime::inroot::proc_path(dir.as_fd()).join(name);
        if std::fs::symlink_metadata(&src).is_err() {
            continue;
        }
        copy::move_tree(&src, &artifacts_dir.join(&artifact.path))?;
    }
    Ok(())
}

/// Files and bytes of each artifact, in the workflow's order.
pub fn list(artifacts_dir: &Path, artifacts: &[ArtifactRecord]) -> Vec<Summary> {
    artifacts
        .iter()
        .map(|a| {
            let measured = copy::measure(&artifacts_dir.join(&a.path));
            Summary {
                path: a.path.clone(),
                files: measured.files,
                size: measured.bytes,
            }
        })
        .collect()
}

/// Copies every artifact to `out/<path>`. Nothing already in `out` is followed: each directory on the
/// way is opened beneath `out` with no symlink allowed (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`) and
/// every file is made anew in its parent's descriptor, so a symlink a former download left there (an
/// artifact may be one, and is copied as one) is an error naming it, never a way out of `out`.
pub fn download(
    artifacts_dir: &Path,
    artifacts: &[ArtifactRecord],
    out: &Path,
) -> Result<Copied, RunsError> {
    let mut total = Copied::default();
    std::fs::create_dir_all(out).map_err(|source| RunsError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let root = Root::open(out, Scope::Beneath).map_err(|source| RunsError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    for artifact in artifacts {
        let src = artifacts_dir.join(&artifact.path);
        if std::fs::symlink_metadata(&src).is_err() {
            continue;
        }
        let (dir, name) =
            root.make_parent(Path::new(&artifact.path))
                .map_err(|e| RunsError::Io {
                    path: out.join(&e.path),
                    source: explain(e.source),
                })?;
        let place = Place {
            dir: dir.as_fd(),
            name: &name,
            shown: out.join(&artifact.path),
        };
        copy_into(&src, &place, &mut total)?;
    }
    Ok(total)
}

/// Says what to do about a symlink in the way (ELOOP from a lookup that may follow none).
fn explain(err: io::Error) -> io::Error {
    if err.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::other(
            "is a symbolic link, which artifacts are never saved or downloaded through: remove it, or \
             download to another directory with -o",
        );
    }
    err
}

/// ELOOP where `place` holds a symlink (`O_DIRECTORY | O_NOFOLLOW` says ENOTDIR there), else `err`.
fn link_or(place: &Place, err: nix::errno::Errno) -> nix::errno::Errno {
    let stat = nix::sys::stat::fstatat(
        place.dir,
        place.name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    );
    match stat {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => nix::errno::Errno::ELOOP,
        _ => err,
    }
}

/// Where one entry goes: a name in a directory descriptor, and the path to show in errors.
struct Place<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    shown: PathBuf,
}

fn at(shown: &Path) -> impl FnOnce(io::Error) -> RunsError + '_ {
    move |source| RunsError::Io {
        path: shown.to_path_buf(),
        source: explain(source),
    }
}

/// Copies `src` (a file, directory or symlink of the run store) to `place`: a symlink as a symlink, a
/// file as a new file (whatever non-directory was there is replaced, not written through), a
/// directory merged into one already there. Device nodes, sockets and fifos are left out.
fn copy_into(src: &Path, place: &Place, copied: &mut Copied) -> Result<(), RunsError> {
    let meta = std::fs::symlink_metadata(src).map_err(at(src))?;
    let kind = meta.file_type();
    let shown = place.shown.clone();
    if kind.is_dir() {
        match nix::sys::stat::mkdirat(place.dir, place.name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(at(&shown)(e.into())),
        }
        let fd = nix::fcntl::openat(
            place.dir,
            place.name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| at(&shown)(link_or(place, e).into()))?;
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .map_err(at(src))?
            .collect::<Result<_, _>>()
            .map_err(at(src))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = CString::new(entry.file_name().into_vec()).map_err(|e| at(src)(e.into()))?;
            let child = Place {
                dir: fd.as_fd(),
                name: &name,
                shown: shown.join(entry.file_name()),
            };
            copy_into(&entry.path(), &child, copied)?;
        }
        // Last, so that a read-only directory can still be filled.
        nix::sys::stat::fchmod(
            &fd,
            Mode::from_bits_truncate((meta.permissions().mode() | 0o700) & 0o777),
        )
        .map_err(|e| at(&shown)(e.into()))?;
        return Ok(());
    }
    if !(kind.is_symlink() || kind.is_file()) {
        return Ok(());
    }
    match nix::unistd::unlinkat(
        place.dir,
        place.name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(at(&shown)(e.into())),
    }
    if kind.is_symlink() {
        let target = std::fs::read_link(src).map_err(at(src))?;
        return nix::unistd::symlinkat(target.as_path(), place.dir, place.name)
            .map_err(|e| at(&shown)(e.into()));
    }
    let fd = nix::fcntl::openat(
        place.dir,
        place.name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(meta.permissions().mode() & 0o777),
    )
    .map_err(|e| at(&shown)(e.into()))?;
    let mut to = std::fs::File::from(fd);
    let mut from = std::fs::File::open(src).map_err(at(src))?;
    let bytes = io::copy(&mut from, &mut to).map_err(at(&shown))?;
    to.set_permissions(std::fs::Permissions::from_mode(
        meta.permissions().mode() & 0o777,
    ))
    .map_err(at(&shown))?;
    copied.files += 1;
    copied.bytes += bytes;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn record(path: &str, from: Option<&str>) -> ArtifactRecord {
        ArtifactRecord {
            path: path.into(),
            mount: from.is_none(),
            from_project_copy: from.map(str::to_string),
        }
    }

    #[test]
    fn collects_lists_and_downloads() {
        let tmp = tempfile::tempdir().unwrap();
        let copy_dir = tmp.path().join("workflow");
        let arts = tmp.path().join("artifacts");
        fs::create_dir_all(copy_dir.join("src/output/sub")).unwrap();
        fs::write(copy_dir.join("src/output/hello.txt"), "Hello, world!\n").unwrap();
        fs::write(copy_dir.join("src/output/sub/x"), "12345").unwrap();
        fs::create_dir_all(arts.join("data/live")).unwrap();
        fs::write(arts.join("data/live/ckpt"), "abc").unwrap();
        let records = [
            record("output", Some("src/output")),
            record("data/live", None),
            record("never-written", Some("src/never-written")),
        ];
        collect(&copy_dir, &arts, &records).unwrap();
        assert_eq!(
            fs::read_to_string(arts.join("output/hello.txt")).unwrap(),
            "Hello, world!\n"
        );
        assert!(!copy_dir.join("src/output").exists(), "moved, not copied");
        let listed = list(&arts, &records);
        assert_eq!(
            listed,
            [
                Summary {
                    path: "output".into(),
                    files: 2,
                    size: 19
                },
                Summary {
                    path: "data/live".into(),
                    files: 1,
                    size: 3
                },
                Summary {
                    path: "never-written".into(),
                    files: 0,
                    size: 0
                },
            ]
        );
        let out = tmp.path().join("download");
        let copied = download(&arts, &records, &out).unwrap();
        assert_eq!((copied.files, copied.bytes), (3, 22));
        assert_eq!(
            fs::read_to_string(out.join("output/hello.txt")).unwrap(),
            "Hello, world!\n"
        );
        assert_eq!(
            fs::read_to_string(out.join("data/live/ckpt")).unwrap(),
            "abc"
        );
    }

    #[test]
    fn a_job_cannot_have_a_host_file_collected_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        fs::create_dir_all(host.join("output")).unwrap();
        fs::write(host.join("output/secret"), "mine").unwrap();
        let copy_dir = tmp.path().join("workflow");
        fs::create_dir(&copy_dir).unwrap();
        std::os::unix::fs::symlink(&host, copy_dir.join("src")).unwrap();
        let arts = tmp.path().join("artifacts");
        let err = collect(&copy_dir, &arts, &[record("output", Some("src/output"))]).unwrap_err();
        let said = runtime::report::chain(&err);
        assert!(said.contains("workflow/src: is a symbolic link"), "{said}");
        assert_eq!(
            fs::read_to_string(host.join("output/secret")).unwrap(),
            "mine"
        );
        assert!(!arts.join("output").exists());
    }

    #[test]
    fn a_download_never_writes_through_a_symlink_a_former_one_left() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        fs::create_dir(&host).unwrap();
        // Run 1's artifact `res` is a symlink to a host directory; run 2 has `res/owned` and a
        // directory `res` holding `owned`.
        let run1 = tmp.path().join("run1");
        fs::create_dir(&run1).unwrap();
        std::os::unix::fs::symlink(&host, run1.join("res")).unwrap();
        let run2 = tmp.path().join("run2");
        fs::create_dir_all(run2.join("res")).unwrap();
        fs::write(run2.join("res/owned"), "pwned").unwrap();
        let out = tmp.path().join("out");
        download(&run1, &[record("res", None)], &out).unwrap();
        assert_eq!(
            fs::read_link(out.join("res")).unwrap(),
            host,
            "copied as a link"
        );
        for artifact in ["res/owned", "res"] {
            let err = download(&run2, &[record(artifact, None)], &out).unwrap_err();
            let said = runtime::report::chain(&err);
            assert!(
                said.contains("out/res: is a symbolic link"),
                "{artifact}: {said}"
            );
        }
        assert_eq!(
            fs::read_dir(&host).unwrap().count(),
            0,
            "written through the link"
        );
        // A file there already is replaced, not written through (a hard link stays as it was).
        fs::remove_file(out.join("res")).unwrap();
        fs::create_dir(out.join("res")).unwrap();
        fs::write(host.join("kept"), "host").unwrap();
        fs::hard_link(host.join("kept"), out.join("res/owned")).unwrap();
        download(&run2, &[record("res", None)], &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("res/owned")).unwrap(), "pwned");
        assert_eq!(fs::read_to_string(host.join("kept")).unwrap(), "host");
    }
}
