//! [`RegistryClient`]: endpoints (mirrors, then the registry), scheme discovery, the auth dance on every
//! 401, manual redirects that keep credentials on the registry's host, and errors the user can act on.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use ureq::http::{Response, Uri};
use ureq::{Agent, Body};

use super::auth::{self, Scheme, TokenCache};
use super::challenge::{self, Challenge};
use super::config::{EndpointSpec, RegistriesConf};
use super::credentials::{CredentialStore, Credentials, Found};
use super::tls::{self, HostCerts};
use super::{RegistryError, RegistryOptions};
use crate::image::Digest;
use crate::image::manifest::media_type::MANIFEST_ACCEPT;
use crate::image::reference::{Reference, api_host};
use crate::image::source::{FetchedManifest, Source, SourceError};

/// Manifests bigger than this are refused (containers/image uses the same limit).
const MANIFEST_MAX: u64 = 4 << 20;
const ERROR_BODY_MAX: u64 = 16 << 10;
const MAX_REDIRECTS: usize = 5;

/// A client for one repository, through its mirrors and registry. Cheap to share: all threads of a pull
/// use one client, its keep-alive connections and its tokens.
pub struct RegistryClient {
    reference: Reference,
    endpoints: Vec<Endpoint>,
    tokens: TokenCache,
    /// Every password this client holds, scrubbed from error messages as a last line of defence.
    secrets: Vec<String>,
}

/// One place the repository can be pulled from.
struct Endpoint {
    /// The registry as written (`docker.io`, `mirror:5000`): for credentials, certs.d and messages.
    registry: String,
    /// Where requests go (`registry-1.docker.io` for Docker Hub).
    api_host: String,
    repository: String,
    insecure: bool,
    is_mirror: bool,
    loopback: bool,
    credentials: Found,
    certs: HostCerts,
    cert_dirs: Vec<PathBuf>,
    agents: Mutex<HashMap<String, Agent>>,
    scheme: OnceLock<&'static str>,
    auth: Mutex<Scheme>,
    /// Set when the endpoint could not be reached, so later requests go straight to the next one.
    down: AtomicBool,
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
            let resp = self
                .send(ep, &url, accept, range, authorization.as_deref())
                .map_err(|e| self.transport(ep, &ep.api_host, e))?;
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
            self.send(
                ep,
                &format!("{scheme}://{}/v2/", ep.api_host),
                None,
                None,
                None,
            )
        };
        let (scheme, resp) = match ping("https") {
            Ok(resp) => ("https", resp),
            Err(e) if ep.insecure || (ep.loopback && speaks_no_tls(&e)) => {
                tracing::debug!("{}: no TLS ({e}); trying plain HTTP", ep.describe());
                match ping("http") {
                    Ok(resp) => ("http", resp),
                    Err(http_error) => {
                        return Err(self.transport(
                            ep,
                            &ep.api_host,
                            if ep.insecure { e } else { http_error },
                        ));
                    }
                }
            }
            Err(e) => return Err(self.transport(ep, &ep.api_host, e)),
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
            Scheme::Basic => Ok(ep.creds().map(Credentials::basic_header)),
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
            Scheme::Basic if ep.creds().is_none() => Err(self.denied(ep)),
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
        let realm_host = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
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
        let basic = creds.map(Credentials::basic_header);
        let resp = self
            .send(ep, &url, Some("application/json"), None, basic.as_deref())
            .map_err(|e| self.transport(ep, &realm_host, e))?;
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

    /// One GET, following redirects by hand: `Authorization` goes only to the host first asked, and an
    /// HTTPS request is not redirected to plain HTTP (object storage behind a registry is HTTPS).
    fn send(
        &self,
        ep: &Endpoint,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
        authorization: Option<&str>,
    ) -> Result<Response<Body>, TransportError> {
        let first: Uri = url
            .parse()
            .map_err(|_| TransportError::BadUrl(url.to_string()))?;
        let origin = (
            first.scheme_str().map(str::to_string),
            first.authority().cloned(),
        );
        let mut uri = first;
        for _ in 0..=MAX_REDIRECTS {
            let host = uri
                .authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default();
            let agent = ep.agent_for(&host)?;
            let mut req = agent.get(uri.to_string());
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(offset) = range {
                req = req.header("Range", format!("bytes={offset}-"));
            }
            let same_origin = (
                uri.scheme_str().map(str::to_string),
                uri.authority().cloned(),
            ) == origin;
            if let Some(a) = authorization.filter(|_| same_origin) {
                req = req.header("Authorization", a);
            }
            let resp = req
                .call()
                .map_err(|e| TransportError::Http(e, host.clone()))?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let Some(location) = header(&resp, "location") else {
                return Ok(resp);
            };
            let next = resolve_location(&uri, &location)
                .ok_or_else(|| TransportError::BadUrl(location.clone()))?;
            if uri.scheme_str() == Some("https")
                && next.scheme_str() == Some("http")
                && !ep.insecure
                && !is_loopback(next.authority().map_or("", |a| a.as_str()))
            {
                return Err(TransportError::Downgrade(host));
            }
            tracing::debug!(
                "{} redirected to {}",
                host,
                next.authority().map_or("", |a| a.as_str())
            );
            uri = next;
        }
        Err(TransportError::TooManyRedirects(url.to_string()))
    }

    fn transport(&self, ep: &Endpoint, host: &str, e: TransportError) -> SourceError {
        match e {
            TransportError::Http(e, h) => transport_error_for(e, &h, ep),
            TransportError::Agent(e) => SourceError::Other(e.to_string()),
            TransportError::BadUrl(u) => {
                SourceError::Other(format!("{host} sent an unusable URL {u:?}"))
            }
            TransportError::Downgrade(h) => SourceError::Other(format!(
                "{h} redirected an HTTPS request to plain HTTP; refusing (mark the registry insecure in \
                 registries.conf to allow it)"
            )),
            TransportError::TooManyRedirects(_) => {
                SourceError::Other(format!("{host} redirected more than {MAX_REDIRECTS} times"))
            }
        }
    }

    /// The error for a refused or missing authentication.
    fn denied(&self, ep: &Endpoint) -> SourceError {
        let host = &ep.registry;
        match &ep.credentials {
            Found::Credentials(_, source) => SourceError::Unauthorized(format!(
                "credentials for {host} were refused (they came from {source})"
            )),
            Found::Unsupported(why) => SourceError::Unauthorized(format!(
                "authentication required for {host}: {why}; pass --creds USER:PASS (or registry_auth in the \
                 workflow) instead"
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

impl Endpoint {
    fn new(
        spec: EndpointSpec,
        explicit: Option<&Credentials>,
        store: &CredentialStore,
        cert_dirs: &[PathBuf],
    ) -> Result<Endpoint, RegistryError> {
        let credentials = match explicit {
            Some(c) => Found::Credentials(c.clone(), "--creds or registry_auth".to_string()),
            None => store.lookup(&spec.registry, &spec.repository)?,
        };
        let api = api_host(&spec.registry).to_string();
        let mut certs = HostCerts::load(cert_dirs, &spec.registry)?;
        if api != spec.registry {
            certs.extend(&HostCerts::load(cert_dirs, &api)?);
        }
        Ok(Endpoint {
            loopback: is_loopback(&spec.registry),
            registry: spec.registry,
            api_host: api,
            repository: spec.repository,
            insecure: spec.insecure,
            is_mirror: spec.is_mirror,
            credentials,
            certs,
            cert_dirs: cert_dirs.to_vec(),
            agents: Mutex::new(HashMap::new()),
            scheme: OnceLock::new(),
            auth: Mutex::new(Scheme::Anonymous),
            down: AtomicBool::new(false),
        })
    }

    fn describe(&self) -> String {
        if self.is_mirror {
            format!("mirror {}", self.registry)
        } else {
            self.registry.clone()
        }
    }

    fn creds(&self) -> Option<&Credentials> {
        match &self.credentials {
            Found::Credentials(c, _) => Some(c),
            _ => None,
        }
    }

    /// The agent for requests to `host` on behalf of this endpoint: the endpoint's own CAs, plus the
    /// host's when it is another one (a token server, object storage).
    fn agent_for(&self, host: &str) -> Result<Agent, RegistryError> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = agents.get(host) {
            return Ok(a.clone());
        }
        let mut certs = self.certs.clone();
        if host != self.registry && host != self.api_host {
            certs.extend(&HostCerts::load(&self.cert_dirs, host)?);
        }
        let agent = tls::agent(&certs, self.insecure, is_loopback(host));
        agents.insert(host.to_string(), agent.clone());
        Ok(agent)
    }
}

/// What can go wrong before there is an HTTP response to judge.
#[derive(Debug)]
enum TransportError {
    Http(ureq::Error, String),
    Agent(RegistryError),
    BadUrl(String),
    Downgrade(String),
    TooManyRedirects(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Http(e, host) => write!(f, "{host}: {e}"),
            TransportError::Agent(e) => write!(f, "{e}"),
            TransportError::BadUrl(u) => write!(f, "unusable URL {u:?}"),
            TransportError::Downgrade(h) => write!(f, "{h} redirected to plain HTTP"),
            TransportError::TooManyRedirects(u) => write!(f, "too many redirects for {u}"),
        }
    }
}

impl From<RegistryError> for TransportError {
    fn from(e: RegistryError) -> TransportError {
        TransportError::Agent(e)
    }
}

/// Lets `?` turn a transport failure into a `SourceError` where the endpoint does not matter for the text.
impl From<TransportError> for SourceError {
    fn from(e: TransportError) -> SourceError {
        match e {
            TransportError::Http(e, host) => transport_error(e, &host),
            other => SourceError::Other(other.to_string()),
        }
    }
}

/// The rustls error inside a ureq error, if the failure was TLS.
fn tls_cause(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(t) => Some(t),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

/// Whether an HTTPS attempt failed because the server answered in something other than TLS (plain HTTP)
/// or hung up at once, as opposed to a TLS server whose certificate is not trusted.
fn speaks_no_tls(e: &TransportError) -> bool {
    let TransportError::Http(e, _) = e else {
        return false;
    };
    match tls_cause(e) {
        Some(rustls::Error::InvalidMessage(_)) => true,
        Some(_) => false,
        None => matches!(e, ureq::Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof),
    }
}

fn transport_error_for(e: ureq::Error, host: &str, ep: &Endpoint) -> SourceError {
    let err = transport_error(e, host);
    match err {
        SourceError::Unreachable(m) if ep.is_mirror => {
            SourceError::Unreachable(format!("{m} (mirror)"))
        }
        other => other,
    }
}

/// A transport failure in the user's terms; `Transient` for what a retry may fix.
fn transport_error(e: ureq::Error, host: &str) -> SourceError {
    if let Some(tls) = tls_cause(&e) {
        return tls_error(tls, host);
    }
    match &e {
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => SourceError::Unreachable(format!(
                "cannot connect to registry {host}: connection refused; check the address and that the registry \
                 is running"
            )),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted => {
                SourceError::Transient(format!("connection to {host} failed: {io}"))
            }
            io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable => {
                SourceError::Unreachable(format!("cannot reach registry {host}: {io}"))
            }
            _ if io.to_string().contains("failed to lookup address") => SourceError::Unreachable(
                format!("cannot resolve registry host {host}: check the name and the network"),
            ),
            _ => SourceError::Transient(format!("connection to {host} failed: {io}")),
        },
        ureq::Error::HostNotFound => SourceError::Unreachable(format!(
            "cannot resolve registry host {host}: check the name and the network"
        )),
        ureq::Error::ConnectionFailed => {
            SourceError::Unreachable(format!("cannot connect to registry {host}"))
        }
        ureq::Error::Timeout(t) => {
            SourceError::Transient(format!("timed out talking to {host} ({t})"))
        }
        ureq::Error::Protocol(p) => {
            SourceError::Transient(format!("{host} broke the HTTP protocol: {p}"))
        }
        _ => SourceError::Other(format!("request to {host} failed: {e}")),
    }
}

fn tls_error(e: &rustls::Error, host: &str) -> SourceError {
    match e {
        rustls::Error::InvalidCertificate(why) => SourceError::Tls(format!(
            "TLS verification of {host} failed ({why:?}); if the registry uses a private CA, put its certificate \
             in /etc/containers/certs.d/{host}/ca.crt or ~/.config/containers/certs.d/{host}/ca.crt"
        )),
        other => SourceError::Tls(format!("TLS handshake with {host} failed: {other}")),
    }
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
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

/// The registry's error codes and a short summary of its messages, from an error response body.
fn error_body(resp: Response<Body>) -> (Vec<String>, String) {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(body) = resp
        .into_body()
        .into_with_config()
        .limit(ERROR_BODY_MAX)
        .read_to_vec()
    else {
        return (Vec::new(), String::new());
    };
    let Ok(parsed) = serde_json::from_slice::<Errors>(&body) else {
        return (Vec::new(), String::new());
    };
    let codes = parsed.errors.iter().map(|e| e.code.clone()).collect();
    let mut summary: String = parsed
        .errors
        .iter()
        .map(|e| format!("{} {}", e.code, e.message).trim().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    if summary.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| summary.is_char_boundary(i))
            .unwrap_or(0);
        summary.truncate(cut);
        summary.push_str("...");
    }
    let detail = if summary.is_empty() {
        String::new()
    } else {
        format!(" ({summary})")
    };
    (codes, detail)
}

fn status_text(status: u16) -> String {
    match ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// The error of the last endpoint, saying which mirrors failed before it.
fn with_tried(e: SourceError, tried: &[String]) -> SourceError {
    if tried.is_empty() {
        return e;
    }
    let note = format!("; tried first: {}", tried.join(", "));
    use SourceError::*;
    match e {
        NotFound { what, location } => NotFound {
            what,
            location: format!("{location}{note}"),
        },
        Unauthorized(m) => Unauthorized(m + &note),
        Unreachable(m) => Unreachable(m + &note),
        Tls(m) => Tls(m + &note),
        Unsupported(m) => Unsupported(m + &note),
        Transient(m) => Transient(m + &note),
        Other(m) => Other(m + &note),
        e @ DigestMismatch { .. } => e,
    }
}

/// `127.0.0.0/8`, `::1` and `localhost`, with or without a port.
fn is_loopback(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A redirect's `Location`, absolute or relative to `base`.
fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    let authority = base.authority()?.as_str();
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}").parse().ok();
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!("{scheme}://{authority}{dir}{location}")
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for yes in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "LOCALHOST",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "10.0.0.1:5000",
            "registry.example",
            "[::2]:5000",
            "localhost.example:5000",
            "docker.io",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn redirect_locations() {
        let base: Uri = "https://reg.example:5000/v2/a/blobs/sha256:x"
            .parse()
            .unwrap();
        let r = |l: &str| resolve_location(&base, l).unwrap().to_string();
        assert_eq!(
            r("https://s3.example/bucket/x?sig=1"),
            "https://s3.example/bucket/x?sig=1"
        );
        assert_eq!(r("/other/path"), "https://reg.example:5000/other/path");
        assert_eq!(r("//cdn.example/p"), "https://cdn.example/p");
        assert_eq!(r("sibling"), "https://reg.example:5000/v2/a/blobs/sibling");
    }

    #[test]
    fn mirror_failures_are_named_in_the_final_error() {
        let e = with_tried(
            SourceError::NotFound {
                what: "image r/x:1".into(),
                location: "r".into(),
            },
            &["mirror m:5000 (cannot connect)".into()],
        );
        assert_eq!(
            e.to_string(),
            "image r/x:1 not found in r; tried first: mirror m:5000 (cannot connect)"
        );
        let e = with_tried(SourceError::Unreachable("down".into()), &[]);
        assert_eq!(e.to_string(), "down");
    }

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
