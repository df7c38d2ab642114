//! The TLS client settings every outbound mcpfleet connection shares: the gateway's
//! connections to `https://` upstreams and the health probes of `https://` servers.
//!
//! Owns:
//! - the crypto provider: rustls with *ring* ([`install_default_provider`] makes it the
//!   process default for code that asks rustls for one, such as reqwest's own builder);
//! - which certificates are trusted: the operating system's store, read through
//!   rustls-platform-verifier (as reqwest does) — on Linux that is `SSL_CERT_FILE` /
//!   `SSL_CERT_DIR` when either is set (they then *replace* the system store), else the
//!   distribution's bundle. There is no switch to skip verification.
//!
//! Does not own: HTTP. Callers wrap [`client_config`] in their own connector
//! (the gateway's own upstream client, reqwest in the probes) and choose ALPN themselves.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Makes *ring* the process-wide rustls provider, unless one is installed already.
///
/// Idempotent and cheap. Binaries call it first thing: a reqwest client built with the
/// default settings panics when no provider is installed (mcpfleet builds reqwest
/// without a provider of its own, so that aws-lc-rs is not compiled).
pub fn install_default_provider() {
    // Err means some provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The rustls client configuration for upstreams and probes: *ring*, TLS 1.2 and 1.3,
/// server certificates checked against the OS trust store, no client certificate, no
/// ALPN protocols (callers add theirs).
///
/// The trust store is read once per process, on the first call. When it yields no
/// certificate at all, the configuration still builds, but refuses every server
/// certificate with an error saying so (a warning is logged once): `http://`
/// connections keep working and `https://` ones fail with a reason.
pub fn client_config() -> ClientConfig {
    static CONFIG: OnceLock<ClientConfig> = OnceLock::new();
    CONFIG.get_or_init(build_client_config).clone()
}

fn build_client_config() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> =
        match rustls_platform_verifier::Verifier::new(Arc::clone(&provider)) {
            Ok(verifier) => Arc::new(verifier),
            Err(error) => {
                tracing::warn!(%error, "no trusted CA certificates: https connections will fail");
                Arc::new(NoTrustedRoots {
                    reason: error.to_string(),
                    schemes: provider
                        .signature_verification_algorithms
                        .supported_schemes(),
                })
            }
        };
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous() // Only to plug in the verifier: it verifies, it never skips.
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

/// The verifier when the trust store could not be read: every certificate is refused,
/// naming why, so an `https://` upstream fails clearly instead of the process failing.
#[derive(Debug)]
struct NoTrustedRoots {
    reason: String,
    schemes: Vec<SignatureScheme>,
}

impl NoTrustedRoots {
    fn refuse(&self) -> rustls::Error {
        rustls::Error::General(format!(
            "no trusted CA certificates ({}); set SSL_CERT_FILE or SSL_CERT_DIR",
            self.reason
        ))
    }
}

impl ServerCertVerifier for NoTrustedRoots {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(self.refuse())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(self.refuse())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(self.refuse())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::CryptoProvider;

    use super::*;

    #[test]
    fn installing_twice_is_harmless() {
        install_default_provider();
        install_default_provider();
        assert!(CryptoProvider::get_default().is_some());
    }

    #[test]
    fn without_roots_every_certificate_is_refused_with_a_reason() {
        let verifier = NoTrustedRoots {
            reason: "No CA certificates were loaded from the system".to_owned(),
            schemes: vec![],
        };
        let error = verifier
            .verify_server_cert(
                &CertificateDer::from(vec![0]),
                &[],
                &ServerName::try_from("example.com").unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_err();
        assert!(
            error.to_string().contains("no trusted CA certificates"),
            "{error}"
        );
    }

    #[test]
    fn the_config_offers_no_alpn_and_no_client_certificate() {
        let config = client_config();
        assert!(config.alpn_protocols.is_empty());
        assert!(!config.client_auth_cert_resolver.has_certs());
    }
}
