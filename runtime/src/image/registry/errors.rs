//! Registry failures in the user's terms: transport errors (refused, unresolvable, TLS, timeouts) and
//! HTTP answers (not found, denied, busy) mapped onto `SourceError`, `Transient` where a retry may help.

use rustls::CertificateError;
use std::fmt;
use std::io;

use ureq::Body;
use ureq::http::Response;

use super::RegistryError;
use super::endpoint::MAX_REDIRECTS;
use super::tls::certificate_refused;
use crate::image::source::SourceError;

const ERROR_BODY_MAX: u64 = 16 << 10;

/// What can go wrong before there is an HTTP response to judge.
#[derive(Debug)]
pub(super) enum TransportError {
    Http(ureq::Error, String),
    /// The server's certificate was refused: the message says why and where trust is read from.
    Certificate(String),
    Agent(RegistryError),
    BadUrl(String),
    Downgrade(String),
    TooManyRedirects(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Http(e, host) => write!(f, "{host}: {e}"),
            TransportError::Certificate(m) => write!(f, "{m}"),
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
            TransportError::Certificate(m) => SourceError::Tls(m),
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
pub(super) fn speaks_no_tls(e: &TransportError) -> bool {
    let TransportError::Http(e, _) = e else {
        return false;
    };
    match tls_cause(e) {
        Some(rustls::Error::InvalidMessage(_)) => true,
        Some(_) => false,
        None => matches!(e, ureq::Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof),
    }
}

/// A failure before any HTTP answer, for an endpoint (`host` is what it was asked; mirrors say so).
pub(super) fn from_transport(e: TransportError, host: &str, is_mirror: bool) -> SourceError {
    match e {
        TransportError::Http(e, h) => match transport_error(e, &h) {
            SourceError::Unreachable(m) if is_mirror => {
                SourceError::Unreachable(format!("{m} (mirror)"))
            }
            other => other,
        },
        TransportError::Certificate(m) => SourceError::Tls(m),
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

pub(super) fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A transport failure in the user's terms; `Transient` for what a retry may fix.
pub(super) fn transport_error(e: ureq::Error, host: &str) -> SourceError {
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
        rustls::Error::InvalidCertificate(why) => SourceError::Tls(certificate_refused(
            why,
            host,
            &super::tls::default_cert_dirs(),
        )),
        other => SourceError::Tls(format!("TLS handshake with {host} failed: {other}")),
    }
}

/// The certificate problem inside a failed request, if that is why it failed.
pub(super) fn certificate_problem(e: &ureq::Error) -> Option<&CertificateError> {
    match tls_cause(e) {
        Some(rustls::Error::InvalidCertificate(why)) => Some(why),
        _ => None,
    }
}

/// The registry's error codes and a short summary of its messages, from an error response body.
pub(super) fn error_body(resp: Response<Body>) -> (Vec<String>, String) {
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

pub(super) fn status_text(status: u16) -> String {
    match ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// The error of the last endpoint, saying which mirrors failed before it.
pub(super) fn with_tried(e: SourceError, tried: &[String]) -> SourceError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
