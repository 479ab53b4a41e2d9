//! The CEL tables ringlink reads: a `cel_sqlite3_custom` file, FreePBX's MySQL/MariaDB `asteriskcdrdb.cel`
//! (`cel_odbc`), or the PostgreSQL table `cel_pgsql` writes. One query plan for all of them, with each
//! database's own way of writing a text cast, a parameter and a time bound.
//!
//! Rows are streamed in the table's order (its id, else its time): nothing but the calls' keys is held in
//! memory while reading.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use chrono::FixedOffset;
use tracker::{CelRow, Timestamp};

use super::{CelKind, CelSettings};

/// Columns a CEL row is read from, each with the names the backends and samples give it.
const COLUMNS: &[(&str, &[&str])] = &[
    ("eventtype", &["eventtype"]),
    ("eventtime", &["eventtime"]),
    ("cid_name", &["cid_name", "cidname"]),
    ("cid_num", &["cid_num", "cidnum"]),
    ("cid_dnid", &["cid_dnid", "ciddnid"]),
    ("exten", &["exten"]),
    ("context", &["context"]),
    ("channame", &["channame", "channel"]),
    ("appname", &["appname"]),
    ("appdata", &["appdata"]),
    ("uniqueid", &["uniqueid"]),
    ("linkedid", &["linkedid"]),
    ("peer", &["peer"]),
    ("extra", &["extra", "eventextra"]),
];

/// Columns without which no call can be rebuilt.
const REQUIRED: &[&str] = &["eventtype", "eventtime", "uniqueid", "linkedid", "channame"];

/// What receives a query's rows, one at a time: the columns as text.
type EachRow<'a> = &'a mut dyn FnMut(&[Option<String>]) -> anyhow::Result<()>;

/// One database holding a CEL table.
trait Table {
    /// The table's column names, lower-cased (an error naming the fix when the table is missing).
    fn columns(&mut self, table: &str) -> anyhow::Result<HashSet<String>>;
    /// `column` read as text.
    fn text(&self, column: &str) -> String;
    /// The `n`-th parameter (from 1), a local time `YYYY-MM-DD HH:MM:SS`, as a value comparable with `eventtime`.
    fn time_param(&self, n: usize) -> String;
    /// What orders the rows as Asterisk wrote them, given the table's columns: its id, else its time.
    fn order(&self, columns: &HashSet<String>) -> String {
        if columns.contains("id") {
            "id".into()
        } else {
            "eventtime".into()
        }
    }
    /// Runs `sql` with `params` (text), handing each row's columns, as text, to `each`, in order.
    fn each_row(&mut self, sql: &str, params: &[String], each: EachRow<'_>) -> anyhow::Result<()>;
    /// Where the table is, for messages (no password).
    fn describe(&self) -> String;
}

/// Opens the database `[cel]` names.
fn open(settings: &CelSettings) -> anyhow::Result<Box<dyn Table>> {
    match settings.kind {
        CelKind::Sqlite => Ok(Box::new(Sqlite::open(settings)?)),
        CelKind::Mysql => Ok(Box::new(Mysql::open(settings)?)),
        CelKind::Postgres => Ok(Box::new(Postgres::open(settings)?)),
    }
}

/// The columns to select for a [`CelRow`], in `COLUMNS` order.
fn row_columns(db: &dyn Table, present: &HashSet<String>, table: &str) -> anyhow::Result<Vec<String>> {
    let mut select = Vec::new();
    for (what, names) in COLUMNS {
        match names.iter().find(|n| present.contains(**n)) {
            Some(name) => select.push(db.text(name)),
            None if REQUIRED.contains(what) => anyhow::bail!(
                "{}: table {table:?} has no {what} column: let Asterisk write it (for cel_sqlite3_custom, add it to \
                 cel_sqlite3_custom.conf's columns and values; see ringlink's README, \"Calls missed while ringlink \
                 was down\")",
                db.describe()
            ),
            None => select.push("''".into()),
        }
    }
    Ok(select)
}

/// Rows of the calls with a row between `from` and `to` are read; the database narrows them to a day either
/// side (`eventtime` is compared in the table's own form), the exact instants are checked here.
fn prefilter(db: &dyn Table, table: &str) -> String {
    let candidates = |a: usize, b: usize| {
        format!(
            "SELECT DISTINCT linkedid FROM {table} WHERE eventtime >= {} AND eventtime <= {}",
            db.time_param(a),
            db.time_param(b)
        )
    };
    format!(
        "linkedid IN ({}) OR uniqueid IN (SELECT uniqueid FROM {table} WHERE linkedid IN ({}))",
        candidates(1, 2),
        candidates(3, 4)
    )
}

fn bounds(offset: FixedOffset, from: Timestamp, to: Timestamp) -> Vec<String> {
    let day = 86_400;
    let bound = |t: Timestamp, shift: i64| {
        tracker::LocalClock::new(offset).format(Some(Timestamp::from_secs(t.as_micros() / 1_000_000 + shift)))
    };
    let (lo, hi) = (bound(from, -day), bound(to, day));
    vec![lo.clone(), hi.clone(), lo, hi]
}

fn text(columns: &[Option<String>], i: usize) -> String {
    columns.get(i).cloned().flatten().unwrap_or_default()
}

/// Which calls have a row in `from..=to`: their linkedids, and the channels that belonged to them (whose rows
/// under another linkedid belong to the call too).
struct Wanted {
    linked: HashSet<String>,
    channels: HashSet<String>,
}

impl Wanted {
    fn contains(&self, row: &CelRow) -> bool {
        self.linked.contains(&row.linkedid) || self.channels.contains(&row.uniqueid)
    }
}

fn wanted(
    db: &mut dyn Table,
    table: &str,
    offset: FixedOffset,
    from: Timestamp,
    to: Timestamp,
) -> anyhow::Result<Wanted> {
    let sql = format!(
        "SELECT {}, {}, {} FROM {table} WHERE {}",
        db.text("linkedid"),
        db.text("uniqueid"),
        db.text("eventtime"),
        prefilter(db, table)
    );
    let mut linked = HashSet::new();
    let mut pairs: HashSet<(String, String)> = HashSet::new();
    db.each_row(&sql, &bounds(offset, from, to), &mut |columns| {
        let (linkedid, uniqueid) = (text(columns, 0), text(columns, 1));
        let inside = tracker::cel::parse_event_time(&text(columns, 2), offset).is_some_and(|t| t >= from && t <= to);
        if inside {
            linked.insert(linkedid.clone());
        }
        pairs.insert((linkedid, uniqueid));
        Ok(())
    })?;
    let channels: HashSet<String> = pairs
        .iter()
        .filter(|(l, _)| linked.contains(l))
        .map(|(_, u)| u.clone())
        .collect();
    for (l, u) in pairs {
        if channels.contains(&u) {
            linked.insert(l);
        }
    }
    Ok(Wanted { linked, channels })
}

/// Hands `each` every row of every call with a row between `from` and `to`, in the table's order (a call's
/// channels that joined it from another linkedid included, a call that began before `from` from its start).
pub fn for_each_row(
    settings: &CelSettings,
    offset: FixedOffset,
    from: Timestamp,
    to: Timestamp,
    each: &mut dyn FnMut(CelRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut db = open(settings)?;
    let db = db.as_mut();
    let table = &settings.table;
    let present = db.columns(table)?;
    let select = row_columns(db, &present, table)?;
    let wanted = wanted(db, table, offset, from, to)?;
    if wanted.linked.is_empty() {
        return Ok(());
    }
    let order = db.order(&present);
    // Each selected column has an alias of its own: PostgreSQL names `CAST(id AS text)` "id", and
    // `ORDER BY id` would then sort the text (1, 10, 11, …, 2), not the table's column.
    let selected: Vec<String> = std::iter::once(db.text(&order))
        .chain(select)
        .enumerate()
        .map(|(i, column)| format!("{column} AS c_{i}"))
        .collect();
    let sql = format!(
        "SELECT {} FROM {table} WHERE {} ORDER BY {order}",
        selected.join(", "),
        prefilter(db, table)
    );
    let mut sequence = 0;
    db.each_row(&sql, &bounds(offset, from, to), &mut |columns| {
        let Some(time) = tracker::cel::parse_event_time(&text(columns, 2), offset) else {
            return Ok(());
        };
        sequence += 1;
        let row = CelRow {
            id: text(columns, 0).trim().parse().unwrap_or(sequence),
            event: text(columns, 1),
            time,
            cid_name: text(columns, 3),
            cid_num: text(columns, 4),
            cid_dnid: text(columns, 5),
            exten: text(columns, 6),
            context: text(columns, 7),
            channel: text(columns, 8),
            app: text(columns, 9),
            appdata: text(columns, 10),
            uniqueid: text(columns, 11),
            linkedid: text(columns, 12),
            peer: text(columns, 13),
            extra: text(columns, 14),
        };
        if wanted.contains(&row) {
            each(row)?;
        }
        Ok(())
    })
}

/// Whether the CEL table reads (for `ringlink check`): where it is, its number of rows and the latest time.
pub fn probe(settings: &CelSettings) -> anyhow::Result<(String, u64, String)> {
    let mut db = open(settings)?;
    let db = db.as_mut();
    let table = &settings.table;
    let present = db.columns(table)?;
    row_columns(db, &present, table)?;
    let sql = format!(
        "SELECT {}, {} FROM {table}",
        db.text("COUNT(*)"),
        db.text("MAX(eventtime)")
    );
    let mut found = (0, String::new());
    db.each_row(&sql, &[], &mut |columns| {
        found = (text(columns, 0).trim().parse().unwrap_or(0), text(columns, 1));
        Ok(())
    })?;
    Ok((db.describe(), found.0, found.1))
}

/// `cel_sqlite3_custom`'s file.
struct Sqlite {
    db: rusqlite::Connection,
    path: String,
}

impl Sqlite {
    fn open(settings: &CelSettings) -> anyhow::Result<Self> {
        let path = settings
            .path
            .as_deref()
            .context("[cel] kind = \"sqlite\" needs path = the cel_sqlite3_custom database")?;
        let db = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| {
            format!(
                "cannot open the CEL database {} (is ringlink allowed to read it?)",
                path.display()
            )
        })?;
        db.busy_timeout(Duration::from_secs(5))?;
        Ok(Self {
            db,
            path: path.display().to_string(),
        })
    }
}

impl Table for Sqlite {
    fn columns(&mut self, table: &str) -> anyhow::Result<HashSet<String>> {
        let mut present = HashSet::new();
        let mut stmt = self.db.prepare(&format!("PRAGMA table_info({table})"))?;
        let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
        for name in names {
            present.insert(name?.to_ascii_lowercase());
        }
        if present.is_empty() {
            anyhow::bail!(
                "{}: no table {table:?} (cel_sqlite3_custom creates it at its first event; check [cel] table and \
                 that cel_sqlite3_custom.so is loaded)",
                self.path
            );
        }
        Ok(present)
    }

    fn text(&self, column: &str) -> String {
        format!("CAST({column} AS TEXT)")
    }

    fn time_param(&self, n: usize) -> String {
        format!("?{n}")
    }

    fn order(&self, _: &HashSet<String>) -> String {
        "rowid".into()
    }

    fn each_row(&mut self, sql: &str, params: &[String], each: EachRow<'_>) -> anyhow::Result<()> {
        let mut stmt = self
            .db
            .prepare(sql)
            .with_context(|| format!("{}: reading the CEL table", self.path))?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut columns = Vec::with_capacity(width);
        while let Some(row) = rows.next()? {
            columns.clear();
            for i in 0..width {
                columns.push(row.get::<_, Option<String>>(i).ok().flatten());
            }
            each(&columns)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.clone()
    }
}

/// A MySQL or MariaDB server (FreePBX keeps CEL in `asteriskcdrdb.cel`, written by `cel_odbc`).
struct Mysql {
    conn: mysql::Conn,
    shown: String,
}

impl Mysql {
    fn open(settings: &CelSettings) -> anyhow::Result<Self> {
        let url = settings.url.as_deref().context(
            "[cel] kind = \"mysql\" needs url = \"mysql://user:password@host:3306/asteriskcdrdb\" (FreePBX's CDR \
             database)",
        )?;
        let shown = shown_url(url);
        let url = match url.split_once("://") {
            Some(("mariadb", rest)) => format!("mysql://{rest}"),
            _ => url.to_owned(),
        };
        let opts = mysql::Opts::from_url(&url).map_err(|e| {
            anyhow::anyhow!("[cel] url {shown}: {e} (expected mysql://user:password@host:3306/database)")
        })?;
        let opts = mysql::OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(Duration::from_secs(5)))
            .read_timeout(Some(Duration::from_secs(300)))
            .prefer_socket(false);
        let conn = mysql::Conn::new(opts).map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to the CEL database {shown}: {e} (check [cel] url: host, port, user, password and \
                 database; the user needs SELECT on the CEL table)"
            )
        })?;
        Ok(Self { conn, shown })
    }
}

impl Table for Mysql {
    fn columns(&mut self, table: &str) -> anyhow::Result<HashSet<String>> {
        use mysql::prelude::Queryable as _;
        let result = self
            .conn
            .query_iter(format!("SELECT * FROM {table} LIMIT 0"))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: cannot read table {table:?}: {e} (check [cel] table; FreePBX's is \"cel\" in the \
                     asteriskcdrdb database)",
                    self.shown
                )
            })?;
        let present = result
            .columns()
            .as_ref()
            .iter()
            .map(|c| c.name_str().to_ascii_lowercase())
            .collect();
        drop(result);
        Ok(present)
    }

    fn text(&self, column: &str) -> String {
        format!("CAST({column} AS CHAR)")
    }

    fn time_param(&self, _: usize) -> String {
        "?".into()
    }

    fn each_row(&mut self, sql: &str, params: &[String], each: EachRow<'_>) -> anyhow::Result<()> {
        use mysql::prelude::Queryable as _;
        let shown = self.shown.clone();
        let params: Vec<mysql::Value> = params.iter().map(|p| mysql::Value::from(p.as_str())).collect();
        let params = if params.is_empty() {
            mysql::Params::Empty
        } else {
            mysql::Params::Positional(params)
        };
        let result = self
            .conn
            .exec_iter(sql, params)
            .map_err(|e| anyhow::anyhow!("{shown}: reading the CEL table: {e}"))?;
        let mut columns = Vec::new();
        for row in result {
            let row = row.map_err(|e| anyhow::anyhow!("{shown}: reading the CEL table: {e}"))?;
            columns.clear();
            for i in 0..row.len() {
                columns.push(match row.as_ref(i) {
                    Some(mysql::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    Some(mysql::Value::NULL) | None => None,
                    Some(other) => Some(other.as_sql(true).trim_matches('\'').to_owned()),
                });
            }
            each(&columns)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

/// A PostgreSQL server (`cel_pgsql`'s table), read with tokio-postgres on a runtime of its own: callable from
/// async code (`ringlink reprocess`, `check`) and blocking threads alike, rows handed over through a bounded
/// channel as they arrive.
struct Postgres {
    runtime: Option<tokio::runtime::Runtime>,
    client: std::sync::Arc<tokio_postgres::Client>,
    shown: String,
}

impl Postgres {
    fn open(settings: &CelSettings) -> anyhow::Result<Self> {
        let url = settings.url.as_deref().context(
            "[cel] kind = \"postgres\" needs url = \"postgres://user:password@host:5432/asterisk\" (the database \
             cel_pgsql writes to)",
        )?;
        let shown = shown_url(url);
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            anyhow::anyhow!("[cel] url {shown}: {e} (expected postgres://user:password@host:5432/database)")
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cel-pgsql")
            .enable_all()
            .build()
            .context("starting the PostgreSQL client's runtime")?;
        let task = runtime.spawn(async move {
            let mut config = config;
            config.connect_timeout(Duration::from_secs(5));
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = futures::executor::block_on(task)
            .context("the PostgreSQL client's runtime stopped")?
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to the CEL database {shown}: {e} (check [cel] url: host, port, user, password \
                     and database; the user needs SELECT on the CEL table)"
                )
            })?;
        Ok(Self {
            runtime: Some(runtime),
            client: std::sync::Arc::new(client),
            shown,
        })
    }

    fn runtime(&self) -> anyhow::Result<&tokio::runtime::Runtime> {
        self.runtime.as_ref().context("the PostgreSQL client is closed")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Dropping a runtime may not block inside async code (`ringlink reprocess` runs there).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Table for Postgres {
    fn columns(&mut self, table: &str) -> anyhow::Result<HashSet<String>> {
        let client = self.client.clone();
        let sql = format!("SELECT * FROM {table} LIMIT 0");
        let task = self.runtime()?.spawn(async move {
            let stmt = client.prepare(&sql).await?;
            Ok::<_, tokio_postgres::Error>(stmt.columns().iter().map(|c| c.name().to_ascii_lowercase()).collect())
        });
        futures::executor::block_on(task)
            .context("the PostgreSQL client's runtime stopped")?
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: cannot read table {table:?}: {e} (check [cel] table: cel_pgsql's is \"cel\" unless \
                     cel_pgsql.conf names another)",
                    self.shown
                )
            })
    }

    fn text(&self, column: &str) -> String {
        format!("CAST({column} AS text)")
    }

    fn time_param(&self, n: usize) -> String {
        format!("CAST(${n}::text AS timestamp)")
    }

    fn each_row(&mut self, sql: &str, params: &[String], each: EachRow<'_>) -> anyhow::Result<()> {
        use futures::StreamExt as _;
        let client = self.client.clone();
        let sql = sql.to_owned();
        let params = params.to_vec();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Option<String>>, tokio_postgres::Error>>(512);
        let task = self.runtime()?.spawn(async move {
            let stream = match client.query_raw(&sql, params.iter()).await {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(row) = stream.next().await {
                let columns = row.and_then(|row| (0..row.len()).map(|i| row.try_get::<_, Option<String>>(i)).collect());
                // The reader stopped (an error on its side): stop reading too.
                if tx.send(columns).is_err() {
                    return;
                }
            }
        });
        let mut result = Ok(());
        for columns in rx {
            match columns {
                Ok(columns) => {
                    if let Err(e) = each(&columns) {
                        result = Err(e);
                        break;
                    }
                }
                Err(e) => {
                    result = Err(anyhow::anyhow!("{}: reading the CEL table: {e}", self.shown));
                    break;
                }
            }
        }
        task.abort();
        result
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

/// A database URL without its password.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(an unreadable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql::prelude::Queryable as _;

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).expect("UTC")
    }

    fn mysql_settings(url: &str) -> CelSettings {
        CelSettings {
            kind: CelKind::Mysql,
            path: None,
            url: Some(url.to_owned()),
            table: "cel".into(),
            utc_offset: None,
            recordings_dir: String::new(),
            margin_secs: 0,
        }
    }

    /// FreePBX's `asteriskcdrdb.cel` on a real MariaDB server: the rows of every call touching the period are
    /// read whole, in the table's order; `ringlink check`'s probe counts them; a wrong password and a missing
    /// table are refused with what to fix, the password never shown.
    #[test]
    fn freepbx_mariadb_table_is_read_like_the_sqlite_one() {
        let server = testbed::mariadb::MariaDb::start("asteriskcdrdb", "ringlink", "cel-secret").expect("MariaDB");
        let mut conn = mysql::Conn::new(mysql::Opts::from_url(&server.url()).expect("url")).expect("connect");
        conn.query_drop(testbed::mariadb::FREEPBX_CEL_TABLE).expect("table");
        let rows = [
            (
                "CHAN_START",
                "2026-11-22 08:00:00",
                "PJSIP/carrier-1",
                "10.1",
                "10.1",
                "",
            ),
            ("CHAN_END", "2026-11-22 08:00:05", "PJSIP/carrier-1", "10.1", "10.1", ""),
            (
                "CHAN_START",
                "2026-11-22 08:59:50",
                "PJSIP/carrier-2",
                "20.1",
                "20.1",
                "",
            ),
            ("CHAN_START", "2026-11-22 08:59:50", "PJSIP/101-2", "20.2", "20.1", ""),
            ("CHAN_START", "2026-11-22 08:59:55", "PJSIP/102-3", "30.1", "30.1", ""),
            (
                "BRIDGE_ENTER",
                "2026-11-22 09:00:10",
                "PJSIP/102-3",
                "30.1",
                "20.1",
                "{\"bridge_id\":\"b\"}",
            ),
            ("CHAN_END", "2026-11-22 09:00:20", "PJSIP/carrier-2", "20.1", "20.1", ""),
            (
                "CHAN_START",
                "2026-11-22 11:00:00",
                "PJSIP/carrier-4",
                "40.1",
                "40.1",
                "",
            ),
        ];
        for (event, time, channel, uid, linkedid, extra) in rows {
            conn.exec_drop(
                "INSERT INTO cel (eventtype, eventtime, cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid, exten, \
                 context, channame, appname, appdata, amaflags, accountcode, uniqueid, linkedid, peer, userdeftype, \
                 extra) VALUES (?, ?, '', '', '', '', '', '', '', ?, '', '', 3, '', ?, ?, '', '', ?)",
                (event, time, channel, uid, linkedid, extra),
            )
            .expect("row");
        }
        let at = |t: &str| tracker::cel::parse_event_time(t, utc()).expect("time");
        let settings = mysql_settings(&server.url());
        let mut read = Vec::new();
        for_each_row(
            &settings,
            utc(),
            at("2026-11-22 09:00:00"),
            at("2026-11-22 10:00:00"),
            &mut |row| {
                read.push(row);
                Ok(())
            },
        )
        .expect("read");
        let seen: Vec<(i64, &str, &str, &str, &str)> = read
            .iter()
            .map(|r| {
                (
                    r.id,
                    r.event.as_str(),
                    r.channel.as_str(),
                    r.linkedid.as_str(),
                    r.extra.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (3, "CHAN_START", "PJSIP/carrier-2", "20.1", ""),
                (4, "CHAN_START", "PJSIP/101-2", "20.1", ""),
                (5, "CHAN_START", "PJSIP/102-3", "30.1", ""),
                (6, "BRIDGE_ENTER", "PJSIP/102-3", "20.1", "{\"bridge_id\":\"b\"}"),
                (7, "CHAN_END", "PJSIP/carrier-2", "20.1", ""),
            ]
        );
        assert_eq!(read[0].time, at("2026-11-22 08:59:50"));

        let (place, count, latest) = probe(&settings).expect("probe");
        assert_eq!((count, latest.as_str()), (8, "2026-11-22 11:00:00"));
        assert!(!place.contains("cel-secret"), "{place}");

        let wrong = mysql_settings(&server.url().replace("cel-secret", "wrong-secret"));
        let e = format!("{:#}", probe(&wrong).expect_err("wrong password"));
        assert!(
            e.contains("cannot connect to the CEL database") && e.contains("[cel] url") && !e.contains("wrong-secret"),
            "{e}"
        );

        let mut missing = mysql_settings(&server.url());
        missing.table = "cel_missing".into();
        let e = format!("{:#}", probe(&missing).expect_err("no such table"));
        assert!(e.contains("cel_missing") && e.contains("[cel] table"), "{e}");
    }
}

#[cfg(test)]
mod pg_tests {
    use super::*;

    /// `cel_pgsql`'s table on a real PostgreSQL server: the rows of every call touching the period are read
    /// whole, in the table's order (ids 9 to 12, which sort differently as text), with their microseconds; the
    /// probe counts them; a missing table is refused with what to fix.
    #[test]
    fn cel_pgsql_table_is_read_like_the_others() {
        let server = testbed::postgres::Postgres::start().expect("PostgreSQL");
        let url = server.create_database("asterisk").expect("database");
        server.psql("asterisk", testbed::CEL_PGSQL_TABLE).expect("table");
        // An old call's eight rows, before the period: the call read comes at ids 9 to 12.
        let old: Vec<(&str, String, &str, &str, &str)> = (0..8)
            .map(|i| {
                let event = if i == 7 { "CHAN_END" } else { "CHAN_START" };
                (
                    event,
                    format!("2026-11-22 08:00:0{i}.5"),
                    "PJSIP/carrier-1",
                    "10.1",
                    "10.1",
                )
            })
            .collect();
        let rows = [
            (
                "CHAN_START",
                "2026-11-22 08:59:50.25",
                "PJSIP/carrier-2",
                "20.1",
                "20.1",
            ),
            ("CHAN_START", "2026-11-22 08:59:55", "PJSIP/102-3", "30.1", "30.1"),
            ("BRIDGE_ENTER", "2026-11-22 09:00:10", "PJSIP/102-3", "30.1", "20.1"),
            ("CHAN_END", "2026-11-22 09:00:20", "PJSIP/carrier-2", "20.1", "20.1"),
            ("CHAN_START", "2026-11-22 11:00:00", "PJSIP/carrier-4", "40.1", "40.1"),
        ]
        .map(|(event, time, channel, uid, linkedid)| (event, time.to_owned(), channel, uid, linkedid));
        for (event, time, channel, uid, linkedid) in old.into_iter().chain(rows) {
            server
                .psql(
                    "asterisk",
                    &format!(
                        "INSERT INTO cel (eventtype, eventtime, userdeftype, cid_name, cid_num, cid_ani, cid_rdnis, \
                         cid_dnid, exten, context, channame, appname, appdata, amaflags, accountcode, peeraccount, \
                         uniqueid, linkedid, userfield, peer, extra) VALUES ('{event}', '{time}', '', '', '', '', \
                         '', '', '', '', '{channel}', '', '', 3, '', '', '{uid}', '{linkedid}', '', '', NULL)"
                    ),
                )
                .expect("row");
        }
        let utc = FixedOffset::east_opt(0).expect("UTC");
        let at = |t: &str| tracker::cel::parse_event_time(t, utc).expect("time");
        let settings = CelSettings {
            kind: CelKind::Postgres,
            path: None,
            url: Some(url),
            table: "cel".into(),
            utc_offset: None,
            recordings_dir: String::new(),
            margin_secs: 0,
        };
        let mut read = Vec::new();
        for_each_row(
            &settings,
            utc,
            at("2026-11-22 09:00:00"),
            at("2026-11-22 10:00:00"),
            &mut |row| {
                read.push((row.id, row.event, row.channel, row.time));
                Ok(())
            },
        )
        .expect("read");
        assert_eq!(
            read,
            [
                (
                    9,
                    "CHAN_START".to_owned(),
                    "PJSIP/carrier-2".to_owned(),
                    at("2026-11-22 08:59:50.25")
                ),
                (10, "CHAN_START".into(), "PJSIP/102-3".into(), at("2026-11-22 08:59:55")),
                (
                    11,
                    "BRIDGE_ENTER".into(),
                    "PJSIP/102-3".into(),
                    at("2026-11-22 09:00:10")
                ),
                (
                    12,
                    "CHAN_END".into(),
                    "PJSIP/carrier-2".into(),
                    at("2026-11-22 09:00:20")
                ),
            ]
        );
        let (_, count, latest) = probe(&settings).expect("probe");
        assert_eq!((count, latest.as_str()), (13, "2026-11-22 11:00:00"));
        let mut missing = settings.clone();
        missing.table = "cel_missing".into();
        let e = format!("{:#}", probe(&missing).expect_err("no such table"));
        assert!(e.contains("cel_missing") && e.contains("[cel] table"), "{e}");
    }
}
