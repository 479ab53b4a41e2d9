//! A throwaway MariaDB server from Debian's `mariadb-server` package, for tests that read what a PBX keeps in
//! MySQL/MariaDB (FreePBX's `asteriskcdrdb`): a fresh data directory in a temporary directory, listening on a
//! free port on 127.0.0.1 only, one database and one password user created at start, stopped and removed on
//! drop.
//!
//! ```no_run
//! # fn demo() -> testbed::Result<()> {
//! let db = testbed::mariadb::MariaDb::start("asteriskcdrdb", "ringlink", "secret")?;
//! println!("{}", db.url()); // mysql://ringlink:secret@127.0.0.1:<port>/asteriskcdrdb
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::dbserver::{find, free_port, is_root, own_group, server, server_failed, stop, tail, temp_dir};
use crate::error::{io, Error, Result};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running MariaDB server; stopped (and its data removed) when dropped.
pub struct MariaDb {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    database: String,
    user: String,
    password: String,
}

impl MariaDb {
    /// Initialises a data directory and starts `mariadbd` on a free 127.0.0.1 port, with `database` and a
    /// `user` identified by `password` that may do anything in it. Blocks until the server accepts connections.
    pub fn start(database: &str, user: &str, password: &str) -> Result<MariaDb> {
        for name in [database, user, password] {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(server(format!(
                    "{name:?}: use letters, digits, '_' or '-' for the database, user and password"
                )));
            }
        }
        let install_db = find(&["mariadb-install-db", "mysql_install_db"])?;
        let mariadbd = find(&["mariadbd", "mysqld"])?;
        let dir = temp_dir()?;
        let data = dir.join("data");
        let mut db = MariaDb {
            child: None,
            dir: dir.clone(),
            port: 0,
            database: database.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
        };
        let root = is_root();
        let mut install = Command::new(install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=socket")
            .arg("--skip-test-db");
        if root {
            install.arg("--user=root");
        }
        let out = install
            .stdin(Stdio::null())
            .output()
            .map_err(io("running mariadb-install-db"))?;
        if !out.status.success() {
            return Err(server_failed("mariadb-install-db", &out));
        }
        let init = dir.join("init.sql");
        let sql = format!(
            "CREATE DATABASE IF NOT EXISTS `{database}`;\n\
             CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';\n\
             GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1';\n"
        );
        std::fs::write(&init, sql).map_err(io(format!("writing {}", init.display())))?;
        let log = dir.join("server.log");
        db.port = free_port()?;
        let log_file = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let log_err = log_file.try_clone().map_err(io("duplicating the server log handle"))?;
        let mut cmd = Command::new(mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={}", db.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--init-file={}", init.display()))
            .arg("--skip-log-bin")
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=16M")
            .arg("--performance-schema=OFF");
        if root {
            cmd.arg("--user=root");
        }
        cmd.stdin(Stdio::null()).stdout(log_file).stderr(log_err);
        own_group(&mut cmd);
        db.child = Some(cmd.spawn().map_err(io("starting mariadbd"))?);
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("ready for connections") {
                return Ok(db);
            }
            if let Some(Ok(Some(status))) = db.child.as_mut().map(Child::try_wait) {
                return Err(server(format!(
                    "mariadbd exited during start-up ({status}):\n{}",
                    tail(&text)
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::Timeout {
                    what: format!("mariadbd to accept connections; its log:\n{}", tail(&text)),
                    after: START_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://user:password@127.0.0.1:<port>/<database>`.
    pub fn url(&self) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{}/{}",
            self.user, self.password, self.port, self.database
        )
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The server's data and log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// FreePBX's CEL table in `asteriskcdrdb` (what its installer creates, and `cel_odbc` fills through
/// `res_odbc`), for tests that stand in for a FreePBX server.
pub const FREEPBX_CEL_TABLE: &str = "CREATE TABLE `cel` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `eventtype` varchar(30) NOT NULL,
  `eventtime` datetime NOT NULL,
  `cid_name` varchar(80) NOT NULL,
  `cid_num` varchar(80) NOT NULL,
  `cid_ani` varchar(80) NOT NULL,
  `cid_rdnis` varchar(80) NOT NULL,
  `cid_dnid` varchar(80) NOT NULL,
  `exten` varchar(80) NOT NULL,
  `context` varchar(80) NOT NULL,
  `channame` varchar(80) NOT NULL,
  `appname` varchar(80) NOT NULL,
  `appdata` varchar(255) NOT NULL,
  `amaflags` int(11) NOT NULL,
  `accountcode` varchar(20) NOT NULL,
  `uniqueid` varchar(32) NOT NULL,
  `linkedid` varchar(32) NOT NULL,
  `peer` varchar(80) NOT NULL,
  `userdeftype` varchar(255) NOT NULL,
  `extra` varchar(512) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `uniqueid_index` (`uniqueid`),
  KEY `linkedid_index` (`linkedid`),
  KEY `context_index` (`context`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci";
