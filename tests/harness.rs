//! Self-tests of the test harness (the `test-support` crate): they prove the registries, the token server,
//! the image builder, the pusher and the dstack runner do what the product's tests rely on. They test the
//! harness, not dstack.

use std::io::Read;
use std::time::Duration;

use test_support::http::Client;
use test_support::image::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, list_tar, sha256_digest};
use test_support::registry::MANIFEST_ACCEPT;
use test_support::*;

/// Fetches `repo:reference` and checks the registry serves exactly `expected`, under its digest.
#[track_caller]
fn assert_serves_manifest(registry: &TestRegistry, repo: &str, reference: &str, expected: &[u8]) {
    let resp = registry.fetch_manifest(repo, reference, registry.creds());
    assert_eq!(
        resp.status,
        200,
        "GET manifest {repo}:{reference}: {}\n{}",
        resp.text(),
        registry.log()
    );
    assert_eq!(resp.body, expected, "manifest bytes differ");
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(sha256_digest(expected).as_str())
    );
}

#[track_caller]
fn assert_serves_blob(registry: &TestRegistry, repo: &str, digest: &str) {
    let resp = registry.get(
        &format!("/v2/{repo}/blobs/{digest}"),
        "*/*",
        registry.creds(),
    );
    assert_eq!(resp.status, 200, "GET blob {digest}: {}", resp.text());
    assert_eq!(sha256_digest(&resp.body), digest);
}

#[test]
fn plain_registry_serves_a_pushed_busybox_image() {
    let registry = TestRegistry::plain();
    assert!(registry.url().starts_with("http://127.0.0.1:"));
    let image = push_busybox(&registry, "demo/busybox:1");
    assert_serves_manifest(&registry, "demo/busybox", "1", &image.manifest);
    assert_serves_manifest(
        &registry,
        "demo/busybox",
        &image.manifest_digest,
        &image.manifest,
    );
    assert_serves_blob(&registry, "demo/busybox", &image.config_digest);
    assert_serves_blob(&registry, "demo/busybox", &image.layers[0].digest);
    let missing = registry.fetch_manifest("demo/busybox", "nope", None);
    assert_eq!(missing.status, 404);
}

#[test]
fn token_registry_allows_anonymous_pulls_of_public_repositories_only() {
    let registry = TestRegistry::tls_token();
    assert!(registry.url().starts_with("https://127.0.0.1:"));
    let image = push_busybox(&registry, "public/busybox:latest");
    push_busybox(&registry, "private/busybox:latest");

    let public = registry.fetch_manifest("public/busybox", "latest", None);
    assert_eq!(public.status, 200, "{}", public.text());
    assert_eq!(public.body, image.manifest);

    let private = registry.fetch_manifest("private/busybox", "latest", None);
    assert_eq!(
        private.status,
        401,
        "anonymous pull of a private repository: {}",
        private.text()
    );

    assert_serves_manifest(&registry, "private/busybox", "latest", &image.manifest);
    assert_serves_blob(&registry, "private/busybox", &image.layers[0].digest);

    let wrong = registry.fetch_manifest(
        "private/busybox",
        "latest",
        Some((REGISTRY_USER, "not-the-password")),
    );
    assert_eq!(wrong.status, 401, "token server accepted a wrong password");

    // The log records who asked for what, never a password.
    let log = registry.token_requests();
    assert!(
        log.iter()
            .any(|r| r["user"] == REGISTRY_USER && r["status"] == 200)
    );
    assert!(
        log.iter()
            .any(|r| r["user"] == REGISTRY_USER && r["status"] == 401)
    );
    assert!(
        log.iter()
            .any(|r| r["user"].is_null() && r["status"] == 200)
    );
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(REGISTRY_PASSWORD) && !text.contains("not-the-password"));
}

#[test]
fn anonymous_token_for_a_private_repository_grants_nothing() {
    let registry = TestRegistry::tls_token();
    push_busybox(&registry, "private/busybox:latest");
    let client = registry.client();
    let challenge = client.request(
        "GET",
        &format!("{}/v2/private/busybox/manifests/latest", registry.url()),
        &[],
        None,
    );
    let challenge = challenge.unwrap();
    assert_eq!(challenge.status, 401);
    let challenge =
        test_support::http::Challenge::parse(challenge.header("www-authenticate").unwrap())
            .unwrap();
    assert_eq!(challenge.scheme, "bearer");
    assert_eq!(
        challenge.param("scope"),
        Some("repository:private/busybox:pull")
    );
    client
        .fetch_token(&challenge, None, None)
        .expect("anonymous token request is answered");
    let log = registry.token_requests();
    let last = log.last().unwrap();
    assert_eq!(
        last["granted"][0]["actions"],
        serde_json::json!([]),
        "{last}"
    );
}

#[test]
fn basic_registry_needs_the_password() {
    let registry = TestRegistry::tls_basic();
    let image = push_busybox(&registry, "team/busybox:v1");
    assert_serves_manifest(&registry, "team/busybox", "v1", &image.manifest);
    let anonymous = registry.fetch_manifest("team/busybox", "v1", None);
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    let wrong = registry.fetch_manifest("team/busybox", "v1", Some((REGISTRY_USER, "nope")));
    assert_eq!(wrong.status, 401);
}

#[test]
fn tls_registries_are_refused_without_the_test_ca() {
    let registry = TestRegistry::tls_basic();
    let untrusting = Client::new(None);
    let err = untrusting
        .request("GET", &format!("{}/v2/", registry.url()), &[], None)
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("tls"),
        "{err}"
    );
    let ca = std::fs::read_to_string(registry.ca_cert().unwrap()).unwrap();
    assert!(ca.contains("BEGIN CERTIFICATE"));
}

#[test]
fn short_lived_tokens_are_refused_by_the_registry_after_they_expire() {
    let registry = TestRegistry::tls_token_with(TokenOptions::short_lived(2));
    push_busybox(&registry, "private/busybox:latest");
    let client = registry.client();
    let url = format!("{}/v2/private/busybox/manifests/latest", registry.url());
    let first = client.request("GET", &url, &[], None).unwrap();
    let challenge =
        test_support::http::Challenge::parse(first.header("www-authenticate").unwrap()).unwrap();
    let token = client
        .fetch_token(&challenge, None, registry.creds())
        .unwrap();
    let bearer = format!("Bearer {token}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Accept", MANIFEST_ACCEPT),
    ];
    assert_eq!(
        client.request("GET", &url, &headers, None).unwrap().status,
        200
    );
    assert_eq!(registry.token_requests().last().unwrap()["expires_in"], 2);
    std::thread::sleep(Duration::from_millis(3200));
    let expired = client.request("GET", &url, &headers, None).unwrap();
    assert_eq!(
        expired.status, 401,
        "the registry still accepts an expired token"
    );
}

#[test]
fn x5c_signed_tokens_are_accepted_too() {
    let options = TokenOptions {
        x5c_header: true,
        ..TokenOptions::default()
    };
    let registry = TestRegistry::tls_token_with(options);
    let image = push_busybox(&registry, "private/busybox:latest");
    assert_serves_manifest(&registry, "private/busybox", "latest", &image.manifest);
}

#[test]
fn layers_record_their_uncompressed_digest_in_every_compression() {
    let layer = || LayerBuilder::new().dir("etc").file("etc/hello", "hello\n");
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let l = layer().build(compression);
        let tar = match compression {
            Compression::None => l.blob.clone(),
            Compression::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&l.blob[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            Compression::Zstd => zstd::decode_all(&l.blob[..]).unwrap(),
        };
        assert_eq!(sha256_digest(&tar), l.diff_id, "{compression:?}");
        assert_eq!(sha256_digest(&l.blob), l.digest);
        assert_eq!(compression == Compression::None, l.digest == l.diff_id);
    }
}

#[test]
fn layer_builder_writes_special_and_malicious_entries_verbatim() {
    let long = format!("deep/{}", "d".repeat(120));
    let tar = LayerBuilder::new()
        .dir("deep")
        .file_with(
            "bin/tool",
            "x",
            Meta::mode(0o4755).owner(1000, 50).xattr("user.note", b"v1"),
        )
        .symlink("bin/abs", "/bin/busybox")
        .hardlink("bin/tool2", "bin/tool")
        .whiteout("etc/gone")
        .opaque("var/cache")
        .file(&long, "long name")
        .raw(RawEntry::file("../escape", b"x"))
        .raw(RawEntry::file("/abs/path", b"x"))
        .raw(RawEntry::symlink("planted", "/etc"))
        .raw(RawEntry::file("planted/passwd", b"owned"))
        .raw(RawEntry::hardlink("outside", "../../etc/shadow"))
        .into_tar();
    let entries = list_tar(&tar);
    let find = |p: &[u8]| {
        entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("no {:?}", String::from_utf8_lossy(p)))
    };
    let tool = find(b"bin/tool");
    assert_eq!(tool.mode, 0o4755);
    assert_eq!(tool.xattrs, vec![("user.note".to_string(), b"v1".to_vec())]);
    assert_eq!(find(b"bin/abs").link, b"/bin/busybox");
    assert_eq!(find(b"bin/tool2").kind, tar::EntryType::Link);
    find(b"etc/.wh.gone");
    find(b"var/cache/.wh..wh..opq");
    find(long.as_bytes());
    find(b"../escape");
    find(b"/abs/path");
    assert_eq!(find(b"planted").link, b"/etc");
    find(b"planted/passwd");
    assert_eq!(find(b"outside").link, b"../../etc/shadow");
}

#[test]
fn busybox_image_runs_in_a_chroot() {
    let image = busybox_image().build();
    assert_eq!(image.manifest_media_type, OCI_MANIFEST);
    let config = image.config_json();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        image.layers[0].diff_id.as_str()
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    let root = tempfile::tempdir().unwrap();
    // GNU tar as an independent reader of the layer.
    let mut tar = std::process::Command::new("tar")
        .args(["-xzf", "-", "-C"])
        .arg(root.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &image.layers[0].blob).unwrap();
    drop(tar.stdin.take());
    assert!(tar.wait().unwrap().success());
    let out = std::process::Command::new("chroot")
        .arg(root.path())
        .args([
            "/bin/sh",
            "-c",
            "echo hi; id app; stat -c %a /tmp; ls /bin | wc -l; which wget",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "hi");
    assert_eq!(
        lines[1],
        "uid=1000(app) gid=1000(app) groups=1000(app),50(staff)"
    );
    assert_eq!(lines[2], "1777");
    assert!(
        lines[3].parse::<u32>().unwrap() > 50,
        "few applets in /bin: {}",
        lines[3]
    );
    assert_eq!(lines[4], "/usr/bin/wget");
}

#[test]
fn indexes_and_docker_manifests_are_served_back() {
    let registry = TestRegistry::tls_token();
    let (amd64, arm64) = two_platform_images(Compression::Zstd);
    let index = Index::new(ManifestFormat::Oci, vec![amd64.clone(), arm64.clone()]);
    registry.push_index("multi/busybox:latest", &index);
    let served = registry.fetch_manifest("multi/busybox", "latest", registry.creds());
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some(OCI_INDEX));
    assert_eq!(served.json()["manifests"][1]["platform"]["variant"], "v8");
    assert_serves_manifest(
        &registry,
        "multi/busybox",
        &arm64.manifest_digest,
        &arm64.manifest,
    );

    let docker = busybox_image().format(ManifestFormat::Docker).build();
    let list = Index::new(ManifestFormat::Docker, vec![docker.clone()]);
    registry.push_index("multi/docker:latest", &list);
    assert_serves_manifest(&registry, "multi/docker", "latest", &list.bytes);
    let child = registry.fetch_manifest("multi/docker", &docker.manifest_digest, registry.creds());
    assert_eq!(child.header("content-type"), Some(DOCKER_MANIFEST));
}

#[test]
fn registry_refuses_wrong_digests_but_serves_overwritten_blobs() {
    let registry = TestRegistry::plain();
    let image = push_busybox(&registry, "bad/busybox:latest");
    let pusher = registry.pusher();
    let refused =
        pusher.push_blob_claiming("bad/busybox", b"some bytes", &sha256_digest(b"other bytes"));
    assert_eq!(refused.status, 400, "{}", refused.text());
    let refused = pusher.push_manifest_raw(
        "bad/busybox",
        &sha256_digest(b"x"),
        &image.manifest,
        OCI_MANIFEST,
    );
    assert_eq!(refused.status, 400, "{}", refused.text());

    let layer = &image.layers[0];
    let mut corrupt = layer.blob.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    registry.overwrite_blob(&layer.digest, &corrupt);
    let served = registry.get(
        &format!("/v2/bad/busybox/blobs/{}", layer.digest),
        "*/*",
        None,
    );
    assert_eq!(served.status, 200);
    assert_eq!(served.body, corrupt);

    let mut manifest = image.manifest.clone();
    manifest.push(b'\n');
    registry.overwrite_blob(&image.manifest_digest, &manifest);
    let served = registry.fetch_manifest("bad/busybox", "latest", None);
    assert_eq!(served.body, manifest);
    assert_eq!(
        served.header("docker-content-digest"),
        Some(image.manifest_digest.as_str())
    );
    assert_ne!(sha256_digest(&served.body), image.manifest_digest);
}

#[test]
fn mirror_serves_a_private_upstream_anonymously() {
    let upstream = TestRegistry::tls_token();
    let image = push_busybox(&upstream, "private/busybox:latest");
    let mirror = TestRegistry::mirror_of(&upstream);
    let served = mirror.fetch_manifest("private/busybox", "latest", None);
    assert_eq!(served.status, 200, "{}\n{}", served.text(), mirror.log());
    assert_eq!(served.body, image.manifest);
    assert_serves_blob(&mirror, "private/busybox", &image.layers[0].digest);
}

#[test]
fn dstack_runner_runs_as_root_with_its_own_dirs() {
    let dstack = Dstack::root();
    let out = dstack.run_program(
        "/bin/sh",
        &["-c", "id -u; echo $HOME; echo $DSTACK_HOME; pwd"],
    );
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], dstack.home().to_str().unwrap());
    assert_eq!(lines[2], dstack.state_root().to_str().unwrap());
    assert_eq!(lines[3], dstack.home().to_str().unwrap());
    dstack
        .run(&["--version"])
        .assert_success()
        .assert_stdout_contains("dstack");
}

#[test]
fn dstack_runner_drops_to_the_test_users() {
    for (dstack, user) in [
        (Dstack::rootless(), "dstack-test"),
        (Dstack::rootless_nosubid(), "dstack-test-nosubid"),
    ] {
        let registry_ca_home = dstack.write_home_file(".docker/config.json", "{}\n");
        let out = dstack.run_program(
            "/bin/sh",
            &["-c", "id -un; touch \"$HOME/f\" \"$DSTACK_HOME/f\" && cat \"$HOME/.docker/config.json\"; echo $USER"],
        );
        out.assert_success();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines, [user, "{}", user], "{out}");
        assert!(registry_ca_home.exists());
        dstack.run(&["--version"]).assert_success();
    }
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    assert!(
        subuid
            .lines()
            .any(|l| l.starts_with("dstack-test:") && l.ends_with(":65536")),
        "{subuid}"
    );
    assert!(
        !subuid
            .lines()
            .any(|l| l.starts_with("dstack-test-nosubid:"))
    );
}

#[test]
fn dstack_runner_trusts_a_registry_ca_per_user() {
    let registry = TestRegistry::tls_token();
    let dstack = Dstack::rootless();
    dstack.trust(&registry);
    let path = registry.user_ca_path(&dstack.home());
    let out = dstack.run_program("/bin/cat", &[path.to_str().unwrap()]);
    out.assert_success()
        .assert_stdout_contains("BEGIN CERTIFICATE");
    assert!(path.to_str().unwrap().ends_with(&format!(
        ".config/containers/certs.d/{}/ca.crt",
        registry.host()
    )));
}

#[test]
#[should_panic(expected = "timed out")]
fn dstack_runner_kills_what_outlives_its_timeout() {
    let dstack = Dstack::root().timeout(Duration::from_millis(500));
    dstack.run_program("/bin/sleep", &["30"]);
}

#[test]
fn dstack_runner_feeds_stdin_and_stopped_registries_refuse_connections() {
    let dstack = Dstack::rootless();
    let out = dstack.run_program("/bin/sh", &["-c", "exit 3"]);
    assert_eq!(out.code(), 3);
    let out = dstack.run_program_with_stdin("/bin/sh", &["-c", "id -un; cat"], "secret\n");
    assert_eq!(out.assert_success().stdout, "dstack-test\nsecret\n");

    let mut registry = TestRegistry::plain();
    let url = format!("{}/v2/", registry.url());
    assert_eq!(
        registry
            .client()
            .request("GET", &url, &[], None)
            .unwrap()
            .status,
        200
    );
    registry.stop();
    assert!(registry.client().request("GET", &url, &[], None).is_err());
}
