//! [`RegistryClient`]: endpoints (mirrors, then the registry), scheme discovery, the auth dance on every
//! 401, manual redirects that keep credentials on the registry's host, and errors the user can act on.

use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::time::Instant;

use ureq::Body;
use ureq::http::{Response, Uri};

use super::auth::{self, Scheme, TokenCache};
use super::challenge::{self, Challenge};
use super::config::RegistriesConf;
use super::credentials::{CredentialStore, Credentials, Found};
use super::endpoint::{Endpoint, host_of, is_loopback};
use super::errors::{
    error_body, from_transport, header, speaks_no_tls, status_text, transport_error, with_tried,
};
use super::tls;
use super::{RegistryError, RegistryOptions};
use crate::image::Digest;
use crate::image::manifest::media_type::MANIFEST_ACCEPT;
use crate::image::reference::Reference;
use crate::image::source::{FetchedManifest, Source, SourceError};

/// Manifests bigger than this are refused (containers/image uses the same limit).
const MANIFEST_MAX: u64 = 4 << 20;

/// The OAuth2 client this is to token servers, which require one with a refresh token.
const OAUTH_CLIENT_ID: &str = "dstack";

/// A client for one repository, through its mirrors and registry. Cheap to share: all threads of a pull
/// use one client, its keep-alive connections and its tokens.
pub struct RegistryClient {
    reference: Reference,
    endpoints: Vec<Endpoint>,
    tokens: TokenCache,
    /// Every password this client holds, scrubbed from error messages as a last line of defence.
    secrets: Vec<String>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints: Vec<String> = self.endpoints.iter().map(Endpoint::describe).collect();
        f.debug_struct("RegistryClient")
            .field("reference", &self.reference.to_string())
            .field("endpoints", &endpoints)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client for `reference`'s repository: reads registries.conf (refusing blocked registries),
    /// certificates and credentials now, and contacts nothing until the first request.
    pub fn new(
        reference: &Reference,
        options: &RegistryOptions,
    ) -> Result<RegistryClient, RegistryError> {
        let conf = RegistriesConf::load(options.registries_conf.as_deref())?;
        let plan = conf.plan(
            reference.registry(),
            reference.repository(),
            reference.digest().is_some(),
        );
        if plan.blocked {
            return Err(RegistryError::Blocked {
                registry: reference.registry().to_string(),
                prefix: plan.prefix.unwrap_or_default(),
            });
        }
        let cert_dirs = options
            .cert_dirs
            .clone()
            .unwrap_or_else(tls::default_cert_dirs);
        let store = match &options.auth_files {
            Some(files) => CredentialStore {
                files: files.clone(),
                helper_path: None,
            },
            None => CredentialStore::from_env(),
        };
        let mut endpoints = Vec::new();
        let mut secrets = Vec::new();
        for spec in plan.endpoints {
            let endpoint = Endpoint::new(spec, options.credentials.as_ref(), &store, &cert_dirs)?;
            if let Found::Credentials(c, _) = &endpoint.credentials {
                secrets.push(c.password().to_string());
            }
            endpoints.push(endpoint);
        }
        Ok(RegistryClient {
            reference: reference.clone(),
            endpoints,
            tokens: TokenCache::default(),
            secrets,
        })
    }

    /// Try each endpoint in order (mirrors first); the first answer wins. A failing mirror falls through to
    /// the next; the final error says what was tried.
    fn each_endpoint<T>(
        &self,
        f: impl Fn(&Endpoint) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        let mut tried: Vec<String> = Vec::new();
        let (primary, mirrors) = self
            .endpoints
            .split_last()
            .expect("a client always has its registry");
        for ep in mirrors {
            if ep.down.load(Ordering::Relaxed) {
                tried.push(format!("{} (unreachable earlier)", ep.describe()));
                continue;
            }
            match f(ep) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if matches!(e, SourceError::Unreachable(_) | SourceError::Tls(_)) {
                        ep.down.store(true, Ordering::Relaxed);
                    }
                    let msg = self.redact_str(&e.to_string());
                    tracing::warn!("{}: {msg}; trying the next one", ep.describe());
                    tried.push(format!("{} ({msg})", ep.describe()));
                }
            }
        }
        f(primary).map_err(|e| self.redact(with_tried(e, &tried)))
    }

    fn manifest_from(
        &self,
        ep: &Endpoint,
        reference: &str,
    ) -> Result<FetchedManifest, SourceError> {
        let by_digest = reference.parse::<Digest>().ok();
        let what = match &by_digest {
            Some(d) if self.reference.digest() == Some(d) => format!("image {}", self.reference),
            Some(d) => format!("manifest {d} of {}", self.reference.name()),
            None => format!("image {}:{reference}", self.reference.name()),
        };
        let accept = MANIFEST_ACCEPT.join(", ");
        let resp = self.request(ep, &format!("manifests/{reference}"), Some(&accept), None)?;
        if !resp.status().is_success() {
            return Err(self.status_error(ep, resp, &what));
        }
        let media_type = header(&resp, "content-type").unwrap_or_default();
        let claimed = header(&resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
        let bytes = resp
            .into_body()
            .into_with_config()
            .limit(MANIFEST_MAX)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => SourceError::Other(format!(
                    "{what}: the manifest is larger than {} MiB; refusing it",
                    MANIFEST_MAX >> 20
                )),
                e => transport_error(e, &ep.api_host),
            })?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = by_digest.or(claimed)
            && expected != digest
        {
            return Err(SourceError::DigestMismatch {
                what,
                expected,
                actual: digest,
            });
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    fn blob_from(
        &self,
        ep: &Endpoint,
        digest: &Digest,
        offset: u64,
    ) -> Result<Box<dyn Read + Send>, SourceError> {
        let what = format!("blob {digest} of {}", self.reference.name());
        let range = (offset > 0).then_some(offset);
        let resp = self.request(ep, &format!("blobs/{digest}"), None, range)?;
        let status = resp.status().as_u16();
        match status {
            206 if offset > 0 => {
                let start = header(&resp, "content-range").and_then(|r| {
                    let r = r.strip_prefix("bytes ")?;
                    r.split('-').next()?.trim().parse::<u64>().ok()
                });
                if start != Some(offset) {
                    return Err(SourceError::Transient(format!(
                        "{what}: {} answered a range request with the wrong range",
                        ep.describe()
                    )));
                }
                Ok(Box::new(resp.into_body().into_reader()))
            }
            200 => {
                let mut reader = resp.into_body().into_reader();
                if offset > 0 {
                    // The server ignored Range: skip what the caller already has.
                    let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())
                        .map_err(|e| SourceError::Transient(format!("{what}: {e}")))?;
                    if skipped < offset {
                        return Err(SourceError::Other(format!(
                            "{what}: the blob is shorter than the {offset} bytes already downloaded"
                        )));
                    }
                }
                Ok(Box::new(reader))
            }
            _ => Err(self.status_error(ep, resp, &what)),
        }
    }

    /// `GET /v2/<repository>/<path>` on an endpoint, answering authentication challenges: a 401 always
    /// runs the challenge again (a token may have expired mid-pull, or the server may want another realm);
    /// a second 401 in a row is final.
    fn request(
        &self,
        ep: &Endpoint,
        path: &str,
        accept: Option<&str>,
        range: Option<u64>,
    ) -> Result<Response<Body>, SourceError> {
        let scheme = self.scheme(ep)?;
        let url = format!("{scheme}://{}/v2/{}/{path}", ep.api_host, ep.repository);
        let mut answered = false;
        loop {
            let authorization = self.authorization(ep)?;
            let resp = ep
                .get(&url, accept, range, authorization.as_deref())
                .map_err(|e| from_transport(e, &ep.api_host, ep.is_mirror))?;
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            if answered {
                return Err(self.denied(ep));
            }
            let challenges = challenges(&resp);
            drop(resp);
            self.answer(ep, &challenges)?;
            answered = true;
        }
    }

    /// HTTPS, unless the endpoint is insecure or on loopback and does not speak TLS. Found out once per
    /// endpoint with `GET /v2/`, which also tells how it wants to be authenticated.
    fn scheme(&self, ep: &Endpoint) -> Result<&'static str, SourceError> {
        if let Some(s) = ep.scheme.get() {
            return Ok(s);
        }
        let ping = |scheme: &'static str| {
            ep.get(&format!("{scheme}://{}/v2/", ep.api_host), None, None, None)
        };
        let (scheme, resp) = match ping("https") {
            Ok(resp) => ("https", resp),
            Err(e) if ep.insecure || (ep.loopback && speaks_no_tls(&e)) => {
                tracing::debug!("{}: no TLS ({e}); trying plain HTTP", ep.describe());
                match ping("http") {
                    Ok(resp) => ("http", resp),
                    Err(http_error) => {
                        let e = if ep.insecure { e } else { http_error };
                        return Err(from_transport(e, &ep.api_host, ep.is_mirror));
                    }
                }
            }
            Err(e) => return Err(from_transport(e, &ep.api_host, ep.is_mirror)),
        };
        if resp.status().as_u16() == 401 {
            let challenges = challenges(&resp);
            if let Some(scheme) = scheme_of(&challenges) {
                *ep.auth.lock().unwrap_or_else(|p| p.into_inner()) = scheme;
            }
        }
        Ok(ep.scheme.get_or_init(|| scheme))
    }

    /// The `Authorization` header for the endpoint's current scheme, fetching a token when none is cached.
    fn authorization(&self, ep: &Endpoint) -> Result<Option<String>, SourceError> {
        let scheme = ep.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match scheme {
            Scheme::Anonymous => Ok(None),
            Scheme::Basic => Ok(ep.password().map(Credentials::basic_header)),
            Scheme::Bearer { realm, service } => {
                let scope = auth::pull_scope(&ep.repository);
                if let Some(token) =
                    self.tokens
                        .get(&realm, service.as_deref(), &scope, Instant::now())
                {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let token =
                    self.fetch_token(ep, &realm, service.as_deref(), std::slice::from_ref(&scope))?;
                let header = format!("Bearer {}", token.value);
                self.tokens.put(&realm, service.as_deref(), &scope, token);
                Ok(Some(header))
            }
        }
    }

    /// Act on a 401: remember the scheme and, for Bearer, fetch a fresh token for the challenge's realm.
    fn answer(&self, ep: &Endpoint, challenges: &[Challenge]) -> Result<(), SourceError> {
        let Some(scheme) = scheme_of(challenges) else {
            return Err(SourceError::Unauthorized(format!(
                "{} asked for authentication without a Bearer or Basic challenge this client can answer",
                ep.describe()
            )));
        };
        *ep.auth.lock().unwrap_or_else(|p| p.into_inner()) = scheme.clone();
        match scheme {
            Scheme::Basic if ep.password().is_none() => Err(match &ep.credentials {
                Found::Credentials(c, source) if c.is_identity_token() => {
                    SourceError::Unauthorized(format!(
                        "{} asks for a user name and password, and what {source} holds for it is an \
                         identity token, which only a token server takes: pass --creds USER:PASS",
                        ep.describe()
                    ))
                }
                _ => self.denied(ep),
            }),
            Scheme::Bearer { realm, service } => {
                let scope = auth::pull_scope(&ep.repository);
                let mut scopes = vec![scope.clone()];
                let asked = challenge::preferred(challenges).and_then(|c| c.param("scope"));
                for s in asked.into_iter().flat_map(|s| s.split(' ')) {
                    if !s.is_empty() && !scopes.iter().any(|x| x == s) {
                        scopes.push(s.to_string());
                    }
                }
                let token = self.fetch_token(ep, &realm, service.as_deref(), &scopes)?;
                self.tokens.put(&realm, service.as_deref(), &scope, token);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn fetch_token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<auth::Token, SourceError> {
        let url = auth::token_url(realm, service, scopes);
        let uri: Uri = url.parse().map_err(|_| {
            SourceError::Other(format!(
                "{} named a token server that is not a URL",
                ep.describe()
            ))
        })?;
        let realm_host = host_of(&uri);
        let creds = ep.creds();
        if creds.is_some()
            && uri.scheme_str() == Some("http")
            && !ep.insecure
            && !is_loopback(&realm_host)
        {
            return Err(SourceError::Other(format!(
                "{} sends clients to the plain-HTTP token server {realm_host}; refusing to send credentials there \
                 (mark the registry insecure in registries.conf to allow it)",
                ep.describe()
            )));
        }
        let identity_token = creds.filter(|c| c.is_identity_token());
        let resp = match identity_token {
            // OAuth2's refresh-token grant, as Docker sends it: the token is never a password.
            Some(c) => {
                let scope = scopes.join(" ");
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", c.password()),
                    ("client_id", OAUTH_CLIENT_ID),
                    ("scope", scope.as_str()),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                ep.post_form(realm, &form)
            }
            None => {
                let basic = creds.map(Credentials::basic_header);
                ep.get(&url, Some("application/json"), None, basic.as_deref())
            }
        }
        .map_err(|e| from_transport(e, &realm_host, ep.is_mirror))?;
        let status = resp.status().as_u16();
        match status {
            200 => {
                let body = resp
                    .into_body()
                    .into_with_config()
                    .limit(1 << 20)
                    .read_to_vec()
                    .map_err(|e| transport_error(e, &realm_host))?;
                auth::parse_token_answer(&body, Instant::now()).map_err(|reason| {
                    SourceError::Other(format!(
                        "the token server {realm_host} for {}: {reason}",
                        ep.describe()
                    ))
                })
            }
            401 | 403 => Err(self.denied(ep)),
            // RFC 6749: an unknown or expired refresh token is a 400 "invalid_grant".
            400 if identity_token.is_some() => Err(self.denied(ep)),
            404 | 405 if identity_token.is_some() => Err(SourceError::Unauthorized(format!(
                "the token server {realm_host} for {} does not take identity tokens (it answered {}): \
                 pass --creds USER:PASS",
                ep.describe(),
                status_text(status)
            ))),
            408 | 429 | 500..=599 => Err(SourceError::Transient(format!(
                "the token server {realm_host} for {} answered {}",
                ep.describe(),
                status_text(status)
            ))),
            _ => Err(SourceError::Other(format!(
                "the token server {realm_host} for {} answered {}",
                ep.describe(),
                status_text(status)
            ))),
        }
    }

    /// The error for a refused or missing authentication.
    fn denied(&self, ep: &Endpoint) -> SourceError {
        let host = &ep.registry;
        match &ep.credentials {
            Found::Credentials(c, source) if c.is_identity_token() => {
                SourceError::Unauthorized(format!(
                    "the identity token for {host} was refused (it came from {source}): it may have \
                     expired; log in again, or pass --creds USER:PASS"
                ))
            }
            Found::Credentials(_, source) => SourceError::Unauthorized(format!(
                "credentials for {host} were refused (they came from {source})"
            )),
            Found::None => SourceError::Unauthorized(format!(
                "authentication required for {host}: pass --creds USER:PASS (or registry_auth in the workflow), \
                 or log in so ~/.docker/config.json has credentials"
            )),
        }
    }

    /// The error for a response that is not what was asked for.
    fn status_error(&self, ep: &Endpoint, resp: Response<Body>, what: &str) -> SourceError {
        let status = resp.status().as_u16();
        let (codes, detail) = error_body(resp);
        let unknown = codes.iter().any(|c| {
            matches!(
                c.as_str(),
                "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN"
            )
        });
        match status {
            404 => SourceError::NotFound {
                what: what.to_string(),
                location: ep.describe(),
            },
            _ if unknown => SourceError::NotFound {
                what: what.to_string(),
                location: ep.describe(),
            },
            401 | 403 => self.denied(ep),
            408 | 429 | 500..=599 => SourceError::Transient(format!(
                "{} answered {} for {what}{detail}",
                ep.describe(),
                status_text(status)
            )),
            416 => SourceError::Other(format!(
                "{} cannot resume {what} (416 Range Not Satisfiable)",
                ep.describe()
            )),
            _ => SourceError::Other(format!(
                "{} answered {} for {what}{detail}",
                ep.describe(),
                status_text(status)
            )),
        }
    }

    fn redact_str(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in self.secrets.iter().filter(|s| s.len() >= 4) {
            out = out.replace(secret.as_str(), "<redacted>");
        }
        out
    }

    fn redact(&self, e: SourceError) -> SourceError {
        use SourceError::*;
        match e {
            NotFound { what, location } => NotFound {
                what: self.redact_str(&what),
                location: self.redact_str(&location),
            },
            Unauthorized(m) => Unauthorized(self.redact_str(&m)),
            Unreachable(m) => Unreachable(self.redact_str(&m)),
            Tls(m) => Tls(self.redact_str(&m)),
            Unsupported(m) => Unsupported(self.redact_str(&m)),
            Transient(m) => Transient(self.redact_str(&m)),
            Other(m) => Other(self.redact_str(&m)),
            e @ DigestMismatch { .. } => e,
        }
    }
}

impl Source for RegistryClient {
    fn describe(&self) -> String {
        self.reference.name()
    }

    fn manifest(&self, reference: &str) -> Result<FetchedManifest, SourceError> {
        self.each_endpoint(|ep| self.manifest_from(ep, reference))
    }

    fn blob(&self, digest: &Digest, offset: u64) -> Result<Box<dyn Read + Send>, SourceError> {
        self.each_endpoint(|ep| self.blob_from(ep, digest, offset))
    }
}

fn challenges(resp: &Response<Body>) -> Vec<Challenge> {
    challenge::parse(
        resp.headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

fn scheme_of(challenges: &[Challenge]) -> Option<Scheme> {
    let c = challenge::preferred(challenges)?;
    if c.is_basic() {
        return Some(Scheme::Basic);
    }
    let realm = c.param("realm").filter(|r| !r.is_empty())?;
    Some(Scheme::Bearer {
        realm: realm.to_string(),
        service: c.param("service").map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn client_debug_and_errors_hide_the_password() {
        let reference: Reference = "127.0.0.1:1/private/app:1".parse().unwrap();
        let password = "pa55-w0rd-never-shown";
        let options = RegistryOptions {
            credentials: Some(Credentials::new("alice", password)),
            registries_conf: Some(PathBuf::from("/nonexistent/registries.conf")),
            cert_dirs: Some(Vec::new()),
            auth_files: Some(Vec::new()),
        };
        assert!(!format!("{options:?}").contains(password));
        let client = RegistryClient::new(&reference, &options).unwrap();
        assert!(!format!("{client:?}").contains(password));
        let ep = &client.endpoints[0];
        let denied = client.denied(ep).to_string();
        assert!(
            denied.starts_with("credentials for 127.0.0.1:1 were refused"),
            "{denied}"
        );
        assert!(!denied.contains(password));
        // Nothing listens on port 1: the error names the registry and not the password.
        let e = client.manifest("1").unwrap_err();
        assert!(matches!(e, SourceError::Unreachable(_)), "{e}");
        assert!(
            e.to_string().contains("127.0.0.1:1") && !e.to_string().contains(password),
            "{e}"
        );
        let scrubbed = client.redact(SourceError::Other(format!("server said {password}")));
        assert_eq!(scrubbed.to_string(), "server said <redacted>");
    }

    #[test]
    fn anonymous_denial_says_how_to_authenticate() {
        let reference: Reference = "127.0.0.1:1/app".parse().unwrap();
        let options = RegistryOptions {
            registries_conf: Some(PathBuf::from("/nonexistent")),
            cert_dirs: Some(Vec::new()),
            auth_files: Some(Vec::new()),
            ..Default::default()
        };
        let client = RegistryClient::new(&reference, &options).unwrap();
        assert_eq!(
            client.denied(&client.endpoints[0]).to_string(),
            "authentication required for 127.0.0.1:1: pass --creds USER:PASS (or registry_auth in the workflow), \
             or log in so ~/.docker/config.json has credentials"
        );
    }

    #[test]
    fn blocked_registries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("registries.conf");
        std::fs::write(
            &conf,
            "[[registry]]\nprefix = \"evil.example\"\nblocked = true\n",
        )
        .unwrap();
        let options = RegistryOptions {
            registries_conf: Some(conf),
            cert_dirs: Some(Vec::new()),
            auth_files: Some(Vec::new()),
            ..Default::default()
        };
        let e = RegistryClient::new(&"evil.example/x".parse().unwrap(), &options).unwrap_err();
        assert!(e.to_string().contains("blocked"), "{e}");
    }

    #[test]
    fn a_401_with_a_cached_token_runs_the_challenge_again_and_redirects_drop_authorization() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU16, AtomicUsize};

        use super::super::fake_server::{FakeServer, Reply};

        // Object storage on another port: ignores Range, as some do.
        let storage = FakeServer::start(|_| Reply::new(200, "hello world"));
        let storage_url = format!("http://{}/bucket/blob?sig=1", storage.host());
        let generation = Arc::new(AtomicUsize::new(1));
        let own_port = Arc::new(AtomicU16::new(0));
        let registry = {
            let (generation, own_port) = (generation.clone(), own_port.clone());
            FakeServer::start(move |req| {
                let generation = generation.load(Ordering::SeqCst);
                // After the revocation the registry names another realm, as nvcr.io does.
                let realm = if generation == 1 { "token" } else { "token2" };
                let challenge = format!(
                    "Bearer realm=\"http://127.0.0.1:{}/{realm}\",service=\"fake\",scope=\"repository:app:pull\"",
                    own_port.load(Ordering::SeqCst)
                );
                let valid = format!("Bearer tok-{generation}");
                if req.path.starts_with(&format!("/{realm}?")) {
                    return Reply::new(
                        200,
                        format!("{{\"token\":\"tok-{generation}\",\"expires_in\":300}}"),
                    );
                }
                if req.path == "/v2/" || req.header("authorization") != Some(valid.as_str()) {
                    return Reply::new(401, "").header("WWW-Authenticate", &challenge);
                }
                if req.path.starts_with("/v2/app/manifests/") {
                    return Reply::new(200, "{}")
                        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
                }
                Reply::new(307, "").header("Location", &storage_url)
            })
        };
        own_port.store(registry.port, Ordering::SeqCst);
        let reference: Reference = format!("{}/app:1", registry.host()).parse().unwrap();
        let options = RegistryOptions {
            credentials: Some(Credentials::new("alice", "wonderland")),
            registries_conf: Some(PathBuf::from("/nonexistent")),
            cert_dirs: Some(Vec::new()),
            auth_files: Some(Vec::new()),
        };
        let client = RegistryClient::new(&reference, &options).unwrap();
        let m = client.manifest("1").unwrap();
        assert_eq!(m.bytes, b"{}");

        // The server revokes tok-1 long before its 300 s run out.
        generation.store(2, Ordering::SeqCst);
        let digest = Digest::of(b"hello world");
        let mut body = String::new();
        client
            .blob(&digest, 0)
            .unwrap()
            .read_to_string(&mut body)
            .unwrap();
        assert_eq!(body, "hello world");
        let mut rest = String::new();
        client
            .blob(&digest, 6)
            .unwrap()
            .read_to_string(&mut rest)
            .unwrap();
        assert_eq!(rest, "world");

        let seen = registry.requests();
        let token_requests: Vec<_> = seen
            .iter()
            .filter(|r| r.path.starts_with("/token"))
            .collect();
        assert_eq!(token_requests.len(), 2, "{seen:#?}");
        assert!(
            token_requests[1]
                .path
                .starts_with("/token2?service=fake&scope=repository%3Aapp%3Apull")
        );
        for r in &token_requests {
            assert_eq!(
                r.header("authorization"),
                Some(
                    Credentials::new("alice", "wonderland")
                        .basic_header()
                        .as_str()
                )
            );
        }
        let stored = storage.requests();
        assert_eq!(stored.len(), 2);
        assert!(
            stored.iter().all(|r| r.header("authorization").is_none()),
            "{stored:#?}"
        );
        assert_eq!(stored[1].header("range"), Some("bytes=6-"));
        assert!(
            stored[0]
                .header("user-agent")
                .unwrap()
                .starts_with("dstack/")
        );
    }
}
