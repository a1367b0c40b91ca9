//! The store through `pull`: verified publishing, sharing, concurrency, crash recovery, leases, a full disk.

mod layers;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use layers::{Blob, add_to_layout};
use runtime::image::Digest;
use runtime::image::layout::OciLayout;
use runtime::image::pull::{NoProgress, PullError, PullOptions, pull};
use runtime::image::source::{FetchedManifest, Source, SourceError};
use runtime::image::store::{ImageName, Store, StoreError};
use test_support::raw_tar::{Layer, noise};

/// Wraps a source: records every blob request (digest, offset), can corrupt or slow down layer blobs.
struct Recording {
    inner: OciLayout,
    requests: Mutex<Vec<(Digest, u64)>>,
    corrupt_times: AtomicU32,
    /// Only this blob is corrupted.
    corrupt_target: Option<Digest>,
    delay_per_chunk: Duration,
}

impl Recording {
    fn new(dir: &Path) -> Recording {
        Recording {
            inner: OciLayout::open(dir).unwrap(),
            requests: Mutex::new(Vec::new()),
            corrupt_times: AtomicU32::new(0),
            corrupt_target: None,
            delay_per_chunk: Duration::ZERO,
        }
    }

    fn requests_for(&self, digest: &Digest) -> Vec<u64> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(d, _)| d == digest)
            .map(|(_, o)| *o)
            .collect()
    }

    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

struct Tampered {
    inner: Box<dyn Read + Send>,
    corrupt: bool,
    delay: Duration,
}

impl Read for Tampered {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(self.delay);
        let len = buf.len().min(64 << 10);
        let n = self.inner.read(&mut buf[..len])?;
        if self.corrupt && n > 0 {
            buf[n - 1] ^= 0xff;
        }
        Ok(n)
    }
}

impl Source for Recording {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn manifest(&self, reference: &str) -> Result<FetchedManifest, SourceError> {
        self.inner.manifest(reference)
    }
    fn blob(&self, digest: &Digest, offset: u64) -> Result<Box<dyn Read + Send>, SourceError> {
        self.requests.lock().unwrap().push((digest.clone(), offset));
        let corrupt = self.corrupt_target.as_ref() == Some(digest)
            && self
                .corrupt_times
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        Ok(Box::new(Tampered {
            inner: self.inner.blob(digest, offset)?,
            corrupt,
            delay: self.delay_per_chunk,
        }))
    }
}

fn name(dir: &Path, tag: &str) -> ImageName {
    format!("oci:{}:{tag}", dir.display()).parse().unwrap()
}

fn pull_one(
    store: &Store,
    source: &dyn Source,
    name: &ImageName,
) -> Result<runtime::image::store::Image, PullError> {
    pull(store, source, name, &PullOptions::new(&NoProgress))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn base_layer() -> Blob {
    Blob::gzip(
        Layer::new()
            .dir("etc/")
            .file("etc/os-release", b"ID=test\n")
            .dir("bin/")
            .file("bin/sh", b"sh"),
    )
}

#[test]
fn pull_records_the_image_and_a_second_pull_downloads_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let layout = temp.path().join("layout");
    let zstd = Blob::zstd(Layer::new().dir("usr/").file("usr/zstd", b"z"));
    let plain = Blob::plain(
        Layer::new()
            .file("etc/.wh.os-release", b"")
            .file("plain", b"p"),
    );
    let manifest = add_to_layout(&layout, "v1", &[base_layer(), zstd, plain], None);
    let store = Store::open(&temp.path().join("store")).unwrap();
    let source = Recording::new(&layout);
    let image = pull_one(&store, &source, &name(&layout, "v1")).unwrap();
    assert_eq!(image.manifest_digest, manifest);
    assert_eq!(image.layer_dirs.len(), 3);
    assert_eq!(
        std::fs::read(image.layer_dirs[0].join("etc/os-release")).unwrap(),
        b"ID=test\n"
    );
    assert_eq!(
        std::fs::read(image.layer_dirs[1].join("usr/zstd")).unwrap(),
        b"z"
    );
    assert_eq!(
        std::fs::read(image.layer_dirs[2].join("plain")).unwrap(),
        b"p"
    );
    assert_eq!(
        image
            .config
            .config()
            .as_ref()
            .unwrap()
            .cmd()
            .as_ref()
            .unwrap(),
        &vec!["/bin/sh".to_string()]
    );
    // Blobs are published read-only; nothing is left in ingest.
    let blob = store.blob_path(&Digest::of(&base_layer().bytes));
    assert!(std::fs::metadata(&blob).unwrap().permissions().readonly());
    assert!(entries(&store.root().join("ingest")).is_empty());
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(
        store.lookup(&name(&layout, "v1")).unwrap().layer_dirs,
        image.layer_dirs
    );

    let again = Recording::new(&layout);
    pull_one(&store, &again, &name(&layout, "v1")).unwrap();
    assert_eq!(
        again.request_count(),
        0,
        "everything was in the store already"
    );
}

#[test]
fn images_sharing_a_base_layer_share_its_blob_and_directory() {
    let temp = tempfile::tempdir().unwrap();
    let layout = temp.path().join("layout");
    let base = base_layer();
    let base_digest = base.digest();
    add_to_layout(
        &layout,
        "one",
        &[base, Blob::gzip(Layer::new().file("one", b"1"))],
        None,
    );
    add_to_layout(
        &layout,
        "two",
        &[base_layer(), Blob::gzip(Layer::new().file("two", b"2"))],
        None,
    );
    let store = Store::open(&temp.path().join("store")).unwrap();
    let source = Recording::new(&layout);
    let one = pull_one(&store, &source, &name(&layout, "one")).unwrap();
    let two = pull_one(&store, &source, &name(&layout, "two")).unwrap();
    assert_eq!(one.layer_dirs[0], two.layer_dirs[0]);
    assert_eq!(source.requests_for(&base_digest).len(), 1);
    assert_eq!(entries(&store.root().join("layers")).len(), 3);

    let report = store.remove(&[name(&layout, "one")]).unwrap();
    assert_eq!(report.layers, 1, "only the layer nothing else uses goes");
    assert!(two.layer_dirs.iter().all(|d| d.is_dir()));
    store.remove(&[name(&layout, "two")]).unwrap();
    assert!(entries(&store.root().join("layers")).is_empty());
    assert!(entries(&store.root().join("blobs/sha256")).is_empty());
    assert!(matches!(
        store.remove(&[name(&layout, "two")]),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn a_corrupted_blob_is_refused_and_never_published() {
    let temp = tempfile::tempdir().unwrap();
    let layout = temp.path().join("layout");
    let layer = base_layer();
    let digest = layer.digest();
    add_to_layout(&layout, "v1", &[layer], None);
    let store = Store::open(&temp.path().join("store")).unwrap();

    // Corrupted every time: refused after a bounded number of attempts, nothing visible.
    let mut source = Recording::new(&layout);
    source.corrupt_target = Some(digest.clone());
    source.corrupt_times.store(u32::MAX, Ordering::SeqCst);
    let err = pull_one(&store, &source, &name(&layout, "v1")).unwrap_err();
    assert!(
        matches!(err, PullError::DigestMismatch { attempts: 3, .. }),
        "{err}"
    );
    assert!(!store.has_blob(&digest));
    assert!(entries(&store.root().join("layers")).is_empty());
    assert!(entries(&store.root().join("ingest")).is_empty());
    assert!(store.list().unwrap().is_empty());

    // Corrupted once: the retry gets it right.
    let mut source = Recording::new(&layout);
    source.corrupt_target = Some(digest.clone());
    source.corrupt_times.store(1, Ordering::SeqCst);
    pull_one(&store, &source, &name(&layout, "v1")).unwrap();
    assert!(store.has_blob(&digest));
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_not_published() {
    let temp = tempfile::tempdir().unwrap();
    let layout = temp.path().join("layout");
    let layer = base_layer();
    let digest = layer.digest();
    let lie = format!("sha256:{}", "0".repeat(64));
    add_to_layout(&layout, "v1", &[layer], Some(vec![lie]));
    let store = Store::open(&temp.path().join("store")).unwrap();
    let err = pull_one(&store, &Recording::new(&layout), &name(&layout, "v1")).unwrap_err();
    assert!(matches!(err, PullError::DiffIdMismatch { .. }), "{err}");
    assert!(!store.has_blob(&digest));
    assert!(entries(&store.root().join("layers")).is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn concurrent_pulls_download_each_blob_once() {
    let temp = tempfile::tempdir().unwrap();
    let layout = temp.path().join("layout");
    let layers: Vec<Blob> = (0..3)
        .map(|i| Blob::gzip(Layer::new().file(&format!("f{i}"), &noise(512 << 10, i))))
        .collect();
    let digests: Vec<Digest> = layers.iter().map(Blob::digest).collect();
    add_to_layout(&layout, "v1", &layers, None);
    let store_dir = temp.path().join("store");
    let mut source = Recording::new(&layout);
    source.delay_per_chunk = Duration::from_millis(5);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let store = Store::open(&store_dir).unwrap();
                pull_one(&store, &source, &name(&layout, "v1")).unwrap();
            });
        }
    });
    for d in &digests {
        assert_eq!(source.requests_for(d), vec![0], "{d} downloaded once");
    }
}

#[test]
fn leases_protect_layers_from_prune() {
    let temp = tempfile::tempdir().unwrap();
    let layout = temp.path().join("layout");
    add_to_layout(&layout, "v1", &[base_layer()], None);
    let store = Store::open(&temp.path().join("store")).unwrap();
    let image = pull_one(&store, &Recording::new(&layout), &name(&layout, "v1")).unwrap();
    let lease = store.lease(&image).unwrap();
    // A lease left by a process that died: its lock is gone, so prune removes it.
    std::fs::write(
        store.root().join("leases/lease-dead"),
        br#"{"image":"x","pid":1,"layers":[]}"#,
    )
    .unwrap();

    let report = store.remove(&[name(&layout, "v1")]).unwrap();
    assert_eq!((report.layers, report.leased), (0, 1));
    assert!(image.layer_dirs[0].join("etc/os-release").is_file());
    assert!(!store.root().join("leases/lease-dead").exists());

    drop(lease);
    let report = store.prune().unwrap();
    assert_eq!((report.layers, report.leased), (1, 0));
    assert!(!image.layer_dirs[0].exists());
}

#[test]
fn prune_removes_abandoned_downloads_and_builds() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(&temp.path().join("store")).unwrap();
    std::fs::write(store.root().join("ingest").join("a".repeat(64)), b"partial").unwrap();
    let build = store.root().join("layers/.tmp-abc-1-2-3/fs/ro");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("f"), b"x").unwrap();
    std::fs::set_permissions(&build, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let report = store.prune().unwrap();
    assert_eq!(report.temporary, 2);
    assert!(entries(&store.root().join("ingest")).is_empty());
    assert!(entries(&store.root().join("layers")).is_empty());
}

/// Pulls a big, slowly served layer into the store named by `DSTACK_TEST_STORE`; the crash test below runs
/// it in a child process and kills it half-way. Run on its own, it checks that a slow pull completes.
#[test]
fn slow_pull_completes() {
    let temp = tempfile::tempdir().unwrap();
    let (layout, store_dir) = match std::env::var_os("DSTACK_TEST_STORE") {
        Some(dir) => (
            PathBuf::from(&dir).join("layout"),
            PathBuf::from(dir).join("store"),
        ),
        None => {
            let layout = temp.path().join("layout");
            add_to_layout(&layout, "big", &[big_layer(1 << 20)], None);
            (layout, temp.path().join("store"))
        }
    };
    let store = Store::open(&store_dir).unwrap();
    let mut source = Recording::new(&layout);
    source.delay_per_chunk = Duration::from_millis(20);
    pull_one(&store, &source, &name(&layout, "big")).unwrap();
}

fn big_layer(size: usize) -> Blob {
    Blob::gzip(
        Layer::new()
            .dir("data/")
            .file("data/big", &noise(size, 7))
            .file("data/after", b"end"),
    )
}

#[test]
fn a_pull_killed_mid_layer_is_resumed_by_the_next() {
    let temp = tempfile::tempdir().unwrap();
    let layout = temp.path().join("layout");
    let layer = big_layer(16 << 20);
    let digest = layer.digest();
    let size = layer.bytes.len() as u64;
    add_to_layout(&layout, "big", &[layer], None);
    let store_dir = temp.path().join("store");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "slow_pull_completes", "--test-threads=1"])
        .env("DSTACK_TEST_STORE", temp.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ingest = store_dir.join("ingest").join(digest.hex());
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&ingest).map(|m| m.len()).unwrap_or(0) < size / 4 {
        assert!(
            Instant::now() < deadline,
            "the child never got a quarter of the way"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        entries(&store_dir.join("layers"))
            .iter()
            .any(|n| n.starts_with(".tmp-"))
    );

    let store = Store::open(&store_dir).unwrap();
    let source = Recording::new(&layout);
    let image = pull_one(&store, &source, &name(&layout, "big")).unwrap();
    let offsets = source.requests_for(&digest);
    assert_eq!(offsets.len(), 1);
    assert!(
        offsets[0] >= size / 4,
        "resumed at {} of {size}",
        offsets[0]
    );
    assert_eq!(
        std::fs::read(image.layer_dirs[0].join("data/after")).unwrap(),
        b"end"
    );
    assert_eq!(
        std::fs::read(image.layer_dirs[0].join("data/big"))
            .unwrap()
            .len(),
        16 << 20
    );
    let leftovers: Vec<String> = entries(&store_dir.join("layers"))
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_full_disk_gives_one_clear_error_and_no_partial_image() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let layout = temp.path().join("layout");
    // Too big as a download, and small as a download but too big unpacked.
    add_to_layout(
        &layout,
        "big-blob",
        &[Blob::plain(Layer::new().file("noise", &noise(3 << 20, 1)))],
        None,
    );
    add_to_layout(
        &layout,
        "big-files",
        &[Blob::gzip(Layer::new().file("zeros", &vec![0; 4 << 20]))],
        None,
    );
    let mnt = temp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let store = Store::open(&mnt.join("store")).unwrap();
    for tag in ["big-blob", "big-files"] {
        let err = pull_one(&store, &Recording::new(&layout), &name(&layout, tag)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("no space left on device under") && text.contains("DSTACK_HOME"),
            "{tag}: {text}"
        );
        assert!(store.list().unwrap().is_empty());
        assert!(
            entries(&store.root().join("layers")).is_empty(),
            "{tag}: temp dirs removed"
        );
        assert!(
            entries(&store.root().join("ingest")).is_empty(),
            "{tag}: partial download removed"
        );
    }
}
