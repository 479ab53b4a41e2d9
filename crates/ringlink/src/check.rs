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
    fn note(&self, what: &str, detail: impl AsRef<str>) {
        println!("note     {what}: {}", detail.as_ref());
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
            let fix = match &e {
                crate::config::ConfigError::Read { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
                    format!(
                        " — create it with `ringlink config default > {}` (for the installed service: \
                         `ringlink config default --service`) and fill in [ami] and [bitrix24]",
                        path.display()
                    )
                }
                crate::config::ConfigError::Read { error, .. }
                    if error.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    " — run the check as root or as the ringlink user (the file is readable by its group only)".into()
                }
                _ => String::new(),
            };
            report.problem("config", format!("{e}{fix}"));
            return report.problems;
        }
    };
    check_ami(&config, &mut report).await;
    let store = match config.store.open() {
        Ok(s) => {
            report.ok("store", format!("{} opens", config.store.describe()));
            Some(s)
        }
        Err(e) if config.store.is_shared() => {
            report.problem(
                "store",
                format!(
                    "{e:#} — the PostgreSQL server must be reachable from this host and the user in [store] url \
                     allowed to create tables in the database"
                ),
            );
            None
        }
        Err(e) => {
            report.problem(
                "store",
                format!(
                    "{e:#} — [store] path must be in a directory the service's user can write (the installed \
                     service: {}, owned by ringlink)",
                    crate::config::SERVICE_STORE_PATH
                ),
            );
            None
        }
    };
    check_cel(&config, store.as_deref(), &mut report);
    check_web(&config, &mut report);
    if config.crm.kind == crate::config::CrmKind::Amocrm {
        match (&config.amocrm, store) {
            (Some(settings), Some(store)) => {
                check_amocrm(settings, &store, &mut report).await;
                check_amocrm_click(&config, &mut report).await;
            }
            (Some(_), None) => report.problem("amocrm", "not tried: the store (which keeps tokens) does not open"),
            (None, _) => report.problem("amocrm", "crm.kind = \"amocrm\" but no [amocrm] section"),
        }
        return report.problems;
    }
    match (&config.bitrix24, store) {
        (None, _) => report.problem("bitrix24", "no [bitrix24] section: calls would not be registered"),
        (Some(settings), Some(store)) => {
            check_bitrix24(settings, &store, &mut report).await;
            check_click_to_call(&config, settings, &store, &mut report).await;
            check_autodistribution(&config, settings, &store, &mut report).await;
        }
        (Some(_), None) => report.problem("bitrix24", "not tried: the store (which keeps tokens) does not open"),
    }
    report.problems
}

/// The admin UI: HTTPS from `[web] tls_cert`/`tls_key` (the files load and make a pair), or plain HTTP.
fn check_web(config: &Config, report: &mut Report) {
    let web = &config.web;
    if !web.enabled {
        return report.note("web", "the admin UI is off ([web] enabled = false)");
    }
    match web.tls() {
        Ok(Some(tls)) => report.ok(
            "web",
            format!(
                "HTTPS on {} with {} ({} certificate(s) in the chain); plain HTTP there is redirected to https",
                web.listen,
                web.tls_cert.as_deref().unwrap_or(Path::new("")).display(),
                tls.chain_len
            ),
        ),
        Ok(None) => report.note(
            "web",
            format!(
                "plain HTTP on {}: set [web] tls_cert and tls_key (PEM) for HTTPS, or put a TLS proxy in front \
                 (and secure_cookies = true) when the UI is reached from other hosts",
                web.listen
            ),
        ),
        Err(e) => report.problem("web", format!("{e} (the admin UI does not start until this is fixed)")),
    }
}

/// Where calls missed while ringlink was down come from: the CEL database, and any period the store says may
/// miss calls.
fn check_cel(config: &Config, store: Option<&dyn store::Store>, report: &mut Report) {
    match &config.cel {
        Some(cel) => match crate::cel::probe(cel) {
            Ok((place, rows, latest)) => report.ok(
                "CEL",
                format!(
                    "{place}: table {:?} readable: {rows} rows, the latest at {latest}",
                    cel.table
                ),
            ),
            Err(e) => report.problem(
                "CEL",
                format!("{e:#}: calls missed while ringlink is down cannot be recovered until it reads"),
            ),
        },
        None => report.note(
            "CEL",
            "no [cel] section: calls that begin and end while ringlink is down (an upgrade, a crash) are not \
             recovered; let Asterisk write its CEL to a database and name it in [cel]",
        ),
    }
    let saved = store
        .and_then(|s| store::Store::setting(s, crate::service::UNRECOVERED).ok().flatten())
        .and_then(|v| serde_json::from_value::<web::gaps::SavedGap>(v).ok());
    if let Some(gap) = saved {
        let zone = tracker::LocalClock::parse_offset(&config.tracker.utc_offset)
            .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
        let at = |t: i64| tracker::LocalClock::new(zone).format(Some(tracker::Timestamp::from_micros(t)));
        let (from, to) = (at(gap.from), at(gap.to));
        // The sentence the log said when the period was noted.
        let said = gap
            .message
            .clone()
            .unwrap_or_else(|| web::gaps::missing_sentence(&from, &to, &gap.causes, web::gaps::HOW_TO_ENABLE_CEL));
        let then = if config.cel.is_some() {
            format!("; with [cel] configured now, run: ringlink reprocess --from \"{from}\" --to \"{to}\"")
        } else {
            String::new()
        };
        report.note("CEL", format!("{said}{then}"));
    }
}

async fn check_ami(config: &Config, report: &mut Report) {
    let mut cfg = config.ami_client();
    cfg.connect_timeout = Duration::from_secs(5);
    let (client, mut events) = match ami::connect(cfg).await {
        Ok(pair) => pair,
        Err(e) => {
            report.problem("AMI", format!("{e} — {}", ami_fix(&e)));
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

/// What to change when the AMI login fails, by the kind of failure.
fn ami_fix(error: &ami::Error) -> &'static str {
    match error {
        ami::Error::Connect { .. } | ami::Error::Timeout { .. } => {
            "is Asterisk running with the AMI on (manager.conf [general] enabled = yes, port/bindaddr), and \
             [ami] address pointing at it?"
        }
        ami::Error::NotAmi { .. } => "[ami] address points at another service: use the AMI port (usually 5038)",
        ami::Error::LoginFailed { .. } => {
            "set [ami] username and secret (or RINGLINK__AMI__SECRET) to a user of manager.conf, whose permit= \
             allows this host; [ami] auth = plain if MD5 challenge is refused"
        }
        ami::Error::Tls { .. } => "check [ami] tls_ca_file and that the address is the AMI's TLS port (tlsbindport)",
        _ => "check the [ami] section",
    }
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

/// amoCRM: the token works (`GET /api/v4/account`), the users can be listed (administrator rights), and which
/// configured extensions name a user of the account.
async fn check_amocrm(
    settings: &crate::config::AmoCrmConfig,
    store: &std::sync::Arc<dyn store::Store>,
    report: &mut Report,
) {
    let client = match crate::service::amocrm_client(settings, store) {
        Ok(c) => c,
        Err(e) => return report.problem("amocrm", format!("{e:#}")),
    };
    let account = match client.account().await {
        Ok(account) => account,
        Err(e) => return report.problem("amocrm", format!("{e} — {}", amocrm_fix(&e))),
    };
    let users = match client.users().await {
        Ok(users) => users,
        Err(e) => {
            return report.problem(
                "amocrm",
                format!(
                    "account {} reachable, but its users cannot be listed: {e} — install the integration as an \
                     administrator of the account",
                    account.id
                ),
            )
        }
    };
    let unknown: Vec<String> = settings
        .extensions
        .iter()
        .filter(|(_, id)| !users.iter().any(|u| u.id == **id))
        .map(|(ext, id)| format!("{ext} → {id}"))
        .collect();
    let auth = if settings.is_oauth() {
        "OAuth"
    } else {
        "long-lived token"
    };
    let summary = format!(
        "account {} ({}) reachable with its {auth}; {} users, {} extensions mapped",
        account.id,
        account.subdomain,
        users.len(),
        settings.extensions.len()
    );
    if unknown.is_empty() {
        report.ok("amocrm", summary);
    } else {
        report.problem(
            "amocrm",
            format!(
                "{summary}; [amocrm.extensions] names users the account does not have: {}",
                unknown.join(", ")
            ),
        );
    }
}

fn amocrm_fix(error: &amocrm::Error) -> &'static str {
    use amocrm::Error as E;
    match error {
        E::Unauthorized { .. } | E::TokenRefused { .. } | E::NoRefreshToken => {
            "the tokens are refused: authorise the integration again and put the new tokens in [amocrm] (or a \
             new long_lived_token)"
        }
        E::IpBlocked => {
            "amoCRM blocked this host's IP address: ask amoCRM support to lift the block (ringlink probes it and resumes \
             by itself once it is lifted)"
        }
        E::RateLimited { .. } => "amoCRM's request limit was hit: try again in a minute",
        E::InvalidUrl { .. } | E::InsecureUrl { .. } => "fix [amocrm] subdomain / base_url",
        _ => "check the [amocrm] section and that the account is reachable from this host",
    }
}

async fn check_bitrix24(
    settings: &crate::config::Bitrix24Settings,
    store: &std::sync::Arc<dyn store::Store>,
    report: &mut Report,
) {
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
        Err(e) => report.problem("bitrix24", format!("{e} — {}", bitrix24_fix(&e))),
    }
}

/// Auto-distribution: on or off, its budget, how the dialplan asks, and whether the CRM answers a look-up (a
/// number nobody has) within the budget.
async fn check_autodistribution(
    config: &Config,
    settings: &crate::config::Bitrix24Settings,
    store: &std::sync::Arc<dyn store::Store>,
    report: &mut Report,
) {
    let Some(auto) = &config.autodistribution else {
        return report.note("auto-distribution", "off (no [autodistribution] section)");
    };
    let mut ways = Vec::new();
    if let Some(listener) = &config.listener {
        ways.push(format!("HTTP on {}/autodistribution", listener.bind));
    }
    if let Some(agi) = &auto.agi_bind {
        ways.push(format!("FastAGI on {agi}"));
    }
    if ways.is_empty() {
        report.problem(
            "auto-distribution",
            "the dialplan has no way to ask: add a [listener] (for CURL()) or set autodistribution.agi_bind",
        );
    }
    let client = match crate::service::bitrix24_client(settings, store) {
        Ok(c) => c,
        Err(e) => return report.problem("auto-distribution", e.to_string()),
    };
    let order: Vec<&str> = auto.order.iter().map(|k| k.bitrix24_name()).collect();
    let probe = bitrix24::methods::telephony::SearchCrmEntities {
        phone_number: "+70000000000".into(),
    };
    let started = std::time::Instant::now();
    let answer = client.send(&probe).await;
    let took = started.elapsed().as_millis();
    let on = format!(
        "on, budget {} ms, responsible of {}, asked by {}",
        auto.budget_ms,
        order.join(" > "),
        if ways.is_empty() {
            "nothing".into()
        } else {
            ways.join(" and ")
        }
    );
    match answer {
        Ok(_) if took <= u128::from(auto.budget_ms) => report.ok(
            "auto-distribution",
            format!("{on}; the CRM answered a look-up in {took} ms"),
        ),
        Ok(_) => report.note(
            "auto-distribution",
            format!(
                "{on}; the CRM answered a look-up in {took} ms, over the budget: such calls take the normal route \
                 (raise budget_ms if this is usual)"
            ),
        ),
        Err(e) => report.problem(
            "auto-distribution",
            format!("{on}; the CRM refused a look-up: {e} — {}", bitrix24_fix(&e)),
        ),
    }
}

/// What to change when Bitrix24 cannot be reached or refuses, by the kind of failure.
fn bitrix24_fix(error: &bitrix24::Error) -> &'static str {
    use bitrix24::Error as E;
    match error {
        E::Auth { .. } | E::TokenRefresh { .. } | E::NoRefreshToken => {
            "the webhook or application credentials are refused: copy [bitrix24] webhook_url again from the \
             portal (Developer resources → Other → Inbound webhook), or renew the application's tokens"
        }
        E::Transport(_) | E::Timeout(_) => {
            "the portal is not reachable from this host: check [bitrix24] webhook_url / portal_url, DNS and an \
             outgoing HTTPS proxy or firewall"
        }
        E::Redirected { .. } => "the portal was renamed: put its new address in [bitrix24]",
        E::InvalidUrl { .. } | E::InsecureUrl { .. } => "fix the URL in [bitrix24] (https://PORTAL/rest/USER/SECRET/)",
        _ => "check the [bitrix24] section",
    }
}

/// Click-to-call from the amoCRM widget: where it posts, and whether the listener answers there (refusing a
/// request without the token).
async fn check_amocrm_click(config: &Config, report: &mut Report) {
    let (Some(_), Some(listener)) = (&config.click_to_call, &config.listener) else {
        report.note("click-to-call", "off (no [click_to_call] and [listener] sections)");
        return;
    };
    let base = listener
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", listener.bind));
    let url = format!(
        "{}{}",
        base.trim_end_matches('/'),
        crate::service::listener::AMOCRM_CLICK_PATH
    );
    report.ok(
        "click-to-call",
        format!("the amoCRM widget posts clicks to {url} (enter it and the token in the widget's settings)"),
    );
    let answer = match reqwest::Client::builder().timeout(Duration::from_secs(5)).build() {
        Ok(http) => http.post(&url).body("").send().await.map(|r| r.status().as_u16()),
        Err(e) => return report.problem("click-to-call", format!("no HTTP client: {e}")),
    };
    match answer {
        Ok(401) => report.ok(
            "click-to-call",
            format!("{url} answers (and refuses a request without the token: 401)"),
        ),
        Ok(status) => report.problem("click-to-call", format!("{url} answered {status}")),
        Err(e) => report.problem(
            "click-to-call",
            format!("{url} is not reachable ({e}); is `ringlink run` up and the address public?"),
        ),
    }
}

/// Click-to-call: which mode, whether the event is bound in Bitrix24, and whether the handler URL answers.
async fn check_click_to_call(
    config: &Config,
    settings: &crate::config::Bitrix24Settings,
    store: &std::sync::Arc<dyn store::Store>,
    report: &mut Report,
) {
    use crate::config::ClickMode;
    let Some(click) = &config.click_to_call else {
        report.note("click-to-call", "off (no [click_to_call] section)");
        return;
    };
    let handler = config.listener.as_ref().and_then(crate::service::handler_url);
    match click.mode {
        ClickMode::Handler => report.ok(
            "click-to-call",
            format!(
                "handler mode: Bitrix24 posts ONEXTERNALCALLSTART to {}",
                handler
                    .as_deref()
                    .unwrap_or("the listener (listener.public_url not set)")
            ),
        ),
        ClickMode::Offline => report.ok(
            "click-to-call",
            "offline mode: ringlink fetches ONEXTERNALCALLSTART with event.offline.get (no public address needed)",
        ),
    }
    let app = settings.portal_url.is_some();
    if app {
        if let Ok(client) = crate::service::bitrix24_client(settings, store) {
            match client.send(&bitrix24::methods::events::EventGet {}).await {
                Ok(bound) => {
                    let ours = bound.iter().any(|h| {
                        h.event.eq_ignore_ascii_case("ONEXTERNALCALLSTART")
                            && match click.mode {
                                ClickMode::Offline => h.offline == Some(true),
                                ClickMode::Handler => handler.is_some() && h.handler == handler,
                            }
                    });
                    if ours {
                        report.ok("click-to-call", "ONEXTERNALCALLSTART is bound for this mode");
                    } else if click.bind_events || click.mode == ClickMode::Offline {
                        report.note(
                            "click-to-call",
                            "ONEXTERNALCALLSTART is not bound yet: `ringlink run` binds it",
                        );
                    } else {
                        report.problem(
                            "click-to-call",
                            "ONEXTERNALCALLSTART is not bound to the handler: set click_to_call.bind_events = true",
                        );
                    }
                }
                Err(e) => report.problem("click-to-call", format!("event.get failed: {e}")),
            }
        }
    } else if click.mode == ClickMode::Handler {
        report.note(
            "click-to-call",
            "webhook mode: add an outgoing webhook for ONEXTERNALCALLSTART pointing at the handler URL",
        );
    }
    if let (ClickMode::Handler, Some(url)) = (click.mode, handler) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build();
        let answer = match http {
            Ok(http) => http.post(&url).body("").send().await.map(|r| r.status().as_u16()),
            Err(e) => {
                report.problem("click-to-call", format!("no HTTP client: {e}"));
                return;
            }
        };
        match answer {
            Ok(status) if status == 400 || status == 401 || status == 403 => report.ok(
                "click-to-call",
                format!("the handler {url} answers (and refuses a request without the token: {status})"),
            ),
            Ok(status) => report.problem("click-to-call", format!("the handler {url} answered {status}")),
            Err(e) => report.problem(
                "click-to-call",
                format!("the handler {url} is not reachable ({e}); is `ringlink run` up and the address public?"),
            ),
        }
    }
}
