//! TLS to PostgreSQL (nodes on other machines than the database): rustls,
//! as for deliveries, and the server's certificate always verified, chain
//! and host name (libpq's `verify-full`), against `store.tls_ca_file` or
//! else Mozilla's roots. Without `sslmode=require` in the URL or a CA file,
//! connections stay plain as before (a local socket, loopback).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Socket;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::store::StoreError;

/// The connector every connection of the store is opened with; with TLS
/// off the URL's `sslmode` is set to `disable`, so it is never asked.
#[derive(Clone)]
pub(super) struct PgTls(Option<Arc<rustls::ClientConfig>>);

impl PgTls {
    /// Chooses for `config` (whose `sslmode` it settles): TLS, verified,
    /// when the URL says `sslmode=require` or a CA file is given; plain
    /// otherwise (`prefer`, the default, included: a server's offer is not
    /// taken up without a way to check who it is).
    pub(super) fn choose(
        config: &mut tokio_postgres::Config,
        ca_file: Option<&Path>,
    ) -> Result<PgTls, StoreError> {
        if ca_file.is_none() && config.get_ssl_mode() != SslMode::Require {
            config.ssl_mode(SslMode::Disable);
            return Ok(PgTls(None));
        }
        config.ssl_mode(SslMode::Require);
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let shown = path.display();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| StoreError(format!("store.tls_ca_file {shown}: {e}")))?;
                for cert in certs {
                    let cert =
                        cert.map_err(|e| StoreError(format!("store.tls_ca_file {shown}: {e}")))?;
                    roots.add(cert).map_err(|e| {
                        StoreError(format!("store.tls_ca_file {shown}: a certificate: {e}"))
                    })?;
                }
                if roots.is_empty() {
                    return Err(StoreError(format!(
                        "store.tls_ca_file {shown}: no PEM certificate in it"
                    )));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError(format!("TLS to the database: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(PgTls(Some(Arc::new(tls))))
    }

    pub(super) fn enabled(&self) -> bool {
        self.0.is_some()
    }
}

/// Whether `config` names a database host other than this machine (a TCP
/// host that is not loopback): plain text would cross a network.
pub(super) fn leaves_the_machine(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().any(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => {
            name != "localhost"
                && !name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    })
}

impl MakeTlsConnect<Socket> for PgTls {
    type Stream = PgTlsStream;
    type TlsConnect = Handshake;
    type Error = io::Error;

    // Asked for every connection, TLS or not (a socket path's host is ""):
    // what cannot be used fails the handshake, which only TLS runs.
    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake, io::Error> {
        Ok(Handshake {
            config: self.0.clone(),
            name: ServerName::try_from(host.to_string()).ok(),
        })
    }
}

pub(super) struct Handshake {
    config: Option<Arc<rustls::ClientConfig>>,
    name: Option<ServerName<'static>>,
}

impl TlsConnect<Socket> for Handshake {
    type Stream = PgTlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| {
                io::Error::other("TLS to the database is off (no sslmode=require, no CA file)")
            })?;
            let name = self.name.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the database host is not a name or address a certificate can be checked for",
                )
            })?;
            let connector = tokio_rustls::TlsConnector::from(config);
            Ok(PgTlsStream(connector.connect(name, stream).await?))
        })
    }
}

pub(super) struct PgTlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for PgTlsStream {
    // The server is authenticated by its certificate; SCRAM's channel
    // binding would add nothing to that.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for PgTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgTlsStream {
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
    use super::*;
    use std::str::FromStr;

    #[test]
    fn plain_unless_required_or_given_a_ca() {
        let mut config = tokio_postgres::Config::from_str("postgres://h/db").unwrap();
        assert!(!PgTls::choose(&mut config, None).unwrap().enabled());
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);

        let mut config =
            tokio_postgres::Config::from_str("postgres://h/db?sslmode=require").unwrap();
        assert!(PgTls::choose(&mut config, None).unwrap().enabled());
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn only_hosts_off_this_machine_count_as_leaving_it() {
        let leaves =
            |url: &str| leaves_the_machine(&tokio_postgres::Config::from_str(url).unwrap());
        assert!(!leaves("postgres://localhost/db"));
        assert!(!leaves("postgres://127.0.0.1:5433/db"));
        assert!(!leaves("host=/run/postgresql dbname=db"));
        assert!(leaves("postgres://db.internal/db"));
        assert!(leaves("postgres://10.0.0.5/db"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let mut config = tokio_postgres::Config::from_str("postgres://h/db").unwrap();
        let Err(e) = PgTls::choose(&mut config, Some(&path)) else {
            panic!("accepted a CA file without certificates");
        };
        assert!(e.to_string().contains("store.tls_ca_file"), "{e}");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
