//! TLS to the state database: rustls with *ring*, the server's certificate and name always
//! verified (against the URL's `sslrootcert`, else the operating system's store, as
//! [`fleet_tls::client_config`] reads it).
//!
//! libpq's `sslmode` and `sslrootcert` are read here, because tokio-postgres knows only
//! `disable`, `prefer` and `require` and no root certificate. What each mode means to
//! mcpfleet:
//! - `disable`: plain TCP;
//! - `allow`, `prefer`: TLS when the server offers it, plain otherwise;
//! - `require`, `verify-ca`, `verify-full`: TLS or no connection.
//!
//! Whenever TLS is used the certificate and the host name are verified: libpq's `require`
//! without a root certificate would take any certificate, which is no protection against
//! whoever sits on the path. With no `sslmode`, a database on this machine (loopback or a
//! Unix socket) is reached in plain, and any other in TLS or not at all.

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Whether TLS is used, as the URL's `sslmode` asks (`None`: not said).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Off,
    Prefer,
    Required,
}

impl Mode {
    fn parse(value: &str) -> Result<Self, String> {
        match value {
            "disable" => Ok(Mode::Off),
            "allow" | "prefer" => Ok(Mode::Prefer),
            "require" | "verify-ca" | "verify-full" => Ok(Mode::Required),
            other => Err(format!(
                "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )),
        }
    }

    /// The mode when the URL names none: plain to this machine, TLS to any other.
    pub(super) fn default_for(hosts: &[Host]) -> Self {
        let local = |host: &Host| match host {
            Host::Tcp(name) => {
                name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
            Host::Unix(_) => true,
        };
        // No host: libpq's default, the local Unix socket.
        if hosts.iter().all(local) {
            Mode::Off
        } else {
            Mode::Required
        }
    }

    pub(super) fn ssl_mode(self) -> SslMode {
        match self {
            Mode::Off => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Required => SslMode::Require,
        }
    }
}

/// The URL's TLS parameters, taken out of it.
#[derive(Debug, Default)]
pub(super) struct Params {
    pub(super) mode: Option<Mode>,
    pub(super) root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of `url` (the URL form's query, or libpq's
/// `key=value` words) and returns the rest, for tokio-postgres to read.
///
/// # Errors
/// An `sslmode` libpq does not know.
pub(super) fn take_params(url: &str) -> Result<(String, Params), String> {
    let mut params = Params::default();
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => params.mode = Some(Mode::parse(value)?),
            "sslrootcert" => params.root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), params));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            if !take(key, &value)? {
                kept.push(pair);
            }
        }
        let rest = match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        };
        return Ok((rest, params));
    }
    let mut kept = Vec::new();
    for word in url.split(' ') {
        let taken = match word.split_once('=') {
            Some((key, value)) => take(key.trim(), value.trim().trim_matches('\''))?,
            None => false,
        };
        if !taken {
            kept.push(word);
        }
    }
    Ok((kept.join(" "), params))
}

/// `%XX` escapes decoded (a path in a query is often escaped); anything else as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The client configuration: the roots of `root_cert` (a PEM file of CA certificates), else
/// the operating system's.
///
/// # Errors
/// The file cannot be read or holds no certificate.
pub(super) fn client_config(root_cert: Option<&Path>) -> Result<ClientConfig, String> {
    let Some(path) = root_cert else {
        return Ok(fleet_tls::client_config());
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(format!(
            "sslrootcert {} holds no CA certificate",
            path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| e.to_string())
}

/// tokio-postgres's TLS over rustls.
#[derive(Clone)]
pub(super) struct Rustls(pub(super) Arc<ClientConfig>);

impl std::fmt::Debug for Rustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rustls")
    }
}

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    /// Never fails: the name is checked when TLS is used (a Unix socket has none, and
    /// tokio-postgres asks even when TLS is off).
    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, io::Error> {
        Ok(Connect {
            config: self.0.clone(),
            domain: domain.to_owned(),
        })
    }
}

/// One connection's TLS handshake.
pub(super) struct Connect {
    config: Arc<ClientConfig>,
    domain: String,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from(self.domain.clone()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{}` is not a host name TLS can verify", self.domain),
                )
            })?;
            tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await
                .map(Stream)
        })
    }
}

/// A TLS connection to the database.
pub(super) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    /// SCRAM's channel binding is not offered: the certificate is verified instead.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{Mode, take_params};
    use std::path::PathBuf;
    use tokio_postgres::config::Host;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_both_forms() {
        let (rest, params) = take_params(
            "postgres://u@db:5432/state?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@db:5432/state?application_name=x");
        assert_eq!(params.mode, Some(Mode::Required));
        assert_eq!(params.root_cert, Some(PathBuf::from("/etc/ca.pem")));

        let (rest, params) = take_params("postgres://u@db/state?sslmode=disable").unwrap();
        assert_eq!(
            (rest.as_str(), params.mode),
            ("postgres://u@db/state", Some(Mode::Off))
        );

        let (rest, params) =
            take_params("host=db dbname=state sslmode=prefer sslrootcert=/ca.pem").unwrap();
        assert_eq!(rest, "host=db dbname=state");
        assert_eq!(params.mode, Some(Mode::Prefer));
        assert_eq!(params.root_cert, Some(PathBuf::from("/ca.pem")));

        let (rest, params) = take_params("postgres://u@db/state").unwrap();
        assert_eq!(
            (rest.as_str(), params.mode),
            ("postgres://u@db/state", None)
        );

        let wrong = take_params("postgres://u@db/state?sslmode=always").unwrap_err();
        assert!(wrong.contains("`always`"), "{wrong}");
    }

    #[test]
    fn only_a_database_on_this_machine_is_reached_in_plain_by_default() {
        let tcp = |name: &str| Host::Tcp(name.to_owned());
        for local in [
            vec![tcp("127.0.0.1")],
            vec![tcp("localhost"), tcp("::1")],
            vec![Host::Unix(PathBuf::from("/run/postgresql"))],
            vec![],
        ] {
            assert_eq!(Mode::default_for(&local), Mode::Off, "{local:?}");
        }
        for remote in [
            vec![tcp("db.internal")],
            vec![tcp("10.0.0.7")],
            vec![tcp("127.0.0.1"), tcp("db.internal")],
        ] {
            assert_eq!(Mode::default_for(&remote), Mode::Required, "{remote:?}");
        }
    }
}
