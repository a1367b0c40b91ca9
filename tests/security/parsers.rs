//! Parsers are not a denial of service (issue 15, item 8): a hostile workflow file, image config or
//! bundle config is refused at once, with a short message that says where and what, as root and
//! rootless.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use test_support::image::sha256_digest;
use test_support::*;

const OCI_BIN: &str = env!("CARGO_BIN_EXE_dstack-oci");

/// A project in the user's home with these workflow files; returns its directory.
fn project(d: &Dstack, files: &[(&str, &[u8])]) -> PathBuf {
    for (name, text) in files {
        d.write_home_file(&format!("project/.dstack/workflows/{name}"), text);
    }
    d.home().join("project")
}

/// `dstack run NAME --dry-run` in `dir`, which must fail within `limit`; returns what it printed.
#[track_caller]
fn refused_within(d: &Dstack, dir: &std::path::Path, limit: Duration) -> Output {
    let started = Instant::now();
    let out = d.run_in(dir, &["run", "train", "--dry-run"]);
    let took = started.elapsed();
    out.assert_failure();
    assert!(took < limit, "took {took:?} (limit {limit:?}):\n{out}");
    assert!(out.stderr.len() < 1000, "a short message:\n{out}");
    out
}

/// 100,000 nested `[` (once minutes of YAML parsing, blocking every command of the project) are refused
/// in well under a second, naming the file and the line.
fn deep_flow_nesting_is_refused_at_once(d: Dstack) {
    let text = format!("# a comment\nworkflows:\n  - {}\n", "[".repeat(100_000));
    let dir = project(&d, &[("deep.yaml", text.as_bytes())]);
    let out = refused_within(&d, &dir, Duration::from_secs(1));
    out.assert_stderr_contains(".dstack/workflows/deep.yaml:3:")
        .assert_stderr_contains("nested deeper than 64 levels");
}
as_root_and_rootless!(deep_flow_nesting_is_refused_at_once);

/// Deep block nesting (indentation) is refused the same way, at the line that passes the limit.
fn deep_block_nesting_is_refused_at_once(d: Dstack) {
    let mut text = String::from("workflows:\n  - name: train\n    env:\n");
    for level in 0..1_000 {
        text.push_str(&format!("{}k{level}:\n", " ".repeat(6 + level)));
    }
    let dir = project(&d, &[("deep.yaml", text.as_bytes())]);
    let out = refused_within(&d, &dir, Duration::from_secs(1));
    // Levels: workflows, the item, its mapping (with env), then k0 (line 4, the 4th) ... k61 (line 65).
    out.assert_stderr_contains(".dstack/workflows/deep.yaml:65:")
        .assert_stderr_contains("nested deeper than 64 levels");
}
as_root_and_rootless!(deep_block_nesting_is_refused_at_once);

/// 64 levels pass the limit (the loader goes on and finds what else is wrong); 65 are refused.
fn sixty_four_levels_pass_and_sixty_five_do_not(d: Dstack) {
    let at = |depth: usize| {
        // `workflows:` is one level; the flow brackets are the others.
        format!(
            "workflows: {}{}\n",
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    };
    let dir = project(&d, &[("deep.yaml", at(64).as_bytes())]);
    let out = d.run_in(&dir, &["run", "train", "--dry-run"]);
    out.assert_failure()
        .assert_stderr_contains("each item of `workflows` must be a mapping");
    assert!(!out.stderr.contains("nested deeper"), "{out}");
    let dir = project(&d, &[("deep.yaml", at(65).as_bytes())]);
    refused_within(&d, &dir, Duration::from_secs(1))
        .assert_stderr_contains(".dstack/workflows/deep.yaml:1:")
        .assert_stderr_contains("nested deeper than 64 levels");
}
as_root_and_rootless!(sixty_four_levels_pass_and_sixty_five_do_not);

/// A 23 MB workflow (once 97 s and 332 MB of memory) is refused at once, without being read whole.
fn a_huge_workflow_is_refused_at_once(d: Dstack) {
    let mut text = b"workflows:\n  - name: train\n    provider: docker\n    image: ".to_vec();
    text.resize(23 << 20, b'x');
    text.push(b'\n');
    let dir = project(&d, &[("huge.yaml", &text)]);
    refused_within(&d, &dir, Duration::from_secs(1))
        .assert_stderr_contains(".dstack/workflows/huge.yaml:4:")
        .assert_stderr_contains("larger than 1 MiB");
}
as_root_and_rootless!(a_huge_workflow_is_refused_at_once);

/// A 1 MB value in a workflow is echoed cut short in its error, with the advice kept.
fn a_huge_workflow_value_is_echoed_short(d: Dstack) {
    let name = "n".repeat(900_000);
    let text =
        format!("workflows:\n  - name: {name}\n    provider: docker\n    image: x\n    gpu: 1\n");
    let dir = project(&d, &[("big.yaml", text.as_bytes())]);
    let out = d.run_in(&dir, &["run", "train", "--dry-run"]);
    out.assert_failure()
        .assert_stderr_contains(".dstack/workflows/big.yaml:5:")
        .assert_stderr_contains("unknown key `gpu`");
    assert!(out.stderr.len() < 600, "{} bytes:\n{out}", out.stderr.len());
}
as_root_and_rootless!(a_huge_workflow_value_is_echoed_short);

/// The pre-scan leaves ordinary files alone: brackets and quotes in shell commands, block scalars, flow
/// mappings, comments; the workflow runs.
fn ordinary_workflows_still_run(d: Dstack) {
    let registry = busybox_registry();
    let body = "    env: {A: '[[[[', B: \"{{\", C: x}\n    commands:\n      - if [ -d / ]; then echo \"[[[[\" ok; fi # [[[\n      - |\n        echo '{{{{' \"$A\"\n";
    let text = busybox_workflow(&registry, "train", body);
    let dir = project(&d, &[("a.yaml", text.as_bytes())]);
    let out = d.run_in(&dir, &["run", "train"]);
    out.assert_success()
        .assert_stdout_contains("[[[[ ok")
        .assert_stdout_contains("{{{{ [[[[");
}
as_root_and_rootless!(ordinary_workflows_still_run);

/// Pushes `image` with its config replaced by `config` (the manifest rewritten to match).
fn push_with_config(registry: &TestRegistry, name_tag: &str, mut image: Image, config: Vec<u8>) {
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["config"]["digest"] = sha256_digest(&config).into();
    manifest["config"]["size"] = config.len().into();
    image.config_digest = sha256_digest(&config);
    image.config = config;
    image.manifest = serde_json::to_vec_pretty(&manifest).unwrap();
    image.manifest_digest = sha256_digest(&image.manifest);
    registry.push(name_tag, &image);
}

/// The lines of `stderr` that are not progress: what the user reads as the error.
fn error_text(out: &Output) -> String {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("error"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An image whose `User` is 1 MB: the error says what is wrong in a few hundred characters, not 1 MB.
fn a_huge_image_user_is_echoed_short(d: Dstack) {
    let registry = TestRegistry::plain();
    let user = "u".repeat(1 << 20);
    registry.push("test/user:1", &busybox_image().user(&user).build());
    let out = d.run(&[
        "run",
        "docker",
        &registry.image("test/user:1"),
        "-c",
        "true",
    ]);
    out.assert_failure()
        .assert_stderr_contains("is not in the image's /etc/passwd")
        .assert_stderr_contains("(1048576 characters in all)");
    let error = error_text(&out);
    assert!(
        !error.is_empty() && error.len() < 400,
        "{} bytes:\n{error}",
        error.len()
    );
    assert!(
        out.stderr.len() < 4000,
        "{} bytes of stderr",
        out.stderr.len()
    );
}
as_root_and_rootless!(a_huge_image_user_is_echoed_short);

/// An image config that is not JSON says where (line, column) and what, not "serde failed".
fn a_config_that_is_not_json_says_where(d: Dstack) {
    let registry = TestRegistry::plain();
    let config = b"{\n  \"architecture\": \"amd64\",\n  \"os\": linux\n}".to_vec();
    push_with_config(&registry, "test/broken:1", busybox_image().build(), config);
    let out = d.run(&["pull", &registry.image("test/broken:1")]);
    out.assert_failure()
        .assert_stderr_contains("line 3, column")
        .assert_stderr_contains("it is not valid JSON");
    assert!(!out.stderr.contains("serde failed"), "{out}");
}
as_root_and_rootless!(a_config_that_is_not_json_says_where);

/// A config of the wrong shape says which field and what was expected.
fn a_config_of_the_wrong_shape_says_what(d: Dstack) {
    let registry = TestRegistry::plain();
    let mut config = busybox_image().build().config_json();
    config["config"]["User"] = serde_json::json!({"not": "a string"});
    push_with_config(
        &registry,
        "test/shape:1",
        busybox_image().build(),
        serde_json::to_vec_pretty(&config).unwrap(),
    );
    let out = d.run(&["pull", &registry.image("test/shape:1")]);
    out.assert_failure()
        .assert_stderr_contains("line ")
        .assert_stderr_contains("expected a string");
    assert!(!out.stderr.contains("serde failed"), "{out}");
}
as_root_and_rootless!(a_config_of_the_wrong_shape_says_what);

/// An image config the manifest says is huge is refused before it is downloaded.
fn a_huge_config_is_refused(d: Dstack) {
    let registry = TestRegistry::plain();
    let mut config = busybox_image().build().config_json();
    config["padding"] = "p".repeat(5 << 20).into();
    push_with_config(
        &registry,
        "test/fat:1",
        busybox_image().build(),
        serde_json::to_vec(&config).unwrap(),
    );
    let out = d.run(&["pull", &registry.image("test/fat:1")]);
    out.assert_failure()
        .assert_stderr_contains("image configs are at most 4 MiB");
}
as_root_and_rootless!(a_huge_config_is_refused);

/// A bundle whose config.json is not JSON: dstack-oci says the file, the line and the column.
fn a_bundle_config_that_is_not_json_says_where(d: Dstack) {
    let bundle = d.home().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        "{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": [\n",
    )
    .unwrap();
    d.give_to_user(&bundle);
    let root = d.state_root().join("oci");
    let out = d.run_program(
        OCI_BIN,
        &[
            "--root",
            root.to_str().unwrap(),
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "c1",
        ],
    );
    out.assert_failure()
        .assert_stderr_contains("config.json: line ")
        .assert_stderr_contains("column");
    assert!(!out.stderr.contains("serde failed"), "{out}");
}
as_root_and_rootless!(a_bundle_config_that_is_not_json_says_where);

/// Found by fuzz_unpack: a layer whose top holds `.wh...` (a whiteout of `..`) emptied the directory
/// holding the unpack destination (in the store, the layer's own build directory, so the pull failed
/// with "Directory not empty"). The pull is refused, naming the entry, and the image pulled before is
/// intact and still runs.
fn a_whiteout_of_dot_dot_is_refused_and_deletes_nothing(d: Dstack) {
    let registry = TestRegistry::plain();
    registry.push("test/good:1", &busybox_image().build());
    let evil = busybox_image()
        .layer(
            LayerBuilder::new()
                .file("keep", "x")
                .raw(RawEntry::file(".wh...", b""))
                .build(Compression::Gzip),
        )
        .build();
    registry.push("test/evil:1", &evil);
    let good = registry.image("test/good:1");
    d.run(&["pull", "-q", &good]).assert_success();
    let layers_before = store_layer_count(&d);
    let out = d.run(&["pull", &registry.image("test/evil:1")]);
    // What the victim sees first: the image pulled before is intact.
    assert!(
        store_layer_count(&d) >= layers_before,
        "layers were deleted:\n{out}"
    );
    d.run(&["run", "docker", &good, "-c", "echo still-here"])
        .assert_success()
        .assert_stdout_contains("still-here");
    out.assert_failure().assert_stderr_contains(
        "\".wh...\" is a whiteout of nothing, of its own directory or of its parent",
    );
}
as_root_and_rootless!(a_whiteout_of_dot_dot_is_refused_and_deletes_nothing);

/// How many entries the store's layer directory holds (0 if it has none yet).
fn store_layer_count(d: &Dstack) -> usize {
    let layers = d.state_root().join("store/layers");
    std::fs::read_dir(&layers).map_or(0, |entries| entries.count())
}
