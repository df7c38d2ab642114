//! TLS fixtures: throwaway certificate authorities made at test time (rcgen, so no
//! `openssl` command is needed), a TLS front that serves `https://` in front of a
//! plain-HTTP server, and a way to run a test in a process that trusts a test CA.
//!
//! Trust goes through `SSL_CERT_FILE`, the way an operator adds a private CA: mcpfleet
//! reads the OS trust store, so a test process must be *started* with the variable
//! (setting it later would need `unsafe`, and would leak into other tests).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Set in the child process [`trusting_a_test_ca`] starts: the directory holding the
/// server identity the trusted CA issued.
const PKI_DIR: &str = "MCPFLEET_TEST_PKI_DIR";

/// A certificate chain and key for `127.0.0.1` and `localhost`, as a TLS server shows.
#[derive(Debug)]
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The leaf certificate and the key, PEM, as a server's files hold them.
    cert_pem: String,
    key_pem: String,
}

impl Clone for ServerIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

impl ServerIdentity {
    /// An identity issued by a brand-new CA that nothing trusts.
    ///
    /// # Panics
    /// When rcgen fails.
    pub fn untrusted() -> Self {
        Self::issued(&new_ca("mcpfleet untrusted test CA"))
    }

    /// An identity issued by a brand-new CA whose certificate is written, PEM, to
    /// `ca_pem`: trusted only by whoever is given that file.
    ///
    /// # Panics
    /// When rcgen fails or the file cannot be written.
    pub fn issued_by_a_new_ca(ca_pem: &Path) -> Self {
        let ca = new_ca("mcpfleet test CA");
        std::fs::write(ca_pem, ca.pem()).expect("write the CA certificate");
        Self::issued(&ca)
    }

    fn issued(ca: &CertifiedIssuer<'static, KeyPair>) -> Self {
        let key = KeyPair::generate().expect("a server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "mcpfleet test server");
        let cert = params
            .signed_by(&key, ca)
            .expect("sign the server certificate");
        Self {
            chain: vec![cert.der().clone(), ca.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the certificate and key as PEM files, as a TLS server is given them.
    ///
    /// # Panics
    /// When a file cannot be written.
    pub fn write_pem(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(key, &self.key_pem).expect("write the key");
    }

    fn write(&self, dir: &Path) {
        std::fs::write(dir.join("server.der"), &self.chain[0]).expect("write server.der");
        std::fs::write(dir.join("server.key.der"), self.key.secret_der())
            .expect("write server.key.der");
        self.write_pem(&dir.join("server.pem"), &dir.join("server.key.pem"));
    }

    fn read(dir: &Path) -> Self {
        let read = |name: &str| std::fs::read(dir.join(name)).expect("read the test identity");
        let text = |name: &str| String::from_utf8(read(name)).expect("PEM is text");
        Self {
            chain: vec![CertificateDer::from(read("server.der"))],
            key: PrivatePkcs8KeyDer::from(read("server.key.der")).into(),
            cert_pem: text("server.pem"),
            key_pem: text("server.key.pem"),
        }
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a CA key"))
        .expect("self-sign the CA")
}

/// Runs the calling test in a process that trusts a fresh test CA.
///
/// In the test process itself: makes a CA and a server identity it issues, runs this
/// test binary again for `test` alone (`test` is the test's path, e.g. `https_probe`)
/// with `SSL_CERT_FILE` naming only that CA (and `SSL_CERT_DIR` unset), waits for it,
/// panics with its output unless it passed, and returns `None`: the caller returns.
/// In that child: returns the identity, for [`TlsFront::start`].
///
/// # Panics
/// When the child fails, or runs no test (a wrong `test` path).
pub async fn trusting_a_test_ca(test: &str) -> Option<ServerIdentity> {
    if let Some(dir) = std::env::var_os(PKI_DIR) {
        return Some(ServerIdentity::read(Path::new(&dir)));
    }
    let dir = crate::scratch_dir("tls");
    let ca = new_ca("mcpfleet test CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
    ServerIdentity::issued(&ca).write(&dir);
    let exe = std::env::current_exe().expect("the test executable");
    let output = tokio::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(PKI_DIR, &dir)
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .env_remove("SSL_CERT_DIR")
        .output()
        .await
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "`{test}` in a process trusting the test CA: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    None
}

/// Serves `https://127.0.0.1:<port>` and relays each connection's decrypted bytes to a
/// plain-HTTP server; stops when dropped.
#[derive(Debug)]
pub struct TlsFront {
    /// The upstream's URL with `https://` and the front's port.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// A front for `upstream_url` (`http://127.0.0.1:<port>/<path>`) showing `identity`.
    ///
    /// # Panics
    /// When `upstream_url` is not like that, or the front cannot listen.
    pub async fn start(upstream_url: &str, identity: ServerIdentity) -> Self {
        let rest = upstream_url
            .strip_prefix("http://")
            .expect("an http:// upstream");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let upstream: SocketAddr = authority.parse().expect("an IP:port upstream");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default TLS versions")
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .expect("a usable server identity");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the TLS front");
        let port = listener.local_addr().expect("its address").port();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: not an error here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self {
            url: format!("https://127.0.0.1:{port}{path}"),
            task,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
