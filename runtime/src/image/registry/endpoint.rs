//! One place a repository can be pulled from (a mirror or the registry itself): its credentials and
//! certificates, its HTTP agents, and a GET that follows redirects without leaking credentials.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use ureq::http::{Response, Uri};
use ureq::{Agent, Body};

use super::RegistryError;
use super::auth::Scheme;
use super::config::EndpointSpec;
use super::credentials::{CredentialStore, Credentials, Found};
use super::errors::{TransportError, certificate_problem, header};
use super::tls::{self, HostCerts, certificate_refused};
use crate::image::reference::api_host;

pub(super) const MAX_REDIRECTS: usize = 5;

/// One place the repository can be pulled from; shared by all threads of a client.
pub(super) struct Endpoint {
    /// The registry as written (`docker.io`, `mirror:5000`): for credentials, certs.d and messages.
    pub(super) registry: String,
    /// Where requests go (`registry-1.docker.io` for Docker Hub).
    pub(super) api_host: String,
    pub(super) repository: String,
    pub(super) insecure: bool,
    pub(super) is_mirror: bool,
    pub(super) loopback: bool,
    pub(super) credentials: Found,
    certs: HostCerts,
    cert_dirs: Vec<PathBuf>,
    agents: Mutex<HashMap<String, Agent>>,
    pub(super) scheme: OnceLock<&'static str>,
    pub(super) auth: Mutex<Scheme>,
    /// Set when the endpoint could not be reached, so later requests go straight to the next one.
    pub(super) down: AtomicBool,
}

impl Endpoint {
    pub(super) fn new(
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

    pub(super) fn describe(&self) -> String {
        if self.is_mirror {
            format!("mirror {}", self.registry)
        } else {
            self.registry.clone()
        }
    }

    pub(super) fn creds(&self) -> Option<&Credentials> {
        match &self.credentials {
            Found::Credentials(c, _) => Some(c),
            _ => None,
        }
    }

    /// The credentials, when they are a user name and password (not an identity token).
    pub(super) fn password(&self) -> Option<&Credentials> {
        self.creds().filter(|c| !c.is_identity_token())
    }

    /// The agent for requests to `host` on behalf of this endpoint: the endpoint's own CAs, plus the
    /// host's when it is another one (a token server, object storage).
    pub(super) fn agent_for(&self, host: &str) -> Result<Agent, RegistryError> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = agents.get(host) {
            return Ok(a.clone());
        }
        let mut certs = self.certs.clone();
        if host != self.registry && host != self.api_host {
            certs.extend(&HostCerts::load(&self.cert_dirs, host)?);
        }
        let agent = tls::agent(&certs, self.insecure, is_loopback(host))?;
        agents.insert(host.to_string(), agent.clone());
        Ok(agent)
    }

    /// One GET, following redirects by hand: `Authorization` goes only to the host first asked, and an
    /// HTTPS request is not redirected to plain HTTP (object storage behind a registry is HTTPS).
    pub(super) fn get(
        &self,
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
            let host = host_of(&uri);
            let agent = self.agent_for(&host)?;
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
            let resp = req.call().map_err(|e| self.http_error(e, &host))?;
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
                && !self.insecure
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

    /// One form POST (a token request), not redirected: the form holds a secret.
    pub(super) fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<Response<Body>, TransportError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| TransportError::BadUrl(url.to_string()))?;
        let host = host_of(&uri);
        self.agent_for(&host)?
            .post(uri.to_string())
            .header("Accept", "application/json")
            .send_form(form.iter().copied())
            .map_err(|e| self.http_error(e, &host))
    }

    /// A failed request to `host`; a refused certificate is said in words with the certs.d directories
    /// searched for it.
    fn http_error(&self, e: ureq::Error, host: &str) -> TransportError {
        match certificate_problem(&e) {
            Some(why) => {
                TransportError::Certificate(certificate_refused(why, host, &self.cert_dirs))
            }
            None => TransportError::Http(e, host.to_string()),
        }
    }
}

/// A URL's `host[:port]`, as agents and messages name it.
pub(super) fn host_of(uri: &Uri) -> String {
    uri.authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default()
}

/// `127.0.0.0/8`, `::1` and `localhost`, with or without a port.
pub(super) fn is_loopback(host_port: &str) -> bool {
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
}
