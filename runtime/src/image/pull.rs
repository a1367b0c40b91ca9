//! `pull`: resolve the manifest, fetch the config, then download and unpack the layers, several at once,
//! each in one streaming pass (download -> hash -> decompress -> hash -> tar entries -> files), and record
//! the image. Layers already in the store are not downloaded again.
//!
//! All threads (layer workers and the unpackers' file writers) are scoped and joined before `pull` returns:
//! a container is cloned from this process afterwards.

use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use oci_spec::image::ImageConfiguration;

use super::Digest;
use super::digest::HashingReader;
use super::manifest::{self, LayerDescriptor, ManifestError, ResolvedImage};
use super::platform::Platform;
use super::source::{Source, SourceError};
use super::store::ingest::{IngestFailure, IngestReader};
use super::store::{
    Image, ImageName, ImageRecord, LayerMeta, LayerRecord, LockMode, Store, StoreError,
};
use super::unpack::{self, UnpackError, UnpackOptions, UnpackStats};

/// What a pull tells its user as it goes. Called from several threads; all methods default to nothing.
pub trait Progress: Sync {
    /// The layer is already unpacked in the store.
    fn layer_present(&self, _blob: &Digest, _size: u64) {}
    /// The layer's download (or resumption, or unpack from a stored blob) begins.
    fn layer_started(&self, _blob: &Digest, _size: u64) {}
    /// `bytes` more of the layer's blob have been read.
    fn layer_bytes(&self, _blob: &Digest, _bytes: u64) {}
    /// The layer is verified and in the store.
    fn layer_done(&self, _blob: &Digest) {}
}

/// Progress that nobody watches.
pub struct NoProgress;
impl Progress for NoProgress {}

/// How to pull.
pub struct PullOptions<'a> {
    pub platform: Platform,
    pub progress: &'a dyn Progress,
    /// Layers downloaded and unpacked at once.
    pub parallel_layers: usize,
    pub unpack: UnpackOptions,
}

impl<'a> PullOptions<'a> {
    /// This machine's platform, three layers at a time, unpacking as this process may.
    pub fn new(progress: &'a dyn Progress) -> PullOptions<'a> {
        PullOptions {
            platform: Platform::host(),
            progress,
            parallel_layers: 3,
            unpack: UnpackOptions::for_this_process(),
        }
    }
}

/// Whole-layer attempts when the downloaded blob fails verification.
const LAYER_ATTEMPTS: u32 = 3;
/// Attempts for manifests and configs on transient errors.
const SMALL_ATTEMPTS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("layer {layer}")]
    Unpack {
        layer: Digest,
        #[source]
        source: UnpackError,
    },
    #[error(
        "layer {layer} failed verification {attempts} times (last got {actual}): the registry or the network \
         corrupts it; try again later or check the registry"
    )]
    DigestMismatch {
        layer: Digest,
        attempts: u32,
        actual: Digest,
    },
    #[error(
        "layer {layer} unpacks to {actual}, but the image config says {expected}: the image is broken; rebuild \
         and push it again"
    )]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("the image config {digest} is not valid: {reason}")]
    Config { digest: Digest, reason: String },
}

/// Pulls `name` from `source` into `store` and returns the image, ready to run.
pub fn pull(
    store: &Store,
    source: &dyn Source,
    name: &ImageName,
    options: &PullOptions<'_>,
) -> Result<Image, PullError> {
    let _shared = store.lock_store(LockMode::Shared)?;
    let wanted = match name {
        ImageName::Registry(reference) => reference.tag_or_digest(),
        ImageName::Layout { tag, .. } => tag.clone(),
    };
    let resolved = retrying(
        || manifest::resolve(source, &wanted, &options.platform),
        |e| matches!(e, ManifestError::Source(s) if s.is_transient()),
    )?;
    store.put_blob(&resolved.manifest_digest, &resolved.manifest_bytes)?;
    let config_bytes = fetch_config(store, source, &resolved)?;
    let config = crate::text::parse_json::<ImageConfiguration>(&config_bytes).map_err(|e| {
        PullError::Config {
            digest: resolved.config.digest.clone(),
            reason: e.to_string(),
        }
    })?;
    let diff_ids = diff_ids(&config, &resolved)?;
    let layers = fetch_layers(store, source, &resolved.layers, &diff_ids, options)?;
    let pulled_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let record = ImageRecord {
        name: name.key(),
        repository: name.repository(),
        tag: name.tag(),
        manifest_digest: resolved.manifest_digest.clone(),
        index_digest: resolved.index_digest.clone(),
        config_digest: resolved.config.digest.clone(),
        size: layers.iter().map(|l| l.size).sum(),
        layers,
        pulled_at,
    };
    store.write_record(&record)?;
    Ok(store.image(&record)?)
}

/// Retries `f` with backoff while `transient` says its error is worth another try.
fn retrying<T, E>(
    mut f: impl FnMut() -> Result<T, E>,
    transient: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let mut pause = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if attempt < SMALL_ATTEMPTS && transient(&e) => {
                std::thread::sleep(pause);
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Image configs bigger than this are refused (containers/image uses the same limit).
const CONFIG_MAX: u64 = 4 << 20;

fn fetch_config(
    store: &Store,
    source: &dyn Source,
    resolved: &ResolvedImage,
) -> Result<Vec<u8>, PullError> {
    let digest = &resolved.config.digest;
    if resolved.config.size > CONFIG_MAX {
        return Err(PullError::Config {
            digest: digest.clone(),
            reason: format!(
                "the manifest says it is {} bytes; image configs are at most {} MiB",
                resolved.config.size,
                CONFIG_MAX >> 20
            ),
        });
    }
    if store.has_blob(digest) {
        return Ok(store.read_blob(digest)?);
    }
    let bytes = retrying(
        || -> Result<Vec<u8>, SourceError> {
            let mut bytes = Vec::new();
            source
                .blob(digest, 0)?
                .take(resolved.config.size + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| {
                    SourceError::Transient(format!("reading the image config {digest}: {e}"))
                })?;
            let actual = Digest::of(&bytes);
            if &actual != digest {
                return Err(SourceError::DigestMismatch {
                    what: format!("image config from {}", source.describe()),
                    expected: digest.clone(),
                    actual,
                });
            }
            Ok(bytes)
        },
        |e| e.is_transient() || matches!(e, SourceError::DigestMismatch { .. }),
    )?;
    store.put_blob(digest, &bytes)?;
    Ok(bytes)
}

fn diff_ids(
    config: &ImageConfiguration,
    resolved: &ResolvedImage,
) -> Result<Vec<Digest>, PullError> {
    let invalid = |reason: String| PullError::Config {
        digest: resolved.config.digest.clone(),
        reason,
    };
    let ids = config.rootfs().diff_ids();
    if ids.len() != resolved.layers.len() {
        return Err(invalid(format!(
            "it lists {} layers (rootfs.diff_ids) but the manifest has {}",
            ids.len(),
            resolved.layers.len()
        )));
    }
    ids.iter()
        .map(|id| {
            id.parse()
                .map_err(|e| invalid(format!("rootfs.diff_ids: {e}")))
        })
        .collect()
}

/// Fetches every layer, `parallel_layers` at a time, bottom layers first.
fn fetch_layers(
    store: &Store,
    source: &dyn Source,
    layers: &[LayerDescriptor],
    diff_ids: &[Digest],
    options: &PullOptions<'_>,
) -> Result<Vec<LayerRecord>, PullError> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<LayerRecord, PullError>>>> =
        Mutex::new((0..layers.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..options.parallel_layers.clamp(1, layers.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= layers.len() || failed.load(Ordering::SeqCst) {
                        return;
                    }
                    let result = fetch_layer(store, source, &layers[i], &diff_ids[i], options);
                    if result.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
                }
            });
        }
    });
    let mut records = Vec::with_capacity(layers.len());
    let mut first_error = None;
    for result in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        match result {
            Some(Ok(record)) => records.push(record),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(records),
    }
}

/// Why one attempt at a layer failed.
enum Attempt {
    /// The downloaded bytes did not match the digest: download again.
    Corrupt(Digest),
    Fatal(PullError),
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Attempt {
        Attempt::Fatal(e.into())
    }
}

/// Makes sure the layer `diff_id` is unpacked in the store, downloading its blob unless it is there.
fn fetch_layer(
    store: &Store,
    source: &dyn Source,
    layer: &LayerDescriptor,
    diff_id: &Digest,
    options: &PullOptions<'_>,
) -> Result<LayerRecord, PullError> {
    let record = |meta: LayerMeta| LayerRecord {
        blob: layer.digest.clone(),
        diff_id: diff_id.clone(),
        size: meta.size,
    };
    let _layer_lock = store.lock_layer(diff_id)?;
    if store.has_layer(diff_id) {
        options.progress.layer_present(&layer.digest, layer.size);
        return Ok(record(store.layer_meta(diff_id)?));
    }
    let _blob_lock = store.lock_blob(&layer.digest)?;
    options.progress.layer_started(&layer.digest, layer.size);
    let mut attempt = 1;
    loop {
        match unpack_layer(store, source, layer, diff_id, options) {
            Ok(meta) => {
                options.progress.layer_done(&layer.digest);
                return Ok(record(meta));
            }
            Err(Attempt::Corrupt(actual)) if attempt < LAYER_ATTEMPTS => {
                tracing::warn!(
                    "layer {} did not match its digest (got {actual}); downloading it again",
                    layer.digest
                );
                attempt += 1;
            }
            Err(Attempt::Corrupt(actual)) => {
                return Err(PullError::DigestMismatch {
                    layer: layer.digest.clone(),
                    attempts: attempt,
                    actual,
                });
            }
            Err(Attempt::Fatal(e)) => return Err(e),
        }
    }
}

/// One attempt: stream the blob (from the store, or from the source while saving it) into a fresh layer
/// build, verify both digests, publish blob and layer.
fn unpack_layer(
    store: &Store,
    source: &dyn Source,
    layer: &LayerDescriptor,
    diff_id: &Digest,
    options: &PullOptions<'_>,
) -> Result<LayerMeta, Attempt> {
    let build = store.build_layer(diff_id)?;
    let fs_dir = build.fs_dir();
    let unpack_error = |e: UnpackError| -> Attempt {
        if e.is_no_space() {
            Attempt::Fatal(StoreError::NoSpace(store.root().to_path_buf()).into())
        } else {
            Attempt::Fatal(PullError::Unpack {
                layer: layer.digest.clone(),
                source: e,
            })
        }
    };
    let (stats, actual_diff) = if store.has_blob(&layer.digest) {
        // Verified when it was stored; only the layer directory is missing (pruned while the blob stayed).
        let path = store.blob_path(&layer.digest);
        let mut file = std::fs::File::open(&path).map_err(|e| store.io("open", &path)(e))?;
        let counted = ProgressReader {
            inner: &mut file,
            progress: options.progress,
            blob: &layer.digest,
        };
        decode_and_unpack(counted, &fs_dir, &options.unpack).map_err(unpack_error)?
    } else {
        download_and_unpack(
            store,
            source,
            layer,
            diff_id,
            &fs_dir,
            options,
            unpack_error,
        )?
    };
    if &actual_diff != diff_id {
        return Err(Attempt::Fatal(PullError::DiffIdMismatch {
            layer: layer.digest.clone(),
            expected: diff_id.clone(),
            actual: actual_diff,
        }));
    }
    let meta = LayerMeta {
        diff_id: diff_id.clone(),
        blob: layer.digest.clone(),
        size: stats.bytes,
        files: stats.entries,
    };
    store.publish_layer(build, &meta)?;
    Ok(meta)
}

#[allow(clippy::too_many_arguments)]
fn download_and_unpack(
    store: &Store,
    source: &dyn Source,
    layer: &LayerDescriptor,
    diff_id: &Digest,
    fs_dir: &Path,
    options: &PullOptions<'_>,
    unpack_error: impl Fn(UnpackError) -> Attempt,
) -> Result<(UnpackStats, Digest), Attempt> {
    let ingest = store.open_ingest(&layer.digest, layer.size)?;
    let ingest_path = store.ingest_path(&layer.digest);
    let open = |offset: u64| source.blob(&layer.digest, offset);
    let on_bytes = |n: u64| options.progress.layer_bytes(&layer.digest, n);
    let mut reader = IngestReader::new(ingest, layer.size, &open, &on_bytes)
        .map_err(|e| Attempt::from(store.io("open", &ingest_path)(e)))?;
    let failure = |reader: &mut IngestReader<'_>| -> Option<Attempt> {
        reader.take_failure().map(|f| match f {
            IngestFailure::Source(e) => Attempt::Fatal(e.into()),
            IngestFailure::Write(e) => Attempt::from(store.io("write", &ingest_path)(e)),
        })
    };
    let outcome = decode_and_unpack(&mut reader, fs_dir, &options.unpack);
    if let Some(fatal) = failure(&mut reader) {
        discard_if_full(store, reader, &fatal);
        return Err(fatal);
    }
    if let Err(e) = &outcome
        && e.is_no_space()
    {
        let (_, _, ingest) = reader.finish();
        store.discard_ingest(ingest);
    } else if let Err(e) = reader.drain() {
        // Finish the download even when the data would not unpack: a corrupt transfer is retried, a
        // faithfully delivered broken layer is reported.
        if let Some(fatal) = failure(&mut reader) {
            discard_if_full(store, reader, &fatal);
            return Err(fatal);
        }
        return Err(Attempt::Fatal(store.io("read", &ingest_path)(e).into()));
    } else {
        let (actual, length, ingest) = reader.finish();
        if actual != layer.digest || length != layer.size {
            store.discard_ingest(ingest);
            return Err(Attempt::Corrupt(actual));
        }
        match &outcome {
            Ok((_, diff)) if diff == diff_id => {
                store.publish_ingest(ingest, &layer.digest, layer.size, &actual, length)?;
            }
            // Nothing is published for a layer that does not match its config or does not unpack.
            _ => store.discard_ingest(ingest),
        }
    }
    outcome.map_err(unpack_error)
}

/// A full disk: drop the partial download too, to give the space back.
fn discard_if_full(store: &Store, reader: IngestReader<'_>, outcome: &Attempt) {
    if matches!(
        outcome,
        Attempt::Fatal(PullError::Store(StoreError::NoSpace(_)))
    ) {
        let (_, _, ingest) = reader.finish();
        store.discard_ingest(ingest);
    }
}

/// Counts bytes read from a stored blob for the progress display.
struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
    blob: &'a Digest,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.layer_bytes(self.blob, n as u64);
        Ok(n)
    }
}

/// Decompresses (gzip, zstd or none, told by the stream's magic bytes: media types are not always honest),
/// unpacks, and returns the digest of the whole uncompressed stream, the layer's diff_id.
fn decode_and_unpack<'r, R: Read + 'r>(
    mut compressed: R,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<(UnpackStats, Digest), UnpackError> {
    let mut magic = [0u8; 4];
    let mut have = 0;
    while have < magic.len() {
        match compressed.read(&mut magic[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(UnpackError::Archive(e)),
        }
    }
    let stream = BufReader::with_capacity(
        256 << 10,
        io::Cursor::new(magic[..have].to_vec()).chain(compressed),
    );
    let decoded: Box<dyn Read + 'r> = match &magic[..have] {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(stream)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(
            zstd::stream::read::Decoder::with_buffer(stream).map_err(UnpackError::Archive)?,
        ),
        _ => Box::new(stream),
    };
    let mut hashing = HashingReader::new(decoded);
    let stats = unpack::unpack(&mut hashing, dest, options)?;
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Archive)?;
    let (diff_id, _) = hashing.finish();
    Ok((stats, diff_id))
}
