//! HTTPS for the admin UI: `[web] tls_cert` and `tls_key` (PEM files) served with rustls.
//!
//! On the TLS port a connection that opens with plain HTTP (its first byte is not a TLS handshake record) gets
//! one `308` redirect to the same path over `https://` and is closed; nothing else is ever answered in clear.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use tracing::debug;

/// The first byte of a TLS record carrying a handshake (a ClientHello opens every TLS connection).
const TLS_HANDSHAKE: u8 = 0x16;
/// A client that connects and says nothing (or never finishes its handshake) is dropped after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate chain and its key, loaded and checked: what `ringlink check` and the server use.
#[derive(Clone)]
pub struct TlsFiles {
    config: Arc<ServerConfig>,
    /// Certificates in the chain (the server's first).
    pub chain_len: usize,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("chain_len", &self.chain_len)
            .finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Reads `cert` (the server's certificate, then any intermediates, PEM) and `key` (its private key: PKCS#8,
    /// PKCS#1 or SEC1 PEM) and checks that they belong together. The error names the file and what to do.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsFiles, String> {
        let read_err = |path: &Path, e: &dyn std::fmt::Display| {
            format!(
                "web.tls_cert/tls_key: cannot read {}: {e} — the file must exist and be readable by the service's \
                 user",
                path.display()
            )
        };
        std::fs::metadata(cert).map_err(|e| read_err(cert, &e))?;
        std::fs::metadata(key).map_err(|e| read_err(key, &e))?;
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| read_err(cert, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                format!(
                    "web.tls_cert: {} is not valid PEM ({e}) — it must hold \"-----BEGIN CERTIFICATE-----\" blocks",
                    cert.display()
                )
            })?;
        if chain.is_empty() {
            return Err(format!(
                "web.tls_cert: no certificate in {} — it must hold \"-----BEGIN CERTIFICATE-----\" blocks (the \
                 server's certificate first, then intermediates)",
                cert.display()
            ));
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            format!(
                "web.tls_key: no usable private key in {} ({e}) — it must hold an unencrypted \"-----BEGIN PRIVATE \
                 KEY-----\" (or RSA/EC PRIVATE KEY) block",
                key.display()
            )
        })?;
        let chain_len = chain.len();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("web TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                format!(
                    "web.tls_cert/tls_key: {} and {} do not make a usable pair ({e}) — the key must be the \
                     certificate's own",
                    cert.display(),
                    key.display()
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsFiles {
            config: Arc::new(config),
            chain_len,
        })
    }
}

/// Serves `router` over TLS until `shutdown` resolves; plain HTTP on the port is redirected to `https://`.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: TlsFiles,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls.config);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        debug!(error = %e, "web: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let router = router.clone();
                connections.spawn(async move {
                    if let Err(why) = connection(stream, peer, acceptor, router).await {
                        debug!(peer = %peer, %why, "web: TLS connection ended");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    connections.abort_all();
    Ok(())
}

async fn connection(stream: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, router: Router) -> Result<(), String> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first))
        .await
        .map_err(|_| "no request".to_owned())?
        .map_err(|e| e.to_string())?;
    if peeked == 0 {
        return Ok(());
    }
    if first[0] != TLS_HANDSHAKE {
        let redirect = hyper::service::service_fn(|request: Request<Incoming>| async move {
            Ok::<_, std::convert::Infallible>(to_https(&request))
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(false);
        return http
            .serve_connection(TokioIo::new(stream), redirect)
            .await
            .map_err(|e| e.to_string());
    }
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| format!("handshake: {e}"))?;
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { router.call(request).await }
    });
    Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await
        .map_err(|e| e.to_string())
}

/// `308` to the same host and path over `https://` (no host: a `400` saying to use https).
fn to_https(request: &Request<Incoming>) -> Response<String> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()));
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut response = Response::new(String::new());
    match host.and_then(|h| HeaderValue::from_str(&format!("https://{h}{path}")).ok()) {
        Some(location) => {
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            *response.body_mut() = "this address serves HTTPS only\n".into();
            response.headers_mut().insert(header::LOCATION, location);
        }
        None => {
            *response.status_mut() = StatusCode::BAD_REQUEST;
            *response.body_mut() = "this address serves HTTPS only: open it with https://\n".into();
        }
    }
    response
}
