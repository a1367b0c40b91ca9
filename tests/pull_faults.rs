//! Pulling through a flaky network: a proxy in front of a real registry answers 503 or cuts a layer off
//! mid-stream. `dstack pull` retries with backoff, resumes a cut download with a `Range` request instead of
//! starting over, and when the registry keeps failing, says so in one line and leaves no image behind.

use test_support::faulty::{Fault, FaultyProxy};
use test_support::*;

/// A busybox image plus a layer of 2 MiB that gzip cannot shrink, so a cut can land mid-layer.
fn image_with_a_big_layer() -> Image {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..2 << 20)
        .map(|_| {
            // xorshift64: cheap, deterministic, incompressible enough.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    busybox_image()
        .layer(
            LayerBuilder::new()
                .file("data/noise.bin", noise)
                .build(Compression::Gzip),
        )
        .build()
}

/// The registry with the image, a proxy in front of it, and the reference through the proxy.
fn setup(
    plan: impl Fn(&str, &str, usize) -> Fault + Send + Sync + 'static,
) -> (TestRegistry, Image, FaultyProxy, String) {
    let registry = TestRegistry::plain();
    let image = image_with_a_big_layer();
    registry.push("flaky/big:v1", &image);
    let proxy = FaultyProxy::start(&registry.host(), plan);
    let name = format!("{}/flaky/big:v1", proxy.host());
    (registry, image, proxy, name)
}

fn is_big_layer(path: &str, image: &Image) -> bool {
    path.ends_with(&image.layers[1].digest)
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let big = image_with_a_big_layer().layers[1].digest.clone();
    let (_registry, image, proxy, name) = setup(move |_, path, n| {
        if (path.ends_with(&big) || path.contains("/manifests/")) && n < 2 {
            Fault::Status(503)
        } else {
            Fault::Forward
        }
    });
    let dstack = Dstack::root();
    let out = dstack.run(&["pull", &name]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), image.manifest_digest);
    let tries = proxy
        .blob_requests()
        .into_iter()
        .filter(|s| is_big_layer(&s.path, &image))
        .count();
    assert_eq!(tries, 3, "two 503s, then the layer: {:?}", proxy.seen());
    dstack.run(&["images"]).assert_stdout_contains("flaky/big");
}

#[test]
fn a_layer_cut_off_mid_stream_is_resumed_where_it_stopped() {
    let big = image_with_a_big_layer().layers[1].digest.clone();
    let cut = 300 * 1024;
    let (_registry, image, proxy, name) = setup(move |_, path, n| {
        if path.ends_with(&big) && n == 0 {
            Fault::CutAfter(cut)
        } else {
            Fault::Forward
        }
    });
    let dstack = Dstack::root();
    let out = dstack.run(&["pull", &name]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), image.manifest_digest);
    let tries: Vec<_> = proxy
        .blob_requests()
        .into_iter()
        .filter(|s| is_big_layer(&s.path, &image))
        .collect();
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[0].range, None);
    let resumed_at: usize = tries[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second request resumes with a Range: {tries:?}"));
    assert!(
        resumed_at > 0 && resumed_at <= cut,
        "resumed at {resumed_at}, cut at {cut}"
    );
    // The unpacked file is whole: the resumed bytes were stitched on correctly (the diff_id was checked).
    let run = dstack.run(&["run", "docker", &name, "-c", "wc -c < /data/noise.bin"]);
    run.assert_success()
        .assert_stdout_contains(&(2 << 20).to_string());
}

#[test]
fn a_registry_that_keeps_failing_gets_a_clear_error_and_leaves_no_image() {
    let big = image_with_a_big_layer().layers[1].digest.clone();
    let (_registry, _image, proxy, name) = setup(move |_, path, _| {
        if path.ends_with(&big) {
            Fault::Status(503)
        } else {
            Fault::Forward
        }
    });
    let dstack = Dstack::root();
    let out = dstack.run(&["pull", &name]);
    out.assert_failure();
    let first = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        first.contains(&proxy.host()) && first.contains("503"),
        "one line naming the registry and what it said:\n{out}"
    );
    assert!(
        proxy.blob_requests().len() > 2,
        "retried before giving up: {:?}",
        proxy.seen()
    );
    let images = dstack.run(&["images", "--json"]);
    images.assert_success();
    assert!(
        !images.stdout.contains("flaky/big"),
        "no partial image:\n{images}"
    );
    let ingest = dstack.state_root().join("store/ingest");
    let leftovers: Vec<_> = std::fs::read_dir(&ingest)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        leftovers.iter().all(|e| std::fs::metadata(e.path())
            .map(|m| m.len() == 0)
            .unwrap_or(true)),
        "nothing downloaded lingers: {leftovers:?}"
    );
}
