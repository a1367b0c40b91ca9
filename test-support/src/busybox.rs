//! The base image most tests use: Debian's static busybox (`busybox-static`) with its applets as symlinks,
//! `/etc/passwd` and `/etc/group` (root, nobody, `app` 1000:1000 in `staff`), `/tmp` 1777. Built without any
//! network.

use std::process::Command;
use std::sync::OnceLock;

use super::image::{Compression, Image, ImageBuilder, Layer, LayerBuilder, Meta, Platform};
use super::registry::TestRegistry;

pub const BUSYBOX_BIN: &str = "/bin/busybox";

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    app:x:1000:1000:app:/home/app:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
pub const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n";
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The applets' paths in the layer (`bin/sh`, `usr/bin/wget`...), from `busybox --list-full`.
pub fn applets() -> Vec<String> {
    let out = Command::new(BUSYBOX_BIN)
        .arg("--list-full")
        .output()
        .unwrap_or_else(|e| {
            panic!("run {BUSYBOX_BIN}: {e} (install busybox-static: run scripts/setup first)")
        });
    assert!(out.status.success(), "{BUSYBOX_BIN} --list-full failed");
    let list = String::from_utf8(out.stdout).expect("applet list is UTF-8");
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "bin/busybox")
        .map(String::from)
        .collect()
}

/// The busybox root filesystem as a layer still open for more entries.
pub fn busybox_layer() -> LayerBuilder {
    let binary = std::fs::read(BUSYBOX_BIN).unwrap_or_else(|e| {
        panic!("read {BUSYBOX_BIN}: {e} (install busybox-static: run scripts/setup first)")
    });
    let mut layer = LayerBuilder::new();
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "var", "run",
        "home",
    ] {
        layer = layer.dir(dir);
    }
    layer = layer
        .dir_with("tmp", Meta::mode(0o1777))
        .dir_with("var/tmp", Meta::mode(0o1777))
        .dir_with("root", Meta::mode(0o700))
        .dir_with("home/app", Meta::mode(0o755).owner(1000, 1000))
        .executable("bin/busybox", &binary)
        .file("etc/passwd", PASSWD)
        .file("etc/group", GROUP)
        .file("etc/hostname", "busybox\n");
    for applet in applets() {
        // Absolute targets, as Alpine has them: they must resolve inside the image, never on the host.
        layer = layer.symlink(&applet, "/bin/busybox");
    }
    layer
}

/// The busybox layer, gzip-compressed, built once per test process.
pub fn busybox_gzip_layer() -> Layer {
    static LAYER: OnceLock<Layer> = OnceLock::new();
    LAYER
        .get_or_init(|| busybox_layer().build(Compression::Gzip))
        .clone()
}

/// An image builder with the busybox layer, `PATH` set and `Cmd ["sh"]`: add layers or settings, then
/// `build()`.
pub fn busybox_image() -> ImageBuilder {
    ImageBuilder::new()
        .layer(busybox_gzip_layer())
        .env(PATH_ENV)
        .cmd(&["sh"])
}

/// Busybox for linux/amd64 and for linux/arm64/v8, the pair an index offers; the arm64 one has one more
/// layer (`compression`), where `/etc/arch` reads `arm64`.
pub fn two_platform_images(compression: Compression) -> (Image, Image) {
    let amd64 = busybox_image()
        .platform(Platform::new("linux", "amd64", None))
        .build();
    let arm64 = busybox_image()
        .layer(
            LayerBuilder::new()
                .file("etc/arch", "arm64\n")
                .build(compression),
        )
        .platform(Platform::new("linux", "arm64", Some("v8")))
        .build();
    (amd64, arm64)
}

/// A registry holding the busybox image as `demo/busybox:latest`.
pub fn busybox_registry() -> TestRegistry {
    let registry = TestRegistry::plain();
    push_busybox(&registry, "demo/busybox:latest");
    registry
}

/// A workflow file with the docker workflow `name` on `busybox_registry`'s image; `body` holds its other
/// keys, indented by four spaces.
pub fn busybox_workflow(registry: &TestRegistry, name: &str, body: &str) -> String {
    format!(
        "workflows:\n  - name: {name}\n    provider: docker\n    image: {}\n{body}",
        registry.image("demo/busybox:latest")
    )
}

/// Builds the busybox image and pushes it as `name:tag`; returns it (with its manifest digest).
pub fn push_busybox(registry: &TestRegistry, name_tag: &str) -> Image {
    let image = busybox_image().build();
    registry.push(name_tag, &image);
    image
}
