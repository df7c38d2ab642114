//! TLS on the gateway's listener: the certificate chain and key it shows, read from
//! PEM files and read again when they change, so a renewed certificate is served
//! without a restart.
//!
//! Owns the server settings: rustls with *ring*, TLS 1.2 and 1.3, no client
//! certificates, ALPN `http/1.1`. Does not own the outbound side (`fleet_tls`).

use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};
use tokio_rustls::TlsAcceptor;

/// How often the files are read to see whether they changed: a renewal is served
/// within this long. Reading two small files this often costs nothing measurable.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The gateway's TLS identity: its files, and what they held when last read
/// successfully. Cheap to clone; clones share the identity.
#[derive(Clone)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentIdentity>,
}

impl std::fmt::Debug for ServerTls {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Why the certificate or key could not be used. No variant carries the key's bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM `CERTIFICATE`, or a broken one.
    #[error("`{}` holds no usable PEM certificate ({reason}); expected `-----BEGIN CERTIFICATE-----` blocks, leaf first", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file holds no PEM private key, or one rustls cannot sign with.
    // Only a fixed description: parser messages could quote the key's text.
    #[error("`{}` holds no usable PEM private key (PKCS #8, PKCS #1 or SEC1; RSA, ECDSA or Ed25519)", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
    },
    /// The key is not the one the certificate was issued for.
    #[error("the key in `{}` does not belong to the certificate in `{}`", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

impl ServerTls {
    /// Reads the certificate chain at `cert` and its private key at `key` (PEM).
    ///
    /// # Errors
    /// A file cannot be read, holds no usable certificate or key, or the key does not
    /// match the certificate; each names its file.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsFileError> {
        let cert = cert.into();
        let key = key.into();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = read_files(&cert, &key)?;
        let identity = certified_key(&files, &cert, &key, &provider)?;
        Ok(Self {
            cert,
            key,
            provider,
            current: Arc::new(CurrentIdentity {
                identity: RwLock::new(Arc::new(identity)),
                files: RwLock::new(files.digest()),
            }),
        })
    }

    /// The acceptor for the listener: it shows whatever identity is current at each
    /// handshake.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&self.current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }

    /// Reads the files every [`RELOAD_CHECK`] and, when they changed and hold a usable
    /// identity, serves it from the next handshake on. A broken change keeps the
    /// identity served and logs why, once per change. Runs until dropped.
    pub(crate) async fn reload_on_change(self) {
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reload_if_changed();
        }
    }

    fn reload_if_changed(&self) {
        let files = match read_files(&self.cert, &self.key) {
            Ok(files) => files,
            // Mid-rotation a file may be missing for a moment; the next check sees it.
            Err(error) => {
                tracing::debug!(%error, "cannot read the gateway's TLS files");
                return;
            }
        };
        let digest = files.digest();
        {
            let mut seen = self.current.files.write();
            if *seen == digest {
                return;
            }
            *seen = digest;
        }
        match certified_key(&files, &self.cert, &self.key, &self.provider) {
            Ok(identity) => {
                *self.current.identity.write() = Arc::new(identity);
                tracing::info!(cert = %self.cert.display(), "the gateway serves its renewed TLS certificate");
            }
            Err(error) => {
                tracing::warn!(%error, "the gateway keeps its TLS certificate: the changed files are not usable");
            }
        }
    }
}

/// The identity served now, and a digest of the files it was last compared with.
#[derive(Debug)]
struct CurrentIdentity {
    identity: RwLock<Arc<CertifiedKey>>,
    files: RwLock<[u8; 32]>,
}

impl ResolvesServerCert for CurrentIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.identity.read()))
    }
}

/// The two files' bytes.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Files {
    /// Compared instead of the bytes, so the key's bytes are not kept.
    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(Sha256::digest(&self.cert));
        hash.update(Sha256::digest(&self.key));
        hash.finalize().into()
    }
}

fn read_files(cert: &Path, key: &Path) -> Result<Files, TlsFileError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsFileError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    Ok(Files {
        cert: read(cert)?,
        key: read(key)?,
    })
}

fn certified_key(
    files: &Files,
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsFileError> {
    let bad_cert = |reason: String| TlsFileError::BadCertificate {
        path: cert_path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| bad_cert(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad_cert("no certificate in it".to_owned()));
    }
    let bad_key = || TlsFileError::BadKey {
        path: key_path.to_path_buf(),
    };
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|_| bad_key())?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => TlsFileError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        },
        rustls::Error::InvalidCertificate(reason) => bad_cert(reason.to_string()),
        _ => bad_key(),
    })
}

#[cfg(test)]
mod tests {
    use fleet_testkit::{ServerIdentity, TempDir};

    use super::*;

    /// Writes `identity` as `gateway.crt` and `gateway.key` in `dir`.
    fn files(dir: &TempDir, identity: &ServerIdentity) -> (PathBuf, PathBuf) {
        let cert = dir.path().join("gateway.crt");
        let key = dir.path().join("gateway.key");
        identity.write_pem(&cert, &key);
        (cert, key)
    }

    fn served(tls: &ServerTls) -> CertificateDer<'static> {
        tls.current.identity.read().cert[0].clone()
    }

    #[test]
    fn unusable_files_are_named_and_the_key_is_never_shown() {
        let dir = TempDir::new("gateway-tls-errors");
        let (cert, key) = files(&dir, &ServerIdentity::untrusted());

        let missing = dir.path().join("missing.crt");
        let error = ServerTls::load(&missing, &key).unwrap_err();
        assert!(matches!(error, TlsFileError::Read { .. }), "{error:?}");
        assert!(error.to_string().contains("missing.crt"), "{error}");

        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let error = ServerTls::load(&garbage, &key).unwrap_err();
        assert!(
            matches!(error, TlsFileError::BadCertificate { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("garbage.crt"), "{error}");

        // Well-formed PEM whose bytes are no key: the message must not quote them.
        let broken_key = dir.path().join("broken.key");
        std::fs::write(
            &broken_key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = ServerTls::load(&cert, &broken_key).unwrap_err();
        assert!(matches!(error, TlsFileError::BadKey { .. }), "{error:?}");
        let shown = format!("{error} {error:?}");
        assert!(shown.contains("broken.key"), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");

        let other = TempDir::new("gateway-tls-other");
        let (_, other_key) = files(&other, &ServerIdentity::untrusted());
        let error = ServerTls::load(&cert, &other_key).unwrap_err();
        assert!(
            matches!(error, TlsFileError::KeyMismatch { .. }),
            "{error:?}"
        );

        assert!(ServerTls::load(&cert, &key).is_ok());
    }

    #[test]
    fn a_broken_renewal_keeps_the_served_certificate_and_a_good_one_replaces_it() {
        let dir = TempDir::new("gateway-tls-reload");
        let (cert, key) = files(&dir, &ServerIdentity::untrusted());
        let tls = ServerTls::load(&cert, &key).unwrap();
        let first = served(&tls);

        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
        tls.reload_if_changed();
        assert_eq!(
            served(&tls),
            first,
            "a broken file keeps the old certificate"
        );

        let renewed = ServerIdentity::untrusted();
        files(&dir, &renewed);
        tls.reload_if_changed();
        let now = served(&tls);
        assert_ne!(now, first);
        assert_eq!(now, CertificateDer::from_pem_file(&cert).unwrap());
    }
}
