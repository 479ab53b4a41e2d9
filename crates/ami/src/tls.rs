//! TLS for AMI (`tlsenable=yes` in manager.conf), verified against a PEM file of trusted certificates.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::client::{Error, TlsOptions};

pub(crate) async fn wrap(
    tcp: TcpStream,
    addr: &str,
    opts: &TlsOptions,
    connect_timeout: Duration,
) -> Result<TlsStream<TcpStream>, Error> {
    let fail = |reason: String| Error::Tls {
        addr: addr.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&opts.ca_file)
        .map_err(|e| fail(format!("cannot read {}: {e}", opts.ca_file.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| fail(format!("bad PEM in {}: {e}", opts.ca_file.display())))?;
        roots
            .add(cert)
            .map_err(|e| fail(format!("unusable certificate in {}: {e}", opts.ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(fail(format!("no certificate in {}", opts.ca_file.display())));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = match &opts.server_name {
        Some(name) => name.clone(),
        None => host_of(addr).to_owned(),
    };
    let name = ServerName::try_from(host.clone()).map_err(|_| fail(format!("invalid server name {host:?}")))?;
    match timeout(connect_timeout, TlsConnector::from(Arc::new(config)).connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(fail(format!("handshake: {e}"))),
        Err(_) => Err(Error::Timeout {
            addr: addr.to_owned(),
            stage: "TLS handshake",
            after: connect_timeout,
        }),
    }
}

/// `host:port`, `[v6]:port` or a bare host → host.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_strips_port() {
        assert_eq!(super::host_of("pbx.example:5039"), "pbx.example");
        assert_eq!(super::host_of("[::1]:5039"), "::1");
        assert_eq!(super::host_of("127.0.0.1"), "127.0.0.1");
    }
}
