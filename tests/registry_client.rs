//! The registry client against real registries (Debian's docker-registry, started per test by the harness):
//! plain HTTP on loopback, TLS with bearer tokens, TLS with Basic auth, mirrors from registries.conf, and
//! platform selection from an index. Every file the client reads (registries.conf, certs.d, auth files) is
//! a temporary one named in `RegistryOptions`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runtime::image::Digest;
use runtime::image::manifest::{
    Compression as LayerCompression, ManifestError, ResolvedImage, resolve,
};
use runtime::image::platform::Platform as RtPlatform;
use runtime::image::reference::Reference;
use runtime::image::registry::{Credentials, RegistryClient, RegistryOptions};
use runtime::image::source::{Source, SourceError};
use test_support::*;

/// A user's configuration directory for one test: registries.conf, certs.d and auth.json live here.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            credentials: None,
            registries_conf: Some(self.path().join("registries.conf")),
            cert_dirs: Some(vec![self.path().join(".config/containers/certs.d")]),
            auth_files: Some(vec![self.path().join("auth.json")]),
        }
    }

    fn with_creds(&self, user: &str, password: &str) -> RegistryOptions {
        RegistryOptions {
            credentials: Some(Credentials::new(user, password)),
            ..self.options()
        }
    }

    fn trust(&self, registry: &TestRegistry) {
        registry
            .install_ca(self.path())
            .expect("a TLS registry has a CA");
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn client(image: &str, options: &RegistryOptions) -> RegistryClient {
    let reference: Reference = image.parse().unwrap();
    RegistryClient::new(&reference, options).unwrap()
}

fn pull(image: &str, options: &RegistryOptions) -> Result<ResolvedImage, ManifestError> {
    let reference: Reference = image.parse().unwrap();
    let client = RegistryClient::new(&reference, options).unwrap();
    resolve(&client, &reference.tag_or_digest(), &RtPlatform::host())
}

fn read_blob(client: &RegistryClient, digest: &str, offset: u64) -> Vec<u8> {
    let digest: Digest = digest.parse().unwrap();
    let mut out = Vec::new();
    client
        .blob(&digest, offset)
        .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The resolved image is exactly what was pushed.
#[track_caller]
fn assert_is(resolved: &ResolvedImage, image: &Image) {
    assert_eq!(resolved.manifest_digest.to_string(), image.manifest_digest);
    assert_eq!(resolved.manifest_bytes, image.manifest);
    assert_eq!(resolved.config.digest.to_string(), image.config_digest);
    assert_eq!(resolved.config.size, image.config.len() as u64);
    let layers: Vec<(String, u64)> = resolved
        .layers
        .iter()
        .map(|l| (l.digest.to_string(), l.size))
        .collect();
    let pushed: Vec<(String, u64)> = image
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.blob.len() as u64))
        .collect();
    assert_eq!(layers, pushed);
}

#[test]
fn plain_http_loopback_registry_serves_manifests_and_ranged_blobs() {
    let registry = TestRegistry::plain();
    let image = push_busybox(&registry, "demo/busybox:1");
    let home = Home::new();
    let name = registry.image("demo/busybox:1");
    let resolved = pull(&name, &home.options()).unwrap();
    assert_is(&resolved, &image);
    assert_eq!(resolved.layers[0].compression, LayerCompression::Gzip);
    assert_eq!(resolved.index_digest, None);

    let client = client(&name, &home.options());
    let layer = &image.layers[0];
    assert_eq!(read_blob(&client, &layer.digest, 0), layer.blob);
    // Resuming: docker-registry answers Range with 206 and the tail.
    assert_eq!(read_blob(&client, &layer.digest, 1000), layer.blob[1000..]);
    assert_eq!(read_blob(&client, &image.config_digest, 0), image.config);
    // By digest too, verified against it.
    let by_digest = client.manifest(&image.manifest_digest).unwrap();
    assert_eq!(by_digest.bytes, image.manifest);
}

#[test]
fn missing_tags_and_repositories_are_not_found_errors_naming_the_image() {
    let registry = TestRegistry::plain();
    push_busybox(&registry, "demo/busybox:1");
    let home = Home::new();
    for name in ["demo/busybox:nope", "demo/absent:1"] {
        let e = pull(&registry.image(name), &home.options()).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, ManifestError::Source(SourceError::NotFound { .. })),
            "{msg}"
        );
        assert!(
            msg.starts_with(&format!("image {} not found", registry.image(name))),
            "{msg}"
        );
    }
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let registry = TestRegistry::plain();
    let image = push_busybox(&registry, "bad/busybox:latest");
    let mut altered = image.manifest.clone();
    altered.push(b'\n');
    registry.overwrite_blob(&image.manifest_digest, &altered);
    let home = Home::new();
    let e = pull(&registry.image("bad/busybox:latest"), &home.options()).unwrap_err();
    assert!(
        matches!(e, ManifestError::Source(SourceError::DigestMismatch { .. })),
        "{e}"
    );
    let by_digest = registry.image(&format!("bad/busybox@{}", image.manifest_digest));
    let e = pull(&by_digest, &home.options()).unwrap_err();
    assert!(
        matches!(e, ManifestError::Source(SourceError::DigestMismatch { .. })),
        "{e}"
    );
}

#[test]
fn token_registry_allows_anonymous_pulls_of_public_repositories() {
    let registry = TestRegistry::tls_token();
    let image = push_busybox(&registry, "public/busybox:latest");
    let home = Home::new();
    home.trust(&registry);
    let pushed = registry.token_requests().len();
    let resolved = pull(&registry.image("public/busybox"), &home.options()).unwrap();
    assert_is(&resolved, &image);
    let client = client(&registry.image("public/busybox"), &home.options());
    assert_eq!(
        read_blob(&client, &image.layers[0].digest, 0),
        image.layers[0].blob
    );
    let ours = registry.token_requests().split_off(pushed);
    assert!(!ours.is_empty(), "no token was requested");
    for r in &ours {
        assert!(r["user"].is_null(), "{r}");
        assert_eq!(
            r["scope"],
            serde_json::json!(["repository:public/busybox:pull"]),
            "{r}"
        );
    }
}

#[test]
fn token_registry_private_repository_needs_credentials() {
    let registry = TestRegistry::tls_token();
    let image = push_busybox(&registry, "private/busybox:latest");
    let home = Home::new();
    home.trust(&registry);
    let name = registry.image("private/busybox:latest");

    let anonymous = pull(&name, &home.options()).unwrap_err();
    assert!(
        matches!(
            anonymous,
            ManifestError::Source(SourceError::Unauthorized(_))
        ),
        "{anonymous}"
    );
    assert!(
        anonymous.to_string().starts_with(&format!(
            "authentication required for {}: pass --creds",
            registry.host()
        )),
        "{anonymous}"
    );

    let resolved = pull(&name, &home.with_creds(REGISTRY_USER, REGISTRY_PASSWORD)).unwrap();
    assert_is(&resolved, &image);
    // One client, several threads at once (as the puller downloads layers), one token between them.
    let client = client(&name, &home.with_creds(REGISTRY_USER, REGISTRY_PASSWORD));
    let before = registry.token_requests().len();
    assert_eq!(read_blob(&client, &image.config_digest, 0), image.config);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                assert_eq!(
                    read_blob(&client, &image.layers[0].digest, 0),
                    image.layers[0].blob
                );
            });
        }
    });
    assert_eq!(
        registry.token_requests().len() - before,
        1,
        "the token was not shared"
    );
}

#[test]
fn a_wrong_password_is_refused_and_never_shown() {
    let registry = TestRegistry::tls_token();
    push_busybox(&registry, "private/busybox:latest");
    let home = Home::new();
    home.trust(&registry);
    let wrong = "not-the-right-password-4711";
    let options = home.with_creds(REGISTRY_USER, wrong);
    let name = registry.image("private/busybox:latest");
    let client = client(&name, &options);
    let e = resolve(&client, "latest", &RtPlatform::host()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ManifestError::Source(SourceError::Unauthorized(_))),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!("credentials for {} were refused", registry.host())),
        "{msg}"
    );
    for shown in [
        msg,
        format!("{e:?}"),
        format!("{client:?}"),
        format!("{options:?}"),
    ] {
        assert!(!shown.contains(wrong), "the password leaked: {shown}");
    }
}

#[test]
fn an_expired_token_is_renewed_during_a_pull() {
    // Tokens the registry refuses 2 s after issue; the pull keeps going for longer than that.
    let registry = TestRegistry::tls_token_with(TokenOptions::short_lived(2));
    let image = push_busybox(&registry, "private/busybox:latest");
    let home = Home::new();
    home.trust(&registry);
    let options = home.with_creds(REGISTRY_USER, REGISTRY_PASSWORD);
    let name = registry.image("private/busybox:latest");
    let client = client(&name, &options);
    let resolved = resolve(&client, "latest", &RtPlatform::host()).unwrap();
    assert_is(&resolved, &image);
    let start = Instant::now();
    let mut fetched = 0;
    while start.elapsed() < Duration::from_millis(5500) {
        assert_eq!(read_blob(&client, &image.config_digest, 0), image.config);
        fetched += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        read_blob(&client, &image.layers[0].digest, 0),
        image.layers[0].blob
    );
    let granted: Vec<_> = registry
        .token_requests()
        .into_iter()
        .filter(|r| r["user"] == REGISTRY_USER && r["status"] == 200)
        .collect();
    assert!(
        granted.len() >= 3,
        "{fetched} fetches over 5.5 s with 2 s tokens should need at least 3 tokens: {granted:?}"
    );
}

#[test]
fn basic_auth_registry_over_tls() {
    let registry = TestRegistry::tls_basic();
    let image = push_busybox(&registry, "team/busybox:v1");
    let home = Home::new();
    home.trust(&registry);
    let name = registry.image("team/busybox:v1");
    let resolved = pull(&name, &home.with_creds(REGISTRY_USER, REGISTRY_PASSWORD)).unwrap();
    assert_is(&resolved, &image);

    let e = pull(&name, &home.options()).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("authentication required for {}", registry.host())),
        "{e}"
    );
    let e = pull(&name, &home.with_creds(REGISTRY_USER, "wrong-basic-pw"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("credentials for {} were refused", registry.host())),
        "{e}"
    );
    assert!(!e.contains("wrong-basic-pw"));
}

#[test]
fn credentials_come_from_an_auth_file_when_none_are_given() {
    let registry = TestRegistry::tls_basic();
    let image = push_busybox(&registry, "team/busybox:v1");
    let home = Home::new();
    home.trust(&registry);
    let auth = base64_of(&format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"));
    home.write(
        "auth.json",
        &format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.host()
        ),
    );
    let resolved = pull(&registry.image("team/busybox:v1"), &home.options()).unwrap();
    assert_is(&resolved, &image);
}

/// An auth-file entry as `docker login` writes it for registries with OAuth2 (Azure's): a placeholder user,
/// no password, and an identity token.
fn identity_token_entry(host: &str, token: &str) -> String {
    let placeholder = base64_of("00000000-0000-0000-0000-000000000000:");
    format!(r#"{{"auths": {{"{host}": {{"auth": "{placeholder}", "identitytoken": "{token}"}}}}}}"#)
}

#[test]
fn an_identity_token_is_exchanged_at_the_token_server_never_sent_as_a_password() {
    let registry = TestRegistry::tls_token();
    let image = push_busybox(&registry, "private/busybox:latest");
    let home = Home::new();
    home.trust(&registry);
    let name = registry.image("private/busybox:latest");
    home.write(
        "auth.json",
        &identity_token_entry(&registry.host(), REGISTRY_IDENTITY_TOKEN),
    );
    let before = registry.token_requests().len();
    let resolved = pull(&name, &home.options()).unwrap();
    assert_is(&resolved, &image);
    let requests = registry.token_requests().split_off(before);
    let granted: Vec<_> = requests.iter().filter(|r| r["status"] == 200).collect();
    assert!(!granted.is_empty(), "{requests:?}");
    for r in &granted {
        assert_eq!(r["method"], "POST", "{r}");
        assert_eq!(r["grant"], "refresh_token", "{r}");
        assert_eq!(r["account"], REGISTRY_USER, "{r}");
        assert_eq!(r["granted"][0]["name"], "private/busybox", "{r}");
        assert_eq!(r["granted"][0]["actions"][0], "pull", "{r}");
    }
    // Never as a password: no request named the placeholder user.
    assert!(
        requests
            .iter()
            .all(|r| r["user"] != "00000000-0000-0000-0000-000000000000"),
        "{requests:?}"
    );

    let stale = "stale-identity-token-0815";
    home.write("auth.json", &identity_token_entry(&registry.host(), stale));
    let e = pull(&name, &home.options()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ManifestError::Source(SourceError::Unauthorized(_))),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!(
            "the identity token for {} was refused (it came from {}",
            registry.host(),
            home.path().join("auth.json").display()
        )),
        "{msg}"
    );
    assert!(
        !msg.contains(stale) && !format!("{e:?}").contains(stale),
        "{msg}"
    );
}

#[test]
fn an_identity_token_for_a_basic_auth_registry_says_to_pass_a_password() {
    let registry = TestRegistry::tls_basic();
    push_busybox(&registry, "team/busybox:v1");
    let home = Home::new();
    home.trust(&registry);
    home.write(
        "auth.json",
        &identity_token_entry(&registry.host(), REGISTRY_IDENTITY_TOKEN),
    );
    let e = pull(&registry.image("team/busybox:v1"), &home.options())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "{} asks for a user name and password, and what {} holds for it is an identity token",
            registry.host(),
            home.path().join("auth.json").display()
        )),
        "{e}"
    );
    assert!(e.ends_with("pass --creds USER:PASS"), "{e}");
    assert!(!e.contains(REGISTRY_IDENTITY_TOKEN), "{e}");
}

#[test]
fn an_untrusted_tls_registry_is_a_tls_error_saying_where_the_ca_goes() {
    let registry = TestRegistry::tls_basic();
    push_busybox(&registry, "team/busybox:v1");
    let home = Home::new();
    // No CA installed, and the registry is on loopback: still no fallback to plain HTTP.
    let e = pull(
        &registry.image("team/busybox:v1"),
        &home.with_creds(REGISTRY_USER, REGISTRY_PASSWORD),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ManifestError::Source(SourceError::Tls(_))),
        "{msg}"
    );
    let searched = home
        .path()
        .join(".config/containers/certs.d")
        .join(registry.host())
        .join("ca.crt");
    assert!(
        msg.contains("signed by an unknown authority")
            && msg.contains(&searched.display().to_string()),
        "{msg}"
    );
    assert!(!msg.contains("InvalidCertificate"), "no debug value: {msg}");
}

#[test]
fn a_self_signed_registry_certificate_trusted_in_certs_d_is_accepted_as_docker_does() {
    let registry = TestRegistry::tls_self_signed();
    let image = push_busybox(&registry, "team/busybox:v1");
    let home = Home::new();
    let e = pull(&registry.image("team/busybox:v1"), &home.options()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ManifestError::Source(SourceError::Tls(_))),
        "{msg}"
    );
    assert!(
        msg.contains("self-signed") && msg.contains("certs.d"),
        "{msg}"
    );
    assert!(!msg.contains("CaUsedAsEndEntity"), "no debug value: {msg}");

    home.trust(&registry);
    let resolved = pull(&registry.image("team/busybox:v1"), &home.options()).unwrap();
    assert_is(&resolved, &image);
}

#[test]
fn an_insecure_registry_in_registries_conf_skips_verification() {
    let registry = TestRegistry::tls_basic();
    let image = push_busybox(&registry, "team/busybox:v1");
    let home = Home::new();
    home.write(
        "registries.conf",
        &format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            registry.host()
        ),
    );
    let resolved = pull(
        &registry.image("team/busybox:v1"),
        &home.with_creds(REGISTRY_USER, REGISTRY_PASSWORD),
    )
    .unwrap();
    assert_is(&resolved, &image);
}

#[test]
fn a_blocked_registry_is_refused_before_any_request() {
    let registry = TestRegistry::plain();
    let home = Home::new();
    home.write(
        "registries.conf",
        &format!(
            "[[registry]]\nprefix = \"{}/demo\"\nblocked = true\n",
            registry.host()
        ),
    );
    let reference: Reference = registry.image("demo/busybox:1").parse().unwrap();
    let e = RegistryClient::new(&reference, &home.options()).unwrap_err();
    assert!(e.to_string().contains("blocked"), "{e}");
    let other: Reference = registry.image("other/busybox:1").parse().unwrap();
    assert!(RegistryClient::new(&other, &home.options()).is_ok());
}

/// A loopback port nothing listens on: the primary registry "down".
fn dead_host() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("127.0.0.1:{port}")
}

#[test]
fn a_mirror_serves_the_image_while_the_primary_is_down() {
    let upstream = TestRegistry::plain();
    let image = push_busybox(&upstream, "demo/busybox:1");
    let mirror = TestRegistry::mirror_of(&upstream);
    let primary = dead_host();
    let dead_mirror = dead_host();
    let home = Home::new();
    home.write(
        "registries.conf",
        &format!(
            "[[registry]]\nprefix = \"{primary}\"\nlocation = \"{primary}\"\n\
             [[registry.mirror]]\nlocation = \"{dead_mirror}\"\n\
             [[registry.mirror]]\nlocation = \"{}\"\n",
            mirror.host()
        ),
    );
    let name = format!("{primary}/demo/busybox:1");
    let resolved = pull(&name, &home.options()).unwrap();
    assert_is(&resolved, &image);
    let client = client(&name, &home.options());
    assert_eq!(
        read_blob(&client, &image.layers[0].digest, 0),
        image.layers[0].blob
    );

    // With the working mirror gone too, the error names everything that was tried.
    drop(mirror);
    let e = pull(&name, &home.options()).unwrap_err().to_string();
    assert!(
        e.contains(&primary) && e.contains(&format!("mirror {dead_mirror}")),
        "{e}"
    );
}

#[test]
fn an_index_with_two_platforms_is_resolved_by_platform_value() {
    let registry = TestRegistry::plain();
    let (amd64, arm64) = two_platform_images(Compression::Zstd);
    let index = Index::new(ManifestFormat::Oci, vec![amd64.clone(), arm64.clone()]);
    let index_digest = registry.push_index("multi/busybox:latest", &index);
    let home = Home::new();
    let client = client(&registry.image("multi/busybox:latest"), &home.options());

    let arm = resolve(&client, "latest", &"linux/arm64".parse().unwrap()).unwrap();
    assert_is(&arm, &arm64);
    assert_eq!(arm.index_digest.unwrap().to_string(), index_digest);
    assert_eq!(arm.layers[1].compression, LayerCompression::Zstd);
    let amd = resolve(&client, "latest", &"linux/amd64".parse().unwrap()).unwrap();
    assert_is(&amd, &amd64);

    let e = resolve(&client, "latest", &"linux/s390x".parse().unwrap()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ManifestError::NoMatchingPlatform { .. }),
        "{msg}"
    );
    assert!(msg.contains("linux/amd64, linux/arm64/v8"), "{msg}");

    // A Docker manifest list works the same way.
    let docker = busybox_image()
        .format(ManifestFormat::Docker)
        .platform(Platform::new("linux", "arm64", Some("v8")))
        .build();
    let list = Index::new(ManifestFormat::Docker, vec![docker.clone()]);
    registry.push_index("multi/docker:latest", &list);
    let client = self::client(&registry.image("multi/docker:latest"), &home.options());
    let resolved = resolve(&client, "latest", &"linux/arm64/v8".parse().unwrap()).unwrap();
    assert_is(&resolved, &docker);
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
