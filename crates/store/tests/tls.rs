//! TLS to PostgreSQL: each `sslmode` against a real server with `ssl = on` and a certificate made here.

#[macro_use]
mod backends;

use backends::{start_postgres, start_postgres_tls, Certificates};
use serde_json::json;
use store::{PgOptions, PgStore, Store, StoreError, Timestamp};

fn open(url: &str) -> Result<PgStore, StoreError> {
    PgStore::open(url, PgOptions::new("office"))
}

/// A setting written and read back: the connection carries statements, not only the handshake.
fn round_trip(store: &PgStore) {
    store
        .set_setting("tls", &json!({"on": true}), Timestamp::from_millis(1))
        .expect("write over TLS");
    assert_eq!(store.setting("tls").expect("read over TLS"), Some(json!({"on": true})));
}

#[test]
fn verify_full_connects_to_a_server_whose_certificate_names_the_host_and_comes_from_the_given_ca() {
    let made = Certificates::for_names(&["localhost", "127.0.0.1"]);
    // The server refuses TCP connections without TLS: a store that works went over TLS.
    let server = start_postgres_tls(made.server.clone(), true);
    let ca = made.write_ca(&server);
    let url = server.create_database("ringlink").unwrap();
    let store = open(&format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display())).unwrap();
    round_trip(&store);
    let by_name = url.replace("127.0.0.1", "localhost");
    round_trip(&open(&format!("{by_name}?sslmode=verify-full&sslrootcert={}", ca.display())).unwrap());
}

#[test]
fn a_certificate_from_another_ca_is_refused_saying_so() {
    let made = Certificates::for_names(&["127.0.0.1"]);
    let other = Certificates::for_names(&["127.0.0.1"]);
    let server = start_postgres_tls(made.server.clone(), true);
    let wrong_ca = other.write_ca(&server);
    let url = server.create_database("ringlink").unwrap();
    for mode in ["verify-full", "verify-ca"] {
        let error = open(&format!("{url}?sslmode={mode}&sslrootcert={}", wrong_ca.display()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is not signed by a CA of sslrootcert=") && error.contains(&format!("sslmode={mode}")),
            "{error}"
        );
    }
}

#[test]
fn verify_full_refuses_a_certificate_for_another_host_and_verify_ca_accepts_it() {
    let made = Certificates::for_names(&["db.example"]);
    let server = start_postgres_tls(made.server.clone(), true);
    let ca = made.write_ca(&server);
    let url = server.create_database("ringlink").unwrap();
    let error = open(&format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not name 127.0.0.1"), "{error}");
    // verify-ca checks the chain only.
    round_trip(&open(&format!("{url}?sslmode=verify-ca&sslrootcert={}", ca.display())).unwrap());
}

#[test]
fn require_encrypts_without_checking_the_certificate() {
    let made = Certificates::for_names(&["db.example"]);
    let server = start_postgres_tls(made.server.clone(), true);
    let url = server.create_database("ringlink").unwrap();
    round_trip(&open(&format!("{url}?sslmode=require")).unwrap());
    // prefer (the default) takes TLS when the server offers it: this server accepts nothing else.
    round_trip(&open(&url).unwrap());
}

#[test]
fn require_refuses_a_server_without_tls_and_prefer_falls_back_to_plain() {
    let server = start_postgres();
    let url = server.create_database("ringlink").unwrap();
    for mode in ["require", "verify-ca", "verify-full"] {
        let error = open(&format!("{url}?sslmode={mode}")).unwrap_err().to_string();
        assert!(
            error.contains("server does not support TLS") && error.contains(&format!("(sslmode={mode})")),
            "{error}"
        );
    }
    round_trip(&open(&format!("{url}?sslmode=prefer")).unwrap());
    round_trip(&open(&format!("{url}?sslmode=disable")).unwrap());
}

#[test]
fn disable_never_asks_for_tls_so_a_server_that_accepts_only_tls_refuses_it() {
    let made = Certificates::for_names(&["127.0.0.1"]);
    let server = start_postgres_tls(made.server.clone(), true);
    let url = server.create_database("ringlink").unwrap();
    let error = open(&format!("{url}?sslmode=disable")).unwrap_err().to_string();
    assert!(
        error.contains("no encryption") || error.contains("pg_hba.conf"),
        "{error}"
    );
}

#[test]
fn an_unreadable_sslrootcert_is_named_when_the_store_opens() {
    let error = open("postgres://postgres@127.0.0.1:1/none?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("sslrootcert=/nonexistent/ca.pem: cannot read it"),
        "{error}"
    );
}
