//! `dstack pull`, `images`, `rmi`, `prune images` end to end: the binary against a real docker-registry, as
//! root and as unprivileged users (with and without subordinate ids).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use test_support::*;

/// A busybox image plus a layer with every overlay and tar feature the store must keep, and a zstd and an
/// uncompressed layer.
fn special_image() -> Image {
    busybox_image()
        .layer(
            LayerBuilder::new()
                .dir("etc")
                .whiteout("etc/hostname")
                .dir("var")
                .dir("var/cache")
                .opaque("var/cache")
                .file("var/cache/fresh", "new\n")
                .file("usr/bin/tool", "tool\n")
                .hardlink("usr/bin/tool-alias", "usr/bin/tool")
                .symlink("usr/bin/abs", "/bin/busybox")
                .build(Compression::Zstd),
        )
        .layer(
            LayerBuilder::new()
                .file("etc/motd", "plain layer\n")
                .build(Compression::None),
        )
        .build()
}

/// The `fs/` directory of the layer with this diff_id in the store of `dstack`.
fn layer_fs(dstack: &Dstack, diff_id: &str) -> PathBuf {
    let hex = diff_id.strip_prefix("sha256:").unwrap();
    dstack
        .state_root()
        .join("store/layers")
        .join(hex)
        .join("fs")
}

fn check_pull_list_remove(dstack: Dstack) {
    let registry = TestRegistry::plain();
    let image = special_image();
    registry.push("team/special:v1", &image);
    let name = registry.image("team/special:v1");

    let out = dstack.run(&["pull", &name]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), image.manifest_digest);
    assert!(
        out.stderr.contains("pulling"),
        "plain progress lines off a terminal:\n{out}"
    );

    let special = layer_fs(&dstack, &image.layers[1].diff_id);
    let hostname = std::fs::symlink_metadata(special.join("etc/hostname")).unwrap();
    assert!(
        hostname.file_type().is_char_device() && hostname.rdev() == 0,
        "whiteout"
    );
    let tool = std::fs::metadata(special.join("usr/bin/tool")).unwrap();
    assert_eq!(
        tool.ino(),
        std::fs::metadata(special.join("usr/bin/tool-alias"))
            .unwrap()
            .ino()
    );
    assert_eq!(
        std::fs::read_link(special.join("usr/bin/abs")).unwrap(),
        PathBuf::from("/bin/busybox")
    );
    assert_eq!(
        std::fs::read(layer_fs(&dstack, &image.layers[2].diff_id).join("etc/motd")).unwrap(),
        b"plain layer\n"
    );

    // Pulled again: every layer is already there, nothing is downloaded.
    let again = dstack.run(&["pull", &name]);
    again.assert_success();
    assert_eq!(
        again.stderr.matches("already present").count(),
        3,
        "{again}"
    );
    assert!(!again.stderr.contains("pulling ("), "{again}");

    let list = dstack.run(&["images"]);
    list.assert_success().assert_stdout_contains("team/special");
    assert!(
        list.stdout.contains("v1") && list.stdout.contains(&image.manifest_digest[..19]),
        "{list}"
    );
    let json = dstack.run(&["images", "--json"]);
    let records: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(records[0]["digest"], image.manifest_digest.as_str());
    assert_eq!(records[0]["tag"], "v1");

    let rmi = dstack.run(&["rmi", &name]);
    rmi.assert_success().assert_stdout_contains("untagged");
    assert!(
        !special.exists(),
        "rmi removes the layers nothing else uses"
    );
    let list = dstack.run(&["images", "--json"]);
    assert_eq!(list.stdout.trim(), "[]");
    dstack
        .run(&["prune", "images"])
        .assert_success()
        .assert_stdout_contains("freed");
    dstack
        .run(&["rmi", &name])
        .assert_failure()
        .assert_stderr_contains("dstack images");
}

#[test]
fn pull_list_and_remove_as_root() {
    check_pull_list_remove(Dstack::root());
}

#[test]
fn pull_list_and_remove_rootless_with_subordinate_ids() {
    check_pull_list_remove(Dstack::rootless());
}

#[test]
fn pull_list_and_remove_rootless_without_subordinate_ids() {
    check_pull_list_remove(Dstack::rootless_nosubid());
}

#[test]
fn platform_is_chosen_from_an_index() {
    let registry = TestRegistry::plain();
    let (amd64, arm64) = two_platform_images(Compression::Gzip);
    registry.push_index(
        "multi/busybox:latest",
        &Index::new(ManifestFormat::Oci, vec![amd64, arm64.clone()]),
    );
    let dstack = Dstack::root();
    let out = dstack.run(&[
        "pull",
        "-q",
        "--platform",
        "linux/arm64/v8",
        &registry.image("multi/busybox"),
    ]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), arm64.manifest_digest);
    assert_eq!(out.stderr, "", "-q prints only the digest");
    let arch = layer_fs(&dstack, &arm64.layers[1].diff_id).join("etc/arch");
    assert_eq!(std::fs::read(arch).unwrap(), b"arm64\n");
}

#[test]
fn a_missing_tag_is_one_clear_error() {
    let registry = TestRegistry::plain();
    push_busybox(&registry, "team/app:v1");
    let out = Dstack::root().run(&["pull", &registry.image("team/app:v2")]);
    out.assert_failure()
        .assert_stderr_contains("error: pulling");
    assert!(out.stderr.contains("not found"), "{out}");
}

#[test]
fn a_registry_with_a_self_signed_certificate_is_pulled_from_once_it_is_in_certs_d() {
    // The certificate Docker's documentation makes (`openssl req -x509 ... -addext subjectAltName=...`).
    let registry = TestRegistry::tls_self_signed();
    let image = registry.image("team/app:v1");
    push_busybox(&registry, "team/app:v1");
    let dstack = Dstack::rootless();
    let out = dstack.run(&["pull", &image]);
    out.assert_failure()
        .assert_stderr_contains("TLS verification of")
        .assert_stderr_contains("self-signed");
    for dir in [
        "~/.config/containers/certs.d",
        "/etc/containers/certs.d",
        "/etc/docker/certs.d",
    ] {
        out.assert_stderr_contains(&format!("{dir}/{}/ca.crt", registry.host()));
    }
    assert!(!out.stderr.contains("CaUsedAsEndEntity"), "{out}");

    dstack.trust(&registry);
    dstack.run(&["pull", &image]).assert_success();
}

#[test]
fn a_corrupted_layer_in_the_registry_is_refused() {
    let registry = TestRegistry::plain();
    let image = push_busybox(&registry, "team/app:v1");
    let layer = &image.layers[0];
    let mut bad = layer.blob.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    registry.overwrite_blob(&layer.digest, &bad);
    let dstack = Dstack::root();
    let out = dstack.run(&["pull", &registry.image("team/app:v1")]);
    out.assert_failure();
    assert!(
        out.stderr.contains("failed verification") || out.stderr.contains("digest mismatch"),
        "{out}"
    );
    let blob = dstack
        .state_root()
        .join("store/blobs/sha256")
        .join(&layer.digest[7..]);
    assert!(!blob.exists(), "nothing unverified is published");
}

#[test]
fn two_processes_pulling_at_once_download_each_blob_once() {
    let registry = TestRegistry::plain();
    let image = special_image();
    registry.push("team/twice:v1", &image);
    let name = registry.image("team/twice:v1");
    let dstack = Dstack::root();
    let first = dstack.spawn(&["pull", &name]);
    let second = dstack.spawn(&["pull", &name]);
    first.wait().assert_success();
    second.wait().assert_success();
    let log = registry.log();
    for layer in &image.layers {
        let gets = log
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(&format!("/blobs/{}", layer.digest)))
            .count();
        assert_eq!(
            gets, 1,
            "layer {} fetched {gets} times:\n{log}",
            layer.digest
        );
    }
    dstack
        .run(&["images"])
        .assert_success()
        .assert_stdout_contains("team/twice");
}
