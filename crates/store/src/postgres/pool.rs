//! Connections to PostgreSQL for a synchronous API: `tokio-postgres` clients whose socket I/O runs on a small
//! runtime the pool owns, and a bounded set of idle clients that callers borrow for one transaction.
//!
//! The store's callers are synchronous (and some of them run on the async threads of their own runtime, as
//! they do with SQLite). A client future only talks to its connection task through channels, so the caller
//! blocks on it with a plain executor while the pool's runtime drives the socket: no runtime is ever entered
//! from inside another, which is what makes the sync `postgres` crate panic in async code.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, Statement};

use super::tls::MakeRustls;
use crate::error::{Result, StoreError};

/// How long a caller waits for a connection when all of them are busy.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client and the statements prepared on it (a statement belongs to one connection).
pub struct PgConn {
    pub client: Client,
    pub statements: HashMap<String, Statement>,
}

struct Slots {
    idle: Vec<PgConn>,
    /// Connections open or being opened, idle or not.
    open: usize,
}

pub struct Pool {
    config: Config,
    tls: MakeRustls,
    max: usize,
    slots: Mutex<Slots>,
    freed: Condvar,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Pool {
    pub fn new(mut config: Config, tls: MakeRustls, max: usize) -> Result<Self> {
        config.ssl_mode(tls.settings().mode.for_client());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ringlink-postgres")
            .enable_all()
            .build()
            .map_err(|error| StoreError::Backend(Box::new(error)))?;
        Ok(Pool {
            config,
            tls,
            max: max.max(1),
            slots: Mutex::new(Slots {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            runtime: Some(runtime),
        })
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Borrows a connection: an idle one, a new one while fewer than `max` are open, or the next one returned.
    pub fn get(&self) -> Result<Checkout<'_>> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut slots = self.lock();
        loop {
            while let Some(conn) = slots.idle.pop() {
                if !conn.client.is_closed() {
                    return Ok(Checkout {
                        pool: self,
                        conn: Some(conn),
                    });
                }
                slots.open -= 1;
            }
            if slots.open < self.max {
                slots.open += 1;
                drop(slots);
                return match self.connect() {
                    Ok(conn) => Ok(Checkout {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(error) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(error)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Backend(
                    format!(
                        "all {} PostgreSQL connections stayed busy for {CHECKOUT_TIMEOUT:?}; raise [store] pool_size \
                         or look for slow queries on the server",
                        self.max
                    )
                    .into(),
                ));
            }
            slots = self
                .freed
                .wait_timeout(slots, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn connect(&self) -> Result<PgConn> {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError::Backend("the store is closed".into()))?;
        let task = runtime.spawn(async move {
            let (client, connection) = config.connect(tls).await?;
            // The connection task ends when the client is dropped or the socket fails; the client then reports
            // `is_closed` and its calls fail, which the store turns into errors.
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = futures::executor::block_on(task)
            .map_err(|error| StoreError::Backend(Box::new(error)))?
            .map_err(|error| self.connect_error(error))?;
        Ok(PgConn {
            client,
            statements: HashMap::new(),
        })
    }

    /// A failed connection attempt, with its causes (tokio-postgres says only "error performing TLS handshake")
    /// and the `sslmode` it was made with when TLS was asked for.
    fn connect_error(&self, error: tokio_postgres::Error) -> StoreError {
        let mode = self.tls.settings().mode;
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        if mode != super::tls::SslMode::Prefer {
            text.push_str(&format!(" (sslmode={mode})"));
        }
        StoreError::Backend(text.into())
    }

    fn put_back(&self, conn: PgConn) {
        let mut slots = self.lock();
        if conn.client.is_closed() {
            slots.open -= 1;
        } else {
            slots.idle.push(conn);
        }
        drop(slots);
        self.freed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Idle clients go first (their connection tasks end), then the runtime, without waiting: the last clone of
        // the store may be dropped on an async thread, where a blocking shutdown would panic.
        self.lock().idle.clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A borrowed connection; it goes back to the pool when dropped (a transaction left open is rolled back first by
/// `tokio-postgres`; a broken connection is closed instead).
pub struct Checkout<'a> {
    pool: &'a Pool,
    conn: Option<PgConn>,
}

impl Checkout<'_> {
    pub fn conn(&mut self) -> &mut PgConn {
        self.conn
            .as_mut()
            .expect("a checkout holds its connection until dropped")
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}
