//! Calls recovered from Asterisk's CEL table: the I/O around [`tracker::CelFeed`].
//!
//! At start and after any gap in the AMI stream (and for `ringlink reprocess`), the rows of every call that has
//! a row in the period are read, whole (a call that began before the period is read from its start), turned into
//! AMI events by the pure feed, followed by a fresh tracker, and each call that ended is planned by an engine
//! that shows no card (nobody is ringing any more). Steps keep the keys the live service would have given them
//! (`<linkedid>/<n>/register`, …), and the store enqueues a key once, so a call handled before is never sent
//! twice; a call whose every registration is already finished is not even planned again.
//!
//! Sources ([`source`]): a `cel_sqlite3_custom` file (rusqlite), FreePBX's MySQL/MariaDB table (`mysql`, pure
//! Rust), `cel_pgsql`'s PostgreSQL table (`tokio-postgres`). Column names are matched by the names the
//! database backends use (`eventtype eventtime cid_name cid_num cid_dnid exten context channame appname appdata
//! uniqueid linkedid peer extra`) or the `cel_sqlite3_custom` sample's (`cidname cidnum ciddnid channel
//! eventextra`); `linkedid` is required.

mod source;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::FixedOffset;
use serde::Deserialize;
use tracker::{CallEvent, CallFull, CelFeed, CelRow, Timestamp, Tracker, TrackerConfig};

use crate::config::RecordingSettings;

/// `[cel]`: where Asterisk keeps its CEL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CelSettings {
    /// `sqlite` (`cel_sqlite3_custom`), `mysql` (also `mariadb`: FreePBX's `asteriskcdrdb.cel`, `cel_odbc`) or
    /// `postgres` (`cel_pgsql`).
    pub kind: CelKind,
    /// The SQLite file (`cel_sqlite3_custom` writes `master.db` in Asterisk's log directory).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The database server: `mysql://user:password@host:3306/asteriskcdrdb`, `postgres://user:password@host/asterisk`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_table")]
    pub table: String,
    /// The zone `eventtime` is written in (Asterisk's local time, `cel.conf dateformat`), e.g. `"+03:00"`;
    /// default: `[tracker] utc_offset`.
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// Where MixMonitor writes, as the PBX sees it: a recording is found there by the FreePBX naming
    /// convention, `YYYY/MM/DD/<anything>-<uniqueid>.<ext>`.
    #[serde(default = "default_monitor_dir")]
    pub recordings_dir: String,
    /// Rows are read from this long before a gap's start (row times have whole seconds; a call's end near
    /// the gap's start is read again, harmlessly).
    #[serde(default = "default_margin")]
    pub margin_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CelKind {
    Sqlite,
    #[serde(alias = "mariadb")]
    Mysql,
    /// `cel_pgsql`'s table.
    #[serde(alias = "pgsql", alias = "postgresql")]
    Postgres,
}

fn default_table() -> String {
    "cel".into()
}
fn default_monitor_dir() -> String {
    "/var/spool/asterisk/monitor".into()
}
fn default_margin() -> u64 {
    60
}

impl CelSettings {
    /// The zone of `eventtime`.
    pub fn offset(&self, tracker: &TrackerConfig) -> anyhow::Result<FixedOffset> {
        let text = self.utc_offset.as_deref().unwrap_or(&tracker.utc_offset);
        tracker::LocalClock::parse_offset(text)
            .with_context(|| format!("[cel] utc_offset {text:?}: expected a fixed offset such as \"+03:00\""))
    }

    /// What is wrong with `url` for a database server of `kind`, if anything.
    fn url_problem(&self, kind: &str, schemes: &[&str], example: &str, what: &str) -> Option<String> {
        match self.url.as_deref().map(url::Url::parse) {
            None => Some(format!("[cel] kind = \"{kind}\" needs url = \"{example}\" ({what})")),
            Some(Ok(u)) if schemes.contains(&u.scheme()) && u.path().len() > 1 => None,
            Some(_) => Some(format!(
                "[cel] url {}: write it as {example} (the database name included)",
                source::shown_url(self.url.as_deref().unwrap_or_default())
            )),
        }
    }

    /// Problems a config check reports (one plain line each).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.kind {
            CelKind::Sqlite if self.path.is_none() => problems.push(
                "[cel] kind = \"sqlite\" needs path = the cel_sqlite3_custom database (master.db in Asterisk's log \
                 directory)"
                    .into(),
            ),
            CelKind::Mysql => problems.extend(self.url_problem(
                "mysql",
                &["mysql", "mariadb"],
                "mysql://user:password@host:3306/asteriskcdrdb",
                "FreePBX's CDR database",
            )),
            CelKind::Postgres => problems.extend(self.url_problem(
                "postgres",
                &["postgres", "postgresql"],
                "postgres://user:password@host:5432/asterisk",
                "the database cel_pgsql writes to",
            )),
            CelKind::Sqlite => {}
        }
        if !self
            .table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || self.table.is_empty()
        {
            problems.push(format!(
                "[cel] table {:?}: use a plain table name such as \"cel\"",
                self.table
            ));
        }
        problems
    }
}

/// Every row of every call with a row between `from` and `to`, in the table's order (a call's channels that
/// joined it from another linkedid included).
pub fn read_rows(
    settings: &CelSettings,
    offset: FixedOffset,
    from: Timestamp,
    to: Timestamp,
) -> anyhow::Result<Vec<CelRow>> {
    let mut rows = Vec::new();
    source::for_each_row(settings, offset, from, to, &mut |row| {
        rows.push(row);
        Ok(())
    })?;
    Ok(rows)
}

/// The recordings of the rows' channels, found by the FreePBX naming convention under `recordings_dir`
/// (`YYYY/MM/DD/…-<uniqueid>.<ext>`, the date of the channel's start in the PBX's zone): (uniqueid, PBX path).
pub fn find_recordings(
    rows: &[CelRow],
    settings: &CelSettings,
    offset: FixedOffset,
    recordings: &RecordingSettings,
) -> Vec<(String, String)> {
    let mut listed: HashMap<String, Vec<String>> = HashMap::new();
    let mut found = Vec::new();
    let base = settings.recordings_dir.trim_end_matches('/');
    for row in rows.iter().filter(|r| r.event_name() == "CHAN_START") {
        let local = chrono::DateTime::from_timestamp_micros(row.time.as_micros())
            .map(|t| t.with_timezone(&offset).format("%Y/%m/%d").to_string())
            .unwrap_or_default();
        let dir = format!("{base}/{local}");
        let names = listed.entry(dir.clone()).or_insert_with(|| {
            std::fs::read_dir(recordings.local_path(&dir))
                .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
                .unwrap_or_default()
        });
        let suffix = format!("-{}.", row.uniqueid.trim());
        if let Some(name) = names.iter().find(|n| n.contains(&suffix)) {
            found.push((row.uniqueid.trim().to_owned(), format!("{dir}/{name}")));
        }
    }
    found
}

/// A call rebuilt from CEL that ended: its events with the call as the tracker knew it at each.
pub struct Rebuilt {
    pub call: String,
    pub events: Vec<(CallEvent, Option<CallFull>)>,
    pub call_full: CallFull,
}

/// What a rebuild read.
#[derive(Debug, Default, Clone, Copy)]
pub struct RebuildStats {
    pub rows: usize,
    pub calls_ended: usize,
    /// Calls still going on at the end of the rows (the live AMI stream has them).
    pub calls_live: usize,
}

/// Follows the rows (with the recordings found for them) through a fresh tracker; returns each call that
/// ended, in the order they ended.
pub fn rebuild(
    rows: &[CelRow],
    recordings: &[(String, String)],
    config: &TrackerConfig,
) -> anyhow::Result<(Vec<Rebuilt>, RebuildStats)> {
    let mut tracker = Tracker::new(config.clone())?;
    let mut feed = CelFeed::new();
    feed.prepare(rows);
    for (uid, path) in recordings {
        feed.set_recording(uid, path);
    }
    let mut open: BTreeMap<String, Vec<(CallEvent, Option<CallFull>)>> = BTreeMap::new();
    let mut ended = Vec::new();
    let mut events = Vec::new();
    for row in rows {
        for message in feed.messages(row) {
            events.clear();
            tracker.handle_into(&message, None, &mut events);
            for event in events.drain(..) {
                let key = event.call().to_owned();
                if let CallEvent::CallEnded { call_full, .. } = &event {
                    let call_full = call_full.as_ref().clone();
                    let mut list = open.remove(&key).unwrap_or_default();
                    list.push((event, None));
                    ended.push(Rebuilt {
                        call: key,
                        events: list,
                        call_full,
                    });
                } else {
                    let snapshot = tracker.call_full(&key);
                    open.entry(key).or_default().push((event, snapshot));
                }
            }
        }
    }
    let stats = RebuildStats {
        rows: rows.len(),
        calls_ended: ended.len(),
        calls_live: tracker.live_calls(),
    };
    Ok((ended, stats))
}

/// An engine like the live one that shows no card: a recovered call rings nobody any more.
pub fn recovery_engine(
    settings: &engine::EngineSettings,
    users: Vec<engine::DirectoryUser>,
    now: Timestamp,
) -> anyhow::Result<engine::Engine> {
    let mut settings = settings.clone();
    settings.show_card = false;
    let mut engine = engine::Engine::new(settings)?;
    engine.users_mut().replace(users, now);
    Ok(engine)
}

/// A `need_registration` gate that gives `call` the answer the hook gave it while it was live (none without one).
pub fn recorded_gate(call: &str, verdict: Option<bool>) -> Option<Box<dyn engine::RegistrationGate + Send + Sync>> {
    let (call, verdict) = (call.to_owned(), verdict?);
    Some(Box::new(move |asked: &str, _: Option<&tracker::CallFull>| {
        (asked == call).then_some(verdict)
    }))
}

/// The engine's plan for a rebuilt call, each event at its own time, after a decision saying where the call
/// comes from (a gap in following the PBX, or an admin's re-process).
pub fn plan(engine: &mut engine::Engine, call: &Rebuilt, gap: (Timestamp, Timestamp), asked: bool) -> engine::Plan {
    let (rule, why) = if asked {
        (
            engine::Rule::Reprocessed,
            "re-processed from the admin UI: rebuilt from the PBX's CEL".to_owned(),
        )
    } else {
        (
            engine::Rule::RebuiltFromCel,
            format!(
                "rebuilt from the PBX's CEL (the call ended while ringlink did not follow the PBX, {} – {})",
                gap.0, gap.1
            ),
        )
    };
    let first = engine::Decision {
        call: call.call.clone(),
        time: gap.1,
        rule,
        reason: format!("{why}: registered without a card, with its original times"),
        data: serde_json::json!({"from": gap.0, "to": gap.1}),
    };
    replan(engine, first, &call.events)
}

/// The engine's plan for a call's `events` (each with the call as it was then, and at its own time), after
/// `first`, the decision saying where they come from.
pub fn replan(
    engine: &mut engine::Engine,
    first: engine::Decision,
    events: &[(CallEvent, Option<CallFull>)],
) -> engine::Plan {
    let mut plan = engine::Plan::default();
    plan.journal.push(first);
    for (event, call_full) in events {
        let step = engine.handle(event, call_full.as_ref(), event.time());
        plan.steps.extend(step.steps);
        plan.journal.extend(step.journal);
    }
    plan
}

/// Whether the CEL table reads (for `ringlink check`): where it is, its number of rows and the latest time.
pub fn probe(settings: &CelSettings) -> anyhow::Result<(String, u64, String)> {
    source::probe(settings)
}

/// What a recovery found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    pub stats: RebuildStats,
    /// Calls left alone: followed live now, or every registration already finished.
    pub already_handled: usize,
    /// Calls planned, with the steps the store did not have yet (a dry run stores nothing).
    pub calls: Vec<RecoveredCall>,
}

/// A call a recovery planned.
#[derive(Debug)]
pub struct RecoveredCall {
    pub call_full: CallFull,
    /// `(kind, key)` of each step not in the store yet.
    pub new_steps: Vec<(String, String)>,
}

/// Everything a recovery needs besides the store.
pub struct RecoveryInput<'a> {
    pub cel: &'a CelSettings,
    pub tracker: &'a TrackerConfig,
    pub engine: &'a engine::EngineSettings,
    /// The CRM the live engine translates for: a recovered call goes where the live one would.
    pub crm: engine::Crm,
    pub recordings: &'a RecordingSettings,
    /// The employees directory (the live engine's, or the store's cache).
    pub users: Vec<engine::DirectoryUser>,
    /// Calls the live tracker follows now: the AMI stream has them.
    pub live: HashSet<String>,
    pub from: Timestamp,
    pub to: Timestamp,
    pub now: Timestamp,
    pub dry_run: bool,
    /// Only this call, re-processed at an admin's request (its other calls of the period are left alone).
    pub only: Option<&'a str>,
    /// The `need_registration` answer recorded for `only` while it was live: the engine gives it again.
    pub verdict: Option<bool>,
}

/// Reads the CEL rows of the period, rebuilds the calls that ended and stores the steps of those not yet
/// handled (with their journal), unless `dry_run`. Blocking: run it off the async threads.
pub fn recover(store: &dyn store::Store, input: RecoveryInput<'_>) -> anyhow::Result<Recovery> {
    let offset = input.cel.offset(input.tracker)?;
    let rows = read_rows(input.cel, offset, input.from, input.to)?;
    let recordings = find_recordings(&rows, input.cel, offset, input.recordings);
    let (rebuilt, stats) = rebuild(&rows, &recordings, input.tracker)?;
    let mut engine = recovery_engine(input.engine, input.users, input.now)?;
    engine.set_crm(input.crm);
    if let Some(gate) = input.only.and_then(|only| recorded_gate(only, input.verdict)) {
        engine.set_gate(gate);
    }
    let unmatched: HashSet<String> = store
        .calls_with_unmatched(engine::StepKind::Register.name(), engine::StepKind::Finish.name())?
        .into_iter()
        .collect();
    let mut out = Recovery {
        stats,
        ..Recovery::default()
    };
    for call in rebuilt.iter().filter(|c| input.only.is_none_or(|only| c.call == only)) {
        let handled = input.live.contains(&call.call)
            || (!unmatched.contains(&call.call) && !store.steps_of_call(&call.call)?.is_empty());
        if handled {
            out.already_handled += 1;
            continue;
        }
        let plan = plan(&mut engine, call, (input.from, input.to), input.only.is_some());
        let mut new_steps = Vec::new();
        for step in &plan.steps {
            if store.step_by_key(&step.key)?.is_none() {
                new_steps.push((step.kind.name().to_owned(), step.key.clone()));
            }
        }
        if !input.dry_run && !new_steps.is_empty() {
            let steps: Vec<store::NewStep> = plan
                .steps
                .iter()
                .map(|s| crate::service::pipeline::new_step(s, None))
                .collect();
            let journal = crate::service::pipeline::decision_entries(&plan.journal);
            store.enqueue(&steps, store::Timestamp::now())?;
            store.append_journal(&journal)?;
        }
        if !new_steps.is_empty() {
            out.calls.push(RecoveredCall {
                call_full: call.call_full.clone(),
                new_steps,
            });
        }
    }
    Ok(out)
}

/// One line per planned call, for the log and `ringlink reprocess`.
pub fn describe(call: &RecoveredCall) -> String {
    let ch = &call.call_full.channel;
    let kinds: Vec<&str> = call.new_steps.iter().map(|(k, _)| k.as_str()).collect();
    format!(
        "{} {} {:?} {} → {}, result {}: {}",
        ch.start_time,
        ch.id,
        ch.direction,
        ch.from.original,
        ch.to.original,
        call.call_full.result,
        kinds.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(path: &Path) -> CelSettings {
        CelSettings {
            kind: CelKind::Sqlite,
            path: Some(path.to_owned()),
            url: None,
            table: "cel".into(),
            utc_offset: None,
            recordings_dir: default_monitor_dir(),
            margin_secs: 0,
        }
    }

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).expect("UTC")
    }

    /// A table with the `cel_sqlite3_custom` sample's column names (plus linkedid): rows of three calls.
    fn table(path: &Path) {
        let db = rusqlite::Connection::open(path).expect("create");
        db.execute_batch(
            "CREATE TABLE cel (id INTEGER PRIMARY KEY, eventtype TEXT, eventtime TEXT, cidname TEXT, cidnum TEXT, \
             ciddnid TEXT, context TEXT, exten TEXT, channel TEXT, appname TEXT, appdata TEXT, uniqueid TEXT, \
             linkedid TEXT, peer TEXT, eventextra TEXT);",
        )
        .expect("table");
        let rows = [
            // An old call, before the period.
            ("CHAN_START", "2026-11-22 08:00:00", "PJSIP/carrier-1", "10.1", "10.1"),
            ("CHAN_END", "2026-11-22 08:00:05", "PJSIP/carrier-1", "10.1", "10.1"),
            // A call that began before the period and ended in it: read whole.
            ("CHAN_START", "2026-11-22 08:59:50", "PJSIP/carrier-2", "20.1", "20.1"),
            ("CHAN_START", "2026-11-22 08:59:50", "PJSIP/101-2", "20.2", "20.1"),
            // A picker whose own call (30.1) joins 20.1: its rows under its first linkedid come too.
            ("CHAN_START", "2026-11-22 08:59:55", "PJSIP/102-3", "30.1", "30.1"),
            ("BRIDGE_ENTER", "2026-11-22 09:00:10", "PJSIP/102-3", "30.1", "20.1"),
            ("CHAN_END", "2026-11-22 09:00:20", "PJSIP/carrier-2", "20.1", "20.1"),
            // A call after the period.
            ("CHAN_START", "2026-11-22 11:00:00", "PJSIP/carrier-4", "40.1", "40.1"),
        ];
        for (event, time, channel, uid, linkedid) in rows {
            db.execute(
                "INSERT INTO cel (eventtype, eventtime, cidname, cidnum, ciddnid, context, exten, channel, appname, \
                 appdata, uniqueid, linkedid, peer, eventextra) VALUES (?1, ?2, '', '', '', '', '', ?3, '', '', ?4, ?5, '', '')",
                rusqlite::params![event, time, channel, uid, linkedid],
            )
            .expect("row");
        }
    }

    #[test]
    fn the_rows_of_every_call_touching_the_period_are_read_whole_whatever_the_column_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.db");
        table(&path);
        let at = |t: &str| tracker::cel::parse_event_time(t, utc()).expect("time");
        let rows = read_rows(
            &settings(&path),
            utc(),
            at("2026-11-22 09:00:00"),
            at("2026-11-22 10:00:00"),
        )
        .expect("read");
        let seen: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.event.as_str(), r.channel.as_str(), r.linkedid.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("CHAN_START", "PJSIP/carrier-2", "20.1"),
                ("CHAN_START", "PJSIP/101-2", "20.1"),
                ("CHAN_START", "PJSIP/102-3", "30.1"),
                ("BRIDGE_ENTER", "PJSIP/102-3", "20.1"),
                ("CHAN_END", "PJSIP/carrier-2", "20.1"),
            ]
        );
    }

    #[test]
    fn a_table_without_linkedid_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.db");
        let db = rusqlite::Connection::open(&path).expect("create");
        db.execute_batch("CREATE TABLE cel (eventtype TEXT, eventtime TEXT, channel TEXT, uniqueid TEXT);")
            .expect("table");
        let now = Timestamp::from_secs(1_795_318_717);
        let e = read_rows(&settings(&path), utc(), now, now).expect_err("no linkedid");
        let text = format!("{e:#}");
        assert!(
            text.contains("no linkedid column") && text.contains("cel_sqlite3_custom.conf"),
            "{text}"
        );
    }

    #[test]
    fn recordings_are_found_by_the_uniqueid_in_their_file_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let day = dir.path().join("2026/11/22");
        std::fs::create_dir_all(&day).expect("dirs");
        std::fs::write(day.join("in-73432723033-79001234567-20261122-085950-20.1.wav"), b"RIFF").expect("file");
        std::fs::write(
            day.join("in-73432723033-79001234567-20261122-085950-20.10.wav"),
            b"RIFF",
        )
        .expect("file");
        let mut cel = settings(Path::new("unused"));
        cel.recordings_dir = dir.path().display().to_string();
        let row = |uid: &str| CelRow {
            event: "CHAN_START".into(),
            time: tracker::cel::parse_event_time("2026-11-22 08:59:50", utc()).expect("time"),
            uniqueid: uid.into(),
            ..CelRow::default()
        };
        let found = find_recordings(&[row("20.1"), row("20.2")], &cel, utc(), &RecordingSettings::default());
        assert_eq!(
            found,
            [(
                "20.1".to_owned(),
                format!(
                    "{}/2026/11/22/in-73432723033-79001234567-20261122-085950-20.1.wav",
                    dir.path().display()
                )
            )]
        );
    }
}
