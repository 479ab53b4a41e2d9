//! The store's behaviour tests run on both backends: each test is a function of a [`Backend`], and
//! [`on_both_backends!`] makes a `sqlite::<name>` and a `postgres::<name>` test of it. PostgreSQL tests get a
//! throwaway server of their own (`testbed::postgres`), so they need Debian's `postgresql` package.

#![allow(dead_code)] // each test binary uses a part of it

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use store::{PgOptions, PgStore, SqliteOptions, SqliteStore, Store, Synchronous};
use testbed::postgres::{Postgres, PostgresOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
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
        }
    }
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
