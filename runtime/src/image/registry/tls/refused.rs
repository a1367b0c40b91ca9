//! Why a registry's certificate was refused, in words (expired, not valid for the name, unknown authority),
//! with the certs.d directories searched for it: what a user needs to fix it, not a rustls debug value.

use std::path::{Path, PathBuf};

use rustls::CertificateError;

use super::verifier::is_ca_served_as_end_entity;

/// Why `host`'s certificate was refused, in words, and the certs.d directories that were searched for it
/// (`cert_dirs`, `~` for the home directory); where the issuer is unknown, where to put the CA.
pub(in crate::image::registry) fn certificate_refused(
    why: &CertificateError,
    host: &str,
    cert_dirs: &[PathBuf],
) -> String {
    let places = |file: &str| -> String {
        cert_dirs
            .iter()
            .map(|d| format!("{}/{host}/{file}", home_as_tilde(d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (words, untrusted) = certificate_words(why, host);
    if untrusted {
        format!(
            "TLS verification of {host} failed: {words}; to trust it, put its CA certificate (or the \
             registry's self-signed certificate) in one of the certs.d directories searched: {}",
            places("ca.crt")
        )
    } else {
        format!(
            "TLS verification of {host} failed: {words} (certs.d directories searched: {})",
            places("")
        )
    }
}

/// A certificate problem in words, and whether trusting another authority is what would fix it.
fn certificate_words(why: &CertificateError, host: &str) -> (String, bool) {
    use CertificateError::*;
    // Certificates name hosts, not ports.
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let words = match why {
        UnknownIssuer | BadSignature => "its certificate is signed by an unknown authority".into(),
        why if is_ca_served_as_end_entity(why) => {
            "it serves a CA (self-signed) certificate as its own, and that certificate is not trusted \
             for it"
                .into()
        }
        Expired => "its certificate has expired".into(),
        ExpiredContext { time, not_after } => format!(
            "its certificate expired {} ago",
            duration_words(time.as_secs().saturating_sub(not_after.as_secs()))
        ),
        NotValidYet => "its certificate is not valid yet (check this machine's clock)".into(),
        NotValidYetContext { time, not_before } => format!(
            "its certificate is valid only in {} (check this machine's clock)",
            duration_words(not_before.as_secs().saturating_sub(time.as_secs()))
        ),
        NotValidForName => format!("its certificate is not valid for the name {host}"),
        NotValidForNameContext { presented, .. } if presented.is_empty() => {
            format!("its certificate is not valid for the name {host} (it names no host)")
        }
        NotValidForNameContext { presented, .. } => format!(
            "its certificate is not valid for the name {host} (it names {})",
            presented.join(", ")
        ),
        Revoked => "its certificate has been revoked".into(),
        InvalidPurpose | InvalidPurposeContext { .. } => {
            "its certificate is not meant for a TLS server (extended key usage)".into()
        }
        BadEncoding => "its certificate is malformed".into(),
        UnsupportedSignatureAlgorithmContext { .. }
        | UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "its certificate uses an unsupported signature algorithm".into()
        }
        other => format!("its certificate was refused ({other})"),
    };
    let untrusted = matches!(why, UnknownIssuer | BadSignature) || is_ca_served_as_end_entity(why);
    (words, untrusted)
}

fn duration_words(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} seconds"),
        s if s < 2 * 3600 => format!("{} minutes", s / 60),
        s if s < 2 * 86400 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

/// `/home/me/.config/...` as `~/.config/...`, as users write it.
fn home_as_tilde(dir: &Path) -> String {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty() && h != "/");
    match home.and_then(|h| dir.strip_prefix(h).ok()) {
        Some(rest) => format!("~/{}", rest.display()),
        None => dir.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_certificates_are_said_in_words_with_the_directories_searched() {
        let dirs = [
            PathBuf::from("/etc/containers/certs.d"),
            PathBuf::from("/etc/docker/certs.d"),
        ];
        let unknown = certificate_refused(&CertificateError::UnknownIssuer, "r:5000", &dirs);
        assert_eq!(
            unknown,
            "TLS verification of r:5000 failed: its certificate is signed by an unknown authority; to \
             trust it, put its CA certificate (or the registry's self-signed certificate) in one of the \
             certs.d directories searched: /etc/containers/certs.d/r:5000/ca.crt, \
             /etc/docker/certs.d/r:5000/ca.crt"
        );
        let expired = certificate_refused(
            &CertificateError::ExpiredContext {
                time: rustls::pki_types::UnixTime::since_unix_epoch(
                    std::time::Duration::from_secs(10 * 86400),
                ),
                not_after: rustls::pki_types::UnixTime::since_unix_epoch(
                    std::time::Duration::from_secs(7 * 86400),
                ),
            },
            "r:5000",
            &dirs,
        );
        assert!(
            expired.starts_with(
                "TLS verification of r:5000 failed: its certificate expired 3 days ago (certs.d \
                 directories searched: /etc/containers/certs.d/r:5000/, /etc/docker/certs.d/r:5000/)"
            ),
            "{expired}"
        );
        let wrong_name = certificate_refused(&CertificateError::NotValidForName, "r:5000", &dirs);
        assert!(
            wrong_name.contains("not valid for the name r (certs.d"),
            "{wrong_name}"
        );
    }
}
