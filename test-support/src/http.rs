//! A small HTTP(S) client for the harness (pushing, and checking what a registry serves), with the registry
//! auth dance done the way the distribution spec describes it. Independent of the product's registry client:
//! the product must not be tested with itself.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

/// What came back: status, headers (names lowercased), body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }
}

/// A `WWW-Authenticate` challenge: `Bearer realm=..,service=..,scope=..` or `Basic realm=..`.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Challenge> {
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let mut params = Vec::new();
        let mut rest = rest.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let after = after.trim_start();
            let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            params.push((key.trim().to_ascii_lowercase(), value.to_string()));
            rest = remainder.trim_start().trim_start_matches(',').trim_start();
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// User and password.
pub type Creds<'a> = Option<(&'a str, &'a str)>;

#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Client {
    /// Trusts only `ca` for HTTPS (or nothing, for plain HTTP registries).
    pub fn new(ca: Option<&Path>) -> Client {
        let mut tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
        let mut roots = Vec::new();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display()));
            for item in ureq::tls::parse_pem(&pem) {
                if let Ok(ureq::tls::PemItem::Certificate(cert)) = item {
                    roots.push(cert);
                }
            }
            assert!(!roots.is_empty(), "no certificate in {}", ca.display());
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
        Client::with_tls(tls.build())
    }

    /// Trusts any certificate: for a registry whose self-signed `CA:TRUE` certificate ureq's own TLS refuses
    /// (the test's own loopback registry, to push fixtures and see it is up).
    pub fn unverified() -> Client {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .disable_verification(true);
        Client::with_tls(tls.build())
    }

    fn with_tls(tls: ureq::tls::TlsConfig) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .max_redirects(5)
            .tls_config(tls)
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// One request, no auth dance. Transport errors (refused connection, TLS failure) are `Err`.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, String> {
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let result = match body {
            Some(body) => self
                .agent
                .run(builder.body(body.to_vec()).map_err(|e| e.to_string())?),
            None => self.agent.run(builder.body(()).map_err(|e| e.to_string())?),
        };
        let mut resp = result.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(u64::MAX)
                .read_to_vec()
                .map_err(|e| format!("{method} {url}: read body: {e}"))?
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Asks the token server named by a Bearer challenge for a token, with `creds` as Basic auth (or
    /// anonymously). `scope` overrides the challenge's. Returns the token server's response on failure.
    pub fn fetch_token(
        &self,
        challenge: &Challenge,
        scope: Option<&str>,
        creds: Creds,
    ) -> Result<String, Response> {
        let realm = challenge
            .param("realm")
            .expect("bearer challenge without realm");
        let mut query = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(format!("service={}", encode_query(service)));
        }
        if let Some(scope) = scope.or(challenge.param("scope")) {
            for s in scope.split(' ') {
                query.push(format!("scope={}", encode_query(s)));
            }
        }
        if let Some((user, _)) = creds {
            query.push(format!("account={}", encode_query(user)));
        }
        let url = format!("{realm}?{}", query.join("&"));
        let auth = creds.map(basic_header);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let resp = self
            .request("GET", &url, &headers, None)
            .unwrap_or_else(|e| panic!("token server: {e}"));
        if resp.status != 200 {
            return Err(resp);
        }
        let json = resp.json();
        let token = json
            .get("token")
            .or(json.get("access_token"))
            .and_then(|t| t.as_str());
        Ok(token
            .unwrap_or_else(|| panic!("token response without token: {}", resp.text()))
            .to_string())
    }

    /// A request through the registry auth dance: on a 401, answer its challenge (Bearer: fetch a token for
    /// the challenge's scope, or `scope` when given, with `creds` or anonymously; Basic: send `creds`) and
    /// retry once. Returns the final response: a refused token request comes back as that 401.
    pub fn request_auth(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        creds: Creds,
        scope: Option<&str>,
    ) -> Response {
        let first = self
            .request(method, url, headers, body)
            .unwrap_or_else(|e| panic!("{e}"));
        if first.status != 401 {
            return first;
        }
        let Some(challenge) = first.header("www-authenticate").and_then(Challenge::parse) else {
            return first;
        };
        let authorization = match challenge.scheme.as_str() {
            "bearer" => match self.fetch_token(&challenge, scope, creds) {
                Ok(token) => format!("Bearer {token}"),
                Err(refused) => return refused,
            },
            "basic" => match creds {
                Some(c) => basic_header(c),
                None => return first,
            },
            other => panic!(
                "unknown auth scheme {other:?} in {:?}",
                first.header("www-authenticate")
            ),
        };
        let mut with_auth: Vec<(&str, &str)> = headers.to_vec();
        with_auth.push(("Authorization", &authorization));
        self.request(method, url, &with_auth, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

pub fn basic_header((user, password): (&str, &str)) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Percent-encodes a query value (scopes contain `:` and `,`, which token servers accept either way; spaces
/// and `&` must not pass).
pub fn encode_query(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b':'
            | b','
            | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
