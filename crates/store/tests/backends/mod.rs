//! The store's behaviour tests run on both backends: each test is a function of a [`Backend`], and
//! [`on_both_backends!`] makes a `sqlite::<name>` and a `postgres::<name>` test of it. PostgreSQL tests get a
//! throwaway server of their own (`testbed::postgres`), so they need Debian's `postgresql` package.

#![allow(dead_code)] // each test binary uses a part of it

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use store::{PgOptions, PgStore, SqliteOptions, SqliteStore, Store, Synchronous};
use testbed::postgres::{Postgres, PostgresOptions, ServerCertificate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL that accepts TLS connections only, reached with `sslmode=verify-full`.
    PostgresTls,
}

/// A fresh, empty store, and where it lives (so that a test can open a second handle on it).
pub struct TestStore {
    store: Box<dyn Store>,
    place: Place,
}

enum Place {
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        server: Arc<Postgres>,
        url: String,
        tenant: String,
    },
}

impl Backend {
    /// A new store of this backend, empty.
    pub fn open(self) -> TestStore {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let path = dir.path().join("ringlink.db");
                let store = open_sqlite(&path);
                TestStore {
                    store: Box::new(store),
                    place: Place::Sqlite { path, _dir: dir },
                }
            }
            Backend::Postgres => {
                let server = Arc::new(start_postgres());
                let url = server.create_database("ringlink").expect("create the test database");
                TestStore::on_postgres(server, url, "office")
            }
            Backend::PostgresTls => {
                let made = Certificates::for_names(&["localhost", "127.0.0.1"]);
                let server = Arc::new(start_postgres_tls(made.server.clone(), true));
                let ca = made.write_ca(&server);
                let url = server.create_database("ringlink").expect("create the test database");
                let url = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
                TestStore::on_postgres(server, url, "office")
            }
        }
    }
}

/// A CA and a server certificate it signed, PEM.
pub struct Certificates {
    pub ca_pem: String,
    pub server: ServerCertificate,
}

impl Certificates {
    /// A new CA, and a certificate it signed for `names` (host names or IP addresses).
    pub fn for_names(names: &[&str]) -> Certificates {
        static CAS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CAS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("ringlink test CA {n}"));
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).expect("server certificate parameters");
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("server certificate");
        Certificates {
            ca_pem: ca.pem(),
            server: ServerCertificate {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                only: false,
            },
        }
    }

    /// Writes the CA into the server's directory (deleted with it) and returns its path, for `sslrootcert`.
    pub fn write_ca(&self, server: &Postgres) -> PathBuf {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = server.dir().join(format!("ca-{n}.pem"));
        std::fs::write(&path, &self.ca_pem).expect("write the CA file");
        path
    }
}

/// A test server (`fsync` off) with TLS on; `only` refuses TCP connections without TLS.
pub fn start_postgres_tls(mut certificate: ServerCertificate, only: bool) -> Postgres {
    certificate.only = only;
    let options = PostgresOptions {
        fsync: false,
        tls: Some(certificate),
        ..PostgresOptions::default()
    };
    Postgres::start_with(&options).unwrap_or_else(|error| panic!("{error}"))
}

/// A test server with `fsync` off: the tests are about crashes of ringlink, not of the machine.
pub fn start_postgres() -> Postgres {
    let options = PostgresOptions {
        fsync: false,
        ..PostgresOptions::default()
    };
    Postgres::start_with(&options).unwrap_or_else(|error| panic!("{error}"))
}

fn open_sqlite(path: &std::path::Path) -> SqliteStore {
    let options = SqliteOptions {
        synchronous: Synchronous::Normal,
        ..SqliteOptions::default()
    };
    SqliteStore::open_with(path, options).expect("open the SQLite store")
}

impl TestStore {
    /// The store of `tenant` in the database at `url` of `server`.
    pub fn on_postgres(server: Arc<Postgres>, url: String, tenant: &str) -> TestStore {
        let store = PgStore::open(&url, PgOptions::new(tenant)).expect("open the PostgreSQL store");
        TestStore {
            store: Box::new(store),
            place: Place::Postgres {
                server,
                url,
                tenant: tenant.to_owned(),
            },
        }
    }

    /// Another handle on the same database, as a second process (or a restarted one) would open.
    pub fn open_again(&self) -> Box<dyn Store> {
        match &self.place {
            Place::Sqlite { path, .. } => Box::new(open_sqlite(path)),
            Place::Postgres { url, tenant, .. } => {
                Box::new(PgStore::open(url, PgOptions::new(tenant.as_str())).expect("open the store again"))
            }
        }
    }

    /// The store of another tenant in the same database (PostgreSQL only).
    pub fn other_tenant(&self, tenant: &str) -> TestStore {
        match &self.place {
            Place::Postgres { server, url, .. } => TestStore::on_postgres(server.clone(), url.clone(), tenant),
            Place::Sqlite { .. } => panic!("a SQLite store has no tenants"),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.place {
            Place::Sqlite { .. } => Backend::Sqlite,
            Place::Postgres { ref url, .. } if url.contains("sslmode=verify-full") => Backend::PostgresTls,
            Place::Postgres { .. } => Backend::Postgres,
        }
    }
}

impl Deref for TestStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        self.store.as_ref()
    }
}

/// `on_both_backends!(a, b)` makes tests `sqlite::a`, `postgres::a`, `sqlite::b`, `postgres::b` that call the
/// functions `a(Backend)` and `b(Backend)` of the enclosing module.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::backends::Backend::Sqlite)
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::backends::Backend::Postgres)
                }
            )*
        }
    };
}

/// `on_postgres_over_tls!(a, b)` makes tests `postgres_tls::a` and `postgres_tls::b`: a representative part of the
/// suite on a server that accepts TLS only, reached with `sslmode=verify-full`.
#[macro_export]
macro_rules! on_postgres_over_tls {
    ($($test:ident),* $(,)?) => {
        mod postgres_tls {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::backends::Backend::PostgresTls)
                }
            )*
        }
    };
}
