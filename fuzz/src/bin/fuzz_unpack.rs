//! Layer tars through the real unpacker into a temporary root that sits alone in a sentinel directory:
//! no panic, errors stay short, and afterwards nothing exists outside the root (the sentinel holds only
//! the root) and no file inside is a hard link to one outside. The seeds hold symlinks (relative,
//! absolute, into the sentinel), hard links and `..` entries. Header checksums are fixed after
//! mutation, so the mutations reach the unpacker instead of the tar reader's checksum test.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use dstack_fuzz::{Target, run, short_message};
use runtime::image::unpack::{UnpackOptions, unpack};

/// Fixed, so that the seeds can name it in absolute symlinks.
const SENTINEL: &str = "/tmp/dstack-fuzz-unpack-sentinel";

/// Where used roots go to be removed: outside the sentinel.
static TRASH: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::tempdir().expect("a temporary directory for used roots"));

static OPTIONS: LazyLock<UnpackOptions> = LazyLock::new(|| UnpackOptions {
    workers: 2,
    buffer_bytes: 1 << 20,
    ..UnpackOptions::for_this_process()
});

fn check(input: &[u8]) -> Result<String, String> {
    let sentinel = Path::new(SENTINEL);
    let root = sentinel.join("root");
    let mut tar = input.to_vec();
    fix_checksums(&mut tar);
    std::fs::create_dir(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let result = unpack(&tar[..], &root, &OPTIONS);
    let escaped = outside_the_root(sentinel)
        .or_else(|| root_replaced(&root))
        .or_else(|| linked_outside(&root));
    retire(&root);
    if let Some(escaped) = escaped {
        return Err(escaped);
    }
    match result {
        Ok(_) => Ok("ok".into()),
        Err(e) => short_message(&e.to_string()),
    }
}

/// Anything in the sentinel but the root, named.
fn outside_the_root(sentinel: &Path) -> Option<String> {
    let names: Vec<String> = std::fs::read_dir(sentinel)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "root")
        .collect();
    for name in &names {
        let _ = remove(&Path::new(SENTINEL).join(name));
    }
    (!names.is_empty()).then(|| format!("the layer created {names:?} outside the unpack root"))
}

/// The root itself removed or replaced: the layer reached the directory above it.
fn root_replaced(root: &Path) -> Option<String> {
    match root.symlink_metadata() {
        Ok(meta) if meta.is_dir() => None,
        Ok(meta) => Some(format!("the unpack root became a {:?}", meta.file_type())),
        Err(e) => Some(format!("the unpack root is gone: {e}")),
    }
}

/// A regular file in `root` with more links than `root` holds: a hard link to a file outside it.
fn linked_outside(root: &Path) -> Option<String> {
    let mut files: HashMap<u64, (u64, PathBuf)> = HashMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                files.entry(meta.ino()).or_insert((0, entry.path())).0 += 1;
            }
        }
    }
    files.iter().find_map(|(ino, (count, path))| {
        let nlink = path.symlink_metadata().ok()?.nlink();
        (nlink > *count).then(|| {
            format!(
                "{} (inode {ino}) has {nlink} links but the root holds {count}: a hard link to a file outside",
                path.display()
            )
        })
    })
}

/// Moves a used root out of the sentinel and removes it.
fn retire(root: &Path) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let aside = TRASH
        .path()
        .join(NEXT.fetch_add(1, Ordering::Relaxed).to_string());
    if std::fs::rename(root, &aside).is_err() {
        let _ = remove(root);
        return;
    }
    let _ = remove(&aside);
}

/// Removes `path`, making directories writable first where an unprivileged run needs it.
fn remove(path: &Path) -> std::io::Result<()> {
    if path.symlink_metadata().is_err()
        || std::fs::remove_dir_all(path).is_ok()
        || std::fs::remove_file(path).is_ok()
    {
        return Ok(());
    }
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status();
    std::fs::remove_dir_all(path)
}

/// Recomputes the checksum of every 512-byte block that carries the ustar magic.
fn fix_checksums(tar: &mut [u8]) {
    for block in tar.chunks_exact_mut(512) {
        if &block[257..262] != b"ustar" {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(&field.as_bytes()[..8]);
    }
}

fn main() -> ExitCode {
    let sentinel = Path::new(SENTINEL);
    let _ = remove(sentinel);
    if let Err(e) = std::fs::create_dir_all(sentinel) {
        eprintln!("fuzz_unpack: cannot create {SENTINEL}: {e}");
        return ExitCode::FAILURE;
    }
    let code = run(
        Target {
            name: "unpack",
            dictionary: &[
                b"../",
                b"/",
                b"./",
                b"..",
                b".wh.",
                b".wh..wh..opq",
                b"/tmp/dstack-fuzz-unpack-sentinel/",
                b"ustar\x0000",
                b"ustar  \0",
                b"0000755\0",
                b"0000644\0",
                b"path=",
                b"linkpath=",
                b"SCHILY.xattr.",
                b"././@LongLink",
            ],
            align: 512,
            max_len: 256 << 10,
        },
        check,
    );
    let _ = remove(sentinel);
    code
}
