//! A real registry for one test: Debian's `docker-registry` (distribution 2.8) on a free loopback port with
//! its storage in a temp dir, killed on drop. Kinds: plain HTTP, HTTPS with bearer tokens from the project's
//! token server, HTTPS with htpasswd Basic auth, HTTPS with a self-signed certificate (Docker's recipe), and a
//! plain-HTTP pull-through mirror of another registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::http::{Client, Creds, Response};
use super::image::{Image, Index};
use super::process::{ChildGuard, free_port, wait_until};
use super::push::Pusher;
use super::tls::TestCa;
use super::token_server::{ISSUER, SERVICE, TokenOptions, TokenServer};
use super::{REGISTRY_PASSWORD, REGISTRY_USER};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Every manifest type a client accepts, for `Accept` headers.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    /// HTTP, no auth.
    Plain,
    /// HTTPS (the test CA), bearer tokens from the token server: `public/*` anonymous pull, the rest needs
    /// `REGISTRY_USER`/`REGISTRY_PASSWORD`.
    TlsToken,
    /// HTTPS (the test CA), Basic auth against an htpasswd file with `REGISTRY_USER`/`REGISTRY_PASSWORD`.
    TlsBasic,
    /// HTTPS with a self-signed `CA:TRUE` certificate made as Docker's documentation shows (no CA above
    /// it), no auth.
    TlsSelfSigned,
    /// HTTP, no auth; a pull-through cache of another test registry.
    Mirror,
}

pub struct TestRegistry {
    kind: RegistryKind,
    port: u16,
    ca: Option<TestCa>,
    child: ChildGuard,
    token: Option<TokenServer>,
    // Dropped last: the processes above use it.
    dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn plain() -> TestRegistry {
        Self::start(RegistryKind::Plain, &TokenOptions::default(), None)
    }

    pub fn tls_token() -> TestRegistry {
        Self::start(RegistryKind::TlsToken, &TokenOptions::default(), None)
    }

    /// A token registry whose tokens follow `options` (e.g. `TokenOptions::short_lived(2)`).
    pub fn tls_token_with(options: TokenOptions) -> TestRegistry {
        Self::start(RegistryKind::TlsToken, &options, None)
    }

    pub fn tls_basic() -> TestRegistry {
        Self::start(RegistryKind::TlsBasic, &TokenOptions::default(), None)
    }

    /// A registry serving a self-signed certificate of its own (`openssl req -x509 ... -addext
    /// subjectAltName=...`); `ca_cert()` is that certificate.
    pub fn tls_self_signed() -> TestRegistry {
        Self::start(RegistryKind::TlsSelfSigned, &TokenOptions::default(), None)
    }

    /// A plain-HTTP pull-through cache of `upstream` (it trusts the upstream's CA and logs in with the test
    /// user where the upstream needs auth). Pulls through it never need credentials.
    pub fn mirror_of(upstream: &TestRegistry) -> TestRegistry {
        Self::start(
            RegistryKind::Mirror,
            &TokenOptions::default(),
            Some(upstream),
        )
    }

    pub fn kind(&self) -> RegistryKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as image references and `certs.d` directories name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A full image reference on this registry: `image("demo/busybox:1")` is `127.0.0.1:PORT/demo/busybox:1`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }

    /// The CA certificate clients must trust (HTTPS kinds only).
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.ca.as_ref().map(|ca| ca.ca_cert())
    }

    /// Where a client run with `HOME=home` looks for this registry's CA, per-user (podman's layout):
    /// `home/.config/containers/certs.d/127.0.0.1:PORT/ca.crt`.
    pub fn user_ca_path(&self, home: &Path) -> PathBuf {
        home.join(".config/containers/certs.d")
            .join(self.host())
            .join("ca.crt")
    }

    /// Copies the CA to `user_ca_path(home)` (no-op for HTTP kinds). `Dstack::trust` also fixes ownership.
    pub fn install_ca(&self, home: &Path) -> Option<PathBuf> {
        let ca = self.ca_cert()?;
        let dest = self.user_ca_path(home);
        std::fs::create_dir_all(dest.parent().unwrap()).expect("create certs.d directory");
        std::fs::copy(&ca, &dest).expect("copy CA certificate");
        Some(dest)
    }

    /// The credentials that may pull and push everything, for the kinds with auth.
    pub fn creds(&self) -> Creds<'static> {
        match self.kind {
            RegistryKind::TlsToken | RegistryKind::TlsBasic => {
                Some((REGISTRY_USER, REGISTRY_PASSWORD))
            }
            RegistryKind::Plain | RegistryKind::Mirror | RegistryKind::TlsSelfSigned => None,
        }
    }

    /// `USER:PASS` for `dstack pull --creds`.
    pub fn creds_arg(&self) -> String {
        format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}")
    }

    /// An HTTP client that trusts this registry's CA (any certificate, for the self-signed kind).
    pub fn client(&self) -> Client {
        Self::client_for(self.kind, self.ca.as_ref())
    }

    fn client_for(kind: RegistryKind, ca: Option<&TestCa>) -> Client {
        match kind {
            RegistryKind::TlsSelfSigned => Client::unverified(),
            _ => Client::new(ca.map(|c| c.ca_cert()).as_deref()),
        }
    }

    /// A pusher with push rights (the test user where auth is on).
    pub fn pusher(&self) -> Pusher {
        let creds = self.creds().map(|(u, p)| (u.to_string(), p.to_string()));
        Pusher::new(&self.url(), self.client(), creds)
    }

    /// Pushes `image` as `name:tag` (or `name@digest`); returns the manifest digest.
    pub fn push(&self, name_tag: &str, image: &Image) -> String {
        let (repo, reference) = split_reference(name_tag);
        self.pusher().push_image(repo, reference, image)
    }

    /// Pushes an index and the images it lists as `name:tag`; returns the index digest.
    pub fn push_index(&self, name_tag: &str, index: &Index) -> String {
        let (repo, reference) = split_reference(name_tag);
        self.pusher().push_index(repo, reference, index)
    }

    /// `GET url()+path` through the auth dance with `creds` (None: anonymous).
    pub fn get(&self, path: &str, accept: &str, creds: Creds) -> Response {
        let headers = [("Accept", accept)];
        self.client().request_auth(
            "GET",
            &format!("{}{path}", self.url()),
            &headers,
            None,
            creds,
            None,
        )
    }

    /// The manifest `repo:reference` as served, through the auth dance with `creds`.
    pub fn fetch_manifest(&self, repo: &str, reference: &str, creds: Creds) -> Response {
        self.get(
            &format!("/v2/{repo}/manifests/{reference}"),
            MANIFEST_ACCEPT,
            creds,
        )
    }

    /// The registry's storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The file that holds blob `digest` (`sha256:...`) in the registry's storage.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Replaces the stored bytes of blob `digest` (a layer, a config or a manifest): the registry then serves
    /// `bytes` under the old digest. docker-registry verifies digests on upload and refuses a wrong blob or
    /// manifest, so this is how tests get a digest mismatch from a real registry.
    pub fn overwrite_blob(&self, digest: &str, bytes: &[u8]) {
        let path = self.blob_data_path(digest);
        assert!(
            path.exists(),
            "blob {digest} is not in the registry's storage"
        );
        std::fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("overwrite {}: {e}", path.display()));
    }

    /// Stops the registry (its port then refuses connections): for "registry unreachable" cases after a pull.
    pub fn stop(&mut self) {
        self.child.kill();
    }

    /// The token server's request log (token registries; empty otherwise).
    pub fn token_requests(&self) -> Vec<serde_json::Value> {
        self.token
            .as_ref()
            .map(|t| t.requests())
            .unwrap_or_default()
    }

    /// The registry's own log (access log and errors), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn start(
        kind: RegistryKind,
        options: &TokenOptions,
        upstream: Option<&TestRegistry>,
    ) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("dstack-test-registry-")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir(dir.path().join("storage")).expect("create storage dir");
        let tls = matches!(
            kind,
            RegistryKind::TlsToken | RegistryKind::TlsBasic | RegistryKind::TlsSelfSigned
        );
        let ca = tls.then(|| {
            let ca_dir = dir.path().join("tls");
            std::fs::create_dir(&ca_dir).expect("create tls dir");
            if kind == RegistryKind::TlsSelfSigned {
                TestCa::generate_self_signed(&ca_dir)
            } else {
                TestCa::generate(&ca_dir)
            }
        });
        let token = (kind == RegistryKind::TlsToken).then(|| {
            let ca = ca.as_ref().unwrap();
            ca.generate_token_signer();
            TokenServer::start(dir.path(), ca, options)
        });
        if kind == RegistryKind::TlsBasic {
            std::fs::write(
                dir.path().join("htpasswd"),
                format!("{REGISTRY_USER}:{}\n", bcrypt_hash()),
            )
            .expect("write htpasswd");
        }
        let client = Self::client_for(kind, ca.as_ref());
        let log_path = dir.path().join("registry.log");
        let mut last_log = String::new();
        // The port is free when chosen but may be taken before the registry binds it: retry with another.
        for _ in 0..5 {
            let port = free_port();
            let config = config_yaml(
                kind,
                dir.path(),
                port,
                ca.as_ref(),
                token.as_ref(),
                upstream,
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("write registry config");
            let log = std::fs::File::create(&log_path).expect("create registry log");
            let mut cmd = Command::new(REGISTRY_BIN);
            cmd.arg("serve")
                .arg(&config_path)
                // The registry reads REGISTRY_* variables as config overrides: start from nothing.
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .stdout(Stdio::from(log.try_clone().expect("dup log")))
                .stderr(Stdio::from(log));
            if let Some(ca) = upstream.and_then(|u| u.ca_cert()) {
                cmd.env("SSL_CERT_FILE", ca);
            }
            let mut child =
                ChildGuard::spawn(cmd, "docker-registry (Debian package docker-registry)");
            let url = format!(
                "{}://127.0.0.1:{port}/v2/",
                if tls { "https" } else { "http" }
            );
            let ready = wait_until(Duration::from_secs(20), || {
                if child.exited().is_some() {
                    return Some(false);
                }
                match client.request("GET", &url, &[], None) {
                    Ok(r) if r.status == 200 || r.status == 401 => Some(true),
                    _ => None,
                }
            });
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
            match ready {
                Some(true) => {
                    return TestRegistry {
                        kind,
                        port,
                        ca,
                        child,
                        token,
                        dir,
                    };
                }
                Some(false) if last_log.contains("address already in use") => continue,
                Some(false) => panic!("docker-registry exited at start:\n{last_log}"),
                None => panic!("docker-registry did not answer on {url} within 20 s:\n{last_log}"),
            }
        }
        panic!("docker-registry could not bind a free port in 5 tries:\n{last_log}");
    }
}

/// `name:tag` or `name@sha256:...` into (name, reference); a bare name means `latest`.
pub fn split_reference(name_tag: &str) -> (&str, &str) {
    if let Some((name, digest)) = name_tag.split_once('@') {
        return (name, digest);
    }
    match name_tag.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (name_tag, "latest"),
    }
}

fn config_yaml(
    kind: RegistryKind,
    dir: &Path,
    port: u16,
    ca: Option<&TestCa>,
    token: Option<&TokenServer>,
    upstream: Option<&TestRegistry>,
) -> String {
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: dstack-test-upload-secret\n  \
         headers:\n    X-Content-Type-Options: [nosniff]\n",
        storage = dir.join("storage").display(),
    );
    if let Some(ca) = ca {
        yaml += &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            ca.server_cert().display(),
            ca.server_key().display()
        );
    }
    match kind {
        RegistryKind::TlsToken => {
            let (ca, token) = (ca.unwrap(), token.unwrap());
            yaml += &format!(
                "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    \
                 rootcertbundle: {}\n",
                token.realm(),
                ca.token_signer_cert().display()
            );
        }
        RegistryKind::TlsBasic => {
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: dstack-test-registry\n    path: {}\n",
                dir.join("htpasswd").display()
            );
        }
        RegistryKind::Mirror => {
            let upstream = upstream.expect("a mirror needs an upstream");
            yaml += &format!("proxy:\n  remoteurl: {}\n", upstream.url());
            if let Some((user, password)) = upstream.creds() {
                yaml += &format!("  username: {user}\n  password: {password}\n");
            }
        }
        RegistryKind::Plain | RegistryKind::TlsSelfSigned => {}
    }
    yaml
}

/// The htpasswd line's hash of `REGISTRY_PASSWORD`: bcrypt (docker-registry accepts nothing else), cost 4 so
/// that every request the registry checks stays cheap. Made once per test process with python3-bcrypt.
fn bcrypt_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let script = "import bcrypt, sys; \
                      print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=4)).decode())";
        let out = Command::new("/usr/bin/python3")
            .args(["-c", script, REGISTRY_PASSWORD])
            .output()
            .expect("run /usr/bin/python3");
        assert!(
            out.status.success(),
            "bcrypt hash failed (python3-bcrypt missing? run scripts/setup first): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}
