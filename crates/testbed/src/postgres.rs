//! A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries, a fresh cluster in a temporary
//! directory, listening on a free port of 127.0.0.1, stopped and deleted when the handle is dropped.
//!
//! ```no_run
//! # fn demo() -> testbed::Result<()> {
//! let server = testbed::postgres::Postgres::start()?;
//! let url = server.create_database("ringlink")?; // postgres://postgres@127.0.0.1:PORT/ringlink
//! server.psql("ringlink", "CREATE TABLE t (x int)")?;
//! # Ok(()) }
//! ```
//!
//! The server runs as the `postgres` system user when the tests run as root (PostgreSQL refuses to run as
//! root), else as the current user. Authentication is `trust` on loopback: the cluster lives only as long as the
//! test. The API is synchronous (std processes), so sync and async tests both use it.
//!
//! The server is also stopped when the *thread* that started it ends (`PR_SET_PDEATHSIG`, so that a killed test
//! leaves no server behind): start it on the test's own thread, not in `spawn_blocking` (whose threads end
//! when idle). Start-up blocks for a second or two (`initdb`), which an async test can afford.

use std::ffi::CString;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::{io, Error, Result};

/// The superuser name of the test clusters.
pub const SUPERUSER: &str = "postgres";

/// How long start-up may take before the launcher gives up (initdb excluded).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How the cluster is set up.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// `fsync` of the server: on (the default) makes a commit durable as on a production server, as
    /// measurements want; off makes tests that only need crash-of-process safety faster.
    pub fsync: bool,
    /// Extra `-c name=value` settings of the server.
    pub settings: Vec<(String, String)>,
    /// With a certificate, the server accepts TLS (`ssl = on`) with it; plain connections stay allowed.
    pub tls: Option<ServerCertificate>,
}

/// The server's certificate (chain) and private key, PEM.
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    pub cert_pem: String,
    pub key_pem: String,
    /// Refuse TCP connections without TLS (`hostssl` lines only), so that a connection that works went over TLS.
    pub only: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            fsync: true,
            settings: Vec::new(),
            tls: None,
        }
    }
}

/// A running test cluster. Dropping it stops the server (immediate shutdown) and deletes its directory.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    server: Option<Child>,
    run_as: Option<(u32, u32)>,
}

/// The directory of Debian's PostgreSQL binaries (`/usr/lib/postgresql/<major>/bin`, newest major first), or
/// `RINGLINK_PG_BIN` when set.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("RINGLINK_PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
        return Err(Error::PostgresMissing(format!(
            "RINGLINK_PG_BIN={} has no initdb",
            dir.display()
        )));
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| missing())?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors.pop().map(|(_, bin)| bin).ok_or_else(missing)
}

fn missing() -> Error {
    Error::PostgresMissing(
        "no /usr/lib/postgresql/<version>/bin/initdb: install Debian's postgresql package \
         (bash testbed/install-host-deps.sh, or apt-get install postgresql)"
            .into(),
    )
}

impl Postgres {
    /// Creates a cluster and starts its server with the default options.
    pub fn start() -> Result<Self> {
        Self::start_with(&PostgresOptions::default())
    }

    pub fn start_with(options: &PostgresOptions) -> Result<Self> {
        let bin = bin_dir()?;
        let run_as = server_user()?;
        let dir = make_dir(run_as)?;
        let mut server = Postgres {
            bin,
            dir,
            port: 0,
            server: None,
            run_as,
        };
        server.init()?;
        // The free port is found by binding and releasing it; another process may take it in between, so a
        // failed start on a fresh port is tried again.
        let mut last = None;
        for _ in 0..3 {
            server.port = free_port()?;
            match server.launch(options) {
                Ok(()) => return Ok(server),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| Error::Postgres("the server did not start".into())))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data in `data/`, the server log in `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A connection URL for `database` as the superuser (libpq and `tokio-postgres` syntax).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` (owned by the superuser) and returns its URL.
    pub fn create_database(&self, database: &str) -> Result<String> {
        let quoted = database.replace('"', "\"\"");
        self.psql("postgres", &format!("CREATE DATABASE \"{quoted}\""))?;
        Ok(self.url(database))
    }

    /// Runs `sql` with `psql` in `database` (stops at the first error) and returns its unaligned, tuples-only
    /// output (`|` between columns, one row per line).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                SUPERUSER,
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(database)
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .map_err(io("running psql"))?;
        checked("psql", output)
    }

    /// The tail of the server log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills the server and all its backends at once (SIGKILL to its process group), as a crash of the database
    /// host would. [`Postgres::restart`] starts it again on the same data and port (crash recovery).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            if let Ok(pgid) = i32::try_from(child.id()) {
                crate::process::kill_group(pgid);
            }
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same cluster and port (after [`Postgres::kill`] or [`Postgres::stop`]).
    pub fn restart(&mut self, options: &PostgresOptions) -> Result<()> {
        self.stop_server();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.launch(options) {
                Ok(()) => return Ok(()),
                // Backends of a killed server may still hold the shared memory for a moment.
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Err(error) => return Err(error),
            }
        }
    }

    /// Stops the server (fast shutdown) and keeps the cluster.
    pub fn stop(&mut self) {
        self.stop_server();
    }

    fn init(&self) -> Result<()> {
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(self.dir.join("data")).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        let output = initdb.output().map_err(io("running initdb"))?;
        checked("initdb", output).map(|_| ())
    }

    fn launch(&mut self, options: &PostgresOptions) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("server.log")).map_err(io("creating the server log"))?;
        if let Some((uid, gid)) = self.run_as {
            chown(&self.dir.join("server.log"), uid, gid)?;
        }
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-h", "127.0.0.1", "-k"])
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", &format!("fsync={}", if options.fsync { "on" } else { "off" })]);
        for (name, value) in &options.settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        if let Some(tls) = &options.tls {
            let (cert, key) = self.write_certificate(tls)?;
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!("ssl_cert_file={}", cert.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()));
            if tls.only {
                let hba = self.dir.join("pg_hba_tls.conf");
                std::fs::write(
                    &hba,
                    "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
                )
                .map_err(io(format!("writing {}", hba.display())))?;
                if let Some((uid, gid)) = self.run_as {
                    chown(&hba, uid, gid)?;
                }
                cmd.arg("-c").arg(format!("hba_file={}", hba.display()));
            }
        }
        let stderr = log.try_clone().map_err(io("opening the server log"))?;
        cmd.stdout(log).stderr(stderr).process_group(0);
        // SAFETY: prctl is async-signal-safe; it runs after the uid change (which would clear it).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io("starting postgres"))?;
        self.server = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.server.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.server = None;
                    return Err(Error::Postgres(format!(
                        "the server exited during start-up ({status}); log tail:\n{}",
                        self.log_tail()
                    )));
                }
            }
            if self.accepts_connections() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop_server();
                return Err(Error::Postgres(format!(
                    "the server did not accept connections within {START_TIMEOUT:?}; log tail:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes the certificate and key into the cluster's directory, owned by the server user (the server refuses
    /// a key others can read).
    fn write_certificate(&self, tls: &ServerCertificate) -> Result<(PathBuf, PathBuf)> {
        let cert = self.dir.join("server.crt");
        let key = self.dir.join("server.key");
        for (path, text) in [(&cert, &tls.cert_pem), (&key, &tls.key_pem)] {
            std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(io(format!("chmod {}", path.display())))?;
            if let Some((uid, gid)) = self.run_as {
                chown(path, uid, gid)?;
            }
        }
        Ok((cert, key))
    }

    fn accepts_connections(&self) -> bool {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_err() {
            return false;
        }
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-U", SUPERUSER, "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            // SIGINT: fast shutdown (running transactions are rolled back, the server exits in milliseconds).
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on our own child.
                unsafe {
                    libc::kill(pid, libc::SIGINT);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A command of the cluster's binaries, run as the server user.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.stdin(Stdio::null()).current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            cmd.env("HOME", &self.dir);
        }
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn checked(what: &str, output: Output) -> Result<String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(Error::Postgres(format!(
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// The uid/gid to run the server as: the `postgres` user when we are root, nobody else otherwise.
fn server_user() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new(SUPERUSER).map_err(|_| Error::Postgres("bad user name".into()))?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy the two ids out at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(Error::PostgresMissing(
            "running as root and there is no `postgres` system user to run the server as: install Debian's \
             postgresql package (bash testbed/install-host-deps.sh)"
                .into(),
        ));
    }
    // SAFETY: entry is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

fn make_dir(run_as: Option<(u32, u32)>) -> Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringlink-pg-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("chmod {}", dir.display())))?;
    if let Some((uid, gid)) = run_as {
        chown(&dir, uid, gid)?;
    }
    Ok(dir)
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io(format!("chown {}", path.display())))
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("finding a free port"))?;
    Ok(listener.local_addr().map_err(io("finding a free port"))?.port())
}
