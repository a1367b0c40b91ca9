//! TLS setup: the system's roots plus the per-registry CAs and client certificates that podman and Docker
//! users keep in `certs.d/HOST:PORT/` directories, and the HTTP agents built from them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ureq::Agent;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use super::RegistryError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A read that stalls this long fails (and the puller retries); a long body as such has no limit.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The certs.d roots podman and Docker read, the per-user one (`$HOME/.config/containers/certs.d`, as
/// podman names it whatever `XDG_CONFIG_HOME` says) first.
pub(crate) fn default_cert_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join(".config/containers/certs.d"));
    }
    dirs.push(PathBuf::from("/etc/containers/certs.d"));
    dirs.push(PathBuf::from("/etc/docker/certs.d"));
    dirs
}

/// Extra trust and identity for one registry host.
#[derive(Clone, Default)]
pub(crate) struct HostCerts {
    pub roots: Vec<Certificate<'static>>,
    pub client: Option<ClientCert>,
}

impl std::fmt::Debug for HostCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCerts")
            .field("roots", &self.roots.len())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl HostCerts {
    /// `*.crt` files are CAs; a `NAME.cert` with a `NAME.key` beside it is a client certificate. Every
    /// directory named `host` under `dirs` is read; the first client certificate found is used.
    pub fn load(dirs: &[PathBuf], host: &str) -> Result<HostCerts, RegistryError> {
        let mut out = HostCerts::default();
        for base in dirs {
            let dir = base.join(host);
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for file in files {
                match file.extension().and_then(|e| e.to_str()) {
                    Some("crt") => out.roots.extend(read_certs(&file)?),
                    Some("cert") if out.client.is_none() => {
                        let key = file.with_extension("key");
                        if !key.exists() {
                            return Err(cert_error(
                                &file,
                                "a client certificate needs its key beside it (NAME.key)",
                            ));
                        }
                        let chain = read_certs(&file)?;
                        out.client = Some(ClientCert::new_with_certs(&chain, read_key(&key)?));
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    pub fn extend(&mut self, other: &HostCerts) {
        self.roots.extend(other.roots.iter().cloned());
        if self.client.is_none() {
            self.client = other.client.clone();
        }
    }
}

fn cert_error(path: &Path, reason: impl Into<String>) -> RegistryError {
    RegistryError::Certificate {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<Certificate<'static>>, RegistryError> {
    let pem = std::fs::read(path).map_err(|e| cert_error(path, e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| cert_error(path, e.to_string()))? {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(cert_error(path, "it holds no PEM certificate"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKey<'static>, RegistryError> {
    let pem = std::fs::read(path).map_err(|e| cert_error(path, e.to_string()))?;
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::PrivateKey(k) =
            item.map_err(|_| cert_error(path, "it is not a PEM private key"))?
        {
            return Ok(k);
        }
    }
    Err(cert_error(path, "it holds no PEM private key"))
}

/// The system's trusted roots, loaded once per process (`SSL_CERT_FILE`/`SSL_CERT_DIR` are honoured).
fn system_roots() -> &'static [Certificate<'static>] {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            tracing::warn!(
                "no system CA certificates found ({} errors); only certs.d CAs will be trusted",
                found.errors.len()
            );
        }
        found
            .certs
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect()
    })
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// An HTTP agent (keep-alive pool, shared by all threads) trusting the system roots plus `extra`, or
/// nothing at all when `skip_verify` (registries marked insecure). Redirects are left to the caller, so
/// it can decide where credentials go; statuses are answers, not errors. `direct` ignores
/// `HTTPS_PROXY`/`HTTP_PROXY` (for loopback hosts, as Go's clients do).
pub(crate) fn agent(extra: &HostCerts, skip_verify: bool, direct: bool) -> Agent {
    let roots: Vec<Certificate<'static>> = system_roots()
        .iter()
        .cloned()
        .chain(extra.roots.iter().cloned())
        .collect();
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(crypto_provider())
        .root_certs(RootCerts::from(roots))
        .client_cert(extra.client.clone())
        .disable_verification(skip_verify)
        .build();
    let mut config = Agent::config_builder().tls_config(tls);
    if direct {
        config = config.proxy(None);
    }
    config
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("dstack/", env!("CARGO_PKG_VERSION")))
        // Blobs are hashed as sent: never ask for a transfer encoding that would be undone on the way.
        .accept_encoding(ureq::config::AutoHeaderValue::None)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build()
        .new_agent()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway self-signed certificate and its key (CN=test, P-256), for parsing only.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBczCCARmgAwIBAgIUPIOS2z4YwW+niqupW6Il9WYCfBMwCgYIKoZIzj0EAwIw
DzENMAsGA1UEAwwEdGVzdDAeFw0yNjExMjgwNzU1MTNaFw0zNjExMjUwNzU1MTNa
MA8xDTALBgNVBAMMBHRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ0u9GN
fYo6h+lP5TDmnRsS7CSL+szCPtVsDzFFfrjt6ebZr7jRgZeyN7/pt/L7iUn5Fc5X
JpFZhhJFjJWKPA+Eo1MwUTAdBgNVHQ4EFgQUiZ+f7bt3MIBsefeKtXX/SIotB4Mw
HwYDVR0jBBgwFoAUiZ+f7bt3MIBsefeKtXX/SIotB4MwDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNIADBFAiEAtrtuPWseZ6QXS7y/31RYNR+xWTtc3R0WdMYm
CrcshM4CIAubijOCdACxokJ6x08iw+LTJrYFyOOCLpP6Caq2MVbG
-----END CERTIFICATE-----
";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSWYBIkKWSEN8w9MN
PgQ58YrwuZFqvS7qn8ZxJesymQehRANCAAQ0u9GNfYo6h+lP5TDmnRsS7CSL+szC
PtVsDzFFfrjt6ebZr7jRgZeyN7/pt/L7iUn5Fc5XJpFZhhJFjJWKPA+E
-----END PRIVATE KEY-----
";

    #[test]
    fn reads_cas_and_client_pairs_from_every_certs_d() {
        let user = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        let host = "reg.example:5000";
        std::fs::create_dir_all(user.path().join(host)).unwrap();
        std::fs::create_dir_all(system.path().join(host)).unwrap();
        std::fs::write(user.path().join(host).join("ca.crt"), CERT).unwrap();
        std::fs::write(
            system.path().join(host).join("other.crt"),
            format!("{CERT}{CERT}"),
        )
        .unwrap();
        std::fs::write(system.path().join(host).join("client.cert"), CERT).unwrap();
        std::fs::write(system.path().join(host).join("client.key"), KEY).unwrap();
        std::fs::write(system.path().join(host).join("README"), "ignored").unwrap();
        let dirs = [user.path().to_path_buf(), system.path().to_path_buf()];
        let certs = HostCerts::load(&dirs, host).unwrap();
        assert_eq!(certs.roots.len(), 3);
        assert!(certs.client.is_some());
        assert!(
            HostCerts::load(&dirs, "other.example")
                .unwrap()
                .roots
                .is_empty()
        );
        // Building an agent with them works (the PEM parsed into usable DER).
        let _ = agent(&certs, false, true);
    }

    #[test]
    fn bad_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("h");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("ca.crt"), "not a certificate").unwrap();
        let e = HostCerts::load(&[dir.path().to_path_buf()], "h").unwrap_err();
        assert!(e.to_string().contains("ca.crt"), "{e}");
        std::fs::write(host.join("ca.crt"), CERT).unwrap();
        std::fs::write(host.join("me.cert"), CERT).unwrap();
        let e = HostCerts::load(&[dir.path().to_path_buf()], "h").unwrap_err();
        assert!(e.to_string().contains("me.cert"), "{e}");
    }

    #[test]
    fn default_dirs_put_the_user_first() {
        let dirs = default_cert_dirs();
        assert!(dirs.contains(&PathBuf::from("/etc/containers/certs.d")));
        assert!(dirs.contains(&PathBuf::from("/etc/docker/certs.d")));
        assert_eq!(dirs.last().unwrap(), Path::new("/etc/docker/certs.d"));
    }
}
