//! `ringlink check`: validates the configuration and tries every connection, reporting each problem in plain
//! words (one line each), so an admin can fix a setup before starting the service.

use std::path::Path;
use std::time::Duration;

use ami::Message;
use serde_json::Value;

use crate::config::Config;

/// Bitrix24 scopes ringlink uses: registering calls, CRM lookups, the employees directory, missed-call tasks.
const REQUIRED_SCOPES: [&str; 4] = ["telephony", "crm", "user", "task"];

struct Report {
    problems: usize,
}

impl Report {
    fn ok(&self, what: &str, detail: impl AsRef<str>) {
        println!("ok       {what}: {}", detail.as_ref());
    }
    fn problem(&mut self, what: &str, detail: impl AsRef<str>) {
        self.problems += 1;
        println!("PROBLEM  {what}: {}", detail.as_ref());
    }
}

/// Returns the number of problems found.
pub async fn run(path: &Path) -> usize {
    let mut report = Report { problems: 0 };
    let config = match Config::load(path, crate::config::env_overrides()) {
        Ok(c) => {
            report.ok("config", format!("{} is valid", path.display()));
            c
        }
        Err(e) => {
            report.problem("config", e.to_string());
            return report.problems;
        }
    };
    check_ami(&config, &mut report).await;
    let store = match store::SqliteStore::open(&config.store.path) {
        Ok(s) => {
            report.ok("store", format!("{} opens", config.store.path.display()));
            Some(s)
        }
        Err(e) => {
            report.problem("store", format!("{}: {e}", config.store.path.display()));
            None
        }
    };
    match (&config.bitrix24, store) {
        (None, _) => report.problem("bitrix24", "no [bitrix24] section: calls would not be registered"),
        (Some(settings), Some(store)) => check_bitrix24(settings, &store, &mut report).await,
        (Some(_), None) => report.problem("bitrix24", "not tried: the store (which keeps tokens) does not open"),
    }
    report.problems
}

async fn check_ami(config: &Config, report: &mut Report) {
    let mut cfg = config.ami_client();
    cfg.connect_timeout = Duration::from_secs(5);
    let (client, mut events) = match ami::connect(cfg).await {
        Ok(pair) => pair,
        Err(e) => {
            report.problem("AMI", e.to_string());
            return;
        }
    };
    report.ok(
        "AMI",
        format!("logged in to {} as {}", config.ami.address, config.ami.username),
    );
    match client.action_ok(Message::action("CoreSettings")).await {
        Ok(m) => report.ok(
            "AMI",
            format!(
                "Asterisk {}",
                m.get("AsteriskVersion").unwrap_or("(version not reported)")
            ),
        ),
        Err(e) => report.problem(
            "AMI",
            format!("CoreSettings failed: {e} (the user needs write = system)"),
        ),
    }
    match client.list(Message::action("CoreShowChannels")).await {
        Ok(list) => report.ok(
            "AMI",
            format!("CoreShowChannels works ({} live channels)", list.items.len()),
        ),
        Err(e) => report.problem(
            "AMI",
            format!("CoreShowChannels failed: {e} (needed to resynchronise; the user needs write = reporting)"),
        ),
    }
    check_event_timestamps(&client, &mut events, report).await;
    client.shutdown().await;
}

/// Events must carry the PBX's own `Timestamp` (manager.conf `timestampevents=yes`): without it ringlink times
/// calls by when events arrive. A `UserEvent` asks Asterisk for an event to look at.
async fn check_event_timestamps(client: &ami::Client, events: &mut ami::Events, report: &mut Report) {
    let asked = Message::action("UserEvent").with("UserEvent", "RinglinkCheck");
    if let Err(e) = client.action_ok(asked).await {
        report.ok(
            "AMI",
            format!("event timestamps not checked: UserEvent failed ({e}; the user needs write = user)"),
        );
        return;
    }
    let wait = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(wait);
    loop {
        tokio::select! {
            _ = &mut wait => {
                report.ok("AMI", "event timestamps not checked: no event within 3 s (the user needs read = user)");
                return;
            }
            event = events.recv() => match event {
                Some(ami::ClientEvent::Event(m)) if m.event_name() == Some("UserEvent") => {
                    if m.get("Timestamp").is_some() {
                        report.ok("AMI", "events carry the PBX's timestamps (timestampevents = yes)");
                    } else {
                        report.problem(
                            "AMI",
                            "events carry no Timestamp: set timestampevents = yes in the [general] section of \
                             manager.conf (until then calls are timed by when their events arrive)",
                        );
                    }
                    return;
                }
                Some(_) => {}
                None => {
                    report.ok("AMI", "event timestamps not checked: the AMI connection closed");
                    return;
                }
            }
        }
    }
}

async fn check_bitrix24(settings: &crate::config::Bitrix24Settings, store: &store::SqliteStore, report: &mut Report) {
    let client = match crate::service::bitrix24_client(settings, store) {
        Ok(c) => c,
        Err(e) => {
            report.problem("bitrix24", e.to_string());
            return;
        }
    };
    match client.call("scope", Value::Null).await {
        Ok(Value::Array(scopes)) => {
            let have: Vec<&str> = scopes.iter().filter_map(Value::as_str).collect();
            let missing: Vec<&str> = REQUIRED_SCOPES.iter().copied().filter(|s| !have.contains(s)).collect();
            if missing.is_empty() {
                report.ok("bitrix24", format!("reachable; scopes {}", have.join(", ")));
            } else {
                report.problem(
                    "bitrix24",
                    format!(
                        "missing scope(s) {}: add them to the webhook or application (has: {})",
                        missing.join(", "),
                        have.join(", ")
                    ),
                );
            }
        }
        Ok(other) => report.problem("bitrix24", format!("unexpected answer to `scope`: {other}")),
        Err(e) => report.problem("bitrix24", e.to_string()),
    }
}
