//! The UI over HTTPS from `[web] tls_cert`/`tls_key`: a certificate made for the test, HTTPS answered, plain
//! HTTP on the same port redirected to `https://`, unusable PEM files refused with the file named.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use reqwest::{redirect, Certificate, Client, StatusCode};
use store::SqliteStore;
use web::{Telemetry, TlsFiles, Wake, Web, WebSettings};

struct Pem {
    cert: String,
    key: String,
}

fn certificate() -> Pem {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("a test certificate");
    Pem {
        cert: made.cert.pem(),
        key: made.key_pair.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn tls_settings(dir: &Path, pem: &Pem) -> WebSettings {
    WebSettings {
        tls_cert: Some(write(dir, "cert.pem", &pem.cert)),
        tls_key: Some(write(dir, "key.pem", &pem.key)),
        ..WebSettings::default()
    }
}

async fn serve(dir: &Path, settings: WebSettings) -> (SocketAddr, Web) {
    let store = SqliteStore::open(dir.join("ringlink.db")).expect("store");
    let telemetry = Arc::new(Telemetry::new("9.9.9"));
    let web = Web::new(settings, Arc::new(store), telemetry, Wake::default()).expect("web");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(web::serve(listener, web.clone(), std::future::pending()));
    (addr, web)
}

#[tokio::test]
async fn https_is_served_and_plain_http_is_redirected() {
    let dir = tempfile::tempdir().expect("dir");
    let pem = certificate();
    let (addr, web) = serve(dir.path(), tls_settings(dir.path(), &pem)).await;
    assert!(web.is_tls());
    let https = Client::builder()
        .add_root_certificate(Certificate::from_pem(pem.cert.as_bytes()).expect("cert"))
        .https_only(true)
        .redirect(redirect::Policy::none())
        .build()
        .expect("client");

    // /status from 127.0.0.1 (the default allow-list) over HTTPS.
    let status = https
        .get(format!("https://127.0.0.1:{}/status", addr.port()))
        .send()
        .await
        .expect("an HTTPS answer");
    assert_eq!(status.status(), StatusCode::OK);
    let body: serde_json::Value = status.json().await.expect("JSON");
    assert_eq!(body["version"], "9.9.9");

    // The setup page's form cookie is Secure under TLS.
    let setup = https
        .get(format!("https://127.0.0.1:{}/setup", addr.port()))
        .send()
        .await
        .expect("setup page");
    assert_eq!(setup.status(), StatusCode::OK);
    let cookie = setup
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");

    // Plain HTTP on the TLS port: one redirect to the same path over https, nothing else.
    let plain = Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client");
    let answer = plain
        .get(format!("http://127.0.0.1:{}/calls?number=5", addr.port()))
        .send()
        .await
        .expect("an answer in clear");
    assert_eq!(answer.status(), StatusCode::PERMANENT_REDIRECT);
    let location = answer
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(location, format!("https://127.0.0.1:{}/calls?number=5", addr.port()));

    // A client that does not trust the certificate gets no answer at all.
    let untrusting = Client::builder().build().expect("client");
    let refused = untrusting
        .get(format!("https://127.0.0.1:{}/status", addr.port()))
        .send()
        .await;
    assert!(refused.is_err(), "an unknown certificate must fail the handshake");
}

#[test]
fn unusable_pem_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let pem = certificate();
    let other = certificate();
    let cert = write(dir.path(), "cert.pem", &pem.cert);
    let key = write(dir.path(), "key.pem", &pem.key);
    let missing = dir.path().join("missing.pem");
    let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
    let other_key = write(dir.path(), "other-key.pem", &other.key);

    let loaded = TlsFiles::load(&cert, &key).expect("a matching pair loads");
    assert_eq!(loaded.chain_len, 1);

    let error = TlsFiles::load(&missing, &key).expect_err("a missing certificate");
    assert!(
        error.contains("cannot read") && error.contains("missing.pem"),
        "{error}"
    );
    let error = TlsFiles::load(&garbage, &key).expect_err("no certificate in the file");
    assert!(
        error.contains("web.tls_cert") && error.contains("garbage.pem"),
        "{error}"
    );
    let error = TlsFiles::load(&cert, &garbage).expect_err("no key in the file");
    assert!(
        error.contains("web.tls_key") && error.contains("garbage.pem"),
        "{error}"
    );
    let error = TlsFiles::load(&cert, &other_key).expect_err("a key of another certificate");
    assert!(error.contains("do not make a usable pair"), "{error}");

    // Half a pair is a configuration error; Web::new refuses bad files before serving anything.
    let half = WebSettings {
        tls_cert: Some(cert.clone()),
        ..WebSettings::default()
    };
    assert!(half.validate().expect_err("cert without key").contains("tls_key"));
    let bad = WebSettings {
        tls_cert: Some(garbage),
        tls_key: Some(key),
        ..WebSettings::default()
    };
    let store = SqliteStore::open(dir.path().join("ringlink.db")).expect("store");
    let refused = Web::new(bad, Arc::new(store), Arc::new(Telemetry::new("t")), Wake::default());
    assert!(matches!(refused, Err(web::Error::Settings(e)) if e.contains("garbage.pem")));
}
