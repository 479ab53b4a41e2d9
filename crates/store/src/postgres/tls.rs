//! TLS to PostgreSQL with rustls, and libpq's `sslmode` / `sslrootcert` read from the connection URL.
//!
//! `tokio-postgres` knows `sslmode` `disable`, `prefer` and `require` only and refuses `verify-ca` and
//! `verify-full` in a URL, so [`split`] takes both settings out of the URL before it is parsed, and the store's
//! connector ([`MakeRustls`]) does what each mode promises:
//!
//! | `sslmode`     | TLS                              | the server's certificate                                |
//! |---------------|----------------------------------|---------------------------------------------------------|
//! | `disable`     | never                            | —                                                       |
//! | `prefer`      | when the server offers it        | not checked                                             |
//! | `require`     | always (refuses a plain server)  | not checked: encrypted, but anyone in between may answer |
//! | `verify-ca`   | always                           | signed by a CA of `sslrootcert`; any host name          |
//! | `verify-full` | always                           | signed by a CA of `sslrootcert` and names the host       |
//!
//! `sslrootcert` is a PEM file of CA certificates; without it the verifying modes trust the public web CAs
//! (Mozilla's list, built in). Nothing here ever reads the system's or the user's files on its own.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::WebPkiSupportedAlgorithms;
use tokio_rustls::rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Result, StoreError};

/// libpq's `sslmode`, all five values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const NAMES: [(&'static str, SslMode); 5] = [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    fn parse(value: &str) -> Result<SslMode> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| StoreError::Invalid {
                what: "PostgreSQL URL",
                detail: format!("sslmode={value} is unknown: use disable, prefer, require, verify-ca or verify-full"),
            })
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("prefer", |(name, _)| name)
    }

    /// What `tokio-postgres` is told: whether to ask for TLS and whether a server without it is refused.
    pub fn for_client(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The TLS settings found in a connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of `url` (`postgres://…?sslmode=…` or libpq's `key=value …` form):
/// the rest of the URL, for `tokio-postgres`, and the settings. `sslmode` defaults to `prefer`, as with libpq.
pub fn split(url: &str) -> Result<(String, TlsSettings)> {
    let (rest, pairs) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_uri(url)?
    } else {
        split_key_values(url)?
    };
    let mut settings = TlsSettings {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "sslmode" => settings.mode = SslMode::parse(&value)?,
            _ => settings.root_cert = Some(PathBuf::from(value)),
        }
    }
    Ok((rest, settings))
}

fn is_ours(key: &str) -> bool {
    key == "sslmode" || key == "sslrootcert"
}

type Pairs = Vec<(String, String)>;

/// The URI form: the query's `sslmode` and `sslrootcert` parameters (percent-decoded) come out.
fn split_uri(url: &str) -> Result<(String, Pairs)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut ours = Vec::new();
    for parameter in query.split('&').filter(|parameter| !parameter.is_empty()) {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let key = percent_decode(key)?;
        if is_ours(&key) {
            ours.push((key, percent_decode(value)?));
        } else {
            kept.push(parameter);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, ours))
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| invalid_url(format!("`{text}` has a bad %-escape")))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid_url(format!("`{text}` is not UTF-8 once decoded")))
}

/// libpq's `key=value key='quoted \' value'` form: our two keys come out, the others are written back quoted.
fn split_key_values(text: &str) -> Result<(String, Pairs)> {
    let mut kept = Vec::new();
    let mut ours = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid_url(format!("`{key}` has no `=value`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(invalid_url(format!("the value of `{key}` has no closing quote"))),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if is_ours(&key) {
            ours.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), ours))
}

fn invalid_url(detail: String) -> StoreError {
    StoreError::Invalid {
        what: "PostgreSQL URL",
        detail,
    }
}

/// The connector handed to `tokio-postgres`: one rustls configuration for every connection of the pool.
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
    settings: Arc<TlsSettings>,
}

impl MakeRustls {
    /// Builds the rustls configuration `settings` ask for (reading `sslrootcert` now, so that a missing or
    /// unreadable file is an error when the store opens rather than at the first connection).
    pub fn new(settings: TlsSettings) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| StoreError::Backend(Box::new(error)))?;
        let chain = match settings.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => None,
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(root_store(settings.root_cert.as_deref())?);
                let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|error| StoreError::Backend(Box::new(error)))?;
                Some((chain, settings.mode == SslMode::VerifyFull))
            }
        };
        let verifier = Arc::new(Verifier {
            chain,
            algorithms: provider.signature_verification_algorithms,
        });
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustls {
            config: Arc::new(config),
            settings: Arc::new(settings),
        })
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

fn root_store(path: Option<&Path>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let Some(path) = path else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let unreadable = |detail: String| StoreError::Invalid {
        what: "PostgreSQL URL",
        detail: format!("sslrootcert={}: {detail}", path.display()),
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| unreadable(format!("cannot read it ({error})")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unreadable(format!("not a PEM file of certificates ({error})")))?;
    if certificates.is_empty() {
        return Err(unreadable(
            "it holds no certificate (expected PEM CERTIFICATE blocks)".into(),
        ));
    }
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| unreadable(format!("a certificate in it is not a usable CA ({error})")))?;
    }
    Ok(roots)
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(host.to_owned()).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{host}` is not a host name TLS can check ({error})"),
            )
        })?;
        Ok(RustlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
            settings: self.settings.clone(),
        })
    }
}

/// One handshake, with the host name it checks.
pub struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    settings: Arc<TlsSettings>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let host = host_text(&self.name);
            self.connector
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
                .map_err(|error| explain(error, &host, &self.settings))
        })
    }
}

fn host_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(name) => name.as_ref().to_owned(),
        ServerName::IpAddress(address) => std::net::IpAddr::from(*address).to_string(),
        _ => "the server".to_owned(),
    }
}

/// A refused certificate in words that say which setting decided it.
fn explain(error: io::Error, host: &str, settings: &TlsSettings) -> io::Error {
    let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return error;
    };
    let roots = match &settings.root_cert {
        Some(path) => format!("a CA of sslrootcert={}", path.display()),
        None => "a public CA (no sslrootcert given)".to_owned(),
    };
    // The caller adds the sslmode to the message.
    let detail = match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            format!("the certificate of {host} is not signed by {roots}")
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the certificate of {host} does not name {host} (verify-full checks the host name: connect by a name \
             the certificate lists, or use verify-ca)"
        ),
        rustls::Error::InvalidCertificate(problem) => {
            format!("the certificate of {host} was refused: {problem:?}")
        }
        other => format!("the TLS handshake with {host} failed: {other}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

/// Checks the server's certificate as the mode asks. In every mode the server proves it holds the key of the
/// certificate it shows (the handshake's signatures are verified): `require` and `prefer` stop there, so the
/// session is encrypted but anyone in between may answer with a certificate of their own.
#[derive(Debug)]
struct Verifier {
    /// `verify-ca` and `verify-full`: the chain must lead to a trusted CA; the host name is checked with `names`.
    chain: Option<(Arc<rustls::client::WebPkiServerVerifier>, bool)>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((chain, names)) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // The chain is checked before the name: a name error means the chain itself was good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS session to the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM then authenticates without channel binding (tokio-postgres' default `prefer` allows it).
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_come_out_of_a_uri_and_the_rest_stays() {
        let (rest, settings) =
            split("postgres://u:p@db:5432/ringlink?sslmode=verify-full&connect_timeout=5&sslrootcert=%2Fetc%2Fca.pem")
                .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/ringlink?connect_timeout=5");
        assert_eq!(settings.mode, SslMode::VerifyFull);
        assert_eq!(settings.root_cert, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn a_uri_without_sslmode_prefers_tls_as_libpq_does() {
        let (rest, settings) = split("postgresql://db/ringlink?sslmode=verify-ca").unwrap();
        assert_eq!(rest, "postgresql://db/ringlink");
        assert_eq!(settings.mode, SslMode::VerifyCa);
        let (_, settings) = split("postgres://db/ringlink").unwrap();
        assert_eq!(settings.mode, SslMode::Prefer);
        assert_eq!(settings.root_cert, None);
    }

    #[test]
    fn sslmode_and_sslrootcert_come_out_of_key_values_with_quotes() {
        let (rest, settings) =
            split("host=db  dbname = ringlink sslmode=require sslrootcert='/etc/my ca.pem' password='it\\'s'").unwrap();
        assert_eq!(rest, "host='db' dbname='ringlink' password='it\\'s'");
        assert_eq!(settings.mode, SslMode::Require);
        assert_eq!(settings.root_cert, Some(PathBuf::from("/etc/my ca.pem")));
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"it's"[..]));
    }

    #[test]
    fn an_unknown_sslmode_names_the_valid_ones() {
        let error = split("postgres://db/x?sslmode=maybe").unwrap_err().to_string();
        assert!(
            error.contains("sslmode=maybe") && error.contains("verify-full"),
            "{error}"
        );
    }
}
