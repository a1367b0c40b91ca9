//! Server certificate checks: webpki's, plus Docker's acceptance of a self-signed registry certificate that
//! the user trusted for that registry in certs.d.
//!
//! Docker's documentation makes such a certificate with `openssl req -x509 ... -addext subjectAltName=...`,
//! which marks it `CA:TRUE`; webpki then refuses it as the server's own (`CaUsedAsEndEntity`). Docker, podman,
//! skopeo and curl accept it when it is trusted, so a served certificate byte-identical to one in the
//! registry's certs.d directory is accepted here too, once its validity period and names are checked.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore};

/// webpki's verdict, except that a `CA:TRUE` certificate trusted as it is for this registry is accepted.
#[derive(Debug)]
pub(crate) struct RegistryCertVerifier {
    /// `None` when no root is trusted at all: every certificate is then of an unknown authority.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// The certificates of the registry's certs.d directories, as trusted as they are.
    trusted_as_is: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl RegistryCertVerifier {
    /// `roots`: every trusted root (the system's and the registry's); `registry_certs`: the registry's own.
    pub(crate) fn new(
        roots: Vec<CertificateDer<'static>>,
        registry_certs: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> RegistryCertVerifier {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(roots);
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .ok();
        RegistryCertVerifier {
            webpki,
            trusted_as_is: registry_certs,
            provider,
        }
    }

    /// A self-signed `CA:TRUE` certificate served as the registry's own, and trusted for it as it is.
    /// webpki checks the validity period before the basic constraints, so `CaUsedAsEndEntity` means the
    /// dates were fine (a test below holds it to that); the names are checked here.
    fn accept_trusted_as_is(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        refused: Error,
    ) -> Result<ServerCertVerified, Error> {
        let is_ca =
            matches!(&refused, Error::InvalidCertificate(why) if is_ca_served_as_end_entity(why));
        if !is_ca || !self.trusted_as_is.iter().any(|c| c == end_entity) {
            return Err(refused);
        }
        verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
        Ok(ServerCertVerified::assertion())
    }
}

/// webpki's `CaUsedAsEndEntity`, which rustls passes on only as an opaque "other" error.
pub(crate) fn is_ca_served_as_end_entity(why: &CertificateError) -> bool {
    matches!(why, CertificateError::Other(OtherError(e)) if e.to_string() == "CaUsedAsEndEntity")
}

impl ServerCertVerifier for RegistryCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(webpki) = &self.webpki else {
            return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(refused) => self.accept_trusted_as_is(end_entity, server_name, refused),
            ok => ok,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Made as Docker's documentation shows (`openssl req -x509 -newkey ec ... -days 36500 -subj
    /// /CN=reg.example -addext subjectAltName=DNS:reg.example,IP:127.0.0.1`): `CA:TRUE`, self-signed.
    const SELF_SIGNED: &str = include_str!("testdata/self-signed.crt");
    /// Another certificate of the same kind (another key, same names).
    const OTHER_SELF_SIGNED: &str = include_str!("testdata/other-self-signed.crt");

    fn der(pem: &str) -> CertificateDer<'static> {
        match ureq::tls::parse_pem(pem.as_bytes()).next() {
            Some(Ok(ureq::tls::PemItem::Certificate(c))) => CertificateDer::from(c.der().to_vec()),
            _ => panic!("test certificate is not PEM"),
        }
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn verify(
        trusted: &str,
        served: &str,
        name: &str,
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verifier =
            RegistryCertVerifier::new(vec![der(trusted)], vec![der(trusted)], provider());
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier.verify_server_cert(&der(served), &[], &name, &[], now)
    }

    #[test]
    fn a_self_signed_certificate_trusted_as_it_is_is_accepted_for_its_names() {
        let now = UnixTime::now();
        assert!(verify(SELF_SIGNED, SELF_SIGNED, "reg.example", now).is_ok());
        assert!(verify(SELF_SIGNED, SELF_SIGNED, "127.0.0.1", now).is_ok());
        let wrong_name = verify(SELF_SIGNED, SELF_SIGNED, "other.example", now).unwrap_err();
        assert!(
            matches!(
                wrong_name,
                Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{wrong_name:?}"
        );
    }

    #[test]
    fn a_different_self_signed_certificate_is_still_refused() {
        let e = verify(
            SELF_SIGNED,
            OTHER_SELF_SIGNED,
            "reg.example",
            UnixTime::now(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidCertificate(_)), "{e:?}");
    }

    #[test]
    fn an_expired_self_signed_certificate_is_refused_as_expired() {
        // webpki checks dates before basic constraints: what accepting CaUsedAsEndEntity relies on.
        let later = UnixTime::since_unix_epoch(Duration::from_secs(200 * 365 * 86400));
        let e = verify(SELF_SIGNED, SELF_SIGNED, "reg.example", later).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{e:?}"
        );
    }

    #[test]
    fn without_any_root_every_certificate_is_of_an_unknown_authority() {
        let verifier = RegistryCertVerifier::new(Vec::new(), Vec::new(), provider());
        let name = ServerName::try_from("reg.example").unwrap();
        let e = verifier
            .verify_server_cert(&der(SELF_SIGNED), &[], &name, &[], UnixTime::now())
            .unwrap_err();
        assert_eq!(
            e,
            Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
    }
}
