//! TLS setup: the system's roots plus the per-registry CAs and client certificates that podman and Docker
//! users keep in `certs.d/HOST:PORT/` directories, and the HTTP agents built from them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use ureq::Agent;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{ConnectProxyConnector, Connector, TcpConnector};

use super::RegistryError;

mod connector;
mod refused;
mod verifier;

use connector::TlsConnector;
pub(super) use refused::certificate_refused;
use verifier::RegistryCertVerifier;

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

/// A client certificate chain and its key.
struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> ClientIdentity {
        ClientIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Extra trust and identity for one registry host.
#[derive(Clone, Default)]
pub(crate) struct HostCerts {
    roots: Vec<CertificateDer<'static>>,
    client: Option<ClientIdentity>,
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
    /// `*.crt` files are CAs (or the registry's own self-signed certificate); a `NAME.cert` with a
    /// `NAME.key` beside it is a client certificate. Every directory named `host` under `dirs` is read;
    /// the first client certificate found is used.
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
                        out.client = Some(ClientIdentity {
                            chain: read_certs(&file)?,
                            key: read_key(&key)?,
                        });
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

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RegistryError> {
    let pem = std::fs::read(path).map_err(|e| cert_error(path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error(path, "it holds no PEM certificate"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, RegistryError> {
    let pem = std::fs::read(path).map_err(|e| cert_error(path, e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            cert_error(path, "it holds no PEM private key")
        }
        _ => cert_error(path, "it is not a PEM private key"),
    })
}

/// The system's trusted roots, loaded once per process (`SSL_CERT_FILE`/`SSL_CERT_DIR` are honoured).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            tracing::warn!(
                "no system CA certificates found ({} errors); only certs.d CAs will be trusted",
                found.errors.len()
            );
        }
        found.certs
    })
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The TLS settings for one registry host: the system roots plus `extra`'s, with `extra`'s own
/// certificates also accepted as the server's (Docker's self-signed case), or no verification at all
/// when `skip_verify` (registries marked insecure); `extra`'s client certificate if any.
fn client_config(extra: &HostCerts, skip_verify: bool) -> Result<ClientConfig, RegistryError> {
    let provider = crypto_provider();
    let verifier: Arc<dyn ServerCertVerifier> = if skip_verify {
        Arc::new(NoVerification(provider.clone()))
    } else {
        let roots = system_roots().iter().chain(&extra.roots).cloned().collect();
        Arc::new(RegistryCertVerifier::new(
            roots,
            extra.roots.clone(),
            provider.clone(),
        ))
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| RegistryError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &extra.client {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| {
                RegistryError::Tls(format!(
                    "the client certificate (NAME.cert and NAME.key) in certs.d is unusable: {e}"
                ))
            }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// An HTTP agent (keep-alive pool, shared by all threads) with `client_config`'s TLS. Redirects are left
/// to the caller, so it can decide where credentials go; statuses are answers, not errors. `direct`
/// ignores `HTTPS_PROXY`/`HTTP_PROXY` (for loopback hosts, as Go's clients do).
pub(crate) fn agent(
    extra: &HostCerts,
    skip_verify: bool,
    direct: bool,
) -> Result<Agent, RegistryError> {
    let tls = TlsConnector {
        config: Arc::new(client_config(extra, skip_verify)?),
    };
    // ureq's default chain, with our TLS step in place of its own.
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(tls);
    let mut config = Agent::config_builder();
    if direct {
        config = config.proxy(None);
    }
    let config = config
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("dstack/", env!("CARGO_PKG_VERSION")))
        // Blobs are hashed as sent: never ask for a transfer encoding that would be undone on the way.
        .accept_encoding(ureq::config::AutoHeaderValue::None)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build();
    Ok(Agent::with_parts(
        config,
        connector,
        DefaultResolver::default(),
    ))
}

/// For registries marked insecure: any certificate, but handshake signatures still checked.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
        agent(&certs, false, true).unwrap();
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
